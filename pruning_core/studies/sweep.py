"""`pc.sweep`: the accuracy / sparsity trade-off, method by sparsity by seed.

Every cell prunes the SAME initial weights for a given seed (the model is built right after
`torch.manual_seed(seed)`), so methods are compared fairly, as in the papers; a dense baseline per seed
is included. Cells run one after another in this process (engine "local"), or side by side as Ray tasks
(engine "ray": a local Ray instance, or the cluster at `address`; see infra/cluster.py); each finished
cell is yielded at once so a chart can fill in live.

    table = pc.sweep(model="conv", dataset="digits", methods=["synflow", "snip"],
                     sparsities=[0.9, 0.99], seeds=[0], epochs=10).run()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd

from pruning_core.config import DENSE, RunConfig
from pruning_core.engine.prune import Cancelled
from pruning_core.infra.runner import RunOutcome, execute
from pruning_core.infra.store import Store

ENGINES = ("local", "ray")
SWEEP_COLUMNS = ["method", "sparsity", "seed", "density", "compression", "log_compression", "final_test_accuracy",
                 "best_test_accuracy", "effective_density", "collapsed", "collapsed_layers", "prune_s", "train_s",
                 "run_id", "key", "reused"]


def sweep_cells(model: str = "conv", dataset: str = "digits", methods: Sequence[str] = ("synflow",),
                sparsities: Sequence[float] = (0.9,), seeds: Sequence[int] = (0,), epochs: int | None = None,
                baseline: bool = True, **fields: Any) -> list[RunConfig]:
    """The sweep's cells as validated RunConfigs, in run order: per seed, the dense baseline, then every
    method at each sparsity (sparsity-major, so a live chart fills in evenly)."""
    if not methods:
        raise ValueError("a sweep needs at least one method")
    if not sparsities:
        raise ValueError("a sweep needs at least one sparsity")
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    base = dict(fields)
    if epochs is not None:
        base["epochs"] = epochs
    cells: list[RunConfig] = []
    for seed in seeds:
        if baseline:
            cells.append(RunConfig(model=model, dataset=dataset, method=DENSE, sparsity=0.0, seed=seed, **base))
        for sparsity in sparsities:
            for method in methods:
                cells.append(RunConfig(model=model, dataset=dataset, method=method, sparsity=sparsity, seed=seed,
                                       **base))
    unique: dict[str, RunConfig] = {}
    for cell in cells:
        cell = cell.canonical().validate()
        unique.setdefault(cell.key(), cell)
    return list(unique.values())


def cell_row(config: RunConfig, summary: dict[str, Any], run_id: int | None, reused: bool) -> dict[str, Any]:
    """One table row for a finished cell."""
    density = 1.0 - config.sparsity if config.is_dense else summary.get("density", 1.0 - config.sparsity)
    compression = 1.0 / density if density > 0 else math.inf
    collapsed = list(summary.get("collapsed", []))
    return {
        "method": config.method, "sparsity": config.sparsity, "seed": config.seed, "density": density,
        "compression": compression, "log_compression": math.log10(compression) if density > 0 else math.inf,
        "final_test_accuracy": summary.get("final_test_accuracy"),
        "best_test_accuracy": summary.get("best_test_accuracy"),
        "effective_density": summary.get("effective_density", density), "collapsed": bool(collapsed),
        "collapsed_layers": ", ".join(collapsed), "prune_s": summary.get("prune_s"),
        "train_s": summary.get("train_s"), "run_id": run_id, "key": config.key(), "reused": reused,
    }


class SweepCellsFailed(RuntimeError):
    """Some cells of a sweep on Ray failed (the others finished): `failures` maps their keys to the reason."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        reasons = "; ".join(f"{key}: {reason}" for key, reason in failures.items())
        super().__init__(f"{len(failures)} cell(s) of the sweep failed: {reasons}")


class SweepRun:
    """Iterator of finished cells (table rows); `.run()` finishes the sweep and returns `.table` (rows in
    the cells' order). `cluster` is the Ray engine's RayCells (None in process)."""

    def __init__(self, cells: list[RunConfig], rows: Iterator[dict[str, Any]], cluster: Any = None):
        self.cells = cells
        self._rows = rows
        self.rows: list[dict[str, Any]] = []
        self.cluster = cluster

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        row = next(self._rows)
        self.rows.append(row)
        return row

    @property
    def table(self) -> pd.DataFrame:
        order = {cell.key(): i for i, cell in enumerate(self.cells)}  # Ray finishes cells in any order
        rows = sorted(self.rows, key=lambda row: order.get(row["key"], len(order)))
        return pd.DataFrame(rows, columns=SWEEP_COLUMNS)

    def run(self) -> pd.DataFrame:
        for _ in self:
            pass
        return self.table


def sweep(model: str = "conv", dataset: str = "digits", methods: Sequence[str] = ("synflow", "snip"),
          sparsities: Sequence[float] = (0.9, 0.99), seeds: Sequence[int] = (0,), epochs: int | None = None, *,
          baseline: bool = True, store: Store | None = None, reuse: bool = True, device: str | None = None,
          should_stop: Callable[[], bool] | None = None, on_progress: Callable[[str, float, float], None] | None = None,
          engine: str = "local", address: str | None = None, resources: dict[str, Any] | None = None,
          **fields: Any) -> SweepRun:
    """Prune -> train -> evaluate every (method, sparsity, seed) cell plus a dense baseline per seed.

    Returns a SweepRun: iterate it to get each cell's row as it finishes, or call `.run()` for the whole
    table (a DataFrame with SWEEP_COLUMNS). Other RunConfig fields (schedule, batch_size, ...) pass through
    `fields`. With a `store`, cells are recorded (and finished cells of the same key reused, not recomputed).
    A cell whose network collapsed is still trained and marked `collapsed`.

    engine="ray" runs each cell as a Ray task (needs requirements-ray.txt): on a local Ray instance, or on
    the cluster at `address` ("host:port"). `resources` are each task's Ray options (default: one GPU where
    the cluster has GPUs, else one CPU). This process stays the store's one writer. A cell whose worker is
    lost is retried once; cells that still fail are reported after the others finish (SweepCellsFailed).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "ray" and (address is not None or resources is not None):
        raise ValueError("address and resources are for the Ray engine: pass engine='ray' too")
    cells = sweep_cells(model, dataset, methods, sparsities, seeds, epochs, baseline, **fields)
    cluster = None
    if engine == "ray":
        try:
            from pruning_core.infra.cluster import RayCells
        except ImportError as error:
            raise ValueError(str(error)) from None
        cluster = RayCells(store, address=address, resources=resources, device=device, on_progress=on_progress)

    def rows() -> Iterator[dict[str, Any]]:
        sweep_id = None
        if store is not None:
            sweep_id = store.create_sweep({"model": model, "dataset": dataset, "methods": list(methods),
                                           "sparsities": list(sparsities), "seeds": list(seeds), "epochs": epochs,
                                           "fields": fields, "cells": [c.key() for c in cells]}, status="running")
        try:
            if cluster is not None:
                yield from _rows_on_ray(cluster, cells, store, sweep_id, reuse, should_stop)
            else:
                yield from _rows_in_process(cells, store, sweep_id, reuse, device, should_stop, on_progress)
        except Cancelled:
            if store is not None:
                store.set_sweep_status(sweep_id, "cancelled")
            raise
        except Exception:
            if store is not None:
                store.set_sweep_status(sweep_id, "failed")
            raise
        if store is not None:
            store.set_sweep_status(sweep_id, "done")

    return SweepRun(cells, rows(), cluster)


def _rows_in_process(cells: list[RunConfig], store: Store | None, sweep_id: int | None, reuse: bool,
                     device: str | None, should_stop: Callable[[], bool] | None,
                     on_progress: Callable[[str, float, float], None] | None) -> Iterator[dict[str, Any]]:
    """The local engine's rows: one cell after another in this process."""
    for cell in cells:
        if should_stop is not None and should_stop():
            raise Cancelled("sweep cancelled")
        outcome: RunOutcome
        run_id = None
        if store is not None and not (reuse and store.find_done(cell.key(), kind="train")):
            run_id = store.create_run(cell.to_dict(), key=cell.key(), kind="train", sweep_id=sweep_id)
        outcome = execute(cell, store, kind="train", run_id=run_id, reuse=reuse, device=device,
                          should_stop=should_stop, on_progress=on_progress)
        yield cell_row(cell, outcome.summary, outcome.run_id, outcome.reused)


def _rows_on_ray(cluster: Any, cells: list[RunConfig], store: Store | None, sweep_id: int | None, reuse: bool,
                 should_stop: Callable[[], bool] | None) -> Iterator[dict[str, Any]]:
    """The Ray engine's rows: reused cells at once, then every other cell as it ends on the cluster."""
    def stop_asked() -> bool:
        return should_stop is not None and should_stop()

    failures: dict[str, str] = {}
    try:
        for cell in cells:
            if stop_asked():
                raise Cancelled("sweep cancelled")
            done = store.find_done(cell.key(), kind="train") if store is not None and reuse else None
            if done is not None:
                yield cell_row(cell, done.get("summary") or {}, done["id"], True)
                continue
            run_id = None if store is None else store.create_run(cell.to_dict(), key=cell.key(), kind="train",
                                                                   sweep_id=sweep_id)
            cluster.submit(cell, run_id=run_id)
        while cluster.pending:
            if stop_asked():
                raise Cancelled("sweep cancelled")
            for ended in cluster.poll(0.2):
                if stop_asked():  # as in process: no row after the stop (the cell is in the store)
                    raise Cancelled("sweep cancelled")
                if ended.status == "done":
                    yield cell_row(ended.config, ended.summary, ended.run_id, False)
                else:
                    failures[ended.config.key()] = ended.error or ended.status
    finally:
        cluster.close()  # a cancelled or abandoned sweep: its remaining cells are cancelled, not left running
    if failures:
        raise SweepCellsFailed(failures)
