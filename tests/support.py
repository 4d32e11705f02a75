"""What several test files share: waiting for a condition, and the start of a child process that opens the run
store without importing the whole core."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 120.0, every: float = 0.05) -> bool:
    """Whether `predicate()` came true within `timeout` seconds, asked every `every` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


# A child process's script starts with this and goes on with its own lines (argv: the store's path, the repo).
# It imports only the store package (not the whole core with torch), to start quickly: stand-ins for the parent
# packages point Python at their folders without running their __init__ files.
STORE_ONLY_CHILD = textwrap.dedent("""
    import sys, time, types
    from pathlib import Path
    repo = Path(sys.argv[2])
    for name in ("pruning_core", "pruning_core.infra"):
        package = types.ModuleType(name)
        package.__path__ = [str(repo.joinpath(*name.split(".")))]
        sys.modules[name] = package
    from pruning_core.infra.store import Store
""")
