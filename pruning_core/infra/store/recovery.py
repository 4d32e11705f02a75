"""Process ownership of runs and crash recovery.

A run records its owner: process id, a random per-process token and the process start time. Opening a store
marks every queued or running run whose owner is gone as failed, so no run is ever left "running" by a killed
or restarted process. The pid alone is not enough: a restarted server may get the same pid (the token tells it
apart) and an unrelated process may reuse a dead owner's pid (its start time tells it apart).

A run (or sweep) left to the job queue is owned by no process: its owner token is QUEUE_TOKEN until a worker
claims it, so recovery leaves it queued (a restarted server's workers run it). A sweep driven by a process
(`pc.sweep`) is settled once that process is gone; a sweep of the job queue once none of its cells is active.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import secrets
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

from pruning_core.infra.store import users

INTERRUPTED_ERROR = "interrupted: the process running it stopped (killed or restarted) before it finished"

# Identifies this process among processes that had the same pid (a restarted server).
PROCESS_TOKEN = secrets.token_hex(8)
# The owner token of a run or sweep left to the job queue (no process owns it until a worker claims it).
QUEUE_TOKEN = "queue"


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process (Linux /proc), to tell a reused pid apart; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None  # field 22 overall


def pid_alive(pid: int) -> bool:
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


OWN_START = process_start(os.getpid())


def owner_gone(pid: int | None, token: str | None, start: str | None) -> bool:
    """Whether the process recorded as a run's owner (pid, token, start time) no longer exists."""
    if pid is None:
        return True  # nobody claims it, so nobody will finish it
    if pid == os.getpid():
        return token != PROCESS_TOKEN
    if not pid_alive(pid):
        return True
    return start is not None and process_start(pid) not in (None, start)


def owner_columns() -> dict[str, Any]:
    """The `runs` columns that name this process as a run's owner."""
    return {"owner_pid": os.getpid(), "owner_token": PROCESS_TOKEN, "owner_start": OWN_START}


def queue_owner_columns() -> dict[str, Any]:
    """The owner columns of a run or sweep left to the job queue: no process, the queue's token."""
    return {"owner_pid": None, "owner_token": QUEUE_TOKEN, "owner_start": None}


def queue_owned(pid: int | None, token: str | None) -> bool:
    return pid is None and token == QUEUE_TOKEN


def claim_queued(conn: sqlite3.Connection, kinds: Sequence[str] | None = None) -> int | None:
    """Inside the caller's write transaction: make this process the owner of the next queued run left to the
    job queue (of these kinds), taking turns between users (`users.fair_claim_order`: the oldest run of the user
    served least recently); its id, or None when there is none or the queue is paused."""
    if users.paused(conn):
        return None
    order = users.fair_claim_order(conn, QUEUE_TOKEN, list(kinds) if kinds is not None else None)
    if not order:
        return None
    conn.execute("UPDATE runs SET owner_pid = ?, owner_token = ?, owner_start = ?, claimed_at = ? WHERE id = ?",
                 (*owner_columns().values(), time.time(), order[0]))
    return int(order[0])


def release_to_queue(conn: sqlite3.Connection, run_id: int) -> None:
    """Inside the caller's write transaction: leave a queued run to the job queue (no process owns it)."""
    conn.execute("UPDATE runs SET owner_pid = ?, owner_token = ?, owner_start = ? WHERE id = ? AND status = 'queued'",
                 (*queue_owner_columns().values(), run_id))


def requeue(conn: sqlite3.Connection, run_id: int) -> dict[str, Any]:
    """Inside the caller's write transaction: put a run back to queued with its partial records (metrics, layers,
    timings, progress, the mask file's name) removed, so that a retried attempt records it from a clean start.
    The caller removes the mask file once the transaction commits."""
    conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
    conn.execute("DELETE FROM layers WHERE run_id = ?", (run_id,))
    conn.execute("UPDATE runs SET status = 'queued', started_at = NULL, device = NULL, versions = NULL, "
                 "timings = '{}', summary = NULL, progress_done = 0, progress_total = 0, progress_message = '', "
                 "layers_meta = NULL, masks_file = NULL WHERE id = ?", (run_id,))
    return {}  # nothing more to set (`Store._transition`'s update)


def recover_orphans(conn: sqlite3.Connection) -> list[int]:
    """Inside the caller's write transaction: fail the queued/running runs whose owner is gone (a queued run left
    to the job queue, which no process owns yet, stays queued); return their ids."""
    recovered = []
    rows = conn.execute("SELECT id, status, owner_pid, owner_token, owner_start FROM runs "
                        "WHERE status IN ('queued', 'running')").fetchall()
    now = time.time()
    for row in rows:
        if row["status"] == "queued" and queue_owned(row["owner_pid"], row["owner_token"]):
            continue
        if owner_gone(row["owner_pid"], row["owner_token"], row["owner_start"]):
            conn.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                         (INTERRUPTED_ERROR, now, row["id"]))
            recovered.append(row["id"])
    return recovered


def settle_sweeps(conn: sqlite3.Connection) -> list[int]:
    """Inside the caller's write transaction: mark running sweeps done (every cell done) or failed once none of
    their cells is queued or running, unless a live process drives the sweep (pc.sweep settles its own); return
    their ids. Cells are found by key among training runs, so a cell reused from an earlier run counts too."""
    settled = []
    sweeps = conn.execute("SELECT id, config, owner_pid, owner_token, owner_start FROM sweeps "
                          "WHERE status = 'running'").fetchall()
    for sweep in sweeps:
        # Sweeps of a version without owners (NULL) were the job queue's.
        by_queue = sweep["owner_pid"] is None and sweep["owner_token"] in (None, QUEUE_TOKEN)
        if not by_queue and not owner_gone(sweep["owner_pid"], sweep["owner_token"], sweep["owner_start"]):
            continue
        keys = list(dict.fromkeys(json.loads(sweep["config"]).get("cells") or []))
        statuses: dict[str, set[str]] = {}
        if keys:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                for row in conn.execute(f"SELECT key, status FROM runs WHERE kind = 'train' AND key IN "
                                        f"({', '.join('?' * len(chunk))})", chunk):
                    statuses.setdefault(row["key"], set()).add(row["status"])
        else:
            for row in conn.execute("SELECT key, status FROM runs WHERE sweep_id = ?", (sweep["id"],)):
                statuses.setdefault(row["key"], set()).add(row["status"])
        if any(found & {"queued", "running"} for found in statuses.values()):
            continue
        complete = bool(statuses) and all("done" in statuses.get(key, ()) for key in (keys or statuses))
        conn.execute("UPDATE sweeps SET status = ?, updated_at = ? WHERE id = ?",
                     ("done" if complete else "failed", time.time(), sweep["id"]))
        settled.append(sweep["id"])
    return settled


# Set in processes that must never open a store (Ray workers: the driver is the store's one writer).
_REFUSED_HERE: str | None = None


def refuse_in_this_process(reason: str) -> None:
    """From now on, opening a Store in this process raises RuntimeError(reason)."""
    global _REFUSED_HERE
    _REFUSED_HERE = reason


def check_allowed() -> None:
    """Raise the refusal's RuntimeError where this process refuses stores (`refuse_in_this_process`); else None."""
    if _REFUSED_HERE is not None:
        raise RuntimeError(_REFUSED_HERE)


_INSTALLED_VERSIONS: dict[str, str | None] = {}


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result (those installed; nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy", "pandas", "streamlit"):
        # The installed metadata for all, so that two processes record the same versions whatever they imported;
        # torch's own __version__ where it is imported (every computing process), as it names the build
        # ("+cu130", "+cpu") that the metadata leaves out.
        version = getattr(sys.modules.get(name), "__version__", None) if name == "torch" else None
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
