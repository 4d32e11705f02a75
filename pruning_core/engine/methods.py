"""Pruning methods: one scoring function each, registered in `METHODS`.

Every score follows one convention: higher = keep. `pc.prune` calls a method's function once per
round with the current masks and keeps the highest-scoring weights (or, for the sanity check
`invert`, the lowest). Adding a method means writing one function with a docstring that states its
score and paper, and one `@method(...)` line; the dashboard, CLI and tests list it from `METHODS`.

Scoring never changes the model: weights are read from it and the forward passes run through
`torch.func.functional_call` with masked or transformed copies.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pruning_core.engine.masks import Masks, erk_densities
from pruning_core.registry import Registry


@dataclass
class ScoringContext:
    """What a scoring function may read: the model, its prunable weights (the original values), the
    pruning data already on the model's device, and a seeded generator."""

    model: nn.Module
    weights: dict[str, nn.Parameter]
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    input_shape: tuple[int, ...]
    generator: torch.Generator
    train_mode: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    round: int = 0          # 0-based index of the current round
    rounds: int = 1
    batches_per_round: int | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # per-prune state a method keeps across rounds
    dataset: Any = None     # the pc Dataset when pc.prune was given one (methods that train need it)
    seed: int = 0           # pc.prune's seed (methods that train seed their own generators with it)

    @property
    def device(self) -> torch.device:
        return next(iter(self.weights.values())).device

    def round_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """All batches, or `batches_per_round` of them taken cyclically so each round sees new data."""
        if not self.batches_per_round or not self.batches:
            return self.batches
        n = len(self.batches)
        start = self.round * self.batches_per_round
        return [self.batches[(start + i) % n] for i in range(self.batches_per_round)]

    def forward(self, weights: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Run the model with `weights` in place of its own prunable weights, leaving the model untouched."""
        overrides: dict[str, torch.Tensor] = dict(weights)
        was_training = self.model.training
        self.model.train(self.train_mode)
        try:
            if self.train_mode:
                # Train-mode BatchNorm updates running statistics in place: give it copies.
                overrides.update({n: b.clone() for n, b in self.model.named_buffers()})
            return functional_call(self.model, overrides, (inputs,))
        finally:
            self.model.train(was_training)

    def masked_weights(self, masks: Masks) -> dict[str, torch.Tensor]:
        """Leaf tensors theta * mask that require grad (the pruned network's weights)."""
        return {n: (w.detach() * masks[n]).requires_grad_(True) for n, w in self.weights.items()}


ScoreFunction = Callable[[ScoringContext, Masks], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class MethodSpec:
    """A registry entry: everything the dashboard and CLI need to list and explain a method."""

    name: str
    label: str
    summary: str                 # one line
    paper: str                   # citation
    formula: str                 # the score, in plain text / unicode
    score: ScoreFunction | None
    needs_data: bool
    default_iterations: int = 1
    revives: bool = False        # pruned weights may come back in a later round (FORCE)
    batches_per_round: int | None = None   # None: every round scores on all pruning batches
    balanced_data: bool = False  # prefers a class-balanced batch (GraSP)
    layer_densities: Callable[[Sequence[Sequence[int]], float], list[float]] | None = None  # fixed per-layer densities
    run: Callable[..., Any] | None = None  # whole-procedure methods that train to find masks (IMP, GemMiner)

    @property
    def explanation(self) -> str:
        """The plain-language paragraph (the function's docstring)."""
        fn = self.score or self.run
        return inspect.cleandoc(fn.__doc__ or "") if fn else ""


METHODS: Registry[MethodSpec] = Registry("method")


def method(name: str, **spec: Any) -> Callable[[ScoreFunction], ScoreFunction]:
    """Register a scoring function under `name` with the MethodSpec fields given."""
    return METHODS.decorator(name, lambda fn: MethodSpec(name=name, score=fn, **spec))


def _cross_entropy_gradient(ctx: ScoringContext, weights: dict[str, torch.Tensor],
                            batches: list[tuple[torch.Tensor, torch.Tensor]], temperature: float = 1.0,
                            create_graph: bool = False) -> list[torch.Tensor]:
    """Gradient of the summed per-batch mean cross-entropy with respect to `weights`."""
    params = list(weights.values())
    total = [torch.zeros_like(p) for p in params]
    for inputs, targets in batches:
        loss = F.cross_entropy(ctx.forward(weights, inputs) / temperature, targets)
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        total = [t + g for t, g in zip(total, grads)]
    return total


# ---- data-free baselines ----------------------------------------------------------------------------
def _uniform(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    return [density] * len(shapes)


@method("random", label="Random", summary="Keeps a random subset of each layer, every layer at the same density.",
        paper="Baseline; e.g. Frankle et al. 2021, 'Pruning Neural Networks at Initialization: Why are We "
              "Missing the Mark?' (ICLR)",
        formula="score ~ U(0, 1); every layer keeps the same fraction", needs_data=False,
        layer_densities=_uniform)
def random_scores(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """Random pruning with uniform layer densities: every weight gets an independent uniform random
    score and each layer keeps the same fraction of its weights. The baseline every method must beat;
    it never collapses a layer before the network is almost empty."""
    return {n: torch.rand(w.shape, generator=ctx.generator).to(ctx.device) for n, w in ctx.weights.items()}


@method("random_erk", label="Random (ERK)", summary="Random weights within Erdos-Renyi-Kernel layer densities.",
        paper="Evci et al. 2020, 'Rigging the Lottery: Making All Tickets Winners' (ICML)",
        formula="score ~ U(0, 1); layer density ∝ (sum of dims) / (product of dims)", needs_data=False,
        layer_densities=erk_densities)
def random_erk(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """Random pruning with Erdos-Renyi-Kernel layer densities (Evci et al. 2020, RigL): a layer's
    density is proportional to the sum of its tensor's dimensions divided by their product, so small
    layers (first conv, classifier) stay denser than the wide middle layers; layers that would exceed
    density 1 stay dense. Inside each layer the kept weights are random."""
    return random_scores(ctx, masks)


@method("magnitude", label="Magnitude", summary="Keeps the weights with the largest absolute value.",
        paper="Han et al. 2015, 'Learning both Weights and Connections for Efficient Neural Networks' (NeurIPS); "
              "at initialization as a baseline in Frankle et al. 2021",
        formula="|θ|", needs_data=False)
def magnitude(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """Magnitude pruning: score |θ|. At initialization this mostly reflects each layer's init scale,
    so with a global ranking it empties the layers with the smallest init variance (the wide ones)
    first and collapses them at high compression."""
    return {n: (w.detach() * masks[n]).abs() for n, w in ctx.weights.items()}


# ---- data-driven scores ------------------------------------------------------------------------------
@method("snip", label="SNIP", summary="Keeps the weights whose removal would change the loss most.",
        paper="Lee et al. 2019, 'SNIP: Single-shot Network Pruning based on Connection Sensitivity' (ICLR)",
        formula="|θ ⊙ ∂L/∂θ|  (= |∂L/∂m| for a mask m)", needs_data=True)
def snip(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """SNIP (Lee et al. 2019): connection sensitivity |θ ⊙ ∂L/∂θ|, the magnitude of the loss's
    derivative with respect to a multiplicative mask on each weight, from the cross-entropy loss
    summed over the pruning batches. One-shot by default. (The paper scores a copy re-initialised
    with Xavier; here the model's own initial weights are scored, as in the SynFlow experiments.)"""
    weights = ctx.masked_weights(masks)
    grads = _cross_entropy_gradient(ctx, weights, ctx.round_batches())
    return {n: (w.detach() * g).abs() for (n, w), g in zip(weights.items(), grads)}


@method("grasp", label="GraSP", summary="Keeps the weights that preserve gradient flow after pruning.",
        paper="Wang et al. 2020, 'Picking Winning Tickets Before Training by Preserving Gradient Flow' (ICLR)",
        formula="θ ⊙ Hg, g = ∂L/∂θ with logits / 200 (the paper removes the largest −θ ⊙ Hg)",
        needs_data=True, balanced_data=True)
def grasp(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """GraSP (Wang et al. 2020): with logits divided by a temperature (200, as in the authors' code),
    g = ∂L/∂θ is computed and held fixed, then Hg (the Hessian-gradient product) is obtained by
    differentiating g·∇L. The authors score −θ ⊙ Hg and remove the largest scores, i.e. the weights
    whose removal would reduce gradient flow least; in our higher-is-kept convention the score is
    θ ⊙ Hg. Signed, as published (option absolute=True ranks |θ ⊙ Hg|). Prefers class-balanced data
    (10 samples per class)."""
    temperature = float(ctx.options.get("temperature", 200.0))
    weights = ctx.masked_weights(masks)
    batches = ctx.round_batches()
    stopped = [g.detach() for g in _cross_entropy_gradient(ctx, weights, batches, temperature)]
    params = list(weights.values())
    hg = [torch.zeros_like(p) for p in params]
    for inputs, targets in batches:
        loss = F.cross_entropy(ctx.forward(weights, inputs) / temperature, targets)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        inner = sum((g * s).sum() for g, s in zip(grads, stopped))
        hg = [h + d for h, d in zip(hg, torch.autograd.grad(inner, params))]
    scores = {n: w.detach() * h for (n, w), h in zip(weights.items(), hg)}
    if ctx.options.get("absolute", False):
        scores = {n: s.abs() for n, s in scores.items()}
    return scores


@method("iter_snip", label="Iterative SNIP",
        summary="SNIP re-scored over many rounds on the surviving network; pruned weights never return.",
        paper="de Jorge et al. 2021, 'Progressive Skeletonization: Trimming more fat from a network at "
              "initialization' (ICLR)",
        formula="|θ ⊙ ∂L/∂θ| at θ ⊙ m, pruned weights excluded", needs_data=True, default_iterations=60,
        batches_per_round=1)
def iter_snip(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """Iterative SNIP (de Jorge et al. 2021): SNIP's |θ ⊙ ∂L/∂θ| recomputed on the pruned network
    every round (one batch per round, exponential schedule, 60 rounds by default). Pruned weights get
    the lowest possible saliency, so once removed a weight never comes back. Reaches far higher
    compression than one-shot SNIP before collapsing."""
    return snip(ctx, masks)


@method("force", label="FORCE",
        summary="Progressive SNIP where pruned weights can come back if they become important again.",
        paper="de Jorge et al. 2021, 'Progressive Skeletonization: Trimming more fat from a network at "
              "initialization' (ICLR)",
        formula="|θ₀ ⊙ ∂L/∂θ| evaluated at θ₀ ⊙ m, every weight ranked", needs_data=True,
        default_iterations=60, revives=True, batches_per_round=1)
def force(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """FORCE (foresight connection sensitivity, de Jorge et al. 2021): the gradient of the loss is
    taken at the pruned network θ₀ ⊙ m, but every weight, pruned or not, is scored |θ₀ ⊙ ∂L/∂θ| with
    its original value θ₀, so a pruned weight can be revived in a later round. Exponential schedule,
    one batch per round, 60 rounds by default."""
    weights = ctx.masked_weights(masks)
    grads = _cross_entropy_gradient(ctx, weights, ctx.round_batches())
    return {n: (ctx.weights[n].detach() * g).abs() for n, g in zip(weights, grads)}


# ---- SynFlow ------------------------------------------------------------------------------------------
def synaptic_flow_scores(model: nn.Module, masks: Masks | None, input_shape: Sequence[int],
                         state: dict[str, torch.Tensor] | None = None
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """SynFlow scores |θ| ⊙ ∂R/∂|θ| and the synaptic flow R, without touching the model.

    R = sum of the output of the network run on an all-ones input of batch 1 with every parameter and
    floating buffer replaced by its absolute value (BatchNorm in eval mode). `state` (from
    `absolute_state`) holds those absolute values, in the dtype to compute in (float64 by default) and is
    multiplied by `masks` in place, so callers can reuse it across rounds in which masks only shrink.
    Never run this under fp16/bf16 autocast: R is ~1e22 for VGG-16-BN at init.
    """
    if state is None:
        state = absolute_state(model, list(masks) if masks is not None else None)
    names = list(masks) if masks is not None else [n for n, t in state.items() if t.requires_grad]
    if masks is not None:
        with torch.no_grad():
            for n in names:
                state[n].mul_(masks[n])
    reference = state[names[0]]
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device_type=reference.device.type, enabled=False):
            ones = torch.ones((1, *input_shape), dtype=reference.dtype, device=reference.device)
            flow = functional_call(model, state, (ones,)).sum()
            grads = torch.autograd.grad(flow, [state[n] for n in names])
    finally:
        model.train(was_training)
    scores = {n: g.mul_(state[n].detach()) for n, g in zip(names, grads)}
    return scores, flow.detach()


def absolute_state(model: nn.Module, weight_names: Sequence[str] | None = None,
                   dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """|value| of every floating parameter and buffer in `dtype`; the prunable weights require grad."""
    state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        state[name] = p.detach().to(dtype).abs()
        if weight_names is None or name in weight_names:
            state[name].requires_grad_(True)
    for name, b in model.named_buffers():
        state[name] = b.detach().to(dtype).abs() if b.is_floating_point() else b
    return state


def flow_is_representable(flow: torch.Tensor, scores: dict[str, torch.Tensor]) -> bool:
    """True when a synaptic flow and its scores lie far inside their dtype's range (else: use float64)."""
    finfo = torch.finfo(flow.dtype)
    # Far from both ends of the range, so that no path product overflowed or flushed to zero. One host
    # synchronisation per round: this runs in every SynFlow round.
    ok = torch.isfinite(flow) & (flow > finfo.tiny * 1e8) & (flow < finfo.max * 1e-8)
    for score in scores.values():
        ok = ok & torch.isfinite(score).all()
    return bool(ok)


@method("synflow", label="SynFlow",
        summary="Data-free: keeps the weights that carry the most synaptic flow; avoids layer collapse.",
        paper="Tanaka et al. 2020, 'Pruning neural networks without any data by iteratively conserving "
              "synaptic flow' (NeurIPS)",
        formula="|θ ⊙ ∂R/∂θ|, R = 1ᵀ(∏ₗ|Wₗ|)1 on an all-ones input", needs_data=False, default_iterations=100)
def synflow(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """SynFlow (Tanaka et al. 2020): every parameter is replaced by its absolute value, an all-ones
    input of batch 1 is fed through the network (BatchNorm in eval mode) and R, the sum of the output,
    is the synaptic flow; each weight scores |θ ⊙ ∂R/∂θ|. Needs no data. Scores of a layer sum to R
    (conservation), so iterating over 100 rounds on the exponential schedule balances the layers and
    avoids layer collapse. R grows geometrically with depth, so scores are computed in float32 only
    while R stays far inside its range and in float64 otherwise (option precision="float64" forces
    it): they never overflow to inf or NaN."""
    precision = ctx.options.get("precision", "auto")
    if precision not in ("auto", "float32", "float64"):
        raise ValueError(f"synflow precision must be 'auto', 'float32' or 'float64', got {precision!r}")
    dtype = torch.float64 if precision == "float64" or ctx.cache.get("synflow_float64") else torch.float32
    if ctx.cache.get("synflow_dtype") != dtype:
        ctx.cache["synflow_state"] = absolute_state(ctx.model, list(ctx.weights), dtype)
        ctx.cache["synflow_dtype"] = dtype
    with denormals_flushed(ctx.device):
        scores, flow = synaptic_flow_scores(ctx.model, masks, ctx.input_shape, ctx.cache["synflow_state"])
    if dtype == torch.float32 and precision == "auto" and not flow_is_representable(flow, scores):
        ctx.cache["synflow_float64"] = True
        return synflow(ctx, masks)
    return scores


class denormals_flushed:
    """Flush denormal floats to zero on the CPU while scoring: sparse networks produce many, and each
    costs ~100x a normal multiply (VGG-16 scoring ran 4x faster with this)."""

    def __init__(self, device: torch.device):
        self.active = device.type == "cpu"

    def __enter__(self):
        if self.active:
            self.active = torch.set_flush_denormal(True)

    def __exit__(self, *exc):
        if self.active:
            torch.set_flush_denormal(False)
