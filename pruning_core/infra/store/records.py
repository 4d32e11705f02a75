"""Database rows as what the store returns: a run or sweep as a dict, lists of them and metrics as DataFrames."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from pruning_core.infra.store.encoding import loads, scalar
from pruning_core.infra.store.schema import METRIC_COLUMNS, STATUSES

# Summary and timing entries that `list_runs` shows as flat columns.
SUMMARY_COLUMNS = ("final_test_accuracy", "effective_density")
TIMING_COLUMNS = ("prune_s", "train_s")

RUN_LIST_COLUMNS = ("run_id", "kind", "status", "key", "dataset", "model", "method", "sparsity", "seed", "sweep_id",
                    "device", "error", "created_at", "started_at", "finished_at", "duration_s", "progress_done",
                    "progress_total", "progress_message", "user_token", "user_name", *SUMMARY_COLUMNS, *TIMING_COLUMNS)
_RUN_LIST_FLOATS = ("sparsity", "created_at", "started_at", "finished_at", "duration_s", "progress_done",
                    "progress_total", *SUMMARY_COLUMNS, *TIMING_COLUMNS)


def run_dict(row: sqlite3.Row, n_metrics: int) -> dict[str, Any]:
    """Everything about one run, from its `runs` row and its number of metric rows."""
    return {
        "id": row["id"], "key": row["key"], "kind": row["kind"], "status": row["status"],
        "config": loads(row["config"], {}),
        "dataset": row["dataset"], "model": row["model"], "method": row["method"],
        "sparsity": row["sparsity"], "seed": row["seed"], "sweep_id": row["sweep_id"],
        "error": row["error"], "device": row["device"], "versions": loads(row["versions"], {}),
        "created_at": row["created_at"], "started_at": row["started_at"], "finished_at": row["finished_at"],
        "timings": loads(row["timings"], {}), "summary": loads(row["summary"]),
        "progress": {"done": row["progress_done"], "total": row["progress_total"],
                     "message": row["progress_message"]},
        "owner": {"pid": row["owner_pid"], "token": row["owner_token"], "start": row["owner_start"]},
        "user": {"token": row["user_token"], "name": row["user_name"]},
        "n_metrics": n_metrics, "has_layers": row["layers_meta"] is not None,
        "has_masks": row["masks_file"] is not None,
    }


def runs_frame(rows: Sequence[sqlite3.Row]) -> pd.DataFrame:
    """`runs` rows as `list_runs`'s flat DataFrame (summary and timing entries as float columns)."""
    records = []
    for row in rows:
        summary = loads(row["summary"]) or {}
        timings = loads(row["timings"], {})
        started, finished = row["started_at"], row["finished_at"]
        records.append({
            "run_id": row["id"], "kind": row["kind"], "status": row["status"], "key": row["key"],
            "dataset": row["dataset"], "model": row["model"], "method": row["method"],
            "sparsity": row["sparsity"], "seed": row["seed"], "sweep_id": row["sweep_id"],
            "device": row["device"], "error": row["error"],
            "created_at": row["created_at"], "started_at": started, "finished_at": finished,
            "duration_s": finished - started if started is not None and finished is not None else None,
            "progress_done": row["progress_done"], "progress_total": row["progress_total"],
            "progress_message": row["progress_message"],
            "user_token": row["user_token"], "user_name": row["user_name"],
            **{c: scalar(summary.get(c)) for c in SUMMARY_COLUMNS},
            **{c: scalar(timings.get(c)) for c in TIMING_COLUMNS},
        })
    df = pd.DataFrame.from_records(records, columns=list(RUN_LIST_COLUMNS))
    for c in _RUN_LIST_FLOATS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["run_id"] = df["run_id"].astype("int64")
    df["seed"] = df["seed"].astype("Int64")
    df["sweep_id"] = df["sweep_id"].astype("Int64")
    return df


def metrics_frame(rows: Sequence[sqlite3.Row]) -> pd.DataFrame:
    """`metrics` rows (in step order) as a DataFrame; extra keys become columns, whole epochs stay integers."""
    records = []
    for row in rows:
        record = {"step": row["step"], **{c: row[c] for c in METRIC_COLUMNS}}
        for k, v in (loads(row["extra"]) or {}).items():
            record.setdefault(k, v)
        records.append(record)
    columns = ["step", *METRIC_COLUMNS]
    for record in records:
        columns += [k for k in record if k not in columns]
    df = pd.DataFrame.from_records(records, columns=columns)
    df["step"] = df["step"].astype("int64")
    for c in METRIC_COLUMNS:
        df[c] = df[c].astype("float64")
    epoch = df["epoch"]
    if len(epoch) and epoch.notna().all() and (epoch == epoch.round()).all():
        df["epoch"] = epoch.astype("int64")
    return df


def sweep_dict(row: sqlite3.Row, counts: Mapping[str, int]) -> dict[str, Any]:
    """One sweep, from its `sweeps` row and its cells' counts by status."""
    cells = dict.fromkeys(STATUSES, 0)
    cells.update(counts)
    return {"id": row["id"], "config": loads(row["config"], {}), "status": row["status"],
            "created_at": row["created_at"], "updated_at": row["updated_at"], "cells": cells,
            "n_cells": sum(cells.values()),
            "owner": {"pid": row["owner_pid"], "token": row["owner_token"], "start": row["owner_start"]},
            "user": {"token": row["user_token"], "name": row["user_name"]}}


def sweeps_frame(sweeps: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Sweep dicts as `list_sweeps`'s DataFrame, one `cells_<status>` count column per status."""
    records = [{"sweep_id": s["id"], "status": s["status"], "created_at": s["created_at"],
                "updated_at": s["updated_at"], "n_cells": s["n_cells"], "user_token": s["user"]["token"],
                "user_name": s["user"]["name"],
                **{f"cells_{k}": v for k, v in s["cells"].items()}, "config": s["config"]} for s in sweeps]
    columns = ["sweep_id", "status", "created_at", "updated_at", "n_cells", "user_token", "user_name",
               *(f"cells_{k}" for k in STATUSES),
               "config"]
    return pd.DataFrame.from_records(records, columns=columns)
