"""The run store under a big history: submitting a sweep and one page poll with 10,000 runs stored.

    python benchmarks/bench_store.py                 # 10,000 runs, a 500-cell sweep
    python benchmarks/bench_store.py --runs 2000 --cells 100

Targets (issue "a server that never gets stuck"): submit a 500-cell sweep in < 2 s, one page poll < 50 ms,
with 10,000 runs in the store. A page poll is what a live panel reads each second: the run, its queue
position, its metrics rows, and the latest run of the page's configuration key. The job manager's worker is
held on its first job (nothing trains), so the figures are the store's and the queue's own cost.
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pruning_core as pc  # noqa: E402
from pruning_core.infra import jobs  # noqa: E402
from pruning_core.infra.jobs import JobManager  # noqa: E402


def fill(store: pc.Store, runs: int) -> list[int]:
    """`runs` finished runs of distinct configurations, each with 20 metric rows, in one transaction."""
    ids = []
    with store.transaction():
        for seed in range(runs):
            config = pc.RunConfig(method="magnitude", sparsity=0.9, epochs=2, seed=seed)
            run_id = store.create_run(config.to_dict(), key=config.key())
            store.start_run(run_id, "CPU")
            store.add_metrics(run_id, [{"step": s, "epoch": s / 10, "train_loss": 1.0 / (s + 1)} for s in range(20)])
            store.finish_run(run_id, {"final_test_accuracy": 0.9})
            ids.append(run_id)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--polls", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        store = pc.Store(Path(folder) / "bench.db")
        started = time.perf_counter()
        ids = fill(store, args.runs)
        fill_s = time.perf_counter() - started

        release = threading.Event()

        def held(*_args, **_kwargs):   # the worker waits here: submissions are measured alone
            release.wait(60)
            raise pc.Cancelled("benchmark")

        jobs.execute = held
        manager = JobManager(store, autostart=False)   # no worker process runs the cells: submissions alone
        # Half the cells are new, half are finished runs that the submission must find and reuse.
        cells = [pc.RunConfig(method="snip", sparsity=0.5, epochs=2, seed=seed) for seed in range(args.cells // 2)]
        cells += [pc.RunConfig(method="magnitude", sparsity=0.9, epochs=2, seed=seed)
                  for seed in range(args.cells - len(cells))]
        started = time.perf_counter()
        manager.submit_sweep(cells, {"benchmark": True})
        submit_s = time.perf_counter() - started

        watched = ids[len(ids) // 2]
        key = store.get_run(watched)["key"]
        polls = []
        for _ in range(args.polls):
            started = time.perf_counter()
            store.get_run(watched)
            store.queue_position(watched)
            store.metrics(watched)
            store.latest_runs([key], kind="train")
            polls.append(time.perf_counter() - started)
        release.set()
        manager.shutdown(timeout=30)

    poll_ms = sorted(polls)
    p50, p95 = statistics.median(poll_ms) * 1000, poll_ms[int(0.95 * (len(poll_ms) - 1))] * 1000
    print(f"# store benchmark, {datetime.date.today()}, {platform.machine()} CPU ({sys.platform}), "
          f"{args.runs} runs stored (filled in {fill_s:.1f} s)\n")
    print("| work | measured | target |")
    print("|---|---|---|")
    print(f"| submit a {args.cells}-cell sweep (half new, half reused) | {submit_s:.2f} s | < 2 s |")
    print(f"| one page poll (run, queue position, metrics, latest run of a key), median / p95 | "
          f"{p50:.1f} / {p95:.1f} ms | < 50 ms |")


if __name__ == "__main__":
    main()
