"""How many CPU threads torch computes with, so that a result's key fixes its value on a given machine.

Float reductions (sums in matrix products, convolutions, BatchNorm statistics) add their terms in an order that
depends on how many threads share the work, so the same configuration and seed trained with one thread and with
two ends at slightly different weights, and after a few epochs at accuracies a point or more apart. The CLI, a
sweep and the dashboard's job worker all run configurations through `runner.execute`, which trains under
`run_threads`: every entry point uses the same count (`cpu_threads`) and so gets the same numbers for a key.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

THREADS_ENV = "PRUNING_TORCH_THREADS"


def cpu_threads() -> int:
    """The torch thread count runs use on a CPU: $PRUNING_TORCH_THREADS (a positive whole number), else half
    of the cores, at least one. Half, because the dashboard's job worker and a page's own pruning run side by
    side, and small models only lose time to more threads (waiting for busy cores made pruning on digits up
    to 8x slower)."""
    wanted = os.environ.get(THREADS_ENV, "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    return max(1, (os.cpu_count() or 2) // 2)


def limit_cpu_threads() -> None:
    """On a machine without a GPU, make `cpu_threads()` this thread's (and new threads') torch thread count:
    for the dashboard's page threads, which prune small models in the page."""
    if torch.cuda.is_available():
        return
    threads = cpu_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def run_threads(device: torch.device | str) -> Iterator[int]:
    """Inside, this thread computes with `cpu_threads()` torch threads when `device` is the CPU (a GPU's
    results do not depend on it); the previous count is restored on the way out. Yields the count in use."""
    previous = torch.get_num_threads()
    wanted = cpu_threads() if torch.device(device).type == "cpu" else previous
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
