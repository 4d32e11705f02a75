"""Whose work a run or sweep is, the queue's turns between users, and the server's settings.

On a classroom server every run and sweep records the user who asked for it: an unguessable per-browser token
(`user_token`) and an optional display name (`user_name`); work of earlier versions, of the CLI and of the Python
API has none. The queue takes turns between users: a worker claims the oldest queued run of the user served
least recently (`fair_claim_order`), so one user's long sweep yields after each cell to another user's run.
The `settings` table holds what the server's sessions and its worker processes share: whether the queue is
paused, and limits a teacher changed while the server runs. Nothing here knows about who may do what: that
is the server's policy (`pruning_core.infra.limits`, the dashboard).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

PAUSED_SETTING = "queue_paused"

# The queued runs left to the job queue, each with the last time a run of the same user was claimed (0: never),
# in the order the queue serves them: the user served least recently first, then the oldest of that user's runs.
# Runs without a user (earlier versions, one user on a laptop) count as one user: among them the queue is FIFO.
_FAIR_ORDER = """
    WITH waiting AS (
        SELECT id, user_token, coalesce(user_token, '') AS user FROM runs
        WHERE status = 'queued' AND owner_pid IS NULL AND owner_token = ? {kinds}
    ), served AS (
        SELECT user_token AS user, max(claimed_at) AS last FROM runs
        WHERE user_token IN (SELECT user_token FROM waiting) GROUP BY user_token
        UNION ALL
        SELECT '', max(claimed_at) FROM runs WHERE user_token IS NULL AND EXISTS (SELECT 1 FROM waiting WHERE user = '')
    )
    SELECT waiting.id, waiting.user, coalesce(served.last, 0) AS last FROM waiting
    LEFT JOIN served ON served.user = waiting.user ORDER BY last, waiting.id
"""


def fair_claim_order(conn: sqlite3.Connection, queue_token: str, kinds: list[str] | None = None) -> list[int]:
    """Ids of the queued runs left to the job queue (of these kinds) in the order the queue takes them: round
    robin between users, by the last time each was served."""
    sql = _FAIR_ORDER.format(kinds=f"AND kind IN ({', '.join('?' * len(kinds))})" if kinds is not None else "")
    rows = conn.execute(sql, [queue_token, *(kinds or [])]).fetchall()
    # The query orders by each user's last claim; a user with several queued runs must then wait for the
    # others' turns: interleave the users in that order, each user's runs oldest first.
    by_user: dict[str, list[int]] = {}
    for row in rows:
        by_user.setdefault(row["user"], []).append(row["id"])
    order, turn = [], 0
    while by_user:
        for user in list(by_user):
            ids = by_user[user]
            if turn < len(ids):
                order.append(ids[turn])
            else:
                del by_user[user]
        turn += 1
    return order


def queue_position(conn: sqlite3.Connection, row: sqlite3.Row, queue_token: str) -> int:
    """How many active runs are ahead of an active run. One waiting in the job queue: those running or held by
    a process, then those the queue's turns take before it (`fair_claim_order`). Any other (running, or queued
    by a process that runs its own, such as `pc.sweep`): the active runs created before it."""
    order = fair_claim_order(conn, queue_token) if row["status"] == "queued" else []
    if row["id"] not in order:
        return conn.execute("SELECT count(*) FROM runs WHERE status IN ('queued', 'running') AND id < ?",
                            (row["id"],)).fetchone()[0]
    held = conn.execute("SELECT count(*) FROM runs WHERE status = 'running' OR (status = 'queued' AND "
                        "owner_pid IS NOT NULL)").fetchone()[0]
    return held + order.index(row["id"])


def paused(conn: sqlite3.Connection) -> bool:
    return bool(read_setting(conn, PAUSED_SETTING, False))


def read_setting(conn: sqlite3.Connection, name: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
    return default if row is None else json.loads(row["value"])


class UserQueries:
    """The `Store` methods about users, turns and settings (mixed into `Store`, which provides `_transaction`,
    `_row` and `_sweep_row`)."""

    def set_run_user(self, run_id: int, token: str | None, name: str | None = None) -> None:
        """Record whose run this is (a user token and display name; None: nobody in particular)."""
        with self._transaction("write") as conn:
            conn.execute("UPDATE runs SET user_token = ?, user_name = ? WHERE id = ?",
                         (token, name or None, self._row(conn, run_id)["id"]))

    def set_sweep_user(self, sweep_id: int, token: str | None, name: str | None = None) -> None:
        """Record whose sweep this is (its cells are recorded one by one, as they are submitted)."""
        with self._transaction("write") as conn:
            sweep_id = self._sweep_row(conn, sweep_id)["id"]
            conn.execute("UPDATE sweeps SET user_token = ?, user_name = ? WHERE id = ?",
                         (token, name or None, sweep_id))

    def run_user(self, run_id: int) -> str | None:
        """The user token of a run (None: no user recorded)."""
        with self._transaction("read") as conn:
            return self._row(conn, run_id)["user_token"]

    def sweep_user(self, sweep_id: int) -> str | None:
        """The user token of a sweep (None: no user recorded)."""
        with self._transaction("read") as conn:
            return self._sweep_row(conn, sweep_id)["user_token"]

    def active_count(self, user_token: str | None = None) -> int:
        """How many runs are queued or running: all of them, or those of one user."""
        sql = "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"
        with self._transaction("read") as conn:
            if user_token is None:
                return conn.execute(sql).fetchone()[0]
            return conn.execute(sql + " AND user_token = ?", (user_token,)).fetchone()[0]

    def setting(self, name: str, default: Any = None) -> Any:
        """A server setting (JSON), or `default` when it was never set."""
        with self._transaction("read") as conn:
            return read_setting(conn, name, default)

    def set_setting(self, name: str, value: Any) -> None:
        """Set a server setting to a JSON-able value (None removes it)."""
        with self._transaction("write") as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE name = ?", (name,))
            else:
                conn.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                             "value = excluded.value", (name, json.dumps(value)))

    def queue_paused(self) -> bool:
        """Whether the job queue is paused (workers claim nothing; running runs go on)."""
        with self._transaction("read") as conn:
            return paused(conn)

    def pause_queue(self, pause: bool = True) -> None:
        """Pause the job queue (no worker starts another run) or resume it."""
        self.set_setting(PAUSED_SETTING, True if pause else None)

    def clear_queue(self) -> list[int]:
        """Cancel every run still waiting in the queue (running runs go on); return their ids."""
        with self._transaction("write") as conn:
            ids = [r["id"] for r in conn.execute("SELECT id FROM runs WHERE status = 'queued' ORDER BY id")]
            conn.executemany("UPDATE runs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                             [(time.time(), run_id) for run_id in ids])
            return ids


@dataclass(frozen=True)
class User:
    """Who asks for work on a classroom server: an unguessable per-browser token and an optional display name."""

    token: str
    name: str | None = None
