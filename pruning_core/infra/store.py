"""The run store: every prune, training run and sweep cell, in one SQLite file.

The store is the single source of truth the dashboard pages read. It lives at
`Store(path)`, else at the path in the environment variable ``PRUNING_DB``, else at
``./runs/pruning.db``; parent folders are created. Masks are kept beside the database as
bit-packed, compressed files: ``<db_dir>/masks/<db_name>-<run_id>.npz``.

Concurrency: every thread gets its own SQLite connection (WAL mode, ``busy_timeout``), so a
background worker can write while several page sessions read. Each public method is one
transaction; group several into one with ``with store.transaction(): ...`` (writes) or
``with store.snapshot(): ...`` (reads that must see one consistent state).

Crash recovery: a run records its owner (process id, a random per-process token and the
process start time). Opening a store marks every queued or running run whose owner is gone
as failed, so no run is ever left "running" by a killed or restarted process.

Schema changes are migrations (`MIGRATIONS`), applied in order from the file's
``PRAGMA user_version``; a file written by a newer version is refused, not modified.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ENV_VAR = "PRUNING_DB"
DEFAULT_PATH = Path("runs") / "pruning.db"

STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("done", "failed", "cancelled")

INTERRUPTED_ERROR = "interrupted: the process running it stopped (killed or restarted) before it finished"

# Per-epoch metric columns stored as real columns; any other key of a metrics row goes to `extra`.
METRIC_COLUMNS = ("epoch", "train_loss", "test_loss", "test_accuracy", "images_per_s", "elapsed_s")
# Summary and timing entries that `list_runs` shows as flat columns.
SUMMARY_COLUMNS = ("final_test_accuracy", "effective_density")
TIMING_COLUMNS = ("prune_s", "train_s")

BUSY_TIMEOUT_MS = 30_000

# Identifies this process among processes that had the same pid (a restarted server).
PROCESS_TOKEN = secrets.token_hex(8)

# Set in processes that must never open a store (Ray workers: the driver is the store's one writer).
_REFUSED_HERE: str | None = None


def refuse_in_this_process(reason: str) -> None:
    """From now on, opening a Store in this process raises RuntimeError(reason)."""
    global _REFUSED_HERE
    _REFUSED_HERE = reason


class UnknownRunError(KeyError, ValueError):
    """A run id (or sweep id) that is not in the store."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class InvalidTransitionError(ValueError):
    """A status change that is not allowed from the run's current status (e.g. finishing a cancelled run)."""


class NewerDatabaseError(RuntimeError):
    """The database file was written by a newer version of this code."""


# ---- schema ------------------------------------------------------------------------------
# Each entry moves the schema from version i to version i + 1. Never edit a released step:
# files in the wild were written by it. Append a new step (and bump nothing else).
MIGRATIONS: list[tuple[str, ...]] = [
    # 0 -> 1: runs, per-epoch metrics and per-layer rows.
    (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            config TEXT NOT NULL,
            dataset TEXT, model TEXT, method TEXT, sparsity REAL, seed INTEGER,
            error TEXT,
            device TEXT,
            versions TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            timings TEXT NOT NULL DEFAULT '{}',
            summary TEXT,
            progress_done REAL NOT NULL DEFAULT 0,
            progress_total REAL NOT NULL DEFAULT 0,
            progress_message TEXT NOT NULL DEFAULT '',
            owner_pid INTEGER,
            owner_token TEXT,
            layers_meta TEXT,
            masks_file TEXT
        )""",
        """CREATE TABLE metrics (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL,
            step INTEGER NOT NULL,
            epoch REAL, train_loss REAL, test_loss REAL, test_accuracy REAL,
            images_per_s REAL, elapsed_s REAL
        )""",
        "CREATE INDEX metrics_run ON metrics (run_id, step)",
        """CREATE TABLE layers (
            run_id INTEGER NOT NULL,
            position INTEGER NOT NULL,
            name TEXT,
            row TEXT NOT NULL,
            PRIMARY KEY (run_id, position)
        )""",
    ),
    # 1 -> 2: sweeps, the process start time of a run's owner (pid reuse), free-form metric columns.
    (
        """CREATE TABLE sweeps (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            config TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL
        )""",
        "ALTER TABLE runs ADD COLUMN sweep_id INTEGER",
        "ALTER TABLE runs ADD COLUMN owner_start TEXT",
        "ALTER TABLE metrics ADD COLUMN extra TEXT",
        "CREATE INDEX runs_key ON runs (key, status)",
        "CREATE INDEX runs_status ON runs (status)",
        "CREATE INDEX runs_sweep ON runs (sweep_id)",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


# ---- processes ---------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (Linux /proc), to tell a reused pid apart; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None  # field 22 overall


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill would terminate it; without /proc we cannot tell, so assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        if stat[stat.rfind(")") + 2:].split()[:1] == ["Z"]:
            return False
    except OSError:
        pass
    return True


_OWN_START = _process_start(os.getpid())


def _owner_gone(pid: int | None, token: str | None, start: str | None) -> bool:
    if pid is None:
        return True  # nobody claims it, so nobody will finish it
    if pid == os.getpid():
        return token != PROCESS_TOKEN
    if not _pid_alive(pid):
        return True
    return start is not None and _process_start(pid) not in (None, start)


_INSTALLED_VERSIONS: dict[str, str | None] = {}


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result (those installed; nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy", "pandas", "streamlit"):
        # An imported module's __version__ names the build (torch's "+cu130"); else ask the installed metadata.
        version = getattr(sys.modules.get(name), "__version__", None)
        if version is None:
            if name not in _INSTALLED_VERSIONS:
                try:
                    _INSTALLED_VERSIONS[name] = importlib.metadata.version(name)
                except importlib.metadata.PackageNotFoundError:
                    _INSTALLED_VERSIONS[name] = None
            version = _INSTALLED_VERSIONS[name]
        if version is not None:
            versions[name] = str(version)
    return versions


# ---- JSON --------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "tolist") and hasattr(value, "detach"):  # torch tensor, without importing torch
        return value.detach().cpu().tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON serialisable: {e}") from None


def _loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


def _encode_cell(value: Any) -> Any:
    """A DataFrame cell as JSON, keeping tuples (e.g. layer shapes) apart from lists."""
    if isinstance(value, tuple):
        return {"$tuple": [_encode_cell(v) for v in value]}
    if isinstance(value, list):
        return [_encode_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_cell(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_encode_cell(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def _decode_cell(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$tuple"}:
            return tuple(_decode_cell(v) for v in value["$tuple"])
        return {k: _decode_cell(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_cell(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """A value as strict JSON (NaN -> None, tuples -> lists, numpy -> Python), for export."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def _frame_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [_plain(r) for r in df.to_dict("records")]


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; choose one of: {', '.join(STATUSES)}")
    return status


def _check_id(value: Any, what: str = "run id") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


# ---- the store ---------------------------------------------------------------------------
class Store:
    """A SQLite run store, safe to use from several threads and processes at once."""

    def __init__(self, path: str | os.PathLike | None = None, recover: bool = True):
        """Open (creating or migrating) the store at `path`, $PRUNING_DB or ./runs/pruning.db."""
        if _REFUSED_HERE is not None:
            raise RuntimeError(_REFUSED_HERE)
        raw = path if path is not None else (os.environ.get(ENV_VAR) or DEFAULT_PATH)
        self.path = Path(raw).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.masks_dir = self.path.parent / "masks"
        self._local = threading.local()
        self._connections: list[tuple[weakref.ref, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        self._migrate()
        if recover:
            self.recover_orphans()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- connections and transactions ----
    def _open_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        conn = self._open_connection()
        conn.execute("PRAGMA synchronous = NORMAL")
        with self._connections_lock:
            # Close connections of threads that have ended (Streamlit starts a thread per script run).
            alive = []
            for ref, other in self._connections:
                thread = ref()
                if thread is None or not thread.is_alive():
                    other.close()
                else:
                    alive.append((ref, other))
            alive.append((weakref.ref(threading.current_thread()), conn))
            self._connections = alive
        self._local.conn = conn
        self._local.depth = 0
        self._local.mode = None
        return conn

    def close(self) -> None:
        """Close every connection this store opened (call when no thread is using it)."""
        self._closed = True
        with self._connections_lock:
            for _, conn in self._connections:
                conn.close()
            self._connections = []
        self._local = threading.local()

    @contextlib.contextmanager
    def _transaction(self, mode: str) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        local = self._local
        if local.depth:
            if mode == "write" and local.mode == "read":
                raise RuntimeError("cannot write inside store.snapshot(); use store.transaction() instead")
            local.depth += 1
            try:
                yield conn
            finally:
                local.depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE" if mode == "write" else "BEGIN")
        local.depth, local.mode = 1, mode
        try:
            yield conn
        except BaseException:
            local.depth, local.mode = 0, None
            conn.execute("ROLLBACK")
            raise
        local.depth, local.mode = 0, None
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Group several writes into one atomic transaction (nested calls join the outer one)."""
        return self._transaction("write")

    def snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Group several reads so that they all see the same consistent state."""
        return self._transaction("read")

    # ---- schema ----
    def _migrate(self) -> None:
        conn = self._open_connection()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"could not switch {self.path} to WAL mode (got {mode!r}); "
                                   f"is it on a network file system? Point {ENV_VAR} at a local disk")
            if version == SCHEMA_VERSION:
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
                self._check_version(version)
                if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise ValueError(f"{self.path} is a SQLite database but not a run store (it has tables "
                                     f"but no schema version); point {ENV_VAR} elsewhere")
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[target - 1]:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {target}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise NewerDatabaseError(
                f"this database ({self.path}) was written by a newer version of the app (schema version "
                f"{version}; this version reads up to {SCHEMA_VERSION}); upgrade the app or point {ENV_VAR} "
                f"elsewhere")

    def schema_version(self) -> int:
        """The schema version of the open database file."""
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    def journal_mode(self) -> str:
        """SQLite's journal mode of the database file ('wal')."""
        return self._conn().execute("PRAGMA journal_mode").fetchone()[0]

    # ---- helpers ----
    def _row(self, conn: sqlite3.Connection, run_id: Any) -> sqlite3.Row:
        run_id = _check_id(run_id)
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRunError(f"no run with id {run_id} in {self.path}")
        return row

    def _sweep_row(self, conn: sqlite3.Connection, sweep_id: Any) -> sqlite3.Row:
        sweep_id = _check_id(sweep_id, "sweep id")
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

    @staticmethod
    def _owner() -> dict[str, Any]:
        return {"owner_pid": os.getpid(), "owner_token": PROCESS_TOKEN, "owner_start": _OWN_START}

    def _mask_path(self, run_id: int) -> Path:
        return self.masks_dir / f"{self.path.stem}-{run_id}.npz"

    # ---- runs ----
    def create_run(self, config: Mapping[str, Any] | Any, key: str | None = None, kind: str = "train",
                   sweep_id: int | None = None, status: str = "queued") -> int:
        """Record a new run (owned by this process) and return its id; `key` defaults to RunConfig's key."""
        if hasattr(config, "to_dict") and not isinstance(config, Mapping):
            if key is None:
                key = config.key()
            config = config.to_dict()
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a dict, got {type(config).__name__}")
        config = dict(config)
        if key is None:
            from pruning_core.config import RunConfig

            key = RunConfig.from_dict(config).key()
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        _check_status(status)
        config_json = _dumps(config, "config")
        sparsity = config.get("sparsity")
        seed = config.get("seed")
        now = time.time()
        with self._transaction("write") as conn:
            if sweep_id is not None:
                sweep_id = self._sweep_row(conn, sweep_id)["id"]
            owner = self._owner() if status in ACTIVE_STATUSES else dict.fromkeys(self._owner())
            cur = conn.execute(
                "INSERT INTO runs (key, kind, status, config, dataset, model, method, sparsity, seed, created_at, "
                "started_at, finished_at, sweep_id, owner_pid, owner_token, owner_start) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, kind, status, config_json, _text(config.get("dataset")), _text(config.get("model")),
                 _text(config.get("method")), _number(sparsity, "sparsity") if sparsity is not None else None,
                 int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else None,
                 now, now if status == "running" else None, now if status in FINAL_STATUSES else None,
                 sweep_id, *owner.values()))
            return int(cur.lastrowid)

    def start_run(self, run_id: int, device: str, versions: Mapping[str, str] | None = None) -> None:
        """Mark a queued run running on `device`, owned by this process, with the library versions of the
        process that computes it (`versions`; default: this process's)."""
        if not isinstance(device, str):
            raise ValueError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
        versions_json = _dumps(dict(versions) if versions is not None else library_versions(), "versions")
        self._transition(run_id, ("queued",), "running", lambda conn, row: {
            "started_at": time.time(), "device": device, "versions": versions_json, **self._owner()})

    def requeue_run(self, run_id: int) -> None:
        """Put an active run back to queued with its partial records (metrics, layers, masks, timings,
        progress) removed, so that a retried attempt records it from a clean start, as a first one does."""
        with self._transaction("write") as conn:
            row = self._row(conn, run_id)
            if row["status"] not in ACTIVE_STATUSES:
                raise InvalidTransitionError(f"run {row['id']} is {row['status']}; only a queued or running run "
                                             f"can be queued again")
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (row["id"],))
            conn.execute("DELETE FROM layers WHERE run_id = ?", (row["id"],))
            conn.execute("UPDATE runs SET status = 'queued', started_at = NULL, device = NULL, versions = NULL, "
                         "timings = '{}', summary = NULL, progress_done = 0, progress_total = 0, "
                         "progress_message = '', layers_meta = NULL, masks_file = NULL WHERE id = ?", (row["id"],))
        if row["masks_file"] is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.masks_dir / row["masks_file"]).unlink()

    def update_progress(self, run_id: int, done: float, total: float, message: str = "") -> str:
        """Set a run's progress (done of total, with a message) and return its status ('cancelled' = stop)."""
        done_f, total_f = _number(done, "done"), _number(total, "total")
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
                step = _number(step, "step")
                if not float(step).is_integer():
                    raise ValueError(f"step must be an integer, got {row.get('step')!r}")
                step = int(step)
            values = [_number(row.get(c), c) for c in METRIC_COLUMNS]
            extra = {k: v for k, v in row.items() if k != "step" and k not in METRIC_COLUMNS}
            prepared.append((step, values, _dumps(extra, "metrics extra") if extra else None))
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
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"layers must be a pandas DataFrame, got {type(df).__name__}")
        columns = list(df.columns)
        if any(not isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise ValueError(f"layer table columns must be unique strings, got {columns!r}")
        meta = _dumps({"columns": columns, "dtypes": [str(df[c].dtype) for c in columns]}, "layer columns")
        rows = []
        for position, record in enumerate(df.itertuples(index=False, name=None)):
            cells = dict(zip(columns, record))
            name = cells.get("name")
            rows.append((position, None if name is None else str(name),
                         _dumps([_encode_cell(v) for v in record], "layer row")))
        with self._transaction("write") as conn:
            run_id = self._row(conn, run_id)["id"]
            conn.execute("DELETE FROM layers WHERE run_id = ?", (run_id,))
            conn.executemany("INSERT INTO layers (run_id, position, name, row) VALUES (?, ?, ?, ?)",
                             [(run_id, *r) for r in rows])
            conn.execute("UPDATE runs SET layers_meta = ? WHERE id = ?", (meta, run_id))

    def save_masks(self, run_id: int, masks: Mapping[str, Any]) -> Path:
        """Write a run's masks (name -> bool tensor) bit-packed and compressed, atomically; return the file."""
        with self._transaction("read") as conn:
            run_id = self._row(conn, run_id)["id"]
        names, shapes, arrays = [], [], {}
        for i, (name, mask) in enumerate(masks.items()):
            if not isinstance(name, str):
                raise ValueError(f"mask names must be strings, got {name!r}")
            array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
            if array.dtype != np.bool_:
                if not np.isin(array, (0, 1)).all():
                    raise ValueError(f"mask {name!r} must hold only 0/1 or True/False values")
                array = array.astype(bool)
            names.append(name)
            shapes.append(list(array.shape))
            arrays[f"m{i}"] = np.packbits(array.reshape(-1))
        meta = np.array(json.dumps({"names": names, "shapes": shapes}))
        target = self._mask_path(run_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, __meta__=meta, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        try:
            with self._transaction("write") as conn:
                self._row(conn, run_id)
                conn.execute("UPDATE runs SET masks_file = ? WHERE id = ?", (target.name, run_id))
        except UnknownRunError:  # deleted meanwhile
            with contextlib.suppress(OSError):
                target.unlink()
            raise
        return target

    def load_masks(self, run_id: int) -> dict[str, Any] | None:
        """A run's masks as name -> bool torch tensor, or None when none were saved."""
        import torch

        with self._transaction("read") as conn:
            row = self._row(conn, run_id)
        if row["masks_file"] is None:
            return None
        path = self.masks_dir / row["masks_file"]
        if not path.exists():
            raise FileNotFoundError(f"the mask file of run {row['id']} is missing: {path}")
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            masks = {}
            for i, (name, shape) in enumerate(zip(meta["names"], meta["shapes"])):
                count = int(np.prod(shape, dtype=np.int64))
                bits = np.unpackbits(data[f"m{i}"], count=count).astype(bool).reshape(shape)
                masks[name] = torch.from_numpy(bits)
        return masks

    def finish_run(self, run_id: int, summary: Mapping[str, Any], timings: Mapping[str, Any] | None = None) -> None:
        """Mark a running run done with its summary; `timings` (phase -> seconds) are merged in."""
        if not isinstance(summary, Mapping):
            raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
        summary_json = _dumps(dict(summary), "summary")
        timings = dict(timings or {})
        _dumps(timings, "timings")

        def update(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
            merged = {**_loads(row["timings"], {}), **timings}
            return {"summary": summary_json, "timings": _dumps(merged, "timings"), "finished_at": time.time(),
                    "error": None}

        self._transition(run_id, ("running",), "done", update)

    def add_timings(self, run_id: int, timings: Mapping[str, Any]) -> None:
        """Merge phase timings (e.g. {'prune_s': 1.2}) into a run's timings."""
        timings = dict(timings)
        _dumps(timings, "timings")
        with self._transaction("write") as conn:
            row = self._row(conn, run_id)
            merged = {**_loads(row["timings"], {}), **timings}
            conn.execute("UPDATE runs SET timings = ? WHERE id = ?", (_dumps(merged, "timings"), row["id"]))

    def fail_run(self, run_id: int, error: str) -> None:
        """Mark a queued or running run failed with an error message."""
        self._transition(run_id, ACTIVE_STATUSES, "failed",
                         lambda conn, row: {"error": str(error), "finished_at": time.time()})

    def cancel_run(self, run_id: int) -> None:
        """Mark a queued or running run cancelled (a worker sees it in `update_progress`'s answer)."""
        self._transition(run_id, ACTIVE_STATUSES, "cancelled", lambda conn, row: {"finished_at": time.time()})

    def recover_orphans(self) -> list[int]:
        """Mark queued/running runs whose owning process is gone as failed; return their ids."""
        recovered = []
        with self._transaction("write") as conn:
            rows = conn.execute("SELECT id, owner_pid, owner_token, owner_start FROM runs "
                                "WHERE status IN ('queued', 'running')").fetchall()
            now = time.time()
            for row in rows:
                if _owner_gone(row["owner_pid"], row["owner_token"], row["owner_start"]):
                    conn.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                                 (INTERRUPTED_ERROR, now, row["id"]))
                    recovered.append(row["id"])
        return recovered

    def delete_run(self, run_id: int) -> None:
        """Delete a run with its metrics, layer rows and mask file."""
        with self._transaction("write") as conn:
            row = self._row(conn, run_id)
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (row["id"],))
            conn.execute("DELETE FROM layers WHERE run_id = ?", (row["id"],))
            conn.execute("DELETE FROM runs WHERE id = ?", (row["id"],))
        if row["masks_file"] is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.masks_dir / row["masks_file"]).unlink()

    # ---- reading runs ----
    def _run_dict(self, conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
        n_metrics = conn.execute("SELECT count(*) FROM metrics WHERE run_id = ?", (row["id"],)).fetchone()[0]
        return {
            "id": row["id"], "key": row["key"], "kind": row["kind"], "status": row["status"],
            "config": _loads(row["config"], {}),
            "dataset": row["dataset"], "model": row["model"], "method": row["method"],
            "sparsity": row["sparsity"], "seed": row["seed"], "sweep_id": row["sweep_id"],
            "error": row["error"], "device": row["device"], "versions": _loads(row["versions"], {}),
            "created_at": row["created_at"], "started_at": row["started_at"], "finished_at": row["finished_at"],
            "timings": _loads(row["timings"], {}), "summary": _loads(row["summary"]),
            "progress": {"done": row["progress_done"], "total": row["progress_total"],
                         "message": row["progress_message"]},
            "owner": {"pid": row["owner_pid"], "token": row["owner_token"], "start": row["owner_start"]},
            "n_metrics": n_metrics, "has_layers": row["layers_meta"] is not None,
            "has_masks": row["masks_file"] is not None,
        }

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

    def list_runs(self, status: str | Sequence[str] | None = None, kind: str | None = None,
                  dataset: str | None = None, model: str | None = None, method: str | None = None,
                  sweep_id: int | None = None, limit: int | None = None) -> pd.DataFrame:
        """One row per run (newest first) with flat columns, filtered by any of the given fields."""
        where, params = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for s in statuses:
                _check_status(s)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params += statuses
        for column, value in (("kind", kind), ("dataset", dataset), ("model", model), ("method", method)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if sweep_id is not None:
            where.append("sweep_id = ?")
            params.append(_check_id(sweep_id, "sweep id"))
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
            sql += f" LIMIT {limit}"
        with self._transaction("read") as conn:
            rows = conn.execute(sql, params).fetchall()
        records = []
        for row in rows:
            summary = _loads(row["summary"]) or {}
            timings = _loads(row["timings"], {})
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
                **{c: _scalar(summary.get(c)) for c in SUMMARY_COLUMNS},
                **{c: _scalar(timings.get(c)) for c in TIMING_COLUMNS},
            })
        columns = ["run_id", "kind", "status", "key", "dataset", "model", "method", "sparsity", "seed", "sweep_id",
                   "device", "error", "created_at", "started_at", "finished_at", "duration_s", "progress_done",
                   "progress_total", "progress_message", *SUMMARY_COLUMNS, *TIMING_COLUMNS]
        df = pd.DataFrame.from_records(records, columns=columns)
        for c in ("sparsity", "created_at", "started_at", "finished_at", "duration_s", "progress_done",
                  "progress_total", *SUMMARY_COLUMNS, *TIMING_COLUMNS):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        df["run_id"] = df["run_id"].astype("int64")
        df["seed"] = df["seed"].astype("Int64")
        df["sweep_id"] = df["sweep_id"].astype("Int64")
        return df

    def latest_runs(self, keys: Sequence[str], kind: str | None = None) -> pd.DataFrame:
        """For each config key, its most useful run (a done one, else the newest active, else the newest
        of any status), as `list_runs` rows in the order of `keys`; keys with no run are left out."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return self.list_runs(limit=0)
        rank = {"done": 0, "running": 1, "queued": 1}
        with self._transaction("read") as conn:
            placeholders = ", ".join("?" * len(keys))
            sql = f"SELECT id, key, status FROM runs WHERE key IN ({placeholders})"
            params: list[Any] = list(keys)
            if kind is not None:
                sql += " AND kind = ?"
                params.append(kind)
            best: dict[str, tuple[int, int]] = {}
            for row in conn.execute(sql, params):
                candidate = (rank.get(row["status"], 2), -row["id"])
                if row["key"] not in best or candidate < best[row["key"]]:
                    best[row["key"]] = candidate
        ids = {-run_id for _, run_id in best.values()}
        runs = self.list_runs(kind=kind)
        runs = runs[runs["run_id"].isin(ids)]
        order = {key: i for i, key in enumerate(keys)}
        return runs.sort_values("key", key=lambda col: col.map(order)).reset_index(drop=True)

    def metrics(self, run_id: int) -> pd.DataFrame:
        """A run's per-epoch metrics in step order (extra keys become columns)."""
        with self._transaction("read") as conn:
            run_id = self._row(conn, run_id)["id"]
            rows = conn.execute(f"SELECT step, {', '.join(METRIC_COLUMNS)}, extra FROM metrics WHERE run_id = ? "
                                f"ORDER BY step, id", (run_id,)).fetchall()
        records = []
        for row in rows:
            record = {"step": row["step"], **{c: row[c] for c in METRIC_COLUMNS}}
            for k, v in (_loads(row["extra"]) or {}).items():
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

    def layers(self, run_id: int) -> pd.DataFrame | None:
        """A run's per-layer table as stored by `set_layers`, or None when none was stored."""
        with self._transaction("read") as conn:
            row = self._row(conn, run_id)
            rows = conn.execute("SELECT row FROM layers WHERE run_id = ? ORDER BY position",
                                (row["id"],)).fetchall()
        if row["layers_meta"] is None:
            return None
        meta = json.loads(row["layers_meta"])
        columns, dtypes = meta["columns"], meta["dtypes"]
        data = [[_decode_cell(v) for v in json.loads(r["row"])] for r in rows]
        df = pd.DataFrame.from_records(data, columns=columns) if data else pd.DataFrame(
            {c: pd.Series([], dtype="object") for c in columns})
        for column, dtype in zip(columns, dtypes):
            if dtype == "object":
                df[column] = df[column].astype(object)
                continue
            with contextlib.suppress(TypeError, ValueError):
                df[column] = df[column].astype(dtype)
        return df

    def queue_position(self, run_id: int) -> int | None:
        """How many queued/running runs were created before this one (None if it is not queued/running)."""
        with self._transaction("read") as conn:
            row = self._row(conn, run_id)
            if row["status"] not in ACTIVE_STATUSES:
                return None
            return conn.execute("SELECT count(*) FROM runs WHERE status IN ('queued', 'running') AND id < ?",
                                (row["id"],)).fetchone()[0]

    def export_runs(self, run_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Full records of the given runs (with metrics and layers) as strict-JSON-able dicts."""
        records = []
        with self._transaction("read"):
            for run_id in run_ids:
                record = self.get_run(run_id)
                record.pop("owner")
                record["metrics"] = _frame_records(self.metrics(run_id))
                layers = self.layers(run_id)
                record["layers"] = None if layers is None else _frame_records(layers)
                records.append(_plain(record))
        return records

    # ---- sweeps ----
    def create_sweep(self, config: Mapping[str, Any], status: str = "queued") -> int:
        """Record a sweep (its grid as a JSON-able dict) and return its id."""
        if not isinstance(config, Mapping):
            raise ValueError(f"sweep config must be a dict, got {type(config).__name__}")
        config_json = _dumps(dict(config), "sweep config")
        _check_status(status)
        now = time.time()
        with self._transaction("write") as conn:
            cur = conn.execute("INSERT INTO sweeps (config, status, created_at, updated_at) VALUES (?, ?, ?, ?)",
                               (config_json, status, now, now))
            return int(cur.lastrowid)

    def _sweep_dict(self, conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in conn.execute("SELECT status, count(*) FROM runs WHERE sweep_id = ? GROUP BY status",
                                      (row["id"],)):
            counts[status] = n
        return {"id": row["id"], "config": _loads(row["config"], {}), "status": row["status"],
                "created_at": row["created_at"], "updated_at": row["updated_at"], "cells": counts,
                "n_cells": sum(counts.values())}

    def get_sweep(self, sweep_id: int) -> dict[str, Any]:
        """One sweep: config, status, timestamps and its cells' counts by status."""
        with self._transaction("read") as conn:
            return self._sweep_dict(conn, self._sweep_row(conn, sweep_id))

    def list_sweeps(self, status: str | None = None) -> pd.DataFrame:
        """One row per sweep (newest first) with cell counts by status."""
        if status is not None:
            _check_status(status)
        with self._transaction("read") as conn:
            rows = conn.execute("SELECT * FROM sweeps" + (" WHERE status = ?" if status else "") + " ORDER BY id DESC",
                                (status,) if status else ()).fetchall()
            sweeps = [self._sweep_dict(conn, r) for r in rows]
        records = [{"sweep_id": s["id"], "status": s["status"], "created_at": s["created_at"],
                    "updated_at": s["updated_at"], "n_cells": s["n_cells"],
                    **{f"cells_{k}": v for k, v in s["cells"].items()}, "config": s["config"]} for s in sweeps]
        columns = ["sweep_id", "status", "created_at", "updated_at", "n_cells", *(f"cells_{k}" for k in STATUSES),
                   "config"]
        return pd.DataFrame.from_records(records, columns=columns)

    def set_sweep_status(self, sweep_id: int, status: str) -> None:
        """Set a sweep's status (one of STATUSES)."""
        _check_status(status)
        with self._transaction("write") as conn:
            row = self._sweep_row(conn, sweep_id)
            conn.execute("UPDATE sweeps SET status = ?, updated_at = ? WHERE id = ?", (status, time.time(), row["id"]))

    def delete_sweep(self, sweep_id: int) -> None:
        """Delete a sweep and all its cell runs (with their metrics, layers and masks)."""
        with self._transaction("read") as conn:
            self._sweep_row(conn, sweep_id)
            run_ids = [r[0] for r in conn.execute("SELECT id FROM runs WHERE sweep_id = ?", (sweep_id,))]
        for run_id in run_ids:
            with contextlib.suppress(UnknownRunError):
                self.delete_run(run_id)
        with self._transaction("write") as conn:
            conn.execute("DELETE FROM sweeps WHERE id = ?", (sweep_id,))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
