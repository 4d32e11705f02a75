"""Process ownership of runs and crash recovery.

A run records its owner: process id, a random per-process token and the process start time. Opening a store
marks every queued or running run whose owner is gone as failed, so no run is ever left "running" by a killed
or restarted process. The pid alone is not enough: a restarted server may get the same pid (the token tells it
apart) and an unrelated process may reuse a dead owner's pid (its start time tells it apart).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import secrets
import sqlite3
import sys
import time
from typing import Any

INTERRUPTED_ERROR = "interrupted: the process running it stopped (killed or restarted) before it finished"

# Identifies this process among processes that had the same pid (a restarted server).
PROCESS_TOKEN = secrets.token_hex(8)


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


def recover_orphans(conn: sqlite3.Connection) -> list[int]:
    """Inside the caller's write transaction: fail the queued/running runs whose owner is gone; return their ids."""
    recovered = []
    rows = conn.execute("SELECT id, owner_pid, owner_token, owner_start FROM runs "
                        "WHERE status IN ('queued', 'running')").fetchall()
    now = time.time()
    for row in rows:
        if owner_gone(row["owner_pid"], row["owner_token"], row["owner_start"]):
            conn.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                         (INTERRUPTED_ERROR, now, row["id"]))
            recovered.append(row["id"])
    return recovered


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
