"""Analyses the dashboard draws: per-layer tables with FLOPs, effective (connected) density, layer
collapse, critical compression, and SynFlow's conservation law."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from . import masks as mk
from .methods import synaptic_flow_scores

LAYER_COLUMNS = ["name", "kind", "shape", "total", "kept", "density", "effective_kept", "effective_density",
                 "flops_dense", "flops_kept"]


@torch.no_grad()
def output_positions(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """For each prunable weight, how many times it is applied per input sample (output pixels of a
    conv, leading dimensions of a linear layer), from one forward pass of a zero input."""
    positions: dict[str, int] = {}
    handles = []
    for name, module, _ in mk.prunable_weights(model):
        def record(mod, inputs, output, _name=name):
            per_sample = output.shape[2:] if isinstance(mod, nn.Conv2d) else output.shape[1:-1]
            positions[_name] = int(math.prod(per_sample))
        handles.append(module.register_forward_hook(record))
    first = mk.prunable_weights(model)[0][2]
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros((1, *input_shape), device=first.device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return positions


def effective_masks(model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: Sequence[int]
                    ) -> dict[str, torch.Tensor]:
    """Kept weights that still lie on some path from the input to the output.

    A kept weight whose input unit receives nothing (every incoming weight pruned) or whose output unit
    feeds nothing is dead weight: it cannot carry signal, and the network is effectively sparser than
    its masks say. Found exactly for any architecture (skip connections included) by running the
    network on an all-ones input with each kept weight set to a positive value, biases zeroed and
    BatchNorm reduced to a positive scale: a weight carries signal iff its SynFlow score is positive.
    Exact for ReLU-like activations (positive in, positive out).
    """
    state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        state[name] = torch.zeros_like(p, dtype=torch.float64) if name.endswith("bias") else \
            torch.ones_like(p, dtype=torch.float64)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            state[name] = torch.zeros_like(b, dtype=torch.float64)
        elif name.endswith("running_var"):
            state[name] = torch.ones_like(b, dtype=torch.float64)
        elif b.is_floating_point():
            state[name] = b.detach().to(torch.float64).abs()
    for name, mask in masks.items():
        # Scale each kept weight by 1/fan-in so activations stay O(1) at any depth: positivity, which
        # is all we test, does not depend on the scale, but overflow or underflow would.
        fan_in = max(mask[0].numel(), 1)
        state[name] = (mask.to(torch.float64) / fan_in).requires_grad_(True)
    names = list(masks)
    grads = torch.autograd.grad(_flow(model, state, input_shape), [state[n] for n in names])
    return {n: masks[n] & (g > 0) for n, g in zip(names, grads)}


def _flow(model: nn.Module, state: dict[str, torch.Tensor], input_shape: Sequence[int]) -> torch.Tensor:
    device = next(iter(state.values())).device
    was_training = model.training
    model.eval()
    try:
        ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
        return functional_call(model, state, (ones,)).sum()
    finally:
        model.train(was_training)


def layer_table(model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: Sequence[int]) -> pd.DataFrame:
    """One row per pruned tensor: name, kind, shape, total, kept, density, effective kept/density, and
    FLOPs (2 per multiply-add, per input sample) of the dense and of the pruned layer."""
    positions = output_positions(model, input_shape)
    effective = effective_masks(model, masks, input_shape)
    rows = []
    for name, module, weight in mk.prunable_weights(model):
        if name not in masks:
            continue
        total = weight.numel()
        kept = int(masks[name].sum())
        eff = int(effective[name].sum())
        per_sample = positions.get(name, 1)
        rows.append({
            "name": name, "kind": mk.layer_kind(module), "shape": "x".join(str(s) for s in weight.shape),
            "total": total, "kept": kept, "density": kept / total,
            "effective_kept": eff, "effective_density": eff / total,
            "flops_dense": 2 * total * per_sample, "flops_kept": 2 * kept * per_sample,
        })
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def layer_synaptic_flow(model: nn.Module, input_shape: Sequence[int],
                        masks: Mapping[str, torch.Tensor] | None = None) -> pd.DataFrame:
    """Per prunable layer, the sum of its SynFlow scores, next to the network's synaptic flow R.

    SynFlow's conservation law (Tanaka et al. 2020, Theorem 2): in a bias-free ReLU network whose layers
    form a chain, every layer's total score equals R, so pruning one layer cannot lower another's
    share. Columns: name, total_score, synaptic_flow, ratio (= total_score / synaptic_flow).
    The model is not changed.
    """
    prunable = mk.prunable_weights(model)
    if not prunable:
        raise ValueError("the model has no nn.Conv2d or nn.Linear weight to analyse")
    names = [n for n, _, _ in prunable]
    from .methods import absolute_state

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
    from .prune import prune

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
    total = sum(w.numel() for _, _, w in mk.prunable_weights(model_fn()))
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
