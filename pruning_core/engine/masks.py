"""Masks: which tensors are prunable, how many weights each round keeps, exact top-k selection, and
attaching masks to a model so that any optimizer keeps pruned weights at exactly zero.

A mask is a bool tensor with the weight's shape (True = kept), keyed by the parameter's name as in
`model.named_parameters()`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
MASK_BUFFER = "weight_mask"

Masks = dict[str, torch.Tensor]


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module, nn.Parameter]]:
    """(parameter name, module, weight) for the .weight of every nn.Conv2d and nn.Linear, in model order.

    A weight shared by several modules is listed once, under its first name.
    """
    seen: set[int] = set()
    found = []
    for module_name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and isinstance(getattr(module, "weight", None), nn.Parameter):
            if id(module.weight) in seen:
                continue
            seen.add(id(module.weight))
            found.append((f"{module_name}.weight" if module_name else "weight", module, module.weight))
    return found


def layer_kind(module: nn.Module) -> str:
    return "conv" if isinstance(module, nn.Conv2d) else "linear"


# ---- schedules ---------------------------------------------------------------------------------
def round_densities(density: float, iterations: int, schedule: str) -> list[float]:
    """Target density after each of `iterations` rounds, ending exactly at `density`.

    exponential: density**(k/n), removing the same fraction of the remaining weights each round;
    linear: 1 - (1 - density) * k/n, removing the same number each round.
    """
    if schedule == "exponential":
        steps = [density ** (k / iterations) for k in range(1, iterations + 1)]
    elif schedule == "linear":
        steps = [1.0 - (1.0 - density) * k / iterations for k in range(1, iterations + 1)]
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: exponential, linear")
    steps[-1] = density
    return steps


def kept_count(density: float, total: int) -> int:
    """The number of weights a density keeps: round(density x total)."""
    return int(round(density * total))


def allocate_counts(layer_densities: Sequence[float], totals: Sequence[int], total_kept: int,
                    caps: Sequence[int] | None = None) -> list[int]:
    """Integer kept counts per layer close to density x size whose sum is exactly `total_kept`.

    Largest-remainder rounding: floor every ideal count, then give the leftover weights to the layers
    with the largest fractional parts (ties to the earlier layer), never above a layer's size nor its
    cap. `caps` are the weights each layer still has in iterative pruning: rounding can ask a layer
    for one weight more than it kept in the previous round, and that weight goes to another layer
    instead of being lost from the total.
    """
    limits = list(totals) if caps is None else [min(int(c), n) for c, n in zip(caps, totals)]
    ideal = [min(max(d, 0.0), 1.0) * n for d, n in zip(layer_densities, totals)]
    counts = [min(int(math.floor(x)), c) for x, c in zip(ideal, limits)]
    leftover = total_kept - sum(counts)
    order = sorted(range(len(totals)), key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
    while leftover > 0:
        progressed = False
        for i in order:
            if leftover == 0:
                break
            if counts[i] < limits[i]:
                counts[i] += 1
                leftover -= 1
                progressed = True
        if not progressed:
            break
    while leftover < 0:  # only when ideal counts exceed total_kept (densities sum too high)
        for i in reversed(order):
            if leftover == 0:
                break
            if counts[i] > 0:
                counts[i] -= 1
                leftover += 1
    return counts


def erk_densities(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Erdos-Renyi-Kernel layer densities (Evci et al. 2020, RigL) whose weighted mean is `density`.

    Density of a layer is proportional to (sum of its tensor's dimensions) / (product of them); layers
    that would exceed 1 are made dense and the factor is solved again for the rest.
    """
    totals = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]
    budget = density * sum(totals)
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        if not free:
            return [1.0] * len(shapes)
        remaining = budget - sum(totals[i] for i in dense)
        epsilon = remaining / sum(raw[i] * totals[i] for i in free)
        too_dense = [i for i in free if epsilon * raw[i] > 1.0]
        if not too_dense:
            return [1.0 if i in dense else epsilon * raw[i] for i in range(len(shapes))]
        dense.update(too_dense)


# ---- exact top-k selection ----------------------------------------------------------------------
def _top_k_flat(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest entries of a 1-D tensor; ties go to the lower index."""
    n = flat.numel()
    keep = torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k <= 0:
        return keep
    if k >= n:
        keep.fill_(True)
        return keep
    if flat.is_cuda:
        # A stable descending sort is sub-millisecond on a GPU for millions of entries and breaks ties
        # by index, which is what we want.
        order = torch.sort(flat, descending=True, stable=True).indices
        keep[order[:k]] = True
        return keep
    # On a CPU a full sort of millions of scores costs ~1 s; kthvalue (quickselect) finds the threshold
    # in one pass, then ties at the threshold are resolved by index.
    threshold = torch.kthvalue(flat, n - k + 1).values
    keep = flat > threshold
    missing = k - int(keep.sum())
    if missing > 0:
        ties = torch.nonzero(flat == threshold).flatten()[:missing]
        keep[ties] = True
    return keep


def select_top_k(scores: Mapping[str, torch.Tensor], k: int,
                 candidates: Mapping[str, torch.Tensor] | None = None,
                 gather_candidates: bool | None = None) -> Masks:
    """Keep exactly k weights with the highest scores across all tensors (global ranking).

    Only `candidates` (bool masks) may be kept when given; if there are fewer candidates than k, all
    of them are kept. NaN scores rank lowest; ties go to the earlier tensor and index.
    `gather_candidates` picks the strategy (same result): rank only the gathered candidates (default on
    a CPU) or rank every weight with non-candidates at -inf (default on a GPU).
    """
    names = list(scores)
    first = scores[names[0]]
    if candidates is not None:
        k = min(k, int(sum(candidates[n].sum() for n in names)))
    if gather_candidates is None:
        gather_candidates = not first.is_cuda
    if candidates is None or not gather_candidates:
        # On a GPU, rank everything with non-candidates at -inf: no host synchronisation per tensor.
        values = []
        for name in names:
            s = _rankable(scores[name]).flatten()
            if candidates is not None:
                s = torch.where(candidates[name].flatten(), s, torch.full_like(s, -math.inf))
            values.append(s)
        keep = _top_k_flat(torch.cat(values), k)
        masks: Masks = {}
        offset = 0
        for name in names:
            n = scores[name].numel()
            masks[name] = keep[offset:offset + n].view(scores[name].shape)
            offset += n
        return masks
    # On a CPU, rank only the candidates: in iterative pruning most weights are already gone, and integer
    # indices gather and scatter several times faster than boolean masks there.
    positions = [candidates[n].flatten().nonzero().squeeze(1) for n in names]
    values = [_rankable(scores[n]).flatten().index_select(0, index) for n, index in zip(names, positions)]
    keep = _top_k_flat(torch.cat(values), k)
    masks = {}
    offset = 0
    for name, index in zip(names, positions):
        chosen = keep[offset:offset + index.numel()]
        offset += index.numel()
        mask = torch.zeros(scores[name].numel(), dtype=torch.bool, device=chosen.device)
        mask[index[chosen]] = True
        masks[name] = mask.view(scores[name].shape)
    return masks


def _rankable(score: torch.Tensor) -> torch.Tensor:
    """Scores as a dtype `sort`/`kthvalue` handle exactly, with NaN ranked lowest."""
    score = score.detach()
    if score.dtype in (torch.float16, torch.bfloat16):
        score = score.float()
    if not score.is_floating_point():
        return score
    # NaN ranks below every real score but above the -inf that marks a non-candidate.
    lowest = torch.finfo(score.dtype).min
    return torch.nan_to_num(score, nan=lowest, posinf=torch.finfo(score.dtype).max, neginf=lowest)


def select_per_layer(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int],
                     candidates: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """Keep exactly counts[name] weights of each tensor, the highest-scoring ones within that tensor."""
    return {name: select_top_k({name: scores[name]}, counts[name],
                               None if candidates is None else {name: candidates[name]})[name]
            for name in scores}


# ---- attaching masks to a model -------------------------------------------------------------------
def _mask_gradient(module: nn.Module):
    def hook(weight: torch.Tensor) -> None:
        mask = getattr(module, MASK_BUFFER, None)
        if weight.grad is not None and mask is not None:
            weight.grad.mul_(mask)

    return hook


def attach_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights and keep them zero in any later training.

    Each masked module gets a non-persistent `weight_mask` buffer (it follows `.to(device)`) and a
    hook that zeroes the gradient of pruned weights as soon as it is accumulated. With zero weights
    and zero gradients, SGD (momentum, Nesterov, weight decay) and Adam/AdamW leave them at exactly 0.
    Calling it again replaces the masks; unmentioned tensors stay as they are.
    """
    by_name = {name: (module, weight) for name, module, weight in prunable_weights(model)}
    unknown = sorted(set(masks) - set(by_name))
    if unknown:
        raise ValueError(f"masks name tensors the model has no prunable weight for: {', '.join(unknown[:5])}")
    for name, mask in masks.items():
        module, weight = by_name[name]
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}")
        mask = mask.to(device=weight.device, dtype=torch.bool)
        if MASK_BUFFER in module._buffers:
            module._buffers[MASK_BUFFER] = mask
        else:
            module.register_buffer(MASK_BUFFER, mask, persistent=False)
        if not getattr(weight, "_pruning_hook", False):
            weight.register_post_accumulate_grad_hook(_mask_gradient(module))
            weight._pruning_hook = True  # type: ignore[attr-defined]
        with torch.no_grad():
            weight.mul_(mask)


def attached_masks(model: nn.Module) -> Masks:
    """The masks attached to a model by `attach_masks` (empty if it was never pruned)."""
    return {name: getattr(module, MASK_BUFFER) for name, module, _ in prunable_weights(model)
            if getattr(module, MASK_BUFFER, None) is not None}


@torch.no_grad()
def enforce_masks(model: nn.Module) -> None:
    """Multiply every masked weight by its mask again (cheap insurance after custom weight updates)."""
    for _, module, weight in prunable_weights(model):
        mask = getattr(module, MASK_BUFFER, None)
        if mask is not None:
            weight.mul_(mask)


def detach_masks(model: nn.Module) -> None:
    """Forget the attached masks (weights keep their current values; the hooks become no-ops)."""
    for _, module, _ in prunable_weights(model):
        if MASK_BUFFER in module._buffers:
            del module._buffers[MASK_BUFFER]


def density_of(masks: Mapping[str, torch.Tensor]) -> float:
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return kept / total if total else 1.0


def shuffle_within_layers(masks: Mapping[str, torch.Tensor], generator: torch.Generator) -> Masks:
    """Randomly permute each tensor's mask: layer densities stay, the choice of weights is random."""
    shuffled = {}
    for name, mask in masks.items():
        perm = torch.randperm(mask.numel(), generator=generator).to(mask.device)
        shuffled[name] = mask.flatten()[perm].view(mask.shape)
    return shuffled


def all_kept(weights: Sequence[tuple[str, torch.Tensor]]) -> Masks:
    return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights}
