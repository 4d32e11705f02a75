"""One SQLite connection per thread, and transactions on it that nest.

Every thread gets its own connection (WAL mode, ``busy_timeout``), so a background worker can write while several
page sessions read. A transaction is "write" (``BEGIN IMMEDIATE``: it takes the write lock up front, so two
writers wait for each other instead of failing on upgrade) or "read" (``BEGIN``: one consistent snapshot). A
transaction opened inside another joins it; a write inside a read one is refused. Work outside the database that
must follow the transaction's fate (a mask file moved into place, or removed) is registered with `after`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from pruning_core.infra.store.schema import open_connection

log = logging.getLogger(__name__)


class Connections:
    """The per-thread connections to one database file."""

    def __init__(self, path: Path, owner: str):
        self.path = path
        self.owner = owner  # how error messages name the store
        self._local = threading.local()
        self._connections: list[tuple[weakref.ref, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self._closed = False

    def current(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise RuntimeError(f"{self.owner} is closed")
        conn = open_connection(self.path)
        conn.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
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
        self._local.hooks = []
        return conn

    def close(self) -> None:
        """Close every connection (call when no thread is using them); later use raises RuntimeError."""
        self._closed = True
        with self._lock:
            for _, conn in self._connections:
                conn.close()
            self._connections = []
        self._local = threading.local()

    @contextlib.contextmanager
    def transaction(self, mode: str) -> Iterator[sqlite3.Connection]:
        """A "write" or "read" transaction on this thread's connection, committed on exit, rolled back on error."""
        conn = self.current()
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
        local.depth, local.mode, local.hooks = 1, mode, []
        try:
            yield conn
        except BaseException:
            local.depth, local.mode = 0, None
            try:
                conn.execute("ROLLBACK")
            finally:
                self._run_hooks(committed=False)
            raise
        local.depth, local.mode = 0, None
        try:
            conn.execute("COMMIT")
        except BaseException:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            finally:
                self._run_hooks(committed=False)
            raise
        self._run_hooks(committed=True)

    def after(self, on_commit: Callable[[], None] | None = None,
              on_rollback: Callable[[], None] | None = None) -> None:
        """Inside a transaction of this thread: call `on_commit` once the outermost transaction has committed, or
        `on_rollback` once it has rolled back (in the order registered). A hook's error is logged, not raised: the
        transaction's outcome is already decided."""
        if not getattr(self._local, "depth", 0):
            raise RuntimeError("Connections.after needs an open transaction")
        self._local.hooks.append((on_commit, on_rollback))

    def _run_hooks(self, committed: bool) -> None:
        hooks, self._local.hooks = self._local.hooks, []
        for on_commit, on_rollback in hooks:
            hook = on_commit if committed else on_rollback
            if hook is None:
                continue
            try:
                hook()
            except Exception:  # noqa: BLE001 - see `after`
                log.warning("store: a hook after %s failed", "commit" if committed else "rollback", exc_info=True)
