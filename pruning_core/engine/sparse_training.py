"""Dynamic sparse training: the mask changes during training while every layer keeps its number of weights.

Every `update_every` steps (ΔT) until `update_until` of training (T_end), each masked layer drops the fraction
α_t = α/2 · (1 + cos(π t / T_end)) of its kept weights with the smallest magnitude and regrows as many among the
weights it does not keep, which start at zero:

- SET (Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive sparse connectivity
  inspired by network science", Nature Communications) regrows at random;
- RigL (Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners", ICML) regrows where the magnitude
  of the dense gradient (of the pruned weights too) on the current batch is largest; it is computed only at
  update steps.

RigL's defaults: ΔT = 100, α = 0.3, T_end = 75% of training, and an initial mask with Erdős–Rényi-Kernel layer
densities (the method `random_erk`). The mask stays attached as `pc.prune` attached it (the mask buffers and the
gradient hooks of `engine.masks`); an update rewrites the buffers in place, so the training loop's fused
multiply and the hooks follow it. The optimizer's state (momentum, Adam's moments) of the weights that were
dropped or regrown is reset to zero, so a regrown weight starts with no history.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pruning_core.engine.masks import MASK_BUFFER, prunable_weights, select_top_k
from pruning_core.engine.vocabulary import SPARSE_TRAINING

STATIC = "static"
DEFAULT_UPDATE_EVERY = 100     # ΔT in training steps (RigL)
DEFAULT_DROP_FRACTION = 0.3    # α at the first update (RigL)
DEFAULT_UPDATE_UNTIL = 0.75    # T_end as a fraction of the training steps (RigL)

MASK_UPDATE_COLUMNS = ["step", "drop_fraction", "layer", "kept", "total", "dropped", "moved"]


@dataclass(frozen=True)
class SparseTrainingSettings:
    """How a mask evolves during one training run: `mode` 'static' (never) or 'set' / 'rigl'."""

    mode: str = STATIC
    update_every: int = DEFAULT_UPDATE_EVERY
    drop_fraction: float = DEFAULT_DROP_FRACTION
    update_until: float = DEFAULT_UPDATE_UNTIL

    @classmethod
    def resolve(cls, mode: str | None = None, update_every: int | None = None, drop_fraction: float | None = None,
                update_until: float | None = None) -> SparseTrainingSettings:
        """The given settings, unset ones (None) at RigL's defaults, validated."""
        settings = cls(STATIC if mode is None else mode,
                       DEFAULT_UPDATE_EVERY if update_every is None else update_every,
                       DEFAULT_DROP_FRACTION if drop_fraction is None else drop_fraction,
                       DEFAULT_UPDATE_UNTIL if update_until is None else update_until)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.mode not in SPARSE_TRAINING:
            raise ValueError(f"unknown sparse_training {self.mode!r}; choose one of: {', '.join(SPARSE_TRAINING)}")
        every = self.update_every
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not float(every).is_integer() or every < 1:
            raise ValueError(f"update_every must be a whole number of steps >= 1, got {every!r}")
        alpha = self.drop_fraction
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
            raise ValueError(f"drop_fraction must be in (0, 1] (RigL: 0.3), got {alpha!r}")
        until = self.update_until
        if isinstance(until, bool) or not isinstance(until, (int, float)) or not 0 < until <= 1:
            raise ValueError(f"update_until must be a fraction of training in (0, 1] (RigL: 0.75), got {until!r}")

    @property
    def dynamic(self) -> bool:
        return self.mode != STATIC

    def stop_step(self, total_steps: int) -> int:
        """T_end: the step from which the mask stays fixed."""
        return int(math.floor(self.update_until * total_steps))

    def update_steps(self, total_steps: int) -> list[int]:
        """The training steps after which the mask is updated: ΔT, 2ΔT, ... before T_end (none when static)."""
        if not self.dynamic:
            return []
        return list(range(int(self.update_every), self.stop_step(total_steps), int(self.update_every)))


def drop_fraction_at(step: int, drop_fraction: float, stop_step: int) -> float:
    """α_t = α/2 · (1 + cos(π t / T_end)) for t < T_end, 0 from T_end on (RigL's cosine decay)."""
    if step >= stop_step or stop_step <= 0:
        return 0.0
    return drop_fraction / 2 * (1 + math.cos(math.pi * step / stop_step))


def dense_gradients(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                    label_smoothing: float = 0.0) -> dict[str, torch.Tensor | None]:
    """The gradient of the mean cross-entropy on (inputs, targets) with respect to every prunable weight,
    pruned weights included (the gradient hooks of attached masks do not apply: nothing is written to .grad),
    in float32. BatchNorm uses the batch's statistics, as in training, and its running statistics are restored:
    computing the gradient does not change the model."""
    weights = [(name, weight) for name, _, weight in prunable_weights(model)]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        with torch.enable_grad(), torch.autocast(device_type=inputs.device.type, enabled=False):
            loss = F.cross_entropy(model(inputs), targets, label_smoothing=label_smoothing)
            grads = torch.autograd.grad(loss, [w for _, w in weights], allow_unused=True)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    return {name: grad for (name, _), grad in zip(weights, grads)}


@torch.no_grad()
def drop_and_grow(weight: torch.Tensor, mask: torch.Tensor, count: int,
                  grow_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, grown) for one layer: `kept` is the mask without its `count` smallest-magnitude weights, `grown`
    the `count` weights outside `kept` with the highest `grow_score` (a weight just dropped may be regrown, as
    in RigL). `kept | grown` has exactly as many weights as `mask`; ties go to the lower index."""
    mask = mask.to(torch.bool)
    active = int(mask.sum())
    if not 0 <= count <= active:
        raise ValueError(f"count must be between 0 and the {active} kept weights, got {count}")
    kept = select_top_k({"w": weight.detach().abs()}, active - count, {"w": mask})["w"]
    grown = select_top_k({"w": grow_score}, count, {"w": ~kept})["w"]
    return kept, grown


def reset_optimizer_state(optimizer: torch.optim.Optimizer, weight: torch.Tensor, positions: torch.Tensor) -> None:
    """Zero the optimizer's per-weight state (SGD's momentum buffer, Adam's moments) at `positions`."""
    state = optimizer.state.get(weight)
    if not state:
        return
    for value in state.values():
        if torch.is_tensor(value) and value.shape == weight.shape:
            value.masked_fill_(positions.to(value.device), 0)


class MaskUpdater:
    """The mask updates of SET or RigL during one training run of a model with attached masks.

    Call `due(step)` after every optimizer step and, when it is True, `update(step, inputs, targets)` with the
    step's batch. Each update's record (step, drop fraction and per layer: kept, total, dropped, moved) is kept
    in `records`; `table()` gives them as a DataFrame with MASK_UPDATE_COLUMNS."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, settings: SparseTrainingSettings,
                 total_steps: int, seed: int = 0, label_smoothing: float = 0.0):
        if not settings.dynamic:
            raise ValueError("MaskUpdater is for sparse_training 'set' or 'rigl'")
        self.model, self.optimizer, self.settings = model, optimizer, settings
        self.label_smoothing = label_smoothing
        self.layers: list[tuple[str, nn.Module, nn.Parameter]] = []
        for name, module, weight in prunable_weights(model):
            mask = getattr(module, MASK_BUFFER, None)
            if mask is None:
                continue
            # Updates rewrite the mask in place; the attached buffer may be the caller's own tensor (attach_masks
            # keeps a bool mask already on the device), which must not change under them.
            module._buffers[MASK_BUFFER] = mask.clone()
            self.layers.append((name, module, weight))
        if not self.layers:
            raise ValueError(f"sparse_training {settings.mode!r} needs a pruned model: prune it first, e.g. "
                             "pc.prune(model, 'random_erk', 0.9) (RigL's Erdős–Rényi-Kernel layer densities)")
        self.stop_step = settings.stop_step(total_steps)
        # SET's random regrowth has a generator of its own, so that the data order stays the static run's.
        self.generator = torch.Generator().manual_seed(seed)
        self.records: list[dict[str, Any]] = []

    def due(self, step: int) -> bool:
        return 0 < step < self.stop_step and step % int(self.settings.update_every) == 0

    def update(self, step: int, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Drop and regrow in every layer; return the update's record."""
        fraction = drop_fraction_at(step, self.settings.drop_fraction, self.stop_step)
        grads = (dense_gradients(self.model, inputs, targets, self.label_smoothing)
                 if self.settings.mode == "rigl" else None)
        layers = []
        with torch.no_grad():
            for name, module, weight in self.layers:
                mask = getattr(module, MASK_BUFFER)
                active, total = int(mask.sum()), mask.numel()
                # A layer that is empty or whole has nothing to move (RigL leaves dense layers alone).
                count = int(math.floor(fraction * active)) if 0 < active < total else 0
                moved = 0
                if count > 0:
                    if grads is not None:
                        score = grads[name].detach().abs() if grads[name] is not None else torch.zeros_like(weight)
                    else:
                        score = torch.rand(weight.shape, generator=self.generator).to(weight.device)
                    kept, grown = drop_and_grow(weight, mask, count, score)
                    moved = int((grown & ~mask).sum())
                    reset_optimizer_state(self.optimizer, weight, grown | (mask & ~kept))
                    weight.mul_(kept)            # dropped weights leave; regrown ones start at zero
                    mask.copy_(kept | grown)
                layers.append({"layer": name, "kept": int(mask.sum()), "total": total, "dropped": count,
                               "moved": moved})
        record = {"step": step, "drop_fraction": fraction, "layers": layers}
        self.records.append(record)
        return record

    def table(self) -> pd.DataFrame:
        return mask_update_table(self.records)


def mask_update_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Update records as one row per update and layer (MASK_UPDATE_COLUMNS)."""
    rows = [{"step": r["step"], "drop_fraction": r["drop_fraction"], **layer} for r in records for layer in r["layers"]]
    return pd.DataFrame(rows, columns=MASK_UPDATE_COLUMNS)


def check_mask_callback(on_mask_update: Callable[[dict[str, Any]], None] | None) -> None:
    if on_mask_update is not None and not callable(on_mask_update):
        raise ValueError(f"on_mask_update must be a function taking one update's record, got {on_mask_update!r}")
