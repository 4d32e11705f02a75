"""The run store: every prune, training run and sweep cell, in one SQLite file.

The store is the single source of truth the dashboard pages read. It lives at `Store(path)`, else at the path
in the environment variable ``PRUNING_DB``, else at ``./runs/pruning.db``; parent folders are created. Masks are
kept beside the database as bit-packed, compressed files: ``<db_dir>/masks/<db_name>-<run_id>.npz``.

- `schema`: where the file lives, its tables, statuses and migrations (a newer file is refused, not modified).
- `connections`: one SQLite connection per thread (WAL, ``busy_timeout``) and nesting transactions, so a
  background worker can write while several page sessions read.
- `recovery`: which process owns a run or sweep; opening a store fails the runs whose owner is gone (killed,
  restarted), keeps queued the runs left to the job queue, and settles sweeps whose driver is gone; a process
  may refuse to open any store (a Ray worker: the driver is the one writer).
- `encoding`: JSON columns, per-layer tables as JSON rows, strict JSON for export.
- `records`: rows as the dicts and DataFrames the store returns.
- `mask_files`: atomic, bit-packed mask files.
- `users`: whose work a run or sweep is, the queue's turns between users, the server's settings (paused, limits).
- `store`: the `Store` class, every query and status change.
"""

from pruning_core.infra.store.records import SUMMARY_COLUMNS, TIMING_COLUMNS
from pruning_core.infra.store.recovery import (INTERRUPTED_ERROR, PROCESS_TOKEN, QUEUE_TOKEN, library_versions,
                                               refuse_in_this_process)
from pruning_core.infra.store.schema import (ACTIVE_STATUSES, BUSY_TIMEOUT_MS, DEFAULT_PATH, ENV_VAR, FINAL_STATUSES,
                                             METRIC_COLUMNS, MIGRATIONS, SCHEMA_VERSION, STATUSES, NewerDatabaseError)
from pruning_core.infra.store.store import InvalidTransitionError, Store, UnknownRunError
from pruning_core.infra.store.users import User

__all__ = [
    "ACTIVE_STATUSES", "BUSY_TIMEOUT_MS", "DEFAULT_PATH", "ENV_VAR", "FINAL_STATUSES", "INTERRUPTED_ERROR",
    "METRIC_COLUMNS", "MIGRATIONS", "PROCESS_TOKEN", "QUEUE_TOKEN", "SCHEMA_VERSION", "STATUSES", "SUMMARY_COLUMNS",
    "TIMING_COLUMNS", "InvalidTransitionError", "NewerDatabaseError", "Store", "UnknownRunError", "User",
    "library_versions", "refuse_in_this_process",
]
