"""Pruning methods that score weights by the training dynamics they predict: the path kernel and the
neural tangent kernel (SynFlow-L2, NTK-SAP, PX) or the loss after a few training steps (ProsPr).

They register into the same `METHODS` registry as `methods.py` (the package imports this module, so
`pc.METHODS` always lists them) and follow its conventions: higher score = keep, the model is never
changed (forward passes run through `torch.func.functional_call` on copies), pruned weights score 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pruning_core.engine.masks import Masks
from pruning_core.engine.methods import ScoringContext, denormals_flushed, flow_is_representable, method

NTK_SAP_EPSILON = 0.01        # the paper's perturbation scale
NTK_SAP_BATCH = 4             # Gaussian inputs per draw (ours: CPU-friendly)
NTK_SAP_REDRAWS = 8           # draws averaged per round (ours: one per round is too noisy, see ntk_sap)
PROSPR_STEPS = 3              # the paper's inner training steps
PROSPR_LR = 0.01              # inner SGD learning rate (ours: 0.1 diverges on VGG-16 at init)


# ---- linearised networks on squared weights (SynFlow-L2, PX) ------------------------------------------
def squared_state(model: nn.Module, weight_names: Sequence[str] | None = None,
                  dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """value² of every floating parameter and buffer in `dtype`; the prunable weights require grad.

    Squaring BatchNorm's running variance too makes its eval-mode scale γ²/√(σ⁴ + eps) ≈ (γ/σ)², the
    square of the layer's real scale, so a path's value is the product of its squared effective weights.
    """
    state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        state[name] = p.detach().to(dtype).square()
        if weight_names is None or name in weight_names:
            state[name].requires_grad_(True)
    for name, b in model.named_buffers():
        state[name] = b.detach().to(dtype).square() if b.is_floating_point() else b
    return state


class ReluGates:
    """Record the 0/1 output pattern of every `nn.ReLU` call in one forward pass, then replay it as fixed
    gates (ReLU output times the recorded pattern) in a later pass of the same shape.

    Calls are matched by order, so a ReLU module used twice in one forward (ResNet blocks) gets two
    patterns. Activations applied functionally (`F.relu` inside a forward) are not seen and stay ungated.
    """

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        self.patterns: list[torch.Tensor] = []
        self.replaying = False
        self.position = 0
        self.handles: list[Any] = []

    def __enter__(self) -> Self:
        self.handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def replay(self) -> None:
        self.replaying, self.position = True, 0

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if not self.replaying:
            self.patterns.append(output.detach() > 0)
            return None
        pattern = self.patterns[self.position]
        self.position += 1
        return output * pattern.to(output.dtype)


def _linearised_flow(model: nn.Module, state: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """Sum of the output of `model` run with `state` (eval mode, no autocast), per input sample."""
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            return functional_call(model, state, (inputs,)).sum() / inputs.shape[0]
    finally:
        model.train(was_training)


def _squared_state_for_round(ctx: ScoringContext, masks: Masks, key: str) -> dict[str, torch.Tensor]:
    """The cached squared state in float32 (float64 once a round needed it, or by option), masked in place:
    masks only shrink from round to round, so the cache stays valid."""
    precision = ctx.options.get("precision", "auto")
    if precision not in ("auto", "float32", "float64"):
        raise ValueError(f"{key} precision must be 'auto', 'float32' or 'float64', got {precision!r}")
    dtype = torch.float64 if precision == "float64" or ctx.cache.get(f"{key}_float64") else torch.float32
    if ctx.cache.get(f"{key}_dtype") != dtype:
        ctx.cache[f"{key}_state"] = squared_state(ctx.model, list(ctx.weights), dtype)
        ctx.cache[f"{key}_dtype"] = dtype
    state = ctx.cache[f"{key}_state"]
    with torch.no_grad():
        for name in masks:
            state[name].mul_(masks[name])
    return state


def _retry_in_float64(ctx: ScoringContext, key: str, flow: torch.Tensor, scores: dict[str, torch.Tensor]) -> bool:
    """True (and float64 from now on) when a float32 round's flow or scores left float32's safe range."""
    if ctx.cache[f"{key}_dtype"] != torch.float32 or ctx.options.get("precision", "auto") != "auto":
        return False
    if flow_is_representable(flow, scores):
        return False
    ctx.cache[f"{key}_float64"] = True
    return True


@method("synflow_l2", label="SynFlow-L2",
        summary="Data-free: SynFlow on squared weights, the trace of the path kernel; avoids layer collapse.",
        paper="Gebhart et al. 2021, 'A Unified Paths Perspective for Pruning at Initialization' (arXiv 2101.10552)",
        formula="θ² ⊙ ∂R₂/∂θ², R₂ = 1ᵀ(∏ₗ Wₗ²)1 on an all-ones input", needs_data=False, default_iterations=100)
def synflow_l2(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """SynFlow-L2 (Gebhart et al. 2021): SynFlow with every weight squared instead of made positive.
    The network with each parameter and buffer replaced by its square (BatchNorm in eval mode) is run
    on an all-ones input of batch 1; R₂ = 1ᵀ(∏ₗ Wₗ²)1, the sum of the output, is the sum over all
    input-output paths of the product of their squared weights: the trace of the path kernel, which
    with the activation patterns makes up the neural tangent kernel. Each weight scores
    θ² ⊙ ∂R₂/∂θ² (= ½ |θ ⊙ ∂R₂/∂θ|, the same ranking), its share of R₂; a layer's scores sum to R₂
    (conservation, as in SynFlow), and 100 rounds on the exponential schedule avoid layer collapse.
    Needs no data. Computed in float32 while R₂ stays far inside its range, in float64 otherwise
    (option precision="float64" forces it). The PX authors' code ranks by |θ| ⊙ ∂R₂/∂θ² instead (= ½|∂R₂/∂θ|,
    no conservation; about 84% of the same weights kept on ResNet-20)."""
    state = _squared_state_for_round(ctx, masks, "synflow_l2")
    names = list(masks)
    reference = state[names[0]]
    ones = torch.ones((1, *ctx.input_shape), dtype=reference.dtype, device=reference.device)
    with denormals_flushed(ctx.device):
        flow = _linearised_flow(ctx.model, state, ones)
        grads = torch.autograd.grad(flow, [state[n] for n in names])
    scores = {n: g.mul_(state[n].detach()) for n, g in zip(names, grads)}
    if _retry_in_float64(ctx, "synflow_l2", flow.detach(), scores):
        return synflow_l2(ctx, masks)
    return scores


@method("px", label="PX (Path eXclusion)",
        summary="Keeps the weights carrying most of an NTK-trace bound: path kernel gated by the data's ReLU "
                "patterns.",
        paper="Iurada et al. 2024, 'Finding Lottery Tickets in Vision Models via Data-driven Spectral Foresight "
              "Pruning' (CVPR)",
        formula="θ² ⊙ ∂R/∂θ², R = mean over data x of 1ᵀ f(x²; θ², ReLU gates of the real net on x)",
        needs_data=True, default_iterations=100)
def px(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """PX, Path eXclusion (Iurada et al. 2024): the NTK Θ(x, x) = J_v(x) Π J_v(x)ᵀ splits into the path
    kernel Π (weights only) and J_v(x), whose entry for a path is the path's input value times its
    activation pattern on x (data only). PX keeps the weights that contribute most to a bound of its
    trace built from both. Implemented variant (our reading of the paper's bound, written from the paper,
    not from the authors' code): every parameter and buffer is squared, as in SynFlow-L2; each nn.ReLU
    becomes a fixed gate, the 0/1 activation pattern of the current pruned network θ ⊙ m on a real
    sample x; the squared input x² is fed in. R = mean over the pruning samples of the output's sum =
    Σ over paths of (x_i · gates)² ∏ θ², and each weight scores θ² ⊙ ∂R/∂θ² (= ½ |θ ⊙ ∂R/∂θ|, the same
    ranking), its share of R (in a bias-free chain, every layer's scores sum to R). With every gate open
    and an all-ones input this is SynFlow-L2. Iterative, 100 rounds on the exponential schedule as for
    SynFlow, the gates recomputed on the pruned network every round, on all pruning batches. Simplifications
    the paper's bound may not make: max-pooling in the squared network takes its own maximum rather than
    the data's argmax, activations applied functionally (F.relu) are not gated, and the paper's exact
    normalisation and treatment of the input may differ from x². Known to differ from the authors' public
    code (iurada/px-ntk-pruning), which factorises R as Σ_c w_c · z_c: w the no-grad output, summed over
    the batch, of a copy with the mask as weights, no biases and identity BatchNorm, gated by the real
    network's ReLUs on x²; z the squared network on an all-ones input; it also draws fresh batches every
    round. Our variant's masks overlap theirs by about 55% on ResNet-20 (issue 14). Float32 while R stays
    far inside its range, float64 otherwise (option precision)."""
    state = _squared_state_for_round(ctx, masks, "px")
    names = list(masks)
    reference = state[names[0]]
    pruned = ctx.masked_weights(masks)
    batches = ctx.round_batches()
    samples = sum(x.shape[0] for x, _ in batches)
    totals = [torch.zeros_like(state[n]) for n in names]
    flow = torch.zeros((), dtype=reference.dtype, device=reference.device)
    with denormals_flushed(ctx.device):
        for inputs, _ in batches:
            with ReluGates(ctx.model) as gates:
                with torch.no_grad():
                    ctx.forward(pruned, inputs)
                gates.replay()
                squared_inputs = inputs.detach().to(reference.dtype).square()
                part = _linearised_flow(ctx.model, state, squared_inputs) * (inputs.shape[0] / samples)
            grads = torch.autograd.grad(part, [state[n] for n in names])
            totals = [t + g for t, g in zip(totals, grads)]
            flow = flow + part.detach()
    scores = {n: g.mul_(state[n].detach()) for n, g in zip(names, totals)}
    if _retry_in_float64(ctx, "px", flow, scores):
        return px(ctx, masks)
    return scores


# ---- NTK-SAP ------------------------------------------------------------------------------------------
def _positive_number(ctx: ScoringContext, method_name: str, key: str, default: float, whole: bool = False) -> Any:
    value = ctx.options.get(key, default)
    kind = "a whole number >= 1" if whole else "a number > 0"
    valid = (isinstance(value, int) and value >= 1) if whole else \
        (isinstance(value, (int, float)) and math.isfinite(value) and value > 0)
    if isinstance(value, bool) or not valid:
        raise ValueError(f"{method_name} option {key} must be {kind}, got {value!r}")
    return value


def ntk_sap_draws(weights: dict[str, torch.Tensor], spreads: dict[str, float], input_shape: Sequence[int],
                  batch_size: int, generator: torch.Generator
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """One NTK-SAP sample, drawn in this order from `generator`: fresh weights θ ~ N(0, spread²) per tensor,
    perturbation directions δ ~ N(0, I) per tensor, then a batch of Gaussian inputs x ~ N(0, I)."""
    thetas = {n: torch.randn(w.shape, generator=generator).to(w) * spreads[n] for n, w in weights.items()}
    deltas = {n: torch.randn(w.shape, generator=generator).to(w) for n, w in weights.items()}
    reference = next(iter(weights.values()))
    inputs = torch.randn((batch_size, *input_shape), generator=generator).to(reference)
    return thetas, deltas, inputs


def ntk_sap_saliency(ctx: ScoringContext, masks: Masks, thetas: dict[str, torch.Tensor],
                     deltas: dict[str, torch.Tensor], inputs: torch.Tensor, epsilon: float) -> dict[str, torch.Tensor]:
    """∂Φ/∂m at the current mask m for Φ(m) = mean over x of ‖f(x; θ ⊙ m) − f(x; (θ + εδ) ⊙ m)‖² / ε²,
    the finite-difference estimate of ‖∂f/∂θ · δ‖² on the masked network (signed: callers take |·|)."""
    gates = {n: masks[n].to(thetas[n].dtype).requires_grad_(True) for n in masks}
    plain = {n: thetas[n] * gates[n] for n in masks}
    moved = {n: (thetas[n] + epsilon * deltas[n]) * gates[n] for n in masks}
    difference = ctx.forward(plain, inputs) - ctx.forward(moved, inputs)
    objective = difference.square().sum() / (inputs.shape[0] * epsilon ** 2)
    grads = torch.autograd.grad(objective, [gates[n] for n in masks])
    return dict(zip(masks, grads))


def _layer_spreads(ctx: ScoringContext) -> dict[str, float]:
    """Each layer's init spread (std of its original weights): the distribution NTK-SAP redraws from."""
    if "ntk_sap_spreads" not in ctx.cache:
        ctx.cache["ntk_sap_spreads"] = {n: float(w.detach().float().std()) if w.numel() > 1 else
                                        float(w.detach().abs().max()) for n, w in ctx.weights.items()}
    return ctx.cache["ntk_sap_spreads"]


@method("ntk_sap", label="NTK-SAP",
        summary="Data-free: keeps the weights that most shape the neural tangent kernel, on random inputs "
                "and random weights.",
        paper="Wang et al. 2023, 'NTK-SAP: Improving Neural Network Pruning by Aligning Training Dynamics' (ICLR)",
        formula="|∂/∂m E ‖f(x; θ⊙m) − f(x; (θ+εδ)⊙m)‖²|, x, δ ~ N(0, I), θ redrawn from the init, ε = 0.01",
        needs_data=False, default_iterations=100)
def ntk_sap(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """NTK-SAP (Wang et al. 2023): keeps the weights whose removal would change the spectrum of the
    neural tangent kernel most, measured through its trace (the sum of its eigenvalues) ‖∂f/∂θ‖²_F,
    estimated by finite differences as ‖f(x; θ ⊙ m) − f(x; (θ + εδ) ⊙ m)‖² / ε² with δ ~ N(0, I) and
    ε = 0.01, the paper's perturbation scale (option epsilon); each weight scores |∂/∂m| of the
    estimate. Data-free and weight-agnostic as in the paper: the inputs are standard Gaussian noise and
    every draw takes fresh weights θ from the initial distribution (a zero-mean normal with each layer's
    own init spread), so the mask does not depend on one initialisation. Iterative: 100 rounds on the
    exponential schedule, the paper's setting. Our defaults, not the paper's: each round averages the
    mask gradient of 8 draws (option redraws) of weights, perturbation and 4 Gaussian inputs (option
    batch_size) before taking |·|. As we read the paper it draws one initialisation per round; that
    estimate is unbiased but so noisy that |·| favours the first layers, and in our tests one draw per
    round collapsed the digits MLP and CNN below 70% sparsity where eight draws held out about as long
    as SynFlow. Only the prunable weights are redrawn and perturbed (biases and BatchNorm keep the
    model's values). Deterministic for a fixed seed. Known to differ from the authors' public code
    (YiteWang/NTK-SAP): there every draw first recalibrates BatchNorm on its Gaussian batch (a train-mode
    forward with momentum 1, then both forwards in eval mode), which keeps far more early-layer weights;
    here BatchNorm follows pc.prune's train_mode. Their script's setting is 20 rounds of 5 draws of
    10 x classes inputs, not one draw per round (issue 14)."""
    epsilon = float(_positive_number(ctx, "ntk_sap", "epsilon", NTK_SAP_EPSILON))
    batch_size = _positive_number(ctx, "ntk_sap", "batch_size", NTK_SAP_BATCH, whole=True)
    redraws = _positive_number(ctx, "ntk_sap", "redraws", NTK_SAP_REDRAWS, whole=True)
    spreads = _layer_spreads(ctx)
    totals = {n: torch.zeros_like(w, dtype=w.dtype) for n, w in ctx.weights.items()}
    for _ in range(redraws):
        thetas, deltas, inputs = ntk_sap_draws(dict(ctx.weights), spreads, ctx.input_shape, batch_size,
                                               ctx.generator)
        for name, grad in ntk_sap_saliency(ctx, masks, thetas, deltas, inputs, epsilon).items():
            totals[name] += grad
    return {n: (t / redraws).abs() * masks[n] for n, t in totals.items()}


# ---- ProsPr -------------------------------------------------------------------------------------------
@method("prospr", label="ProsPr",
        summary="Keeps the weights whose removal would most change the loss after a few training steps "
                "(meta-gradient).",
        paper="Alizadeh et al. 2022, 'Prospect Pruning: Finding Trainable Weights at Initialization using "
              "Meta-Gradients' (ICLR)",
        formula="|∂L(θ_M)/∂m|, θ₀ = m ⊙ θ, θ_{k+1} = θ_k − α∇L(θ_k), M = 3 steps, α = 0.01", needs_data=True)
def prospr(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """ProsPr, prospect pruning (Alizadeh et al. 2022): SNIP looks at the loss at initialization; ProsPr
    looks at the loss after training has started. A mask m = 1 multiplies the initial weights,
    θ₀ = m ⊙ θ; M plain SGD steps θ_{k+1} = θ_k − α ∇L(θ_k; batch k) are taken through the masked
    network keeping the graph (create_graph), and each weight scores |∂L(θ_M; next batch)/∂m|, the
    meta-gradient through the whole training trajectory, second-order terms included. M = 3 steps (the
    paper's default; option steps); α = 0.01 (ours, option lr: 0.1 diverged within three steps on VGG-16
    at init; a diverged run raises a ValueError that says so). The steps are training steps: every
    parameter takes them (biases and BatchNorm too; pruned weights stay zero) and BatchNorm normalises
    with batch statistics whatever pc.prune's train_mode (the model's running statistics are untouched).
    Batches are used in turn, one per step and the next for the final loss, cyclically: with the single
    batch drawn from a dataset by default all four passes see the same batch, as in the authors' code by
    default; prune_batches=4 gives each its own (their option for new data in the inner loop). The authors'
    code takes α = 0.1 (issue 14: on ResNet-20 the two rates keep 40-55% of the same weights). One-shot by
    default, as published (more rounds restart from
    θ ⊙ m each round). Memory grows with M: the graph of every step's forward and backward pass is kept
    until the meta-gradient is taken, about 2M + 1 times SNIP's activation memory (VGG-16-BN, batch 256,
    CPU: 6.4 GB peak resident memory)."""
    steps = _positive_number(ctx, "prospr", "steps", PROSPR_STEPS, whole=True)
    lr = float(_positive_number(ctx, "prospr", "lr", PROSPR_LR))
    training = dataclasses.replace(ctx, train_mode=True)  # BatchNorm on batch statistics, as in training
    batches = ctx.batches
    offset = ctx.round * (steps + 1)
    gates = {n: torch.ones_like(w, dtype=w.dtype).requires_grad_(True) for n, w in ctx.weights.items()}
    params: dict[str, torch.Tensor] = {n: p.detach() for n, p in ctx.model.named_parameters() if p.requires_grad}
    current = {n: (params[n] * masks[n] * gates[n] if n in masks else params[n].requires_grad_(True))
               for n in params}
    for step in range(steps):
        inputs, targets = batches[(offset + step) % len(batches)]
        loss = F.cross_entropy(training.forward(current, inputs), targets)
        grads = torch.autograd.grad(loss, list(current.values()), create_graph=True, allow_unused=True)
        current = {n: w if g is None else w - lr * (g * masks[n] if n in masks else g)
                   for (n, w), g in zip(current.items(), grads)}
    inputs, targets = batches[(offset + steps) % len(batches)]
    meta_loss = F.cross_entropy(training.forward(current, inputs), targets)
    if not bool(torch.isfinite(meta_loss)):
        raise ValueError(f"prospr's {steps} inner training steps diverged (loss {float(meta_loss.detach())}): "
                         f"lower its learning rate, options={{'lr': ...}} (now {lr})")
    grads = torch.autograd.grad(meta_loss, list(gates.values()), allow_unused=True)
    return {n: torch.zeros_like(gates[n]) if g is None else g.abs() * masks[n] for n, g in zip(gates, grads)}
