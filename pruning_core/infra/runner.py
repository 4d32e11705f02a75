"""Run one `RunConfig` end to end (data -> model -> prune -> train) and record it in the store.

The CLI, the sweep and the dashboard's job manager all run configurations through `execute`, so a
run is recorded the same way wherever it starts, and a configuration whose key already has a finished
run in the store is reused instead of computed again. `execute` = validation, reuse check + `compute` (the
work, which reports to a `Recorder`, never to the store) with a `StoreRecorder`; the Ray engine
(`infra/cluster.py`) runs `compute` in a worker and replays its recorder calls on a `StoreRecorder` in the
driver, so a run is recorded by the same store calls wherever it computes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from pruning_core.config import DENSE, RunConfig, method_options, sparse_training_settings, training_settings
from pruning_core.engine.masks import attach_masks, attached_masks, prunable_weights
from pruning_core.engine.arguments import device_name, resolve_device
from pruning_core.engine.data import Dataset, load_dataset
from pruning_core.engine.layers import layer_table
from pruning_core.engine.methods import METHODS
from pruning_core.engine.models import MODELS
from pruning_core.engine.prune import Cancelled, PruneResult, prune
from pruning_core.engine.threads import run_threads
from pruning_core.engine.training import TrainEvent, TrainResult, train
from pruning_core.infra.store import METRIC_COLUMNS, InvalidTransitionError, Store, UnknownRunError

ProgressCallback = Callable[[str, float, float], None]  # (message, done, total)
# Metrics rows of a mask search's rounds carry phase=SEARCH_PHASE (training rows have no phase); these keys of a
# round's record are stored as search_<key>, as they name metric columns.
SEARCH_PHASE = "search"
SEARCH_CLASHES = ("step", "phase", *METRIC_COLUMNS)
# Dynamic sparse training (SET, RigL) records each mask update as metrics rows with phase=MASK_PHASE, one per
# layer: step, layer, kept, total, dropped, moved (weights now at positions they were not before) and
# drop_fraction; the final mask replaces the initial one in the run's mask file and layer table.
MASK_PHASE = "mask_update"


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
    options = ({**training_settings(config), **method_options(config)} if METHODS[method].run is not None else None)
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
    """Where a computing run's records go. This base keeps nothing (a run without a store)."""

    def start(self, device: str, versions: dict[str, str] | None = None) -> None:
        """The run starts computing on `device` (with these library versions; None: this process's). Raises
        Cancelled when the run was cancelled before it started."""

    def handed_masks(self, config: RunConfig) -> dict[str, torch.Tensor] | None:
        """Masks handed over with the run's submission that can stand in for pruning it, or None."""
        return None

    def progress(self, message: str, done: float, total: float) -> str:
        """Progress so far; returns the run's status ('cancelled' = stop at once)."""
        return "running"

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        """Metric rows: training steps and evaluations, a mask search's rounds, mask updates."""

    def pruned(self, layers: pd.DataFrame, masks: Mapping[str, Any] | None, prune_s: float) -> None:
        """The per-layer table, the masks (None: the handed-over ones, stored already) and the pruning time."""

    def final_mask(self, masks: Mapping[str, Any], layers: pd.DataFrame) -> None:
        """Dynamic sparse training moved the mask: the final one replaces the initial mask and layer table."""

    def finish(self, summary: dict[str, Any], timings: dict[str, float]) -> None:
        """The run is done with this summary."""

    def cancel(self) -> None:
        """The run stopped because it was cancelled."""

    def fail(self, error: str) -> None:
        """The run stopped on an error (one plain sentence)."""


class StoreRecorder(Recorder):
    """Records one run (already created, queued) in `store`: the store calls `execute` makes."""

    def __init__(self, store: Store, run_id: int):
        self.store = store
        self.run_id = run_id

    def start(self, device: str, versions: dict[str, str] | None = None) -> None:
        _start(self.store, self.run_id, device, versions)

    def handed_masks(self, config: RunConfig) -> dict[str, torch.Tensor] | None:
        return _handed_over_masks(self.store, self.run_id, config)

    def progress(self, message: str, done: float, total: float) -> str:
        return self.store.update_progress(self.run_id, done, total, message)

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        self.store.add_metrics(self.run_id, rows)

    def pruned(self, layers: pd.DataFrame, masks: Mapping[str, Any] | None, prune_s: float) -> None:
        with self.store.transaction():
            self.store.set_layers(self.run_id, layers)
            if masks is not None:
                self.store.save_masks(self.run_id, masks)
            self.store.add_timings(self.run_id, {"prune_s": prune_s})

    def final_mask(self, masks: Mapping[str, Any], layers: pd.DataFrame) -> None:
        with self.store.transaction():
            self.store.save_masks(self.run_id, masks)
            self.store.set_layers(self.run_id, layers)

    def finish(self, summary: dict[str, Any], timings: dict[str, float]) -> None:
        self.store.finish_run(self.run_id, summary, timings)

    def cancel(self) -> None:
        try:
            self.store.cancel_run(self.run_id)
        except (InvalidTransitionError, UnknownRunError):
            pass  # already cancelled by the user, or deleted

    def fail(self, error: str) -> None:
        try:
            self.store.fail_run(self.run_id, error)
        except (InvalidTransitionError, UnknownRunError):
            pass   # cancelled or deleted meanwhile: the original error is the one to raise


def execute(config: RunConfig, store: Store | None = None, *, kind: str = "train", run_id: int | None = None,
            reuse: bool = True, device: str | torch.device | None = None,
            on_progress: ProgressCallback | None = None, on_event: Callable[[TrainEvent], None] | None = None,
            should_stop: Callable[[], bool] | None = None, data_root: str | None = None,
            download: bool = True, keep_model: bool = False, validated: bool = False) -> RunOutcome:
    """Prune and (for kind 'train' or 'sweep_cell') train one configuration, recording it in `store`.

    kind 'prune' only prunes. With `reuse`, a finished run of the same key and kind is returned as is.
    `run_id` continues a run already created (queued) in the store, as the job manager does; when that run
    already has masks in the store (handed over with the submission, e.g. by the page that pruned the same
    configuration to show it), they are used instead of pruning again (see `masks_reusable`). `validated`:
    the caller has already validated the canonical `config` (the job manager, at submission). Errors are
    recorded as a failed run and raised; `should_stop()` returning True cancels the run. On a CPU it prunes and
    trains with `threads.cpu_threads()` torch threads whatever the caller's count, so that every entry point gets
    the same numbers for a key; the summary records the device and the thread count.
    """
    config = config if validated else config.canonical().validate()
    key = config.key()
    if store is not None and reuse:
        done = store.find_done(key, kind=kind)
        if done is not None:
            if run_id is not None and run_id != done["id"]:
                store.delete_run(run_id)
            return RunOutcome(done["id"], config, done.get("summary") or {}, reused=True)
    if store is not None and run_id is None:
        resolve_device(device)   # a device that does not exist here is bad input: nothing is recorded
        run_id = store.create_run(config.to_dict(), key=key, kind=kind)
    recorder = StoreRecorder(store, run_id) if store is not None else Recorder()
    outcome = compute(config, recorder, kind=kind, device=device, on_progress=on_progress, on_event=on_event,
                      should_stop=should_stop, data_root=data_root, download=download, keep_model=keep_model)
    outcome.run_id = run_id
    return outcome


def compute(config: RunConfig, recorder: Recorder, *, kind: str = "train",
            device: str | torch.device | None = None, on_progress: ProgressCallback | None = None,
            on_event: Callable[[TrainEvent], None] | None = None, should_stop: Callable[[], bool] | None = None,
            data_root: str | None = None, download: bool = True, keep_model: bool = False) -> RunOutcome:
    """Compute one validated, canonical configuration, telling `recorder` everything worth recording as it
    happens (the part of `execute` that needs no store: the Ray engine runs it in a worker process). Errors are
    reported to the recorder (fail) and raised; a cancel (the recorder's status, `should_stop()`, or a
    KeyboardInterrupt) is reported (cancel) and raised. The outcome's run_id is None (the caller knows it)."""
    started = time.perf_counter()
    # The torch thread count is part of what fixes a result (threads.py): set for this run, restored after.
    thread_scope = contextlib.ExitStack()

    def report(message: str, done: float, total: float) -> None:
        status = recorder.progress(message, done, total)
        if status == "cancelled" or (should_stop is not None and should_stop()):
            raise Cancelled(message)
        if on_progress is not None:
            on_progress(message, done, total)

    try:
        # From here on the run exists: whatever goes wrong (a device handed over by the job manager that this
        # machine lacks, a run cancelled before it started, ...) ends it as failed or cancelled with the reason,
        # never left queued for the next process to call it "killed".
        target = resolve_device(device)
        threads = thread_scope.enter_context(run_threads(target))
        recorder.start(device_name(target))
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

        handed = recorder.handed_masks(config)
        result = prune_from_masks(model, config, dataset, handed) if handed is not None else None
        if result is None:
            result = prune_with_config(model, config, dataset, prune_progress, on_round=search_round)
        prune_s = time.perf_counter() - started
        summary: dict[str, Any] = {**result.summary(), "method": config.method}
        recorder.pruned(result.layers, result.masks if handed is None else None, prune_s)
        train_result = None
        if kind != "prune":
            dynamic = sparse_training_settings(config)

            def mask_update(record: dict[str, Any]) -> None:
                recorder.metrics([{"step": record["step"], "phase": MASK_PHASE,
                                   "drop_fraction": record["drop_fraction"], **layer} for layer in record["layers"]])

            training = train(model, None, dataset, seed=config.seed, device=target, **training_settings(config),
                             **dynamic, on_mask_update=mask_update if dynamic else None)
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
            if dynamic and not train_result.cancelled:   # the mask moved: the final one is the run's mask
                final = attached_masks(model)
                layers = layer_table(model, final, dataset.input_shape)
                summary["final_effective_density"] = float(layers["effective_kept"].sum() / layers["total"].sum())
                recorder.final_mask(final, layers)
        summary.update(device=device_name(target), threads=threads)   # what, besides the key, fixed the numbers
        # One collapse warning, with the chance level: training's (when it trained) is the same sentence.
        summary["warnings"] = list(dict.fromkeys([*summary.get("warnings", []),
                                                  *_collapse_note(result, dataset.num_classes)]))
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
    finally:
        thread_scope.close()


def _start(store: Store, run_id: int, device: str, versions: dict[str, str] | None = None) -> None:
    """Mark the queued run running; a run cancelled while it waited raises Cancelled."""
    try:
        if versions is None:   # the same call as ever where the run computes in this process
            store.start_run(run_id, device)
        else:
            store.start_run(run_id, device, versions=versions)
    except InvalidTransitionError:
        if store.get_run(run_id)["status"] == "cancelled":
            raise Cancelled(f"run {run_id} was cancelled before it started") from None
        raise


def masks_reusable(config: RunConfig) -> bool:
    """Whether masks found before for this configuration reproduce its pruning: pruning changes nothing but
    the masks (the initial weights come from the seed), unless the method trains to find its mask (IMP rewinds
    the weights, GemMiner learns scores) or the sanity check redraws the kept weights."""
    method = "random" if config.method == DENSE else config.method
    return METHODS[method].run is None and config.sanity != "reinit"


def prune_from_masks(model: nn.Module, config: RunConfig, dataset: Dataset,
                     masks: Mapping[str, torch.Tensor]) -> PruneResult | None:
    """What `prune_with_config` gives for `config`, from its masks found before, without scoring again: the
    masks attached to the fresh model (and the sparsity-aware init applied) as pruning does. None when the
    masks do not fit the model (other layer names or shapes): then it has to be pruned."""
    started = time.perf_counter()
    config = config.canonical()
    weights = {name: weight for name, _, weight in prunable_weights(model)}
    if set(masks) != set(weights) or any(tuple(masks[n].shape) != tuple(w.shape) for n, w in weights.items()):
        return None
    masks = {name: masks[name].to(device=weights[name].device, dtype=torch.bool) for name in weights}
    attach_masks(model, masks)
    if config.sparse_init:
        from pruning_core.studies.gradient_flow import sparse_init

        sparse_init(model, masks, generator=torch.Generator().manual_seed(config.seed))
    layers = layer_table(model, masks, dataset.input_shape)
    collapsed = layers.loc[layers["kept"] == 0, "name"].tolist()
    method = "random" if config.method == DENSE else config.method
    return PruneResult(masks=masks, scores={}, layers=layers, collapsed=collapsed,
                       method=method, sparsity=config.sparsity, schedule=config.schedule, scope=config.scope,
                       iterations=config.iterations or METHODS[method].default_iterations,
                       elapsed_s=time.perf_counter() - started)


def _handed_over_masks(store: Store, run_id: int, config: RunConfig) -> dict[str, torch.Tensor] | None:
    """The masks saved on a queued run before it started (handed over with its submission), if they can stand
    in for pruning it."""
    if not masks_reusable(config):
        return None
    try:
        return store.load_masks(run_id)
    except (FileNotFoundError, ValueError, OSError):
        return None   # unreadable: prune again rather than fail the run


def _collapse_note(result: PruneResult, num_classes: int) -> list[str]:
    from pruning_core.engine.training import collapse_warnings

    return collapse_warnings(result.masks, num_classes)


def describe_error(error: BaseException) -> str:
    """One plain sentence for a failed run: what went wrong and what to do."""
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return ("Out of memory: the model or batch does not fit on this device. Choose a smaller model, a smaller "
                "batch size, or the digits dataset.")
    if isinstance(error, ValueError):
        return str(error)
    return f"{type(error).__name__}: {error}"
