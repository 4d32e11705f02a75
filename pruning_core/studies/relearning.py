"""Lottery tickets relearn the pruning solution (Evci et al. 2022, "Gradient Flow in Sparse Neural Networks and How
Lottery Tickets Win", section 5): a ticket trained from its rewound weights ends close to the dense network it
was pruned from, while the same mask trained from another initialisation ends elsewhere.

`lottery_relearning` trains the dense network (the pruning solution), finds the ticket with IMP from the same
initial weights, and trains three sparse networks with the ticket's mask: the ticket itself (IMP's rewind point),
the mask on a fresh random initialisation, and the mask with the sparsity-aware initialisation. It measures how
far each ends from the pruning solution: the L2 distance of the kept weights and the share of test images on
which their predictions differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pandas as pd
import torch
from torch import nn

from pruning_core.engine.data import Dataset
from pruning_core.engine.masks import attach_masks, density_of, prunable_weights

RELEARNING_VARIANTS = ("dense", "lottery", "scratch", "scratch_sparse_init")
RELEARNING_LABELS = {
    "dense": "Pruning solution (dense, trained)",
    "lottery": "Lottery ticket (IMP, rewound)",
    "scratch": "Same mask, fresh random init",
    "scratch_sparse_init": "Same mask, fresh sparsity-aware init",
}
RELEARNING_COLUMNS = ["variant", "label", "density", "init_distance", "distance", "relative_distance",
                      "disagreement", "test_accuracy"]
# The fresh initialisation's seed is derived from the run's seed far from the seeds a study uses (0, 1, 2, ...),
# so that "fresh" never means another seed's initial network.
FRESH_SEED_OFFSET = 1_000_003


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the prunable weights (float32, on the CPU), keyed like named_parameters."""
    return {name: weight.detach().float().cpu().clone() for name, _, weight in prunable_weights(model)}


def masked_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                    masks: Mapping[str, torch.Tensor]) -> float:
    """‖(a − b) ⊙ m‖₂ over every masked tensor: the distance of two networks on the kept weights."""
    total = 0.0
    for name, mask in masks.items():
        mask = mask.cpu().to(torch.bool)
        total += float((a[name].double() - b[name].double())[mask].pow(2).sum())
    return math.sqrt(total)


@torch.no_grad()
def predicted_classes(model: nn.Module, data: Dataset, batch: int = 1024) -> torch.Tensor:
    """The predicted class of every test image (eval mode), on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model(inputs).argmax(1).cpu() for inputs, _ in data.to(device).batches("test", batch, shuffle=False)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def lottery_relearning(model: str | Callable[..., nn.Module] = "conv", dataset: str | Dataset = "digits",
                       sparsity: float = 0.9, epochs: int = 5, *, seed: int = 0, rounds: int = 1,
                       rewind_step: int = 0, batch_size: int | None = None, optimizer: str | None = None,
                       lr: float | None = None, lr_schedule: str | None = None, weight_decay: float | None = None,
                       scale: float = 2.0, device: str | torch.device | None = None,
                       progress: Callable[[str, float, float], None] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> pd.DataFrame:
    """How close a lottery ticket's trained solution is to the dense solution it was pruned from, against the
    same mask trained from other initialisations (Evci et al. 2022).

    The dense network, built from `seed` (`model`: a name from pc.MODELS or a function (input_shape,
    num_classes) -> nn.Module, called after torch.manual_seed), trains for `epochs`: that is the pruning
    solution. IMP (`rounds` rounds of `epochs` each, rewinding to step `rewind_step`; rounds=1 prunes the
    trained dense network itself, by magnitude) finds the ticket's mask from the same initial network, whose
    first round trains exactly like the dense network. Then, with that mask and the same training settings and
    data order: `lottery` trains the ticket from its rewind point, `scratch` from a fresh random initialisation
    (another seed's network), `scratch_sparse_init` from that fresh network with `sparse_init`.

    Returns one row per network (RELEARNING_COLUMNS): density; init_distance and distance, the L2 distance of
    its kept weights from the pruning solution's before and after training; relative_distance, the distance over
    the norm of the pruning solution's kept weights; disagreement, the share of test images on which its
    prediction differs from the pruning solution's; test_accuracy. The dense row compares the pruning solution
    with itself (distance 0) except init_distance: how far training moved its kept weights.
    progress(message, done, total) counts trainings; should_stop() returning True raises pc.Cancelled.
    """
    from pruning_core.engine.data import load_dataset
    from pruning_core.engine.models import MODELS, ModelSpec
    from pruning_core.engine.prune import Cancelled, prune
    from pruning_core.engine.settings import TrainSettings
    from pruning_core.engine.training import default_device, evaluate, train
    from pruning_core.studies.gradient_flow import sparse_init

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a whole number >= 1 (1 = one-shot IMP), got {rounds!r}")
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be between 0 and 1 (exclusive), got {sparsity!r}")
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    target = torch.device(device) if device is not None else default_device()
    settings = TrainSettings.resolve(data, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                                     lr_schedule=lr_schedule, weight_decay=weight_decay)
    training = {"batch_size": settings.batch_size, "optimizer": settings.optimizer, "lr": settings.lr,
                "lr_schedule": settings.lr_schedule, "weight_decay": settings.weight_decay,
                "label_smoothing": settings.label_smoothing}
    builder = MODELS[model] if isinstance(model, str) else model
    if not callable(builder):
        raise ValueError(f"model must be a name from pc.MODELS or a function building an nn.Module, got {model!r}")

    def build(build_seed: int) -> nn.Module:
        if isinstance(builder, ModelSpec):
            return builder(data.input_shape, data.num_classes, seed=build_seed).to(target)
        torch.manual_seed(build_seed)
        return builder(data.input_shape, data.num_classes).to(target)

    total = float(rounds + 4)
    done = [0.0]

    def report(message: str) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("relearning study stopped")
        if progress is not None:
            progress(message, done[0], total)

    def fit(net: nn.Module, masks: Mapping[str, torch.Tensor] | None, message: str) -> nn.Module:
        report(message)
        result = train(net, masks, data, settings.epochs, seed=seed, device=target, should_stop=should_stop,
                       **training).run()
        if result.cancelled:
            raise Cancelled("relearning study stopped")
        done[0] += 1
        return net

    dense = build(seed)
    dense_init = weights_of(dense)
    fit(dense, None, "training the dense network (the pruning solution)")
    solution = weights_of(dense)
    solution_predictions = predicted_classes(dense, data)
    solution_accuracy = evaluate(dense, data)[1]

    def imp_progress(round_done: int, rounds_total: int) -> None:
        report(f"finding the lottery ticket: IMP round {round_done} of {rounds_total}")

    ticket = build(seed)
    masks = prune(ticket, "imp", sparsity, data, iterations=rounds, seed=seed, progress=imp_progress,
                  options={"epochs": settings.epochs, "rewind_step": rewind_step, **training}).masks
    done[0] += rounds
    masks = {name: mask.detach().cpu().clone() for name, mask in masks.items()}
    reference = math.sqrt(sum(float(solution[n].double()[m].pow(2).sum()) for n, m in masks.items()))

    fresh_seed = seed + FRESH_SEED_OFFSET
    networks: dict[str, nn.Module] = {"lottery": ticket}
    networks["scratch"] = build(fresh_seed)
    attach_masks(networks["scratch"], masks)
    networks["scratch_sparse_init"] = build(fresh_seed)
    sparse_init(networks["scratch_sparse_init"], masks, scale=scale,
                generator=torch.Generator().manual_seed(fresh_seed))

    rows = [{"variant": "dense", "label": RELEARNING_LABELS["dense"], "density": 1.0,
             "init_distance": masked_distance(dense_init, solution, masks), "distance": 0.0, "relative_distance": 0.0,
             "disagreement": 0.0, "test_accuracy": solution_accuracy}]
    for variant, net in networks.items():
        start = weights_of(net)
        fit(net, None, f"training: {RELEARNING_LABELS[variant].lower()}")
        end = weights_of(net)
        distance = masked_distance(end, solution, masks)
        predictions = predicted_classes(net, data)
        rows.append({"variant": variant, "label": RELEARNING_LABELS[variant], "density": density_of(masks),
                     "init_distance": masked_distance(start, solution, masks), "distance": distance,
                     "relative_distance": distance / reference if reference > 0 else math.nan,
                     "disagreement": float((predictions != solution_predictions).float().mean()),
                     "test_accuracy": evaluate(net, data)[1]})
    if progress is not None:
        progress("finished", total, total)
    return pd.DataFrame(rows, columns=RELEARNING_COLUMNS)
