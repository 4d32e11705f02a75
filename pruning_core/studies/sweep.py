"""`pc.sweep`: the accuracy / sparsity trade-off, method by sparsity by seed.

Every cell prunes the SAME initial weights for a given seed (the model is built right after
`torch.manual_seed(seed)`), so methods are compared fairly, as in the papers; a dense baseline per seed
is included. Cells run one after another; each finished cell is yielded at once so a chart can fill
in live.

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


class SweepRun:
    """Iterator of finished cells (table rows); `.run()` finishes the sweep and returns `.table`."""

    def __init__(self, cells: list[RunConfig], rows: Iterator[dict[str, Any]]):
        self.cells = cells
        self._rows = rows
        self.rows: list[dict[str, Any]] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        row = next(self._rows)
        self.rows.append(row)
        return row

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=SWEEP_COLUMNS)

    def run(self) -> pd.DataFrame:
        for _ in self:
            pass
        return self.table


def sweep(model: str = "conv", dataset: str = "digits", methods: Sequence[str] = ("synflow", "snip"),
          sparsities: Sequence[float] = (0.9, 0.99), seeds: Sequence[int] = (0,), epochs: int | None = None, *,
          baseline: bool = True, store: Store | None = None, reuse: bool = True, device: str | None = None,
          should_stop: Callable[[], bool] | None = None, on_progress: Callable[[str, float, float], None] | None = None,
          **fields: Any) -> SweepRun:
    """Prune -> train -> evaluate every (method, sparsity, seed) cell plus a dense baseline per seed.

    Returns a SweepRun: iterate it to get each cell's row as it finishes, or call `.run()` for the whole
    table (a DataFrame with SWEEP_COLUMNS). Other RunConfig fields (schedule, batch_size, ...) pass through
    `fields`. With a `store`, cells are recorded (and finished cells of the same key reused, not recomputed).
    A cell whose network collapsed is still trained and marked `collapsed`.
    """
    cells = sweep_cells(model, dataset, methods, sparsities, seeds, epochs, baseline, **fields)

    def rows() -> Iterator[dict[str, Any]]:
        sweep_id = None
        if store is not None:
            sweep_id = store.create_sweep({"model": model, "dataset": dataset, "methods": list(methods),
                                           "sparsities": list(sparsities), "seeds": list(seeds), "epochs": epochs,
                                           "fields": fields, "cells": [c.key() for c in cells]}, status="running")
        try:
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

    return SweepRun(cells, rows())
