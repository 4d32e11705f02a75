"""The `Store` class: runs, their metrics, layer tables, masks and sweeps, read and written in transactions.

Each public method is one transaction; group several into one with ``with store.transaction(): ...`` (writes)
or ``with store.snapshot(): ...`` (reads that must see one consistent state). Status changes follow
queued -> running -> done, with failed and cancelled reachable from queued or running.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pruning_core.infra.store import mask_files, records, recovery, users
from pruning_core.infra.store.connections import Connections
from pruning_core.infra.store.encoding import (SQL_CHUNK, check_id, chunks, decode_layers, dumps, encode_layers,
                                               frame_records, loads, number, plain, text)
from pruning_core.infra.store.schema import (ACTIVE_STATUSES, DEFAULT_PATH, ENV_VAR, FINAL_STATUSES, METRIC_COLUMNS,
                                             check_status, migrate)


class UnknownRunError(KeyError, ValueError):
    """A run id (or sweep id) that is not in the store."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class InvalidTransitionError(ValueError):
    """A status change that is not allowed from the run's current status (e.g. finishing a cancelled run)."""


class Store(users.UserQueries):
    """A SQLite run store, safe to use from several threads and processes at once."""

    def __init__(self, path: str | os.PathLike | None = None, recover: bool = True):
        """Open (creating or migrating) the store at `path`, $PRUNING_DB or ./runs/pruning.db."""
        recovery.check_allowed()  # a Ray worker never opens a store
        raw = path if path is not None else (os.environ.get(ENV_VAR) or DEFAULT_PATH)
        self.path = Path(raw).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.masks_dir = self.path.parent / "masks"
        self._connections = Connections(self.path, repr(self))
        migrate(self.path)
        self.tidy_mask_files()
        if recover:
            self.recover_orphans()
            self.settle_sweeps()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- connections and transactions ----
    def close(self) -> None:
        """Close every connection this store opened (call when no thread is using it)."""
        self._connections.close()

    def _transaction(self, mode: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._connections.transaction(mode)

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Group several writes into one atomic transaction (nested calls join the outer one)."""
        return self._transaction("write")

    def snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Group several reads so that they all see the same consistent state."""
        return self._transaction("read")

    def schema_version(self) -> int:
        """The schema version of the open database file."""
        return self._connections.current().execute("PRAGMA user_version").fetchone()[0]

    def journal_mode(self) -> str:
        """SQLite's journal mode of the database file ('wal')."""
        return self._connections.current().execute("PRAGMA journal_mode").fetchone()[0]

    # ---- helpers ----
    def _row(self, conn: sqlite3.Connection, run_id: Any) -> sqlite3.Row:
        run_id = check_id(run_id)
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRunError(f"no run with id {run_id} in {self.path}")
        return row

    def _sweep_row(self, conn: sqlite3.Connection, sweep_id: Any) -> sqlite3.Row:
        sweep_id = check_id(sweep_id, "sweep id")
        row = conn.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        if row is None:
            raise UnknownRunError(f"no sweep with id {sweep_id} in {self.path}")
        return row

    def _transition(self, run_id: Any, allowed_from: Sequence[str], to: str,
                    update: Callable[[sqlite3.Connection, sqlite3.Row], dict[str, Any]]) -> None:
        with self._transaction("write") as conn:
            row = self._row(conn, run_id)
            if row["status"] not in allowed_from:
                raise InvalidTransitionError(
                    f"run {row['id']} is {row['status']}; only a {' or '.join(allowed_from)} run can become {to}")
            values = {"status": to, **update(conn, row)}
            assignments = ", ".join(f"{k} = ?" for k in values)
            conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), row["id"]))

    # ---- runs ----
    def create_run(self, config: Mapping[str, Any], key: str, kind: str = "train", sweep_id: int | None = None,
                   status: str = "queued", queue: bool = False) -> int:
        """Record a new run (owned by this process) and return its id; `key` names its result (the caller's
        `RunConfig.key()`: the store does not know how configurations are keyed). With `queue`, a queued run is
        left to the job queue instead: no process owns it until a worker claims it (`claim_queued`), so it
        outlives this process."""
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a dict, got {type(config).__name__}")
        config = dict(config)
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        check_status(status)
        config_json = dumps(config, "config")
        sparsity = config.get("sparsity")
        seed = config.get("seed")
        now = time.time()
        with self._transaction("write") as conn:
            if sweep_id is not None:
                sweep_id = self._sweep_row(conn, sweep_id)["id"]
            owner = recovery.queue_owner_columns() if queue and status == "queued" else recovery.owner_columns()
            if status not in ACTIVE_STATUSES:
                owner = dict.fromkeys(owner)
            cur = conn.execute(
                "INSERT INTO runs (key, kind, status, config, dataset, model, method, sparsity, seed, created_at, "
                "started_at, finished_at, sweep_id, owner_pid, owner_token, owner_start) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, kind, status, config_json, text(config.get("dataset")), text(config.get("model")),
                 text(config.get("method")), number(sparsity, "sparsity") if sparsity is not None else None,
                 int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else None,
                 now, now if status == "running" else None, now if status in FINAL_STATUSES else None,
                 sweep_id, *owner.values()))
            return int(cur.lastrowid)

    # ---- the job queue (runs left to worker processes; see recovery) ----
    def claim_queued(self, kinds: Sequence[str] | None = None) -> int | None:
        """For a worker: take the oldest queued run left to the job queue (of these kinds), this process now its
        owner (still queued until `start_run`); its id, or None. Two workers never claim the same run."""
        with self._transaction("write") as conn:
            return recovery.claim_queued(conn, kinds)

    def release_to_queue(self, run_id: int) -> None:
        """Leave a queued run of this process to the job queue (once prepared, e.g. its masks saved)."""
        with self._transaction("write") as conn:
            recovery.release_to_queue(conn, self._row(conn, run_id)["id"])

    def active_runs(self) -> list[dict[str, Any]]:
        """Every queued or running run, oldest first: id, kind, status, owner_pid, owner_token."""
        with self._transaction("read") as conn:
            return [dict(r) for r in conn.execute("SELECT id, kind, status, owner_pid, owner_token FROM runs "
                                                  "WHERE status IN ('queued', 'running') ORDER BY id")]

    def start_run(self, run_id: int, device: str, versions: Mapping[str, str] | None = None) -> None:
        """Mark a queued run running on `device`, owned by this process, with the computing process's `versions`."""
        if not isinstance(device, str):
            raise ValueError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
        versions_json = dumps(dict(versions) if versions is not None else recovery.library_versions(), "versions")
        self._transition(run_id, ("queued",), "running", lambda conn, row: {
            "started_at": time.time(), "device": device, "versions": versions_json, **recovery.owner_columns()})

    def requeue_run(self, run_id: int) -> None:
        """Put an active run back to queued, its partial records removed (`recovery.requeue`): a retried attempt."""
        def update(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
            self._discard_masks_on_commit(row)
            return recovery.requeue(conn, row["id"])
        self._transition(run_id, ACTIVE_STATUSES, "queued", update)

    def update_progress(self, run_id: int, done: float, total: float, message: str = "") -> str:
        """Set a run's progress (done of total, with a message) and return its status ('cancelled' = stop)."""
        done_f, total_f = number(done, "done"), number(total, "total")
        if done_f is None or total_f is None or done_f < 0 or total_f < 0:
            raise ValueError(f"progress must be non-negative numbers, got done={done!r}, total={total!r}")
        with self._transaction("write") as conn:
            row = self._row(conn, run_id)
            if row["status"] in ACTIVE_STATUSES:
                conn.execute("UPDATE runs SET progress_done = ?, progress_total = ?, progress_message = ? "
                             "WHERE id = ?", (done_f, total_f, str(message), row["id"]))
            return row["status"]

    def add_metrics(self, run_id: int, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append per-epoch metric rows (step, epoch, losses, accuracy, ... ; other keys kept as extra)."""
        prepared = []
        for row in rows:
            if not isinstance(row, Mapping):
                raise ValueError(f"each metrics row must be a dict, got {type(row).__name__}")
            step = row.get("step")
            if step is not None:
                step = number(step, "step")
                if not float(step).is_integer():
                    raise ValueError(f"step must be an integer, got {row.get('step')!r}")
                step = int(step)
            values = [number(row.get(c), c) for c in METRIC_COLUMNS]
            extra = {k: v for k, v in row.items() if k != "step" and k not in METRIC_COLUMNS}
            prepared.append((step, values, dumps(extra, "metrics extra") if extra else None))
        with self._transaction("write") as conn:
            run_id = self._row(conn, run_id)["id"]
            next_step = conn.execute("SELECT coalesce(max(step) + 1, 0) FROM metrics WHERE run_id = ?",
                                     (run_id,)).fetchone()[0]
            for step, values, extra in prepared:
                if step is None:
                    step = next_step
                next_step = max(next_step, step + 1)
                conn.execute(f"INSERT INTO metrics (run_id, step, {', '.join(METRIC_COLUMNS)}, extra) "
                             f"VALUES (?, ?, {', '.join('?' * len(METRIC_COLUMNS))}, ?)",
                             (run_id, step, *values, extra))

    def set_layers(self, run_id: int, df: pd.DataFrame) -> None:
        """Store (replacing) a run's per-layer table; `layers` returns it with the same columns and dtypes."""
        meta, rows = encode_layers(df)
        with self._transaction("write") as conn:
            run_id = self._row(conn, run_id)["id"]
            conn.execute("DELETE FROM layers WHERE run_id = ?", (run_id,))
            conn.executemany("INSERT INTO layers (run_id, position, name, row) VALUES (?, ?, ?, ?)",
                             [(run_id, *r) for r in rows])
            conn.execute("UPDATE runs SET layers_meta = ? WHERE id = ?", (meta, run_id))

    def save_masks(self, run_id: int, masks: Mapping[str, Any]) -> Path:
        """Write a run's masks (name -> bool tensor) bit-packed and compressed, replacing any it had; return the
        file, which takes its name when the (outermost) transaction commits and is removed if it rolls back."""
        with self._transaction("read") as conn:
            run_id = self._row(conn, run_id)["id"]
        target = mask_files.mask_path(self.masks_dir, self.path, run_id)
        temporary = mask_files.write_temporary(target, masks)
        try:
            with self._transaction("write") as conn:
                self._row(conn, run_id)   # deleted meanwhile: UnknownRunError, and the file goes
                conn.execute("UPDATE runs SET masks_file = ? WHERE id = ?", (target.name, run_id))
                self._connections.after(on_commit=lambda: mask_files.publish(temporary, target),
                                        on_rollback=lambda: mask_files.discard(temporary))
        except BaseException:
            mask_files.discard(temporary)
            raise
        return target

    def load_masks(self, run_id: int) -> dict[str, Any] | None:
        """A run's masks as name -> bool torch tensor, or None when none were saved."""
        with self._transaction("read") as conn:
            row = self._row(conn, run_id)
        if row["masks_file"] is None:
            return None
        path = self.masks_dir / row["masks_file"]
        if not path.exists():
            raise FileNotFoundError(f"the mask file of run {row['id']} is missing: {path}")
        return mask_files.read_masks(path)

    def finish_run(self, run_id: int, summary: Mapping[str, Any], timings: Mapping[str, Any] | None = None) -> None:
        """Mark a running run done with its summary; `timings` (phase -> seconds) are merged in."""
        if not isinstance(summary, Mapping):
            raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
        summary_json = dumps(dict(summary), "summary")
        timings = dict(timings or {})
        dumps(timings, "timings")

        def update(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
            merged = {**loads(row["timings"], {}), **timings}
            return {"summary": summary_json, "timings": dumps(merged, "timings"), "finished_at": time.time(),
                    "error": None}

        self._transition(run_id, ("running",), "done", update)

    def add_timings(self, run_id: int, timings: Mapping[str, Any]) -> None:
        """Merge phase timings (e.g. {'prune_s': 1.2}) into a run's timings."""
        timings = dict(timings)
        dumps(timings, "timings")
        with self._transaction("write") as conn:
            row = self._row(conn, run_id)
            merged = {**loads(row["timings"], {}), **timings}
            conn.execute("UPDATE runs SET timings = ? WHERE id = ?", (dumps(merged, "timings"), row["id"]))

    def fail_run(self, run_id: int, error: str) -> None:
        """Mark a queued or running run failed with an error message."""
        self._transition(run_id, ACTIVE_STATUSES, "failed",
                         lambda conn, row: {"error": str(error), "finished_at": time.time()})

    def cancel_run(self, run_id: int) -> None:
        """Mark a queued or running run cancelled (a worker sees it in `update_progress`'s answer)."""
        self._transition(run_id, ACTIVE_STATUSES, "cancelled", lambda conn, row: {"finished_at": time.time()})

    def recover_orphans(self) -> list[int]:
        """Mark queued/running runs whose owning process is gone as failed (a queued run left to the job queue
        stays queued); return their ids."""
        with self._transaction("write") as conn:
            return recovery.recover_orphans(conn)

    def settle_sweeps(self) -> list[int]:
        """Mark running sweeps with no queued or running cell done (all cells done) or failed, unless a live
        process drives them; return their ids (`recovery.settle_sweeps`)."""
        with self._transaction("write") as conn:
            return recovery.settle_sweeps(conn)

    def delete_run(self, run_id: int) -> None:
        """Delete a run with its metrics, layer rows and mask file (the file once the deletion commits)."""
        with self._transaction("write") as conn:
            self._delete_run_rows(conn, self._row(conn, run_id))

    def _delete_run_rows(self, conn: sqlite3.Connection, row: sqlite3.Row) -> None:
        """Inside a write transaction: delete a run's rows; its mask file goes when the transaction commits."""
        conn.execute("DELETE FROM metrics WHERE run_id = ?", (row["id"],))
        conn.execute("DELETE FROM layers WHERE run_id = ?", (row["id"],))
        conn.execute("DELETE FROM runs WHERE id = ?", (row["id"],))
        self._discard_masks_on_commit(row)

    def _discard_masks_on_commit(self, row: sqlite3.Row) -> None:
        if row["masks_file"] is not None:  # the file goes once the transaction commits, not if it rolls back
            self._connections.after(on_commit=lambda: mask_files.discard(self.masks_dir / row["masks_file"]))

    def tidy_mask_files(self) -> list[str]:
        """Tidy the mask files a killed process left behind (`mask_files.clean_leftovers`; opening does this)."""
        return mask_files.clean_leftovers(self.masks_dir, self.path, self._mask_file_names, time.time())

    def _mask_file_names(self) -> list[str]:
        with self._transaction("read") as conn:
            return [r[0] for r in conn.execute("SELECT masks_file FROM runs WHERE masks_file IS NOT NULL")]

    # ---- reading runs ----
    def _run_dict(self, conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
        n_metrics = conn.execute("SELECT count(*) FROM metrics WHERE run_id = ?", (row["id"],)).fetchone()[0]
        return records.run_dict(row, n_metrics)

    def get_run(self, run_id: int) -> dict[str, Any]:
        """Everything about one run (config, summary, timings, versions, progress, ...) as a dict."""
        with self._transaction("read") as conn:
            return self._run_dict(conn, self._row(conn, run_id))

    def find_done(self, key: str, kind: str | None = None) -> dict[str, Any] | None:
        """The most recent done run with this config key (and kind, if given), or None."""
        sql, params = "SELECT * FROM runs WHERE key = ? AND status = 'done'", [key]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        with self._transaction("read") as conn:
            row = conn.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
            return None if row is None else self._run_dict(conn, row)

    def active_run(self, key: str, kind: str | None = None) -> int | None:
        """The id of the newest queued or running run with this config key (and kind), or None: one indexed
        lookup, for the job queue's "is this already on its way?" on every submission."""
        sql = f"SELECT id FROM runs WHERE key = ? AND status IN ({', '.join('?' * len(ACTIVE_STATUSES))})"
        params: list[Any] = [key, *ACTIVE_STATUSES]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        with self._transaction("read") as conn:
            row = conn.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
        return None if row is None else int(row["id"])

    def list_runs(self, status: str | Sequence[str] | None = None, kind: str | None = None,
                  dataset: str | None = None, model: str | None = None, method: str | None = None,
                  sweep_id: int | None = None, limit: int | None = None) -> pd.DataFrame:
        """One row per run (newest first) with flat columns, filtered by any of the given fields."""
        where, params = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for s in statuses:
                check_status(s)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params += statuses
        for column, value in (("kind", kind), ("dataset", dataset), ("model", model), ("method", method)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if sweep_id is not None:
            where.append("sweep_id = ?")
            params.append(check_id(sweep_id, "sweep id"))
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
            sql += f" LIMIT {limit}"
        with self._transaction("read") as conn:
            rows = conn.execute(sql, params).fetchall()
        return records.runs_frame(rows)

    def latest_runs(self, keys: Sequence[str], kind: str | None = None) -> pd.DataFrame:
        """For each config key, its most useful run (a done one, else the newest active, else the newest
        of any status), as `list_runs` rows in the order of `keys`; keys with no run are left out."""
        keys = list(dict.fromkeys(keys))
        rank = {"done": 0, "running": 1, "queued": 1}
        best: dict[str, tuple[int, int]] = {}
        rows: list[sqlite3.Row] = []
        with self._transaction("read") as conn:
            # Indexed lookups by key (runs_key), in chunks below SQLite's limit on bound parameters: never the
            # whole table, which made every poll and every submitted cell cost O(runs in the store).
            for chunk in chunks(keys, SQL_CHUNK):
                sql = f"SELECT id, key, status FROM runs WHERE key IN ({', '.join('?' * len(chunk))})"
                params: list[Any] = list(chunk)
                if kind is not None:
                    sql += " AND kind = ?"
                    params.append(kind)
                for row in conn.execute(sql, params):
                    candidate = (rank.get(row["status"], 2), -row["id"])
                    if row["key"] not in best or candidate < best[row["key"]]:
                        best[row["key"]] = candidate
            ids = [-best[key][1] for key in keys if key in best]   # in the order of `keys`
            for chunk in chunks(ids, SQL_CHUNK):
                found = {row["id"]: row for row in conn.execute(
                    f"SELECT * FROM runs WHERE id IN ({', '.join('?' * len(chunk))})", chunk)}
                rows += [found[run_id] for run_id in chunk]
        return records.runs_frame(rows)

    def metrics(self, run_id: int) -> pd.DataFrame:
        """A run's per-epoch metrics in step order (extra keys become columns)."""
        with self._transaction("read") as conn:
            run_id = self._row(conn, run_id)["id"]
            rows = conn.execute(f"SELECT step, {', '.join(METRIC_COLUMNS)}, extra FROM metrics WHERE run_id = ? "
                                f"ORDER BY step, id", (run_id,)).fetchall()
        return records.metrics_frame(rows)

    def new_metrics(self, run_id: int, after: int = 0) -> tuple[pd.DataFrame, int]:
        """The metric rows a run gained since `after` (a cursor this method returned before; 0: all of them)
        and the new cursor, for a viewer that fetches only what was added since its last poll. The rows come in
        the order they were added, as `metrics` would give them."""
        if isinstance(after, bool) or not isinstance(after, (int, np.integer)) or after < 0:
            raise ValueError(f"after must be a cursor returned by new_metrics (0 at first), got {after!r}")
        with self._transaction("read") as conn:
            run_id = self._row(conn, run_id)["id"]
            rows = conn.execute(f"SELECT id, step, {', '.join(METRIC_COLUMNS)}, extra FROM metrics "
                                f"WHERE run_id = ? AND id > ? ORDER BY id", (run_id, int(after))).fetchall()
        cursor = max((row["id"] for row in rows), default=int(after))
        return records.metrics_frame(sorted(rows, key=lambda row: row["step"])), cursor

    def layers(self, run_id: int) -> pd.DataFrame | None:
        """A run's per-layer table as stored by `set_layers`, or None when none was stored."""
        with self._transaction("read") as conn:
            row = self._row(conn, run_id)
            rows = conn.execute("SELECT row FROM layers WHERE run_id = ? ORDER BY position", (row["id"],)).fetchall()
        if row["layers_meta"] is None:
            return None
        return decode_layers(row["layers_meta"], [r["row"] for r in rows])

    def queue_position(self, run_id: int) -> int | None:
        """How many queued/running runs are ahead of this one in the queue's turns (None if it is not active)."""
        with self._transaction("read") as conn:
            row = self._row(conn, run_id)
            return users.queue_position(conn, row, recovery.QUEUE_TOKEN) if row["status"] in ACTIVE_STATUSES else None

    def export_runs(self, run_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Full records of the given runs (with metrics and layers) as strict-JSON-able dicts."""
        exported = []
        with self._transaction("read"):
            for run_id in run_ids:
                record = self.get_run(run_id)
                record.pop("owner")
                record["user"].pop("token")   # a user's token is their key to their runs: never exported
                record["metrics"] = frame_records(self.metrics(run_id))
                record["layers"] = None if (layers := self.layers(run_id)) is None else frame_records(layers)
                exported.append(plain(record))
        return exported

    # ---- sweeps ----
    def create_sweep(self, config: Mapping[str, Any], status: str = "queued", queue: bool = False) -> int:
        """Record a sweep (its grid as a JSON-able dict; its cells' keys under "cells") and return its id. It is
        driven by this process (settled by `settle_sweeps` if this process dies first), or with `queue` by the
        job queue (settled once none of its cells is queued or running)."""
        if not isinstance(config, Mapping):
            raise ValueError(f"sweep config must be a dict, got {type(config).__name__}")
        config_json = dumps(dict(config), "sweep config")
        check_status(status)
        now = time.time()
        owner = recovery.queue_owner_columns() if queue else recovery.owner_columns()
        with self._transaction("write") as conn:
            cur = conn.execute("INSERT INTO sweeps (config, status, created_at, updated_at, owner_pid, owner_token, "
                               "owner_start) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (config_json, status, now, now, *owner.values()))
            return int(cur.lastrowid)

    def _sweep_dict(self, conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
        counts = {status: n for status, n in conn.execute(
            "SELECT status, count(*) FROM runs WHERE sweep_id = ? GROUP BY status", (row["id"],))}
        return records.sweep_dict(row, counts)

    def get_sweep(self, sweep_id: int) -> dict[str, Any]:
        """One sweep: config, status, timestamps and its cells' counts by status."""
        with self._transaction("read") as conn:
            return self._sweep_dict(conn, self._sweep_row(conn, sweep_id))

    def list_sweeps(self, status: str | None = None) -> pd.DataFrame:
        """One row per sweep (newest first) with cell counts by status."""
        if status is not None:
            check_status(status)
        with self._transaction("read") as conn:
            rows = conn.execute("SELECT * FROM sweeps" + (" WHERE status = ?" if status else "") + " ORDER BY id DESC",
                                (status,) if status else ()).fetchall()
            sweeps = [self._sweep_dict(conn, r) for r in rows]
        return records.sweeps_frame(sweeps)

    def set_sweep_status(self, sweep_id: int, status: str) -> None:
        """Set a sweep's status (one of STATUSES)."""
        check_status(status)
        with self._transaction("write") as conn:
            row = self._sweep_row(conn, sweep_id)
            conn.execute("UPDATE sweeps SET status = ?, updated_at = ? WHERE id = ?", (status, time.time(), row["id"]))

    def delete_sweep(self, sweep_id: int) -> None:
        """Delete a sweep and all its cell runs (with their metrics, layers and masks), in one transaction: all
        of it or, when anything fails, nothing."""
        with self._transaction("write") as conn:
            sweep_id = self._sweep_row(conn, sweep_id)["id"]
            for row in conn.execute("SELECT * FROM runs WHERE sweep_id = ?", (sweep_id,)).fetchall():
                self._delete_run_rows(conn, row)
            conn.execute("DELETE FROM sweeps WHERE id = ?", (sweep_id,))
