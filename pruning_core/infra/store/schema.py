"""The database file: where it lives, how it is opened, its tables and their migrations.

Schema changes are migrations (`MIGRATIONS`), applied in order from the file's ``PRAGMA user_version``; a file
written by a newer version is refused, not modified.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

ENV_VAR = "PRUNING_DB"
DEFAULT_PATH = Path("runs") / "pruning.db"

STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("done", "failed", "cancelled")

# Per-epoch metric columns stored as real columns; any other key of a metrics row goes to `extra`.
METRIC_COLUMNS = ("epoch", "train_loss", "test_loss", "test_accuracy", "images_per_s", "elapsed_s")

BUSY_TIMEOUT_MS = 30_000


class NewerDatabaseError(RuntimeError):
    """The database file was written by a newer version of this code."""


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
    # 2 -> 3: who drives a sweep (a process running pc.sweep, or the job queue), so that the sweep of a process
    # that died is settled instead of staying "running" forever.
    (
        "ALTER TABLE sweeps ADD COLUMN owner_pid INTEGER",
        "ALTER TABLE sweeps ADD COLUMN owner_token TEXT",
        "ALTER TABLE sweeps ADD COLUMN owner_start TEXT",
        "CREATE INDEX sweeps_status ON sweeps (status)",
    ),
    # 3 -> 4: the person a run or sweep belongs to on a classroom server (an unguessable per-browser token and
    # an optional display name; NULL for work of earlier versions, the CLI and the Python API), when a worker
    # claimed a run (the queue takes turns between users by it), and the server's settings (the queue paused,
    # limits changed by the teacher), shared by the server and its workers.
    (
        "ALTER TABLE runs ADD COLUMN user_token TEXT",
        "ALTER TABLE runs ADD COLUMN user_name TEXT",
        "ALTER TABLE runs ADD COLUMN claimed_at REAL",
        "ALTER TABLE sweeps ADD COLUMN user_token TEXT",
        "ALTER TABLE sweeps ADD COLUMN user_name TEXT",
        "CREATE INDEX runs_user ON runs (user_token, claimed_at)",   # each user's last turn: one index seek
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def check_status(status: str) -> str:
    """`status` itself if it is one of STATUSES, else a ValueError listing them."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; choose one of: {', '.join(STATUSES)}")
    return status


def open_connection(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) that waits for a busy file."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def check_version(path: Path, version: int) -> None:
    """Refuse a file whose schema is newer than this code's."""
    if version > SCHEMA_VERSION:
        raise NewerDatabaseError(
            f"this database ({path}) was written by a newer version of the app (schema version "
            f"{version}; this version reads up to {SCHEMA_VERSION}); upgrade the app or point {ENV_VAR} "
            f"elsewhere")


def migrate(path: Path) -> None:
    """Switch the file at `path` to WAL mode and bring its schema up to SCHEMA_VERSION (creating it if empty)."""
    conn = open_connection(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        check_version(path, version)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not switch {path} to WAL mode (got {mode!r}); "
                               f"is it on a network file system? Point {ENV_VAR} at a local disk")
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            check_version(path, version)
            if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise ValueError(f"{path} is a SQLite database but not a run store (it has tables "
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
