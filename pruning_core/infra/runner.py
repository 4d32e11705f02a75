"""Run one `RunConfig` end to end (data -> model -> prune -> train) and record it in the store.

The CLI, the sweep and the dashboard's job manager all run configurations through `execute`, so a
run is recorded the same way wherever it starts, and a configuration whose key already has a finished
run in the store is reused instead of computed again. `execute` = reuse check + `compute` (the work,
which reports to a `Recorder`) + a `StoreRecorder`; the Ray engine (`infra/cluster.py`) runs `compute`
in a worker and replays its recorder calls on a `StoreRecorder` in the driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from pruning_core.config import DENSE, RunConfig
from pruning_core.engine import masks as mk
from pruning_core.engine.data import Dataset, load_dataset
from pruning_core.engine.methods import METHODS
from pruning_core.engine.models import MODELS
from pruning_core.engine.prune import Cancelled, PruneResult, prune
from pruning_core.engine.training import TrainEvent, TrainResult, default_device, device_name, train
from pruning_core.infra.store import METRIC_COLUMNS, InvalidTransitionError, Store

ProgressCallback = Callable[[str, float, float], None]  # (message, done, total)
TRAINING_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "lr_schedule", "weight_decay", "label_smoothing")
# Metrics rows of a mask search's rounds carry phase=SEARCH_PHASE (training rows have no phase); these keys of a
# round's record are stored as search_<key>, as they name metric columns.
SEARCH_PHASE = "search"
SEARCH_CLASHES = ("step", "phase", *METRIC_COLUMNS)


@dataclass
class RunOutcome:
    run_id: int | None
    config: RunConfig
    summary: dict[str, Any]
    reused: bool
    prune_result: PruneResult | None = None
    train_result: TrainResult | None = None
    model: nn.Module | None = None


def build_model(config: RunConfig, dataset: Dataset) -> nn.Module:
    """The initial network of a configuration: the same seed gives the same initial weights to every method.

    The weights come from a generator of their own, not torch's global one, which the dashboard's page
    threads and the job manager's worker would otherwise race on."""
    return MODELS[config.model](dataset.input_shape, dataset.num_classes, seed=config.seed)


def prune_with_config(model: nn.Module, config: RunConfig, dataset: Dataset,
                      progress: Callable[[int, int], None] | None = None,
                      on_round: Callable[[dict[str, Any]], None] | None = None) -> PruneResult:
    """pc.prune with the configuration's method, schedule, sanity check and sparsity-aware init.
    `on_round(record)` gets each round's record of a method that trains to find its mask (IMP, GemMiner)
    as soon as it is known."""
    config = config.canonical()
    method = "random" if config.method == DENSE else config.method  # sparsity 0: every weight kept
    # Methods that train to find their masks (IMP, GemMiner) train with the run's settings (IMP: epochs per round).
    options = ({name: getattr(config, name) for name in TRAINING_FIELDS if getattr(config, name) is not None}
               if METHODS[method].run is not None else None)
    if options is not None and on_round is not None:
        options["on_round"] = on_round
    result = prune(model, method, config.sparsity, dataset, schedule=config.schedule, iterations=config.iterations,
                   scope=config.scope, seed=config.seed, shuffle=config.sanity == "shuffle",
                   reinit=config.sanity == "reinit", invert=config.sanity == "invert",
                   prune_batches=config.prune_batches, options=options, progress=progress)
    if config.sparse_init:
        from pruning_core.studies.gradient_flow import sparse_init

        sparse_init(model, result.masks, generator=torch.Generator().manual_seed(config.seed))
    return result


class Recorder:
    """Where a computing run's records go. This base keeps nothing (a run without a store).

    `compute` only ever talks to a recorder, never to the store: `StoreRecorder` writes each call into the
    run store in this process, and the Ray engine's worker-side recorder sends each call to the driver,
    which replays it on a `StoreRecorder`. So a run is recorded by the same calls wherever it computes."""

    def start(self, device: str, versions: dict[str, str] | None = None) -> None:
        """The run starts computing on `device` (with these library versions; None: this process's)."""

    def progress(self, message: str, done: float, total: float) -> str:
        """Progress so far; returns the run's status ('cancelled' = stop at once)."""
        return "running"

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        """Metric rows: training steps and evaluations, or a mask search's rounds (phase='search')."""

    def pruned(self, layers: pd.DataFrame, masks: dict[str, Any], prune_s: float) -> None:
        """The per-layer table, the masks and the pruning time, once pruning is over."""

    def finish(self, summary: dict[str, Any], timings: dict[str, float]) -> None:
        """The run is done with this summary."""

    def cancel(self) -> None:
        """The run stopped because it was cancelled."""

    def fail(self, error: str) -> None:
        """The run stopped on an error (one plain sentence)."""


class StoreRecorder(Recorder):
    """Records one run (already created, queued) in `store`."""

    def __init__(self, store: Store, run_id: int):
        self.store = store
        self.run_id = run_id

    def start(self, device: str, versions: dict[str, str] | None = None) -> None:
        self.store.start_run(self.run_id, device, versions=versions)

    def progress(self, message: str, done: float, total: float) -> str:
        return self.store.update_progress(self.run_id, done, total, message)

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        self.store.add_metrics(self.run_id, rows)

    def pruned(self, layers: pd.DataFrame, masks: dict[str, Any], prune_s: float) -> None:
        with self.store.transaction():
            self.store.set_layers(self.run_id, layers)
            self.store.save_masks(self.run_id, masks)
            self.store.add_timings(self.run_id, {"prune_s": prune_s})

    def finish(self, summary: dict[str, Any], timings: dict[str, float]) -> None:
        self.store.finish_run(self.run_id, summary, timings)

    def cancel(self) -> None:
        try:
            self.store.cancel_run(self.run_id)
        except InvalidTransitionError:
            pass  # already cancelled by the user

    def fail(self, error: str) -> None:
        try:
            self.store.fail_run(self.run_id, error)
        except InvalidTransitionError:
            pass


def execute(config: RunConfig, store: Store | None = None, *, kind: str = "train", run_id: int | None = None,
            reuse: bool = True, device: str | torch.device | None = None,
            on_progress: ProgressCallback | None = None, on_event: Callable[[TrainEvent], None] | None = None,
            should_stop: Callable[[], bool] | None = None, data_root: str | None = None,
            download: bool = True, keep_model: bool = False) -> RunOutcome:
    """Prune and (for kind 'train' or 'sweep_cell') train one configuration, recording it in `store`.

    kind 'prune' only prunes. With `reuse`, a finished run of the same key and kind is returned as is.
    `run_id` continues a run already created (queued) in the store, as the job manager does. Errors are
    recorded as a failed run and raised; `should_stop()` returning True cancels the run.
    """
    config = config.canonical().validate()
    key = config.key()
    if store is not None and reuse:
        done = store.find_done(key, kind=kind)
        if done is not None:
            if run_id is not None and run_id != done["id"]:
                store.delete_run(run_id)
            return RunOutcome(done["id"], config, done.get("summary") or {}, reused=True)
    recorder = Recorder()
    if store is not None:
        if run_id is None:
            run_id = store.create_run(config.to_dict(), key=key, kind=kind)
        recorder = StoreRecorder(store, run_id)
    outcome = compute(config, recorder, kind=kind, device=device, on_progress=on_progress, on_event=on_event,
                      should_stop=should_stop, data_root=data_root, download=download, keep_model=keep_model)
    outcome.run_id = run_id
    return outcome


def compute(config: RunConfig, recorder: Recorder, *, kind: str = "train",
            device: str | torch.device | None = None, on_progress: ProgressCallback | None = None,
            on_event: Callable[[TrainEvent], None] | None = None, should_stop: Callable[[], bool] | None = None,
            data_root: str | None = None, download: bool = True, keep_model: bool = False) -> RunOutcome:
    """Compute one validated configuration, telling `recorder` everything worth recording as it happens.

    The part of `execute` that needs no store: the Ray engine runs it in a worker process. Errors are
    reported to the recorder (fail) and raised; a cancel (the recorder's status, `should_stop()`, or a
    KeyboardInterrupt) is reported (cancel) and raised as `Cancelled` / KeyboardInterrupt."""
    target = torch.device(device) if device is not None else default_device()
    recorder.start(device_name(target))
    started = time.perf_counter()

    def report(message: str, done: float, total: float) -> None:
        status = recorder.progress(message, done, total)
        if status == "cancelled" or (should_stop is not None and should_stop()):
            raise Cancelled(message)
        if on_progress is not None:
            on_progress(message, done, total)

    try:
        report("loading data", 0, 1)
        dataset = load_dataset(config.dataset, root=data_root, download=download)
        model = build_model(config, dataset).to(target)
        rounds = [1]

        def prune_progress(done: int, total: int) -> None:
            rounds[0] = total
            report(f"pruning: round {done} of {total}", done, total)

        def search_round(record: dict[str, Any]) -> None:
            # A round of a mask search (IMP, GemMiner) as a metrics row tagged phase="search", so that pages
            # can draw the search while it runs; its keys are renamed where they would clash with metric columns.
            row = {("search_" + k if k in SEARCH_CLASHES else k): v for k, v in record.items()}
            recorder.metrics([{"phase": SEARCH_PHASE, **row}])

        result = prune_with_config(model, config, dataset, prune_progress, on_round=search_round)
        prune_s = time.perf_counter() - started
        summary: dict[str, Any] = {**result.summary(), "method": config.method}
        recorder.pruned(result.layers, result.masks, prune_s)
        train_result = None
        if kind != "prune":
            training = train(model, None, dataset, config.epochs, batch_size=config.batch_size,
                             optimizer=config.optimizer, lr=config.lr, lr_schedule=config.lr_schedule,
                             weight_decay=config.weight_decay, label_smoothing=config.label_smoothing,
                             seed=config.seed, device=target)
            for event in training:
                if event.kind in ("eval", "step"):
                    recorder.metrics([event.as_row()])
                if on_event is not None:
                    on_event(event)
                epochs = max(event.epochs, 1)
                report(f"training: epoch {min(int(event.epoch) + 1, epochs)} of {epochs}"
                       if event.kind != "done" else "finished", event.epoch, epochs)
            train_result = training.result
            summary.update(train_result.summary())
        summary["warnings"] = sorted(set(summary.get("warnings", [])) | set(_collapse_note(result)))
        timings = {"prune_s": prune_s, "total_s": time.perf_counter() - started}
        if train_result is not None:
            timings["train_s"] = train_result.elapsed_s
        recorder.finish(summary, timings)
        return RunOutcome(None, config, summary, reused=False, prune_result=result, train_result=train_result,
                          model=model if keep_model else None)
    except (Cancelled, KeyboardInterrupt):
        recorder.cancel()
        raise
    except Exception as error:
        recorder.fail(describe_error(error))
        raise


def _collapse_note(result: PruneResult) -> list[str]:
    from pruning_core.engine.training import collapse_warnings

    return collapse_warnings(result.masks)


def describe_error(error: BaseException) -> str:
    """One plain sentence for a failed run: what went wrong and what to do."""
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return ("Out of memory: the model or batch does not fit on this device. Choose a smaller model, a smaller "
                "batch size, or the digits dataset.")
    if isinstance(error, ValueError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def masks_for_run(store: Store, run_id: int) -> tuple[nn.Module, dict[str, torch.Tensor], RunConfig]:
    """Rebuild a stored run's pruned model: a fresh model from the stored seed with its masks re-applied."""
    record = store.get_run(run_id)
    config = RunConfig.from_dict(record["config"])
    dataset = load_dataset(config.dataset, download=False)
    model = build_model(config, dataset)
    masks = store.load_masks(run_id)
    if masks is None:
        raise ValueError(f"run {run_id} has no stored masks")
    mk.attach_masks(model, masks)
    return model, masks, config
