"""Background studies that are not runs: the Layer collapse page's study (critical compression of every
method, per-layer densities across compression levels, SynFlow's conservation law) and the Gradient flow
page's measurement (pc.gradient_flow), and the small pool that runs them.

The job manager only runs `RunConfig`s; these studies prune the same model many times and store nothing,
so they run on a pool of their own (one worker thread: studies queue behind each other). The dashboard keeps
one pool per server (`dashboard.state.study_pool`). Tasks are kept by key, so every viewer asking for the same
study shares one computation. Nothing here knows about Streamlit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from pruning_core.config import RunConfig
from pruning_core.engine.data import load_dataset
from pruning_core.engine.methods import METHODS
from pruning_core.engine.prune import Cancelled
from pruning_core.infra import runner
from pruning_core.presentation.units import sparsity_from_log
from pruning_core.studies.analysis import critical_compression, layer_synaptic_flow

LEVELS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5)   # log10 compression levels of the heat map


@dataclass
class Task:
    """One background computation: its progress (written by the worker) and its future."""

    key: Hashable
    future: Future | None = None
    done: float = 0.0
    total: float = 1.0
    message: str = "queued"
    started: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def report(self, message: str, done: float, total: float) -> None:
        if self.cancelled.is_set():
            raise Cancelled(message)
        self.message, self.done, self.total = message, done, total

    @property
    def fraction(self) -> float:
        return min(max(self.done / self.total, 0.0), 1.0) if self.total else 0.0

    def eta_s(self) -> float | None:
        if self.started is None or self.done <= 0:
            return None
        elapsed = time.time() - self.started
        return elapsed * (self.total - self.done) / self.done


class TaskPool:
    """Run keyed tasks on one worker thread; a second request for a key gets the same task."""

    def __init__(self, max_kept: int = 32):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pruning-analysis")
        self._tasks: OrderedDict[Hashable, Task] = OrderedDict()
        self._lock = threading.Lock()
        self._max_kept = max_kept

    def get(self, key: Hashable) -> Task | None:
        with self._lock:
            return self._tasks.get(key)

    def submit(self, key: Hashable, fn: Callable[[Task], Any]) -> Task:
        with self._lock:
            task = self._tasks.get(key)
            if task is not None and not (task.future.done() and (task.future.cancelled() or task.future.exception())):
                return task  # running, queued or finished well: share it
            task = Task(key)

            def run() -> Any:
                task.started = time.time()
                return fn(task)

            task.future = self._executor.submit(run)
            self._tasks[key] = task
            self._tasks.move_to_end(key)
            while len(self._tasks) > self._max_kept:
                oldest = next(iter(self._tasks))
                if not self._tasks[oldest].future.done():
                    break
                del self._tasks[oldest]
            return task

    def cancel(self, key: Hashable) -> None:
        with self._lock:
            task = self._tasks.pop(key, None)
        if task is not None:
            task.cancelled.set()
            task.future.cancel()

    def pending(self) -> int:
        with self._lock:
            return sum(not t.future.done() for t in self._tasks.values())


def collapse_study(dataset: str, model: str, seed: int, methods: Sequence[str], levels: Sequence[float] = LEVELS,
                   task: Task | None = None) -> dict[str, pd.DataFrame]:
    """For one model and seed: every method's critical compression, every method's per-layer density at each
    compression level, and SynFlow's per-layer conservation (at initialization, and after SynFlow pruning
    at each level).

    Returns DataFrames: 'critical' (method, log_compression, max_log_compression), 'densities' (method,
    log_compression, layer, density, kept, total) and 'flow' (stage, log_compression, name, total_score,
    synaptic_flow, ratio).
    """
    data = load_dataset(dataset, download=False)
    base = RunConfig(dataset=dataset, model=model, seed=seed, epochs=0)

    def fresh() -> torch.nn.Module:
        return runner.build_model(base, data)

    steps = len(methods) * (1 + len(levels))
    done = 0

    def report(message: str) -> None:
        if task is not None:
            task.report(message, done, steps)

    critical, densities, flows = [], [], []
    init_flow = layer_synaptic_flow(fresh(), data.input_shape)
    flows.append(init_flow.assign(stage="at initialization", log_compression=0.0))
    for method in methods:
        label = METHODS[method].label
        report(f"critical compression of {label}")
        result = critical_compression(fresh, method, data, seed=seed, input_shape=data.input_shape,
                                      progress=lambda *_: report(f"critical compression of {label}"))
        # The bisection's first probe is its upper limit (one weight left in the whole network).
        limit = result.evaluations[0]["log_compression"] if result.evaluations else result.log_compression
        critical.append({"method": method, "log_compression": result.log_compression, "max_log_compression": limit})
        done += 1
        for level in levels:
            report(f"{method} at compression 10^{level:.1f}")
            config = base.replace(method=method, sparsity=sparsity_from_log(level))
            net = fresh()
            pruned = runner.prune_with_config(net, config, data)
            for row in pruned.layers.itertuples():
                densities.append({"method": method, "log_compression": level, "layer": row.name,
                                  "density": row.density, "kept": row.kept, "total": row.total})
            if method == "synflow":
                flow = layer_synaptic_flow(fresh(), data.input_shape, pruned.masks)
                flows.append(flow.assign(stage=f"after SynFlow to 10^{level:.1f}", log_compression=level))
            done += 1
    report("done")
    return {"critical": pd.DataFrame(critical), "densities": pd.DataFrame(densities),
            "flow": pd.concat(flows, ignore_index=True)}


def gradient_flow_study(dataset: str, model: str, method: str, sparsity: float, epochs: int, seed: int,
                        variants: Sequence[str], task: Task | None = None) -> pd.DataFrame:
    """`pc.gradient_flow` for the Gradient flow page: the dataset must be on disk (nothing is downloaded
    here); progress goes to the task, whose cancel stops the computation at its next measurement."""
    from pruning_core.studies.gradient_flow import gradient_flow

    data = load_dataset(dataset, download=False)
    return gradient_flow(model, data, sparsity, method, list(variants), epochs, seed=seed,
                         progress=task.report if task is not None else None,
                         should_stop=task.cancelled.is_set if task is not None else None)


def relearning_study(dataset: str, model: str, sparsity: float, epochs: int, seed: int,
                     task: Task | None = None) -> pd.DataFrame:
    """`pc.lottery_relearning` for the Gradient flow page, on a dataset already on disk; progress goes to the
    task, whose cancel stops it at its next training step."""
    from pruning_core.studies.relearning import lottery_relearning

    data = load_dataset(dataset, download=False)
    return lottery_relearning(model, data, sparsity, epochs, seed=seed,
                              progress=task.report if task is not None else None,
                              should_stop=task.cancelled.is_set if task is not None else None)
