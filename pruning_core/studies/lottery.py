"""Methods that train to find their masks: lottery tickets by Iterative Magnitude Pruning (`imp`) and
GemMiner (`gemminer`), registered in `METHODS` like the scoring methods.

Both run inside `pc.prune` (MethodSpec.run) and need a pc Dataset as `data`, because they train. Their
settings come through `pc.prune(..., options={...})`; the run store's configurations pass the training
fields (epochs, batch size, learning rate...) the same way. Neither changes the model while it
searches: the procedure works on a copy, and only at the end leaves in the model the weights that the
found mask is meant to be trained from (IMP's rewind point, the initial weights for GemMiner).

What a search cost (wall time, training steps) is in `PruneResult.details["cost"]` and in
`PruneResult.summary()` as `search_s`, `search_steps`...; `method_cost` adds the training of the final
mask, so that IMP, GemMiner and the one-shot methods can be compared at one target sparsity.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pruning_core.config import TRAINING_FIELDS
from pruning_core.engine.masks import (all_kept, allocate_counts, attach_masks, density_of, detach_masks, kept_count,
                                       prunable_weights, round_densities, select_per_layer, select_top_k)
from pruning_core.engine.methods import METHODS, MethodSpec, ScoringContext
from pruning_core.engine.settings import TrainSettings
from pruning_core.engine.training import evaluate, make_optimizer, make_scheduler, masked_pairs, training_step
from pruning_core.engine.vocabulary import GEMMINER_INITS

Progress = Callable[[int, int], None] | None

# Training settings a procedure may take from pc.prune's options: the run configuration's training fields.
TRAINING_OPTIONS = TRAINING_FIELDS
IMP_OPTIONS = (*TRAINING_OPTIONS, "epochs_per_round", "rewind_step", "prune_fraction", "evaluate_rounds",
               "record_masks", "on_round")
GEMMINER_OPTIONS = (*TRAINING_OPTIONS, "score_lr", "score_momentum", "regularization", "threshold", "ramp",
                    "init", "record_masks", "on_round")
DEFAULT_SCORE_LR = 10.0   # the paper's 0.1 barely moves the scores in a digits-sized run (see `gemminer`)


# ---- shared helpers -------------------------------------------------------------------------------
def _dataset(ctx: ScoringContext, method: str):
    if ctx.dataset is None:
        raise ValueError(f"{method} trains the network: pass a pc Dataset such as pc.load_dataset('digits') as data "
                         "(plain batches are not enough)")
    return ctx.dataset.to(ctx.device)


def _check_options(options: Mapping[str, Any], accepted: tuple[str, ...], method: str) -> None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {method}; valid options: {', '.join(accepted)}")


def _number(options: Mapping[str, Any], name: str, default: float, low: float, high: float,
             integer: bool = False, closed_high: bool = True) -> Any:
    value = options.get(name)
    if value is None:
        return default
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise ValueError(f"option {name} must be {kind}, got {value!r}")
    if not (math.isfinite(value) and low <= value and (value <= high if closed_high else value < high)):
        raise ValueError(f"option {name} must be in [{low}, {high}{']' if closed_high else ')'}, got {value!r}")
    return int(value) if integer else float(value)


def _train_settings(data, options: Mapping[str, Any], epochs: int | None = None) -> TrainSettings:
    """The dataset's training defaults overridden by the options (as pc.train resolves its arguments)."""
    values = {name: options.get(name) for name in TRAINING_OPTIONS}
    if epochs is not None:
        values["epochs"] = epochs
    return TrainSettings.resolve(data, **values)


def _select(ranking: Mapping[str, torch.Tensor], candidates: Mapping[str, torch.Tensor] | None, density: float,
            scope: str) -> dict[str, torch.Tensor]:
    """Keep exactly round(density x total) weights with the highest ranking, globally or the same fraction of
    every layer, among `candidates` (None: among all weights)."""
    names = list(ranking)
    totals = [ranking[n].numel() for n in names]
    keep = kept_count(density, sum(totals))
    if scope == "layerwise":
        caps = None if candidates is None else [int(candidates[n].sum()) for n in names]
        counts = dict(zip(names, allocate_counts([density] * len(names), totals, keep, caps)))
        return select_per_layer(ranking, counts, candidates)
    return select_top_k(ranking, keep, candidates)


def _working_copy(model: nn.Module) -> nn.Module:
    """A copy of the model to search on, without masks: the model itself stays as it was."""
    work = copy.deepcopy(model)
    detach_masks(work)
    return work


def _round_hook(options: Mapping[str, Any], method: str) -> Callable[[dict[str, Any]], None] | None:
    """Option on_round: a function called with a copy of each round's record (the entries of
    details["rounds"]) as soon as it is known, so that a caller can show the search while it runs. IMP's
    records: round, density (of the network trained in that round), trained_test_accuracy, search_steps and
    search_s so far; GemMiner's, one per pruning event: round, step, density (left after the event),
    active_fraction (kept weights whose score is above the threshold), mining_loss and mining_accuracy (mean
    cross-entropy and batch accuracy of the mined subnetwork since the previous event), search_s."""
    hook = options.get("on_round")
    if hook is not None and not callable(hook):
        raise ValueError(f"option on_round of {method} must be a function taking one round's record, got {hook!r}")
    return hook


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


class _Trainer:
    """The training loop of `pc.train` (same seeding, data order, optimizer and learning-rate schedule, step
    for step), able to start at step k of the schedule and to snapshot the state after k steps.

    Training from step 0 and snapshotting after k steps gives exactly the weights `pc.train` with the same
    settings and seed has after k steps: that is the rewind point of IMP."""

    def __init__(self, data, settings: TrainSettings, seed: int, device: torch.device,
                 on_epoch: Callable[[], None] | None = None):
        self.data, self.settings, self.seed, self.device = data, settings, seed, device
        self.on_epoch = on_epoch
        self.steps_per_epoch = max(1, len(data.train_y) // settings.batch_size)
        self.total_steps = self.steps_per_epoch * settings.epochs

    def run(self, model: nn.Module, start: int = 0, snapshot_at: int | None = None
            ) -> tuple[int, dict[str, torch.Tensor] | None]:
        """Train from schedule step `start` to the end; return (steps computed, state after `snapshot_at` steps)."""
        settings, device = self.settings, self.device
        torch.manual_seed(self.seed)
        generator = torch.Generator(device=device).manual_seed(self.seed)
        model.to(memory_format=torch.channels_last)
        masked = masked_pairs(model)
        opt = make_optimizer(model, settings)
        scheduler = make_scheduler(opt, settings, max(self.total_steps, 1))
        with warnings.catch_warnings():  # stepping the schedule to `start` before any optimizer step is intended
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start):
                scheduler.step()
        snapshot = _clone_state(model) if snapshot_at == start else None
        step, computed = 0, 0
        for _ in range(settings.epochs):
            model.train()
            for inputs, targets in self.data.batches("train", settings.batch_size, shuffle=True, augment=True,
                                                     generator=generator, drop_last=True):
                if step < start:  # the batches of the skipped steps are still drawn: same data order as pc.train
                    step += 1
                    continue
                training_step(model, opt, scheduler, inputs, targets, settings.label_smoothing, masked)
                step += 1
                computed += 1
                if step == snapshot_at:
                    snapshot = _clone_state(model)
            if self.on_epoch is not None:
                self.on_epoch()
        model.to(memory_format=torch.contiguous_format)
        return computed, snapshot


# ---- IMP --------------------------------------------------------------------------------------------
def imp_round_densities(density: float, rounds: int, schedule: str, prune_fraction: float | None) -> list[float]:
    """Density after each IMP round: `rounds` rounds on the schedule, or, with `prune_fraction` f, as many
    rounds as removing f of the remaining weights per round needs (the last round lands on `density`)."""
    if density >= 1.0:
        return [1.0]
    if prune_fraction is None:
        return round_densities(density, rounds, schedule)
    count = max(1, math.ceil(math.log(density) / math.log(1.0 - prune_fraction) - 1e-9))
    return [(1.0 - prune_fraction) ** k for k in range(1, count)] + [density]


def imp(ctx: ScoringContext, density: float, *, schedule: str = "exponential", scope: str = "global",
        invert: bool = False, progress: Progress = None):
    """Iterative Magnitude Pruning with weight rewinding, the lottery-ticket procedure (Frankle & Carbin
    2019; rewinding: Frankle et al. 2020). Train the dense network; remove the smallest-magnitude trained
    weights among the survivors (ranked globally, or within each layer with scope="layerwise"); rewind
    the survivors (and every other parameter and BatchNorm statistic) to their values at step k of the
    first training (k = 0: the original initialisation, the original lottery ticket; k > 0: "late
    rewinding", which larger networks need); retrain from step k with the mask, and repeat until the target
    sparsity. The rounds follow the schedule (exponential: the same fraction of the remaining weights
    each round; option prune_fraction=0.2 removes 20% of the remaining per round as in the paper, with as
    many rounds as that needs). Costly: every round is a full training. The ticket is left in the model
    at its rewind point, ready to be trained (pc.train then runs a whole fresh schedule from there; the
    rounds' retraining continues the schedule from step k). Options: epochs (per round; default the dataset's),
    rewind_step (k, in training steps, default 0), prune_fraction, the training settings, and on_round
    (called with each round's record as soon as it is known)."""
    started = time.perf_counter()
    options = ctx.options
    _check_options(options, IMP_OPTIONS, "imp")
    data = _dataset(ctx, "imp")
    epochs = options.get("epochs_per_round", options.get("epochs"))
    settings = _train_settings(data, options, epochs)
    prune_fraction = options.get("prune_fraction")
    if prune_fraction is not None:
        prune_fraction = _number(options, "prune_fraction", 0.2, 0.0, 1.0, closed_high=False)
        if prune_fraction <= 0:
            raise ValueError("option prune_fraction must be above 0 (0.2 removes 20% of the remaining weights "
                             "per round)")
    if density >= 1.0:  # nothing to prune: no training either
        ctx.cache["details"] = {"cost": {"s": time.perf_counter() - started, "steps": 0, "epochs": 0.0, "rounds": 1}}
        return all_kept(list(ctx.weights.items())), {n: w.detach().abs() for n, w in ctx.weights.items()}, [1.0]
    densities = imp_round_densities(density, ctx.rounds, schedule, prune_fraction)
    ctx.rounds = len(densities)
    rounds = len(densities)

    done = [0]

    def report() -> None:
        if progress is not None:
            progress(done[0], rounds)

    trainer = _Trainer(data, settings, ctx.seed, ctx.device, on_epoch=report)
    rewind_step = _number(options, "rewind_step", 0, 0, trainer.total_steps, integer=True)
    record = bool(options.get("record_masks", False))
    evaluate_rounds = bool(options.get("evaluate_rounds", True))
    on_round = _round_hook(options, "imp")

    work = _working_copy(ctx.model)
    weights = {name: weight for name, _, weight in prunable_weights(work) if name in ctx.weights}
    masks = all_kept(list(weights.items()))
    history: list[dict[str, Any]] = []
    round_masks: list[dict[str, torch.Tensor]] = []
    steps, rewind_state = trainer.run(work, 0, snapshot_at=rewind_step)   # round 0: the dense network
    scores: dict[str, torch.Tensor] = {}
    for index, round_density in enumerate(densities):
        accuracy = evaluate(work, data)[1] if evaluate_rounds else None
        history.append({"round": index, "density": density_of(masks), "trained_test_accuracy": accuracy,
                        "search_steps": steps, "search_s": time.perf_counter() - started})
        if on_round is not None:
            on_round(dict(history[-1]))
        scores = {name: (w.detach() * masks[name]).abs() for name, w in weights.items()}
        ranking = {name: -s for name, s in scores.items()} if invert else scores
        masks = _select(ranking, masks, round_density, scope)
        if record:
            round_masks.append({name: m.clone() for name, m in masks.items()})
        work.load_state_dict(rewind_state)        # rewind the survivors (and every other parameter) to step k
        attach_masks(work, masks)
        done[0] = index + 1
        report()
        if index + 1 < rounds:
            steps += trainer.run(work, rewind_step)[0]
    if rewind_step > 0:
        ctx.model.load_state_dict(rewind_state)   # pc.prune then zeroes the pruned weights
    ctx.cache["details"] = {
        "cost": {"s": time.perf_counter() - started, "steps": steps, "epochs": steps / trainer.steps_per_epoch,
                 "rounds": rounds},
        "rewind_step": rewind_step, "epochs_per_round": settings.epochs, "steps_per_epoch": trainer.steps_per_epoch,
        "rounds": history, "kept_per_round": [kept_count(d, sum(w.numel() for w in weights.values()))
                                              for d in densities],
        **({"round_masks": round_masks} if record else {}),
    }
    return masks, scores, densities


METHODS.register("imp", MethodSpec(
    name="imp", label="IMP (lottery ticket)",
    summary="Train, remove the smallest trained weights, rewind the rest, repeat: the lottery-ticket procedure.",
    paper="Frankle & Carbin 2019, 'The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks' "
          "(ICLR); rewinding: Frankle et al. 2020, 'Linear Mode Connectivity and the Lottery Ticket "
          "Hypothesis' (ICML)",
    formula="|θ_trained| each round, survivors rewound to θ_k (k = 0: θ₀)", score=None, needs_data=True,
    default_iterations=5, run=imp))


# ---- GemMiner ---------------------------------------------------------------------------------------
def signed_constant(weight: torch.Tensor, gain: float = math.sqrt(2.0)) -> torch.Tensor:
    """sign(w) * gain / sqrt(fan_in): the signed-constant initialisation GemMiner's paper mines on."""
    fan_in = weight[0].numel() if weight.dim() > 1 else weight.numel()
    return torch.sign(weight.detach()) * (gain / math.sqrt(fan_in))


def gemminer(ctx: ScoringContext, density: float, *, schedule: str = "exponential", scope: str = "global",
             invert: bool = False, progress: Progress = None):
    """GemMiner (Sreenivasan et al. 2022, "Rare Gems"): finds a lottery ticket at initialisation without
    training the weights. The initial weights stay fixed; every weight gets a score p, drawn from U(0, 1),
    and the forward pass uses the weights whose score exceeds 0.5 (a straight-through estimator passes
    the gradient to p as if the mask were p itself). The scores are trained by SGD (momentum 0.9, cosine)
    on cross-entropy plus the sparsity regulariser λ‖p‖² (λ = 1e-4), clipped to [0, 1]. The paper's
    learning rate, 0.1, is for tens of thousands of steps; in the few hundred steps of a digits run the
    scores then hardly move and the mask stays close to random, so the default here is 10 (score_lr=0.1
    gives the paper's). Pruning
    events spread over the first 80% of the search (option ramp) freeze the lowest-scoring weights until
    exactly the target density is left; the mask is the surviving weights, and the weights are then
    trained from the same initialisation. Biases and BatchNorm parameters stay at their initial values
    while mining (BatchNorm at identity acts as the paper's BatchNorm without affine parameters).
    Roughly the cost of one training, against one training per round for IMP. Options: epochs (of
    score learning; default the dataset's) and batch_size (the other training settings are for the
    weights' training, not used here), score_lr, regularization, threshold, ramp, and init="model"
    (mine on the model's own random initial weights, left untouched) or "signed_constant" (the paper's
    sign(w)·√(2/fan_in), written into the model at the end so training starts from it), and on_round
    (called with each pruning event's record as soon as it is known)."""
    started = time.perf_counter()
    options = ctx.options
    _check_options(options, GEMMINER_OPTIONS, "gemminer")
    data = _dataset(ctx, "gemminer")
    settings = _train_settings(data, options)
    score_lr = _number(options, "score_lr", DEFAULT_SCORE_LR, 0.0, math.inf)
    momentum = _number(options, "score_momentum", 0.9, 0.0, 1.0, closed_high=False)
    regularization = _number(options, "regularization", 1e-4, 0.0, math.inf)
    threshold = _number(options, "threshold", 0.5, 0.0, 1.0, closed_high=False)
    ramp = _number(options, "ramp", 0.8, 0.0, 1.0)
    init = options.get("init", "model")
    if init not in GEMMINER_INITS:
        raise ValueError(f"option init must be one of {', '.join(GEMMINER_INITS)}, got {init!r}")
    if score_lr <= 0:
        raise ValueError(f"option score_lr must be above 0, got {score_lr}")
    device = ctx.device
    names = list(ctx.weights)
    events = round_densities(density, ctx.rounds, schedule) if density < 1.0 else [1.0]
    rounds = len(events)

    work = _working_copy(ctx.model)
    for parameter in work.parameters():
        parameter.requires_grad_(False)
    fixed = {n: (signed_constant(ctx.weights[n]) if init == "signed_constant" else ctx.weights[n].detach().clone())
             for n in names}
    generator = torch.Generator().manual_seed(ctx.seed)
    scores = {n: torch.rand(ctx.weights[n].shape, generator=generator).to(device).requires_grad_(True)
              for n in names}
    candidates = all_kept([(n, ctx.weights[n]) for n in names])
    frozen_at = {n: torch.zeros_like(s, requires_grad=False) for n, s in scores.items()}  # score when frozen
    opt = torch.optim.SGD(list(scores.values()), lr=score_lr, momentum=momentum)
    steps_per_epoch = max(1, len(data.train_y) // settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    event_steps = [math.ceil((j + 1) * ramp * total_steps / rounds) for j in range(rounds)]
    record = bool(options.get("record_masks", False))
    on_round = _round_hook(options, "gemminer")
    round_masks: list[dict[str, torch.Tensor]] = []
    history: list[dict[str, Any]] = []
    done = [0]
    # Mean cross-entropy and batch accuracy of the mined subnetwork since the previous pruning event (summed on
    # the device: read only at the events).
    since = {"loss": torch.zeros((), device=device), "correct": torch.zeros((), device=device), "seen": 0, "steps": 0}

    def prune_event(step: int) -> None:
        nonlocal candidates
        current = {n: s.detach() for n, s in scores.items()}
        chosen = _select(current, candidates, events[done[0]], scope)
        with torch.no_grad():
            for n in names:
                newly = candidates[n] & ~chosen[n]
                frozen_at[n] = torch.where(newly, current[n], frozen_at[n])
        candidates = chosen
        if record:
            round_masks.append({n: m.clone() for n, m in candidates.items()})
        steps_since = since["steps"]
        history.append({"round": done[0], "step": step, "density": events[done[0]],
                        "active_fraction": _active_fraction(scores, candidates, threshold),
                        "mining_loss": float(since["loss"]) / steps_since if steps_since else None,
                        "mining_accuracy": float(since["correct"]) / since["seen"] if since["seen"] else None,
                        "search_s": time.perf_counter() - started})
        since.update(loss=torch.zeros((), device=device), correct=torch.zeros((), device=device), seen=0, steps=0)
        if on_round is not None:
            on_round(dict(history[-1]))
        done[0] += 1

    def report() -> None:
        if progress is not None:
            progress(done[0], rounds)

    batch_generator = torch.Generator(device=device).manual_seed(ctx.seed)
    step = 0
    while done[0] < rounds and event_steps[done[0]] <= step:  # ramp 0 or no training: prune before mining
        prune_event(step)
    for _ in range(settings.epochs):
        work.train()
        for inputs, targets in data.batches("train", settings.batch_size, shuffle=True, augment=True,
                                            generator=batch_generator, drop_last=True):
            kept = {n: candidates[n].to(scores[n].dtype) for n in names}
            # Straight-through: the forward pass sees the hard mask, the backward pass d mask / d p = 1.
            masked = {n: fixed[n] * kept[n] * ((scores[n] > threshold).to(scores[n].dtype)
                                                + scores[n] - scores[n].detach()) for n in names}
            logits = functional_call(work, masked, (inputs,))
            loss = F.cross_entropy(logits, targets)
            with torch.no_grad():
                since["loss"] += loss.detach()
                since["correct"] += (logits.argmax(1) == targets).sum()
                since["seen"] += len(targets)
                since["steps"] += 1
            if regularization:
                loss = loss + regularization * sum((scores[n] * kept[n]).pow(2).sum() for n in names)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for s in scores.values():
                    s.clamp_(0.0, 1.0)
            step += 1
            while done[0] < rounds and event_steps[done[0]] <= step:
                prune_event(step)
        report()
    while done[0] < rounds:
        prune_event(step)
    # Surviving weights rank above every frozen one (frozen: their score when frozen, minus 1).
    final_scores = {n: torch.where(candidates[n], scores[n].detach(), frozen_at[n] - 1.0) for n in names}
    ranking = {n: -s for n, s in final_scores.items()} if invert else final_scores
    masks = _select(ranking, None if invert else candidates, density, scope)
    if init == "signed_constant":
        with torch.no_grad():
            for n in names:
                ctx.weights[n].copy_(fixed[n])
    report()
    ctx.cache["details"] = {
        "cost": {"s": time.perf_counter() - started, "steps": step, "epochs": step / steps_per_epoch,
                 "rounds": rounds},
        "epochs": settings.epochs, "steps_per_epoch": steps_per_epoch, "init": init, "rounds": history,
        "active_fraction": _active_fraction(scores, masks, threshold),
        **({"round_masks": round_masks} if record else {}),
    }
    return masks, final_scores, events


def _active_fraction(scores: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], threshold: float) -> float:
    """Of the kept weights, the fraction whose score is above the threshold (those the last forward passes used)."""
    kept = sum(int(m.sum()) for m in masks.values())
    active = sum(int(((s.detach() > threshold) & masks[n]).sum()) for n, s in scores.items())
    return active / kept if kept else 0.0


METHODS.register("gemminer", MethodSpec(
    name="gemminer", label="GemMiner",
    summary="Learns a score per weight with the weights frozen at init; a lottery ticket without training weights.",
    paper="Sreenivasan et al. 2022, 'Rare Gems: Finding Lottery Tickets at Initialization' (NeurIPS)",
    formula="mask = 1[p > 0.5] (straight-through), min CE + λ‖p‖², p ∈ [0, 1], weights fixed at θ₀",
    score=None, needs_data=True, default_iterations=10, run=gemminer))


# ---- cost to a target sparsity ----------------------------------------------------------------------
def method_cost(config=None, *, options: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
                **fields: Any) -> dict[str, Any]:
    """Prune and train one configuration (a RunConfig, or its fields as keywords) and return what it cost:
    the mask search (search_s, search_steps: training steps spent finding the mask, 0 for the methods that
    only score), the training of the found mask (train_s, train_steps), both together (total_s,
    total_steps) and the final test accuracy. For comparing IMP, GemMiner and the one-shot methods at one
    target sparsity. `options` go to the method as pc.prune's options (e.g. {"prune_fraction": 0.2} for
    IMP), on top of the training settings the run passes to methods that train, as `pc.execute` does."""
    from pruning_core.config import DENSE, RunConfig, method_options, training_settings
    from pruning_core.engine.data import load_dataset
    from pruning_core.engine.prune import prune
    from pruning_core.engine.training import default_device, train
    from pruning_core.infra.runner import build_model

    config = (config or RunConfig()).replace(**fields) if fields else (config or RunConfig())
    config = config.canonical().validate()
    method = "random" if config.method == DENSE else config.method
    target = torch.device(device) if device is not None else default_device()
    data = load_dataset(config.dataset)
    model = build_model(config, data).to(target)
    merged = {**training_settings(config), **method_options(config)} if METHODS[method].run is not None else {}
    merged.update(options or {})
    result = prune(model, method, config.sparsity, data, schedule=config.schedule, iterations=config.iterations,
                   scope=config.scope, seed=config.seed, prune_batches=config.prune_batches, options=merged or None)
    trained = train(model, None, data, seed=config.seed, device=target, **training_settings(config)).run()
    cost = result.details.get("cost", {})
    search_steps = int(cost.get("steps", 0))
    train_steps = int(trained.history["step"].max()) if len(trained.history) else 0
    return {
        "method": config.method, "model": config.model, "dataset": config.dataset, "sparsity": config.sparsity,
        "seed": config.seed, "density": result.density, "iterations": result.iterations,
        "prune_s": result.elapsed_s, "search_s": float(cost.get("s", 0.0)), "search_steps": search_steps,
        "train_s": trained.elapsed_s, "train_steps": train_steps, "total_s": result.elapsed_s + trained.elapsed_s,
        "total_steps": search_steps + train_steps, "test_accuracy": trained.final_test_accuracy,
        "device": trained.device,
    }
