"""Named starting points shared by the dashboard, the command line and the benchmarks.

Each preset is a partial RunConfig (plus, for comparisons, other methods to prune side by side, and
for sweeps a method x sparsity grid). All of them run on the embedded digits dataset on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pruning_core.config import RunConfig
from pruning_core.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    description: str
    config: dict[str, Any]
    compare: tuple[str, ...] = ()                  # other methods whose densities are drawn beside
    grid: dict[str, Any] = field(default_factory=dict)  # methods / sparsities / seeds of a sweep

    def run_config(self, **changes: Any) -> RunConfig:
        return RunConfig(**{**self.config, **changes})


PRESETS: Registry[Preset] = Registry("preset")

PRESETS.register("quick_demo", Preset(
    "quick_demo", "Quick demo (CPU, under a minute)",
    "SynFlow removes 99% of a small CNN's weights before training; the sparse network still learns digits.",
    {"dataset": "digits", "model": "conv", "method": "synflow", "sparsity": 0.99, "epochs": 10}))
PRESETS.register("magnitude_collapse", Preset(
    "magnitude_collapse", "Why magnitude pruning collapses",
    "At 99.9% sparsity, ranking weights by |θ| at initialization empties the wide middle layers (their init "
    "scale is smallest): layer collapse, and the network cannot learn. SynFlow at the same sparsity keeps every "
    "layer alive.",
    {"dataset": "digits", "model": "conv", "method": "magnitude", "sparsity": 0.999, "epochs": 10},
    compare=("synflow",)))
PRESETS.register("synflow_vs_snip", Preset(
    "synflow_vs_snip", "SynFlow vs SNIP at 99.9%",
    "At 99.9% sparsity SNIP keeps weights that no longer connect input to output (effective density far below "
    "nominal), while iterative, data-free SynFlow keeps a connected network.",
    {"dataset": "digits", "model": "conv", "method": "synflow", "sparsity": 0.999, "epochs": 10},
    compare=("snip",)))
PRESETS.register("quick_sweep", Preset(
    "quick_sweep", "Quick sweep (CPU, about a minute)",
    "Five methods at four sparsities on digits, one seed, 10 epochs each, plus the dense baseline.",
    {"dataset": "digits", "model": "conv", "epochs": 10},
    grid={"methods": ["synflow", "snip", "grasp", "magnitude", "random"], "sparsities": [0.5, 0.9, 0.99, 0.999],
          "seeds": [0]}))
