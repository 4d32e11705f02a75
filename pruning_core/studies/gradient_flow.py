"""Gradient flow in sparse networks (Evci et al. 2022, "Gradient Flow in Sparse Neural Networks and How
Lottery Tickets Win"): the sparsity-aware initialisation (`sparse_init`) and the gradient norm along training
of dense, sparse, sparsity-aware-initialised, lottery-ticket and dynamically trained (SET, RigL) networks
(`gradient_flow`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from pruning_core.engine.masks import all_kept, attach_masks, attached_masks, density_of, prunable_weights
from pruning_core.engine.data import Dataset
from pruning_core.engine.sparse_training import DEFAULT_UPDATE_EVERY, SparseTrainingSettings, dense_gradients


@torch.no_grad()
def sparse_init(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, scale: float = 2.0,
                generator: torch.Generator | None = None) -> nn.Module:
    """Re-draw every kept weight from N(0, scale / fan_in(u)), where fan_in(u) counts the KEPT incoming
    weights of its output unit u (conv kernel positions included); pruned weights stay zero.

    A dense Kaiming init uses the full fan-in, so in a sparse network each unit's pre-activation
    variance shrinks by its density and signals (and gradients) fade with depth; scaling by the kept
    fan-in restores unit variance (scale=2 is He's ReLU gain). masks=None uses the attached masks.
    """
    masks = dict(masks) if masks is not None else attached_masks(model)
    if not masks:
        raise ValueError("sparse_init needs masks: prune the model first or pass masks=")
    weights = {name: weight for name, _, weight in prunable_weights(model)}
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
    attach_masks(model, masks)
    return model


# ---- gradient flow along training -------------------------------------------------------------------
VARIANTS = ("dense", "sparse", "sparse_init", "lottery", "set", "rigl")
DYNAMIC_VARIANTS = ("set", "rigl")   # trained with pc.train's sparse_training of the same name
VARIANT_LABELS = {
    "dense": "Dense",
    "sparse": "Sparse, standard init",
    "sparse_init": "Sparse, sparsity-aware init",
    "lottery": "Lottery ticket (IMP)",
    "set": "SET (dynamic, random regrowth)",
    "rigl": "RigL (dynamic, gradient regrowth)",
}
HOLDOUT = 256   # training images kept out of training to measure the gradient on
UPDATES = 10    # mask updates a SET / RigL variant makes at least when update_every is left to the study


def gradient_norm(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  masks: Mapping[str, torch.Tensor] | None = None) -> float:
    """Norm of the gradient of the mean cross-entropy on (inputs, targets) with respect to the prunable
    weights, each multiplied by its mask (masks=None: the attached masks; unmasked tensors count whole).

    BatchNorm uses the batch's statistics, as in training, but its running statistics are restored, and
    no .grad is written: measuring does not change the model or its training.
    """
    masks = dict(masks) if masks is not None else attached_masks(model)
    total = torch.zeros((), dtype=torch.float64, device=inputs.device)
    for name, grad in dense_gradients(model, inputs, targets).items():
        if grad is None:
            continue
        if name in masks:
            grad = grad * masks[name].to(grad.device)
        total += grad.double().pow(2).sum()
    return float(total.sqrt())


def split_holdout(dataset: Dataset, count: int = HOLDOUT, seed: int = 0) -> tuple[Dataset, tuple[torch.Tensor,
                                                                                                torch.Tensor]]:
    """(the dataset without `count` random training images, those images normalised and their labels)."""
    n = len(dataset.train_y)
    if not 0 < count < n:
        raise ValueError(f"holdout must be between 1 and {n - 1} training images, got {count}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(dataset.train_y.device)
    held, kept = order[:count], order[count:].sort().values
    rest = Dataset(dataset.spec, dataset.train_x[kept], dataset.train_y[kept], dataset.test_x, dataset.test_y,
                   scale=dataset.scale, mean=dataset.mean, std=dataset.std, num_classes=dataset.num_classes,
                   class_names=dataset.class_names)
    return rest, (dataset.normalize(dataset.train_x[held]), dataset.train_y[held])


def gradient_flow(model: str | Callable[..., nn.Module] = "conv", dataset: str | Dataset = "digits",
                  sparsity: float = 0.9, method: str = "random", variants: Sequence[str] = VARIANTS,
                  epochs: int = 5, *, seed: int = 0, eval_every: int | None = None, holdout: int = HOLDOUT,
                  batch_size: int | None = None, optimizer: str | None = None, lr: float | None = None,
                  lr_schedule: str | None = None, weight_decay: float | None = None,
                  prune_options: Mapping[str, Any] | None = None, imp_options: Mapping[str, Any] | None = None,
                  dst_options: Mapping[str, Any] | None = None, scale: float = 2.0,
                  device: str | torch.device | None = None,
                  progress: Callable[[str, float, float], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> pd.DataFrame:
    """Gradient flow (Evci et al. 2022): the norm of the masked gradient of the training loss, measured on
    `holdout` training images kept out of training, at initialisation and along training, for each variant:

      dense        the network as initialised, unpruned;
      sparse       pruned by `method` at `sparsity`, the standard (dense) initialisation kept;
      sparse_init  the same mask, the kept weights redrawn by `sparse_init` (variance scale / kept fan-in);
      lottery      a lottery ticket: `imp` to the same sparsity (its options in imp_options; by default
                   `epochs` per round), rewound and trained again;
      set, rigl    the sparse network (same mask, standard init) trained with dynamic sparse training, SET or
                   RigL (pc.train's sparse_training); dst_options are pc.train's update_every, drop_fraction and
                   update_until. Left unset, update_every is RigL's 100 steps, or shorter in a short run, so that
                   the mask is updated at least UPDATES times (`study_update_every`). The gradient is measured
                   on the mask of the moment.

    Every variant starts from the same initial network (`model`: a name from pc.MODELS or a function
    (input_shape, num_classes) -> nn.Module, called after torch.manual_seed(seed)) and trains with the same
    settings (the dataset's defaults unless given). The gradient is measured every `eval_every` steps
    (default: ten times per epoch) and after every epoch, where the test accuracy is measured too.

    Returns one row per measurement, long format for plotting: variant, label, step, epoch, grad_norm,
    train_loss, test_accuracy (NaN between epochs), density. progress(message, done, total) reports in
    epochs over all variants (IMP's rounds counted separately); should_stop() returning True stops and
    raises pc.Cancelled.
    """
    from pruning_core.engine.data import load_dataset
    from pruning_core.engine.models import MODELS, ModelSpec
    from pruning_core.engine.prune import Cancelled, prune
    from pruning_core.engine.settings import TrainSettings
    from pruning_core.engine.training import default_device, train

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown gradient-flow variant(s) {', '.join(map(str, unknown)) or '(none given)'}; "
                         f"choose from: {', '.join(VARIANTS)}")
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    target = torch.device(device) if device is not None else default_device()
    train_part, (held_x, held_y) = split_holdout(data, holdout, seed)
    held_x, held_y = held_x.to(target), held_y.to(target)
    settings = TrainSettings.resolve(train_part, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                                     lr_schedule=lr_schedule, weight_decay=weight_decay)
    dynamic = {"update_every": None, **dict(dst_options or {})}
    unknown_options = sorted(set(dynamic) - {"update_every", "drop_fraction", "update_until"})
    if unknown_options:
        raise ValueError(f"unknown dst_options {', '.join(unknown_options)}; valid: update_every, drop_fraction, "
                         "update_until")
    if dynamic["update_every"] is None:
        steps = max(1, len(train_part.train_y) // settings.batch_size) * settings.epochs
        dynamic["update_every"] = study_update_every(steps, dynamic.get("update_until"))
    builder = MODELS[model] if isinstance(model, str) else model
    if not callable(builder):
        raise ValueError(f"model must be a name from pc.MODELS or a function building an nn.Module, got {model!r}")

    def build() -> nn.Module:
        if isinstance(builder, ModelSpec):
            return builder(data.input_shape, data.num_classes, seed=seed).to(target)
        torch.manual_seed(seed)
        return builder(data.input_shape, data.num_classes).to(target)

    def stop_check(done: int, total: int) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("gradient flow stopped")

    total_units = float(len(variants) * max(settings.epochs, 1))
    mask_cache: dict[str, dict[str, torch.Tensor]] = {}

    def method_masks() -> dict[str, torch.Tensor]:
        if "masks" not in mask_cache:
            result = prune(build(), method, sparsity, train_part, seed=seed, options=prune_options,
                           progress=stop_check)
            mask_cache["masks"] = result.masks
        return mask_cache["masks"]

    rows: list[dict[str, Any]] = []
    for index, variant in enumerate(variants):
        if progress is not None:
            progress(f"{VARIANT_LABELS[variant]}: preparing", index * max(settings.epochs, 1), total_units)
        net = build()
        if variant == "dense":
            masks = all_kept([(n, w) for n, _, w in prunable_weights(net)])
        elif variant in ("sparse", "sparse_init", *DYNAMIC_VARIANTS):
            masks = method_masks()
            attach_masks(net, masks)
            if variant == "sparse_init":
                sparse_init(net, masks, scale=scale, generator=torch.Generator().manual_seed(seed))
        else:
            options = {"epochs": settings.epochs, "batch_size": settings.batch_size, "optimizer": settings.optimizer,
                       "lr": settings.lr, "lr_schedule": settings.lr_schedule, "weight_decay": settings.weight_decay,
                       **dict(imp_options or {})}

            def imp_progress(done: int, total: int, _i=index) -> None:
                stop_check(done, total)
                if progress is not None:
                    progress(f"{VARIANT_LABELS['lottery']}: IMP round {done} of {total}",
                             _i * max(settings.epochs, 1), total_units)

            masks = prune(net, "imp", sparsity, train_part, seed=seed, options=options, progress=imp_progress).masks
        density = density_of(masks)
        sparse_training = ({"sparse_training": variant, **dynamic} if variant in DYNAMIC_VARIANTS else {})
        run = train(net, masks if variant != "dense" else None, train_part, settings.epochs,
                    batch_size=settings.batch_size, optimizer=settings.optimizer, lr=settings.lr,
                    lr_schedule=settings.lr_schedule, weight_decay=settings.weight_decay, seed=seed,
                    device=target, steps_per_event=eval_every, should_stop=should_stop, **sparse_training)
        for event in run:
            if event.kind not in ("eval", "step"):
                continue
            # SET and RigL move their masks: their gradient is measured on the mask attached at the time.
            measured = None if sparse_training else masks
            rows.append({"variant": variant, "label": VARIANT_LABELS[variant], "step": event.step,
                         "epoch": event.epoch, "grad_norm": gradient_norm(net, held_x, held_y, measured),
                         "train_loss": event.train_loss, "test_accuracy": event.test_accuracy, "density": density})
            if progress is not None and event.kind == "eval":
                progress(f"{VARIANT_LABELS[variant]}: epoch {int(event.epoch)} of {settings.epochs}",
                         index * max(settings.epochs, 1) + event.epoch, total_units)
        if run.result is not None and run.result.cancelled:
            raise Cancelled("gradient flow stopped")
    table = pd.DataFrame(rows, columns=["variant", "label", "step", "epoch", "grad_norm", "train_loss",
                                        "test_accuracy", "density"])
    table["test_accuracy"] = table["test_accuracy"].astype(float)
    table["train_loss"] = table["train_loss"].astype(float)
    return table


def study_update_every(total_steps: int, update_until: float | None = None, updates: int = UPDATES) -> int:
    """ΔT for a SET / RigL run of `total_steps`: RigL's 100 steps, or fewer, so that at least `updates` mask
    updates come before T_end (a digits run of a few epochs has only tens of steps)."""
    stop = SparseTrainingSettings.resolve("rigl", update_until=update_until).stop_step(total_steps)
    return min(DEFAULT_UPDATE_EVERY, max(1, stop // (updates + 1)))
