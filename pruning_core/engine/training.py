"""`pc.train`: short, fast training of a (pruned) model that keeps pruned weights at exactly zero.

The whole dataset lives on the device as one uint8 tensor; batches, augmentation and normalisation
are tensor operations there, so no DataLoader worker processes are needed. On CUDA the forward and
backward passes run under bf16 autocast with channels_last convolutions; on a CPU in float32. The
code path is otherwise the same.

    run = pc.train(model, result.masks, "digits", epochs=10)
    for event in run:              # live progress: one TrainEvent per log point
        print(event.epoch, event.test_accuracy)
    run.result.final_test_accuracy

or simply `pc.train(...).run()` to train to the end and get the `TrainResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pruning_core.engine.masks import MASK_BUFFER, attach_masks, attached_masks, prunable_weights
from pruning_core.engine.data import DATASETS, Dataset, load_dataset
from pruning_core.engine.arguments import check_seed, default_device, device_name, resolve_device  # noqa: F401
from pruning_core.engine.settings import TrainSettings
from pruning_core.engine.sparse_training import MaskUpdater, SparseTrainingSettings, check_mask_callback

EVAL_BATCH = 1024


@dataclass
class TrainEvent:
    """One progress point. kind: 'eval' (after an epoch, or epoch 0 before training), 'step'
    (within an epoch: train loss and speed only), 'done' or 'cancelled' (final)."""

    kind: str
    step: int
    epoch: float                      # fractional within an epoch for 'step' events
    epochs: int
    train_loss: float | None
    test_loss: float | None
    test_accuracy: float | None
    images_per_s: float | None
    elapsed_s: float
    lr: float

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    settings: TrainSettings
    history: pd.DataFrame             # every event as a row
    final_test_accuracy: float
    final_test_loss: float
    best_test_accuracy: float
    images_per_s: float               # mean training throughput over all epochs
    elapsed_s: float
    cancelled: bool
    device: str
    warnings: list[str] = field(default_factory=list)
    sparse_training: SparseTrainingSettings = field(default_factory=SparseTrainingSettings)
    mask_updates: pd.DataFrame | None = None   # SET / RigL: one row per update and layer (MASK_UPDATE_COLUMNS)

    def summary(self) -> dict[str, Any]:
        summary = {"final_test_accuracy": self.final_test_accuracy, "final_test_loss": self.final_test_loss,
                   "best_test_accuracy": self.best_test_accuracy, "images_per_s": self.images_per_s,
                   "train_s": self.elapsed_s, "cancelled": self.cancelled, "device": self.device,
                   "warnings": list(self.warnings), "settings": asdict(self.settings)}
        if self.sparse_training.dynamic:   # a static run's summary stays as it always was
            updates = self.mask_updates if self.mask_updates is not None else pd.DataFrame(columns=["step", "moved"])
            summary.update({"sparse_training": asdict(self.sparse_training),
                            "mask_updates": int(updates["step"].nunique()),
                            "weights_moved": int(updates["moved"].sum())})
        return summary


def collapse_warnings(masks: Mapping[str, torch.Tensor], num_classes: int | None = None) -> list[str]:
    """Plain-language explanation when a layer has no weight left, so a run at chance says why."""
    empty = [name for name, mask in masks.items() if not bool(mask.any())]
    if not empty:
        return []
    chance = f" ({100 / num_classes:.0f}% for {num_classes} classes)" if num_classes else ""
    return [f"Layer collapse: {', '.join(empty)} kept no weights, so no signal from the input reaches the output. "
            f"The network can only learn a constant prediction and stays at chance accuracy{chance}."]


class TrainingRun:
    """An iterator of TrainEvents; training advances as it is consumed. `.run()` consumes it all."""

    def __init__(self, events: Iterator[TrainEvent]):
        self._events = events
        self.result: TrainResult | None = None

    def __iter__(self) -> Iterator[TrainEvent]:
        return self

    def __next__(self) -> TrainEvent:
        return next(self._events)

    def run(self) -> TrainResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result


def train(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, dataset: str | Dataset = "digits",
          epochs: int | None = None, *, batch_size: int | None = None, optimizer: str | None = None,
          lr: float | None = None, lr_schedule: str | None = None, weight_decay: float | None = None,
          label_smoothing: float | None = None, seed: int = 0, device: str | torch.device | None = None,
          steps_per_event: int | None = None, should_stop: Callable[[], bool] | None = None,
          augment: bool = True, data_root: str | None = None, download: bool = True,
          sparse_training: str = "static", update_every: int | None = None, drop_fraction: float | None = None,
          update_until: float | None = None,
          on_mask_update: Callable[[dict[str, Any]], None] | None = None) -> TrainingRun:
    """Train `model` on `dataset` (a name from pc.DATASETS or a loaded Dataset) for `epochs`, keeping the
    weights outside `masks` at exactly zero (masks=None keeps the masks already attached by `pc.prune`,
    or trains densely).

    sparse_training 'set' or 'rigl' trains a pruned model with a mask that changes (engine.sparse_training):
    every `update_every` steps (default 100) until `update_until` of training (0.75) each layer drops the
    fraction drop_fraction/2·(1 + cos(π t / T_end)) (drop_fraction default 0.3) of its smallest kept weights and
    regrows as many, at random (SET) or where the dense gradient is largest (RigL); every layer keeps exactly
    its number of weights. `on_mask_update(record)` gets each update's record; the mask at the end stays
    attached (`pc.attached_masks(model)`) and `result.mask_updates` lists the updates.

    Settings left as None take the dataset's defaults (SGD with Nesterov momentum and a one-cycle learning
    rate on the image datasets). `should_stop()` is checked every step; when it returns True the run ends
    with a 'cancelled' event. Validation happens here, before anything trains; the returned TrainingRun
    trains as it is iterated.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    data = dataset if isinstance(dataset, Dataset) else load_dataset(
        DATASETS[dataset].name if isinstance(dataset, str) else dataset, root=data_root, download=download)
    settings = TrainSettings.resolve(data, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                                     lr_schedule=lr_schedule, weight_decay=weight_decay,
                                     label_smoothing=label_smoothing)
    seed = check_seed(seed)
    target = resolve_device(device)
    from pruning_core.engine.prune import check_model_fits

    model.to(target)
    if masks is not None:
        attach_masks(model, masks)
    else:
        # Re-attach what is there: a deep-copied model keeps its mask buffers but loses the gradient hooks.
        attach_masks(model, attached_masks(model))
    classes = check_model_fits(model, data.input_shape)
    if classes < data.num_classes:
        raise ValueError(f"the model has {classes} outputs but {data.name} has {data.num_classes} classes; "
                         f"build it with num_classes={data.num_classes}")
    if steps_per_event is not None and steps_per_event < 1:
        raise ValueError(f"steps_per_event must be >= 1, got {steps_per_event}")
    dynamic = SparseTrainingSettings.resolve(sparse_training, update_every, drop_fraction, update_until)
    check_mask_callback(on_mask_update)
    if dynamic.dynamic and not attached_masks(model):
        raise ValueError(f"sparse_training {dynamic.mode!r} needs a pruned model: prune it first, e.g. "
                         "pc.prune(model, 'random_erk', 0.9) (RigL's Erdős–Rényi-Kernel layer densities), or pass "
                         "masks")
    run = TrainingRun(iter(()))
    run._events = _train_events(run, model, data.to(target), settings, seed, target, steps_per_event,
                                should_stop, augment, dynamic, on_mask_update)
    return run


def _train_events(run: TrainingRun, model: nn.Module, data: Dataset, settings: TrainSettings, seed: int,
                  device: torch.device, steps_per_event: int | None, should_stop: Callable[[], bool] | None,
                  augment: bool, dynamic: SparseTrainingSettings,
                  on_mask_update: Callable[[dict[str, Any]], None] | None) -> Iterator[TrainEvent]:
    started = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    cuda = device.type == "cuda"
    # channels_last convolutions are faster on GPUs (tensor cores) and on CPUs (oneDNN): ~25% per step for the
    # small CNN on digits on a 2-core CPU.
    model.to(memory_format=torch.channels_last)
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    attached = attached_masks(model)
    warnings = collapse_warnings(attached, data.num_classes)

    n_train = len(data.train_y)
    steps_per_epoch = max(1, n_train // settings.batch_size)   # drop_last: BatchNorm dislikes tiny batches
    total_steps = steps_per_epoch * settings.epochs
    every = steps_per_event or max(1, steps_per_epoch // 10)
    opt = make_optimizer(model, settings)
    scheduler = make_scheduler(opt, settings, max(total_steps, 1))
    # Before masked_pairs: the updater gives the model mask buffers of its own, which it then rewrites in place.
    updater = (MaskUpdater(model, opt, dynamic, total_steps, seed, settings.label_smoothing)
               if dynamic.dynamic else None)
    if updater is not None and not dynamic.update_steps(total_steps) and total_steps > 0:
        warnings.append(f"{dynamic.mode.upper() if dynamic.mode == 'set' else 'RigL'} never updates the mask: the "
                        f"mask is frozen after step {updater.stop_step} of {total_steps}, before the first update "
                        f"at step {dynamic.update_every}. Set update_every lower (a {data.name} epoch has "
                        f"{steps_per_epoch} steps) or train longer.")
    masked = masked_pairs(model)
    history: list[dict[str, Any]] = []
    images_seen, train_time = 0, 0.0

    def event(kind: str, step: int, epoch: float, train_loss=None, test_loss=None, test_accuracy=None,
              images_per_s=None) -> TrainEvent:
        e = TrainEvent(kind, step, epoch, settings.epochs, train_loss, test_loss, test_accuracy, images_per_s,
                       time.perf_counter() - started, opt.param_groups[0]["lr"])
        history.append(e.as_row())
        return e

    test_loss, test_accuracy = evaluate(model, data, cuda)
    best = test_accuracy
    yield event("eval", 0, 0.0, test_loss=test_loss, test_accuracy=test_accuracy)
    step, cancelled = 0, False
    for epoch in range(settings.epochs):
        model.train()
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        loss_count = 0
        for inputs, targets in data.batches("train", settings.batch_size, shuffle=True, augment=augment,
                                            generator=generator, drop_last=True):
            if should_stop is not None and should_stop():
                cancelled = True
                break
            loss_sum += training_step(model, opt, scheduler, inputs, targets, settings.label_smoothing, masked)
            loss_count += 1
            step += 1
            images_seen += len(targets)
            if updater is not None and updater.due(step):
                record = updater.update(step, inputs, targets)
                if on_mask_update is not None:
                    on_mask_update(record)
            if step % every == 0 and step % steps_per_epoch != 0:
                elapsed = time.perf_counter() - epoch_start
                yield event("step", step, epoch + loss_count / steps_per_epoch,
                            train_loss=float(loss_sum / loss_count),
                            images_per_s=loss_count * settings.batch_size / max(elapsed, 1e-9))
        if cuda:
            torch.cuda.synchronize(device)
        epoch_time = time.perf_counter() - epoch_start
        train_time += epoch_time
        if cancelled:
            break
        test_loss, test_accuracy = evaluate(model, data, cuda)
        best = max(best, test_accuracy)
        yield event("eval", step, float(epoch + 1), train_loss=float(loss_sum / max(loss_count, 1)),
                    test_loss=test_loss, test_accuracy=test_accuracy,
                    images_per_s=loss_count * settings.batch_size / max(epoch_time, 1e-9))
    model.to(memory_format=torch.contiguous_format)  # hand the model back in the layout it came in
    final = event("cancelled" if cancelled else "done", step, step / steps_per_epoch, test_loss=test_loss,
                  test_accuracy=test_accuracy, images_per_s=images_seen / train_time if train_time else None)
    run.result = TrainResult(settings=settings, history=pd.DataFrame(history), final_test_accuracy=test_accuracy,
                             final_test_loss=test_loss, best_test_accuracy=best,
                             images_per_s=images_seen / train_time if train_time else 0.0,
                             elapsed_s=time.perf_counter() - started, cancelled=cancelled,
                             device=device_name(device), warnings=warnings, sparse_training=dynamic,
                             mask_updates=updater.table() if updater is not None else None)
    yield final


def channels_last(inputs: torch.Tensor) -> torch.Tensor:
    """Images in channels_last memory order (other tensors unchanged)."""
    return inputs.contiguous(memory_format=torch.channels_last) if inputs.dim() == 4 else inputs


def masked_pairs(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(weights, masks) of every masked layer, as lists for one fused multiply per step."""
    pairs = [(w, getattr(m, MASK_BUFFER)) for _, m, w in prunable_weights(model)
             if getattr(m, MASK_BUFFER, None) is not None]
    return [w for w, _ in pairs], [m for _, m in pairs]


def training_step(model: nn.Module, opt: torch.optim.Optimizer, scheduler, inputs: torch.Tensor,
                  targets: torch.Tensor, label_smoothing: float,
                  masked: tuple[list[torch.Tensor], list[torch.Tensor]]) -> torch.Tensor:
    """One optimizer step (channels_last images; bf16 autocast on CUDA); returns the detached loss."""
    cuda = inputs.device.type == "cuda"
    inputs = channels_last(inputs)
    with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16, enabled=cuda):
        loss = F.cross_entropy(model(inputs), targets, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    scheduler.step()
    if masked[0]:
        # The gradient hook already keeps pruned weights at zero; this guards against optimizers that
        # move weights without a gradient.
        with torch.no_grad():
            torch._foreach_mul_(masked[0], masked[1])
    return loss.detach()


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, cuda: bool | None = None, split: str = "test") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the model on a split, in eval mode."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda" if cuda is None else cuda
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = 0
    try:
        for inputs, targets in data.to(device).batches(split, EVAL_BATCH, shuffle=False):
            inputs = channels_last(inputs)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = model(inputs)
            loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").double()
            correct += (logits.argmax(1) == targets).sum()
            count += len(targets)
    finally:
        model.train(was_training)
    return float(loss_sum) / max(count, 1), float(correct) / max(count, 1)


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, nesterov=True,
                               weight_decay=settings.weight_decay)
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, settings: TrainSettings, total_steps: int):
    if settings.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=total_steps,
                                                   pct_start=0.25, anneal_strategy="linear")
    if settings.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
