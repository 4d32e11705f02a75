"""Cancels that never land in the middle of an import.

`ray.cancel` stops a running task by interrupting the worker's main thread (a KeyboardInterrupt wherever it
happens to be). Much of a cell's first second is lazy imports: the first optimizer imports torch._dynamo
(about 0.7 s), the first digits load imports scikit-learn. An interrupt inside one of them leaves a
half-initialized module in `sys.modules`, and Ray gives the same worker the next cell, which then fails with
"partially initialized module 'torch._dynamo' has no attribute ...". So while a cell computes, an interrupt
that arrives during an import is held and raised at the next `raise_pending` (the recorder's next progress
call) or when the cell ends; any other interrupt is raised at once, as before.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType


def importing(frame: FrameType | None) -> bool:
    """Whether this frame, or a frame that called it, is running the import machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def half_imported_modules() -> list[str]:
    """Modules whose import started and has not finished (or was interrupted): a worker that holds one
    cannot be trusted with another cell."""
    broken = []
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False):
            broken.append(name)
    return broken


class InterruptsOutsideImports:
    """A context for the main thread: SIGINT (and `_thread.interrupt_main`) raises KeyboardInterrupt at once,
    except during an import, where it is held until `raise_pending` or the end of the block. Elsewhere than
    the main thread it changes nothing (only the main thread can be interrupted so)."""

    def __init__(self) -> None:
        self.pending = False
        self._previous: object = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if importing(frame):
            self.pending = True
            return
        raise KeyboardInterrupt

    def raise_pending(self) -> None:
        """Raise the interrupt that was held during an import, if any."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def __enter__(self) -> InterruptsOutsideImports:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._installed = False
        if kind is None:
            self.raise_pending()
