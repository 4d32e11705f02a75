"""Per-layer tables of a pruned network: FLOPs, kept counts, and effective (connected) density.

Below `prune` (which reports a layer table with every result) and above the masks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from pruning_core.engine.masks import layer_kind, prunable_weights

LAYER_COLUMNS = ["name", "kind", "shape", "total", "kept", "density", "effective_kept", "effective_density",
                 "flops_dense", "flops_kept"]


@torch.no_grad()
def output_positions(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """For each prunable weight, how many times it is applied per input sample (output pixels of a
    conv, leading dimensions of a linear layer), from one forward pass of a zero input."""
    positions: dict[str, int] = {}
    handles = []
    for name, module, _ in prunable_weights(model):
        def record(mod, inputs, output, _name=name):
            per_sample = output.shape[2:] if isinstance(mod, nn.Conv2d) else output.shape[1:-1]
            positions[_name] = int(math.prod(per_sample))
        handles.append(module.register_forward_hook(record))
    first = prunable_weights(model)[0][2]
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
    for name, module, weight in prunable_weights(model):
        if name not in masks:
            continue
        total = weight.numel()
        kept = int(masks[name].sum())
        eff = int(effective[name].sum())
        per_sample = positions.get(name, 1)
        rows.append({
            "name": name, "kind": layer_kind(module), "shape": "x".join(str(s) for s in weight.shape),
            "total": total, "kept": kept, "density": kept / total,
            "effective_kept": eff, "effective_density": eff / total,
            "flops_dense": 2 * total * per_sample, "flops_kept": 2 * kept * per_sample,
        })
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)
