"""`pc.prune`: prune any torch.nn.Module at initialization with any registered method.

Everything is validated before the model is touched, and scoring runs on copies of the weights, so
a bad argument or a cancelled run leaves the model exactly as it was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from pruning_core.engine.masks import (all_kept, allocate_counts, attach_masks, kept_count, prunable_weights,
                                       round_densities, select_per_layer, select_top_k, shuffle_within_layers)
from pruning_core.engine.arguments import check_seed
from pruning_core.engine.layers import layer_table
from pruning_core.engine.methods import METHODS, MethodSpec, ScoringContext
from pruning_core.engine.vocabulary import SCHEDULES, SCOPES

Batch = tuple[torch.Tensor, torch.Tensor]
DEFAULT_PRUNE_BATCH = 256   # samples per scoring batch drawn from a pc Dataset
BALANCED_PER_CLASS = 10     # GraSP's class-balanced batch: 10 samples of every class, as on CIFAR


class Cancelled(Exception):
    """Raised by a progress callback to stop pruning or training; the model is left unchanged."""


@dataclass
class PruneResult:
    """The outcome of `pc.prune`. `layers` has one row per pruned tensor (see `layer_table`)."""

    masks: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor]
    layers: pd.DataFrame
    collapsed: list[str]
    method: str
    sparsity: float
    iterations: int
    schedule: str
    scope: str
    elapsed_s: float                  # scoring and selecting masks
    analysis_s: float = 0.0           # building `layers` (FLOPs, effective density)
    round_densities: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # what a whole-procedure method reports (IMP, GemMiner)

    @property
    def density(self) -> float:
        """Kept fraction of all prunable weights."""
        return float(self.layers["kept"].sum() / self.layers["total"].sum())

    @property
    def effective_density(self) -> float:
        """Fraction of prunable weights that still lie on a kept path from input to output."""
        return float(self.layers["effective_kept"].sum() / self.layers["total"].sum())

    @property
    def compression(self) -> float:
        """1 / density (10^2 at 99% sparsity); inf when nothing is kept."""
        return 1.0 / self.density if self.density > 0 else math.inf

    def summary(self) -> dict[str, Any]:
        """JSON-able headline numbers for stores, the CLI and the dashboard."""
        layers = self.layers
        return {
            "method": self.method, "sparsity": self.sparsity, "iterations": self.iterations,
            "schedule": self.schedule, "scope": self.scope,
            "density": self.density, "effective_density": self.effective_density,
            "compression": self.compression,
            "kept": int(layers["kept"].sum()), "total": int(layers["total"].sum()),
            "effective_kept": int(layers["effective_kept"].sum()),
            "flops_dense": int(layers["flops_dense"].sum()), "flops_kept": int(layers["flops_kept"].sum()),
            "collapsed": list(self.collapsed),
            "disconnected_layers": layers.loc[(layers["effective_kept"] == 0) & (layers["kept"] > 0), "name"].tolist(),
            "prune_s": self.elapsed_s,
            # The search cost of methods that train to find their masks: search_s, search_steps, ...
            **{f"search_{key}": value for key, value in self.details.get("cost", {}).items()},
        }


def prune(model: nn.Module, method: str, sparsity: float, data: Any = None, schedule: str = "exponential",
          iterations: int | None = None, scope: str = "global", *, input_shape: Sequence[int] | None = None,
          seed: int = 0, train_mode: bool = False, shuffle: bool = False, reinit: bool = False,
          invert: bool = False, prune_batches: int | None = None, options: Mapping[str, Any] | None = None,
          progress: Callable[[int, int], None] | None = None) -> PruneResult:
    """Prune the .weight of every nn.Conv2d and nn.Linear in `model` to `sparsity`.

    data: batches of (inputs, targets), one (inputs, targets) pair, or a `pc.Dataset` (scoring batches are
      then drawn from its training split: `prune_batches` batches of 256, or 10 samples per class for GraSP).
      Data-free methods only read the input shape from it, or from `input_shape=(C, H, W)`.
    schedule / iterations: rounds of scoring and pruning; None = the method's published default.
    scope: "global" ranks all layers together; "layerwise" keeps the same fraction of every layer.
    Sanity checks (Frankle et al. 2021): shuffle each layer's mask, reinit the kept weights, or invert the
      ranking (prune the highest scores).
    progress(done_rounds, total_rounds) is called after every round; raising `Cancelled` from it stops
      pruning and leaves the model unchanged.
    On return the pruned weights are zero and the masks are attached (see `masks.attach_masks`).
    """
    started = time.perf_counter()
    spec = METHODS[method]
    sparsity = _check_sparsity(sparsity)
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    if iterations is None:
        iterations = spec.default_iterations
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a whole number >= 1 (1 = one-shot), got {iterations!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seed = check_seed(seed)
    if prune_batches is not None and (isinstance(prune_batches, bool) or not isinstance(prune_batches, int)
                                      or prune_batches < 1):
        raise ValueError(f"prune_batches must be a whole number >= 1 (or None for the method's default), "
                         f"got {prune_batches!r}")
    prunable = prunable_weights(model)
    if not prunable:
        raise ValueError("the model has no nn.Conv2d or nn.Linear weight to prune; pass a model that contains some")
    device = prunable[0][2].device
    generator = torch.Generator().manual_seed(int(seed))

    batches = _scoring_batches(data, spec, device, generator, iterations, prune_batches)
    if spec.needs_data and not batches:
        free = ", ".join(n for n, s in METHODS.items() if not s.needs_data)
        raise ValueError(f"method {method!r} scores weights on training data: pass data=[(inputs, targets), ...] "
                         f"(a few batches of the training set) or a pc Dataset, or choose a data-free method ({free})")
    shape = _input_shape(batches, input_shape)
    check_model_fits(model, shape, batches)

    weights = {name: weight for name, _, weight in prunable}
    ctx = ScoringContext(model=model, weights=weights, batches=batches, input_shape=shape, generator=generator,
                         train_mode=train_mode, options=dict(options or {}), rounds=iterations,
                         batches_per_round=spec.batches_per_round,
                         dataset=data if hasattr(data, "class_balanced_batch") else None, seed=int(seed))
    density = 1.0 - sparsity
    if spec.run is not None:
        masks, scores, densities = spec.run(ctx, density, schedule=schedule, scope=scope, invert=invert,
                                           progress=progress)
        iterations = ctx.rounds  # the procedure may derive its rounds from its options (IMP's prune_fraction)
    else:
        masks, scores, densities = _score_and_select(ctx, spec, density, schedule, scope, invert, progress)

    if shuffle:
        masks = shuffle_within_layers(masks, generator)
    with torch.no_grad():
        if reinit:
            for name, weight in weights.items():
                # Redraw from a zero-mean normal with the layer's own init spread (Kaiming-normal for our models).
                std = float(weight.float().std()) if weight.numel() > 1 else 1.0
                weight.copy_(torch.randn(weight.shape, generator=generator).to(weight) * std)
    attach_masks(model, masks)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # so that elapsed_s counts the GPU work, not just its launch
    pruned_s = time.perf_counter() - started


    layers = layer_table(model, masks, shape)
    collapsed = layers.loc[layers["kept"] == 0, "name"].tolist()
    return PruneResult(masks=masks, scores={n: s.detach() for n, s in scores.items()}, layers=layers,
                       collapsed=collapsed, method=method, sparsity=sparsity, iterations=iterations,
                       schedule=schedule, scope=scope, elapsed_s=pruned_s,
                       analysis_s=time.perf_counter() - started - pruned_s,
                       round_densities=densities, details=dict(ctx.cache.get("details", {})))


def _score_and_select(ctx: ScoringContext, spec: MethodSpec, density: float, schedule: str, scope: str,
                      invert: bool, progress: Callable[[int, int], None] | None):
    """The core loop of every scoring method: for each round of the schedule, score the weights through the
    current masks, then keep the exact number of weights the round's density allows.

    Each round's density comes from `round_densities` (one round for one-shot methods). Scores are ranked
    negated when `invert` (the sanity check that prunes the best weights). A method that does not revive
    (`spec.revives` False) ranks only the weights still kept, so a pruned weight never returns; FORCE ranks
    every weight. Selection is global (`select_top_k`, ties broken so that exactly the count is kept) unless
    the scope is layerwise or the method fixes its layer densities (ERK), in which case the total is
    allocated to layers first and each layer keeps its own top count. Returns (masks, last scores, round
    densities)."""
    names = list(ctx.weights)
    shapes = [tuple(ctx.weights[n].shape) for n in names]
    totals = [ctx.weights[n].numel() for n in names]
    masks = all_kept([(n, ctx.weights[n]) for n in names])
    scores: dict[str, torch.Tensor] = {}
    densities = round_densities(density, ctx.rounds, schedule) if density < 1.0 else [1.0]
    for index, round_density in enumerate(densities):
        ctx.round = index
        scores = spec.score(ctx, masks)  # type: ignore[misc]
        ranking = {n: -s for n, s in scores.items()} if invert else scores
        candidates = None if spec.revives else masks
        total_kept = kept_count(round_density, sum(totals))
        if spec.layer_densities is not None or scope == "layerwise":
            layer_density = (spec.layer_densities(shapes, round_density) if spec.layer_densities is not None
                             else [round_density] * len(names))
            caps = None if candidates is None else [int(candidates[n].sum()) for n in names]
            counts = dict(zip(names, allocate_counts(layer_density, totals, total_kept, caps)))
            masks = select_per_layer(ranking, counts, candidates)
        else:
            masks = select_top_k(ranking, total_kept, candidates)
        if progress is not None:
            progress(index + 1, len(densities))
    return masks, scores, densities


def _check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not (0.0 <= float(sparsity) < 1.0):
        raise ValueError(f"sparsity must be a fraction in [0, 1) (0.99 removes 99% of the weights), got {sparsity!r}")
    return float(sparsity)


def _scoring_batches(data: Any, spec: MethodSpec, device: torch.device, generator: torch.Generator,
                     iterations: int, prune_batches: int | None) -> list[Batch]:
    if data is None:
        return []
    if hasattr(data, "batches") and hasattr(data, "class_balanced_batch"):  # a pc Dataset
        if spec.balanced_data:
            batch = data.class_balanced_batch(BALANCED_PER_CLASS, generator=generator)
            return [(batch[0].to(device), batch[1].to(device))]
        count = prune_batches or (iterations if spec.batches_per_round else 1)
        drawn = data.batches("train", batch_size=DEFAULT_PRUNE_BATCH, shuffle=True, generator=generator,
                             limit=count)
        return [(x.to(device), y.to(device)) for x, y in drawn]
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        data = [data]
    if not isinstance(data, Iterable):
        raise ValueError(f"data must be an iterable of (inputs, targets) batches, got {type(data).__name__}")
    batches: list[Batch] = []
    for item in data:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2 and isinstance(item[0], torch.Tensor)):
            raise ValueError("data must yield (inputs, targets) pairs of tensors, e.g. from a DataLoader")
        inputs, targets = item[0], torch.as_tensor(item[1])
        if inputs.dim() < 2 or targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
            raise ValueError(f"each batch needs inputs of shape (batch, ...) and 1-D class targets of the same "
                             f"length, got inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}")
        batches.append((inputs.to(device), targets.to(device=device, dtype=torch.long)))
        if prune_batches is not None and len(batches) >= prune_batches:
            break
    return batches


def _input_shape(batches: list[Batch], input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if batches:
        shape = tuple(batches[0][0].shape[1:])
        if input_shape is not None and tuple(input_shape) != shape:
            raise ValueError(f"input_shape {tuple(input_shape)} disagrees with the data's shape {shape}")
        return shape
    if input_shape is None:
        raise ValueError("data-free pruning needs the input shape: pass input_shape=(C, H, W) or a batch of data")
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be positive sizes such as (3, 32, 32), got {tuple(input_shape)}")
    return shape


@torch.no_grad()
def check_model_fits(model: nn.Module, input_shape: Sequence[int], batches: list[Batch] = ()) -> int:
    """Run one sample through the model (eval mode) and return its output size; raise a clear ValueError
    when the input shape or the targets do not fit the model."""
    device = prunable_weights(model)[0][2].device if prunable_weights(model) else torch.device("cpu")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    sample = batches[0][0][:1] if batches else torch.zeros((1, *input_shape), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        output = model(sample.to(dtype))
    except RuntimeError as error:
        raise ValueError(f"the model cannot take inputs of shape {tuple(input_shape)}: {str(error).splitlines()[0]}. "
                         "Check that the data matches the model (input channels, image size or features).") from None
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"the model must return class scores of shape (batch, classes), got {shape}")
    classes = output.shape[1]
    for _, targets in batches:
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= classes):
            raise ValueError(f"targets must be class indices in [0, {classes}) for a model with {classes} outputs, "
                             f"got values from {int(targets.min())} to {int(targets.max())}")
    return classes
