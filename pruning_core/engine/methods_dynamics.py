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
NTK_SAP_REDRAWS = 5           # draws averaged per round (the authors' published R)
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


def _eval_output(model: nn.Module, state: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """The output of `model` run with `state` in eval mode, without autocast; the model is left as it was."""
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            return functional_call(model, state, (inputs,))
    finally:
        model.train(was_training)


def _linearised_flow(model: nn.Module, state: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """Sum of the output of `model` run with `state` (eval mode, no autocast), per input sample."""
    return _eval_output(model, state, inputs).sum() / inputs.shape[0]


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


class ReluIdentity:
    """Make every `nn.ReLU` call the identity for one forward pass (in-place ReLUs included): the
    path-kernel network is linear, every path counts whatever the sign of its partial sums."""

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        self.handles: list[Any] = []
        self.inputs: list[torch.Tensor] = []

    def __enter__(self) -> Self:
        for module in self.modules:
            self.handles.append(module.register_forward_pre_hook(self._keep_input))
            self.handles.append(module.register_forward_hook(self._return_input))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _keep_input(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.inputs.append(inputs[0])
        return (inputs[0].clone(),)   # an in-place ReLU rewrites the copy, not the kept input

    def _return_input(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return self.inputs.pop()


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def path_indicator_state(model: nn.Module, masks: Masks, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state of PX's data copy: each prunable weight replaced by its 0/1 mask, every other weight by
    ones, every bias by zeros, every normalisation layer by the identity (weight 1, bias 0, running mean 0,
    running variance 1, for eval mode). Its output on x² sums x_i² over the surviving paths from input i."""
    state: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, p in module.named_parameters(recurse=False):
            full = prefix + name
            if full in masks:
                state[full] = masks[full].to(device=p.device, dtype=dtype)
            else:
                state[full] = (torch.zeros_like if name == "bias" else torch.ones_like)(p, dtype=dtype)
        for name, b in module.named_buffers(recurse=False):
            full = prefix + name
            if isinstance(module, _NORMS) and name in ("running_mean", "running_var"):
                state[full] = (torch.zeros_like if name == "running_mean" else torch.ones_like)(b, dtype=dtype)
            else:
                state[full] = b
    return state


PX_DATA_INPUT_MAX = 2.0 ** -60   # the data copy's largest input in float32: room for 10^56 paths per output


def _px_data_pass(ctx: ScoringContext, masks: Masks, dtype: torch.dtype, input_max: float) -> torch.Tensor | None:
    """One pass of the data copy over the round's batches, the inputs x² scaled by one factor so that the
    largest is `input_max`; the per-output sums divided by that factor again, in float64, or None when a sum
    came near the top of `dtype`'s range."""
    batches = ctx.round_batches()
    largest = max(float(inputs.detach().square().max()) for inputs, _ in batches)
    factor = input_max / largest if largest > 0 else 1.0
    state = path_indicator_state(ctx.model, masks, dtype)
    pruned = {n: (w.detach() * masks[n]) for n, w in ctx.weights.items()}
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for inputs, _ in batches:
            with ReluGates(ctx.model) as gates:
                ctx.forward(pruned, inputs)
                gates.replay()
                squared = (inputs.detach().to(dtype).square() * factor).to(dtype)
                total = total + _eval_output(ctx.model, state, squared).sum(0).to(torch.float64)
    if not bool(torch.isfinite(total).all()) or float(total.max()) > torch.finfo(dtype).max / 1e3:
        return None
    return total / factor


def px_data_term(ctx: ScoringContext, masks: Masks) -> torch.Tensor:
    """PX's data copy, summed over the round's samples: for each output unit c, Σ_x Σ over the surviving
    paths p into c of x_i(p)² times p's activation pattern on x, the ReLU gates of the pruned network
    θ ⊙ m on x (pc.prune's train_mode). With all-ones weights it counts paths (about 10^45 per output on
    VGG-16), so it runs in float32 on inputs scaled down by one factor (the copy is linear in its input, so
    the factor divides out exactly), and again in float64 if even that overflows (far deeper networks)."""
    total = _px_data_pass(ctx, masks, torch.float32, PX_DATA_INPUT_MAX)
    if total is None:
        total = _px_data_pass(ctx, masks, torch.float64, 1.0)
    if total is None:
        raise ValueError("px: the data term overflows float64 on this network (over 10^300 paths per output)")
    return total


@method("px", label="PX (Path eXclusion)",
        summary="Keeps the weights carrying most of an NTK-trace bound: the path kernel weighted by the "
                "data's active paths.",
        paper="Iurada et al. 2024, 'Finding Lottery Tickets in Vision Models via Data-driven Spectral Foresight "
              "Pruning' (CVPR)",
        formula="θ² ⊙ |∂R/∂θ²|, R = Σ_c w_c · z_c; z = f(1; θ², no ReLU), w = Σ_x f(x²; m, ReLU gates on x)",
        needs_data=True, default_iterations=100)
def px(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """PX, Path eXclusion (Iurada et al. 2024). The neural tangent kernel splits into the path kernel
    (how the weights make up each input-output path's value) and the data's part (each path's input and
    whether the data keeps its ReLUs open). PX keeps the weights that contribute most to an upper bound
    of the kernel's trace built from the two, computed as in the paper with two copies of the pruned
    network. The path-kernel copy squares every parameter and buffer (as SynFlow-L2), turns every ReLU
    into the identity and runs on an all-ones input: z_c, the sum over the paths into output c of the
    product of their squared weights (BatchNorm as a squared eval-mode scale). The data copy keeps only
    the structure: the mask for weights, no biases, identity normalisation; it runs on x² with each ReLU
    replaced by the 0/1 pattern of the real pruned network on x, and w_c sums over the samples and over
    the surviving paths into c the path's x_i² when the data keeps the path open. R = Σ_c w_c z_c and
    each weight scores θ² ⊙ |∂R/∂θ²| (the data copy holds no gradient); in a bias-free chain each
    layer's scores sum to R. The data reaches the score through w, one weight per output: with every
    weight kept and a fully connected last layer, every output gets the same w and the first round ranks
    as SynFlow-L2 (exactly so at init, where no squared BatchNorm shift can turn a partial sum negative);
    the data matters from the second round on, once the mask reaches some outputs through other paths.
    Iterative, 100 rounds on the exponential schedule, the gates and w recomputed every round on the
    round's batches. w is scaled to a largest entry of 1 (it counts paths; the ranking does not change).
    Where the authors' public code (iurada/px-ntk-pruning) differs: one version squares the gradient of
    each batch and sums those, another leaves BatchNorm and the classifier unsquared in both copies, and
    it gates functional activations too; here activations applied functionally (F.relu) stay ungated and
    max-pooling in either copy takes its own maximum. Float32 while R stays far inside its range, float64
    otherwise (option precision)."""
    data = px_data_term(ctx, masks).flatten()
    largest = float(data.max())
    data = data / largest if largest > 0 else data
    state = _squared_state_for_round(ctx, masks, "px")
    names = list(masks)
    reference = state[names[0]]
    ones = torch.ones((1, *ctx.input_shape), dtype=reference.dtype, device=reference.device)
    with denormals_flushed(ctx.device), ReluIdentity(ctx.model):
        paths = _eval_output(ctx.model, state, ones).flatten()
        flow = (data.to(paths) * paths).sum()
        grads = torch.autograd.grad(flow, [state[n] for n in names])
    scores = {n: g.abs_().mul_(state[n].detach()) for n, g in zip(names, grads)}
    if _retry_in_float64(ctx, "px", flow.detach(), scores):
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


def draw_batch_norm_statistics(ctx: ScoringContext, weights: dict[str, torch.Tensor],
                               inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fresh running statistics for every BatchNorm layer, set to the batch statistics of the network with
    `weights` on `inputs` (a no-grad train-mode pass with momentum 1: mean and unbiased variance); {} for a
    network without BatchNorm. The model's own statistics and momenta are left as they were."""
    norms = {name: m for name, m in ctx.model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}
    if not norms:
        return {}
    buffers: dict[str, torch.Tensor] = {}
    for name, m in norms.items():
        buffers[f"{name}.running_mean"] = torch.zeros_like(m.running_mean, dtype=inputs.dtype)
        buffers[f"{name}.running_var"] = torch.ones_like(m.running_var, dtype=inputs.dtype)
        buffers[f"{name}.num_batches_tracked"] = torch.zeros_like(m.num_batches_tracked)
    momenta = {name: m.momentum for name, m in norms.items()}
    was_training = ctx.model.training
    try:
        for m in norms.values():
            m.momentum = 1.0
        ctx.model.train()
        with torch.no_grad():
            functional_call(ctx.model, {**{n: w.detach() for n, w in weights.items()}, **buffers}, (inputs,))
    finally:
        for name, m in norms.items():
            m.momentum = momenta[name]
        ctx.model.train(was_training)
    return buffers


def ntk_sap_saliency(ctx: ScoringContext, masks: Masks, thetas: dict[str, torch.Tensor],
                     deltas: dict[str, torch.Tensor], inputs: torch.Tensor, epsilon: float,
                     recalibrate: bool = True) -> dict[str, torch.Tensor]:
    """∂Φ/∂m at the current mask m for Φ(m) = mean over x of ‖f(x; θ ⊙ m) − f(x; (θ + εδ) ⊙ m)‖² / ε²,
    the finite-difference estimate of ‖∂f/∂θ · δ‖² on the masked network (signed: callers take |·|).
    With `recalibrate`, BatchNorm in both passes uses the statistics of the unperturbed draw θ ⊙ m on these
    inputs, held fixed (no gradient through them), in eval mode; without it (or without BatchNorm) the
    passes follow pc.prune's train_mode."""
    gates = {n: masks[n].to(thetas[n].dtype).requires_grad_(True) for n in masks}
    plain = {n: thetas[n] * gates[n] for n in masks}
    moved = {n: (thetas[n] + epsilon * deltas[n]) * gates[n] for n in masks}
    statistics = draw_batch_norm_statistics(ctx, plain, inputs) if recalibrate else {}
    run = dataclasses.replace(ctx, train_mode=False) if statistics else ctx
    difference = run.forward({**plain, **statistics}, inputs) - run.forward({**moved, **statistics}, inputs)
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
        needs_data=False, default_iterations=20)
def ntk_sap(ctx: ScoringContext, masks: Masks) -> dict[str, torch.Tensor]:
    """NTK-SAP (Wang et al. 2023): keeps the weights whose removal would change the spectrum of the
    neural tangent kernel most, measured through its trace (the sum of its eigenvalues) ‖∂f/∂θ‖²_F,
    estimated by finite differences as ‖f(x; θ ⊙ m) − f(x; (θ + εδ) ⊙ m)‖² / ε² with δ ~ N(0, I) and
    ε = 0.01, the paper's perturbation scale (option epsilon); each weight scores |∂/∂m| of the
    estimate. Data-free and weight-agnostic as in the paper: the inputs are standard Gaussian noise and
    every draw takes fresh weights θ from the initial distribution (a zero-mean normal with each layer's
    own init spread), so the mask does not depend on one initialisation. Each round averages the mask
    gradient of 5 draws (option redraws; the authors' published setting R = 5) of weights, perturbation
    and Gaussian inputs before taking |·|; 20 rounds on the exponential schedule (the authors' published
    script). A fresh draw of weights has its own activation statistics, so every draw first sets
    BatchNorm's statistics to those of its unperturbed network on its Gaussian batch and uses them in
    both passes (eval mode), as the authors' code does; the model's own running statistics play no part
    (option recalibrate_batch_norm=False: BatchNorm as pc.prune's train_mode says). On VGG-16-BN,
    recalibrated NTK-SAP collapses at 10^3.0 against 10^4.3 without, emptying the later layers first; our
    reading: BatchNorm renormalises whatever a thinned layer leaves, so the estimate hardly moves until
    the layer is empty.
    Ours, not the authors': 4 Gaussian inputs per draw (option batch_size; theirs is a data batch's
    size, 10 per class), for speed on a CPU. Only the prunable weights are redrawn and perturbed (biases
    and BatchNorm's scale and shift keep the model's values). Deterministic for a fixed seed."""
    epsilon = float(_positive_number(ctx, "ntk_sap", "epsilon", NTK_SAP_EPSILON))
    batch_size = _positive_number(ctx, "ntk_sap", "batch_size", NTK_SAP_BATCH, whole=True)
    redraws = _positive_number(ctx, "ntk_sap", "redraws", NTK_SAP_REDRAWS, whole=True)
    recalibrate = ctx.options.get("recalibrate_batch_norm", True)
    if not isinstance(recalibrate, bool):  # a bad option is a ValueError, as every other: the pages show those
        raise ValueError(  # noqa: TRY004
            f"ntk_sap option recalibrate_batch_norm must be True or False, got {recalibrate!r}")
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ctx.model.modules())
    if recalibrate and batch_size < 2 and has_batch_norm:
        raise ValueError("ntk_sap option batch_size must be at least 2 for a network with BatchNorm (each draw "
                         f"takes BatchNorm's statistics from its batch), got {batch_size}")
    spreads = _layer_spreads(ctx)
    totals = {n: torch.zeros_like(w, dtype=w.dtype) for n, w in ctx.weights.items()}
    for _ in range(redraws):
        thetas, deltas, inputs = ntk_sap_draws(dict(ctx.weights), spreads, ctx.input_shape, batch_size,
                                               ctx.generator)
        for name, grad in ntk_sap_saliency(ctx, masks, thetas, deltas, inputs, epsilon, recalibrate).items():
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
