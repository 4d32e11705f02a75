"""Analyses across layers and compression levels: SynFlow's conservation law per layer, and critical compression
(the largest compression a method reaches with no layer collapsed)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from pruning_core.engine.masks import prunable_weights
from pruning_core.engine.methods import absolute_state, synaptic_flow_scores
from pruning_core.engine.prune import prune

def layer_synaptic_flow(model: nn.Module, input_shape: Sequence[int],
                        masks: Mapping[str, torch.Tensor] | None = None) -> pd.DataFrame:
    """Per prunable layer, the sum of its SynFlow scores, next to the network's synaptic flow R.

    SynFlow's conservation law (Tanaka et al. 2020, Theorem 2): in a bias-free ReLU network whose layers
    form a chain, every layer's total score equals R, so pruning one layer cannot lower another's
    share. Columns: name, total_score, synaptic_flow, ratio (= total_score / synaptic_flow).
    The model is not changed.
    """
    prunable = prunable_weights(model)
    if not prunable:
        raise ValueError("the model has no nn.Conv2d or nn.Linear weight to analyse")
    names = [n for n, _, _ in prunable]
    state = absolute_state(model, names)
    use = {n: masks[n].to(state[n].device) for n in names} if masks is not None else \
        {n: torch.ones_like(state[n], dtype=torch.bool) for n in names}
    scores, flow = synaptic_flow_scores(model, use, input_shape, state)
    rows = [{"name": n, "total_score": float(scores[n].sum()), "synaptic_flow": float(flow),
             "ratio": float(scores[n].sum() / flow) if float(flow) != 0 else math.nan} for n in names]
    return pd.DataFrame(rows)


# ---- critical compression --------------------------------------------------------------------------
@dataclass
class CriticalCompression:
    """Largest compression 10^log_compression a method reaches with no layer collapsed."""

    method: str
    log_compression: float                 # x in 10^x; 0 if even the first probe collapsed
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # every probe, in search order

    @property
    def compression(self) -> float:
        return 10 ** self.log_compression

    @property
    def sparsity(self) -> float:
        return 1 - 10 ** (-self.log_compression)


def critical_compression(model_fn: Callable[[], nn.Module], method: str, data: Any = None, *,
                         seed: int = 0, input_shape: Sequence[int] | None = None, max_log_compression: float | None = None,
                         tolerance: float = 0.05, progress: Callable[[int, int], None] | None = None,
                         **prune_options: Any) -> CriticalCompression:
    """Bisect over log10-compression for the largest compression at which `method` leaves every layer
    with at least one weight (no layer collapse), for one model and seed.

    model_fn() must build a fresh model; it is called after `torch.manual_seed(seed)`, so every probe
    prunes the same initial weights. The search spans 10^0 .. 10^max (default: one weight left in
    total, which collapses any network with two or more layers) to within `tolerance` in log10.
    Assumes collapse is monotone in compression, which holds for the methods here in practice.
    """
    def probe(log_c: float) -> bool:
        torch.manual_seed(seed)
        model = model_fn()
        sparsity = 1 - 10 ** (-log_c)
        result = prune(model, method, sparsity, data, input_shape=input_shape, seed=seed, **prune_options)
        evaluations.append({"log_compression": log_c, "sparsity": sparsity, "collapsed": bool(result.collapsed),
                            "collapsed_layers": list(result.collapsed),
                            "effective_density": result.effective_density})
        return bool(result.collapsed)

    evaluations: list[dict[str, Any]] = []
    torch.manual_seed(seed)
    total = sum(w.numel() for _, _, w in prunable_weights(model_fn()))
    high = max_log_compression if max_log_compression is not None else math.log10(max(total, 10))
    steps = max(1, math.ceil(math.log2(max(high, tolerance) / tolerance))) + 1
    low = 0.0
    if not probe(high):
        if progress:
            progress(steps, steps)
        return CriticalCompression(method, high, evaluations)
    done = 1
    while high - low > tolerance:
        mid = (low + high) / 2
        if probe(mid):
            high = mid
        else:
            low = mid
        done += 1
        if progress:
            progress(min(done, steps), steps)
    return CriticalCompression(method, low, evaluations)
