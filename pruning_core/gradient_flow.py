"""Gradient flow in sparse networks (Evci et al. 2022, "Gradient Flow in Sparse Neural Networks and How
Lottery Tickets Win"): the sparsity-aware initialisation."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from . import masks as mk


@torch.no_grad()
def sparse_init(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, scale: float = 2.0,
                generator: torch.Generator | None = None) -> nn.Module:
    """Re-draw every kept weight from N(0, scale / fan_in(u)), where fan_in(u) counts the KEPT incoming
    weights of its output unit u (conv kernel positions included); pruned weights stay zero.

    A dense Kaiming init uses the full fan-in, so in a sparse network each unit's pre-activation
    variance shrinks by its density and signals (and gradients) fade with depth; scaling by the kept
    fan-in restores unit variance (scale=2 is He's ReLU gain). masks=None uses the attached masks.
    """
    masks = dict(masks) if masks is not None else mk.attached_masks(model)
    if not masks:
        raise ValueError("sparse_init needs masks: prune the model first or pass masks=")
    weights = {name: weight for name, _, weight in mk.prunable_weights(model)}
    unknown = sorted(set(masks) - set(weights))
    if unknown:
        raise ValueError(f"masks name tensors the model has no prunable weight for: {', '.join(unknown[:5])}")
    for name, mask in masks.items():
        weight = weights[name]
        mask = mask.to(device=weight.device, dtype=torch.bool)
        fan_in = mask.flatten(1).sum(1).clamp(min=1).to(torch.float32)       # kept inputs of each output unit
        std = (scale / fan_in).sqrt().view(-1, *([1] * (weight.dim() - 1)))
        noise = torch.randn(weight.shape, generator=generator).to(weight.device, torch.float32)
        weight.copy_((noise * std * mask).to(weight.dtype))
    mk.attach_masks(model, masks)
    return model
