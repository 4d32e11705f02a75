"""The quick sweep preset from the command line, in process against on a local Ray with 2 workers.

    python benchmarks/bench_sweep.py                       # both engines, the quick preset (21 cells)
    python benchmarks/bench_sweep.py --workers 4           # a local Ray with 4 CPUs
    python benchmarks/bench_sweep.py --local-threads 2     # in process with 2 torch threads (all cores here)
    python benchmarks/bench_sweep.py --seeds 0,1,2         # 63 cells: Ray's start-up spread over more cells
    python benchmarks/bench_sweep.py --repeat 3            # local, ray, local, ray, ...: the best of each

Runs `python -m pruning_core sweep --preset quick` (digits, conv, 5 methods x 4 sparsities + dense, 10 epochs)
as a fresh process per engine, each with a store of its own, and reads the cells' times from the store.
Cells compute with the package's CPU thread count on both engines ($PRUNING_TORCH_THREADS, default half the
cores: 1 here, as each 1-CPU Ray task has); --local-threads sets it for the in-process run only, to compare Ray
with an in-process run that uses every core. Figures:
- wall: the whole command, from launch to exit (Python start, imports, Ray start, every cell);
- startup: launch to the first cell's start (for Ray: its start on a worker);
- cell: a cell's own compute time (total_s: load data, prune, train), mean over the cells;
- idle: the wall time in which the workers were not computing cells, wall - sum(cell) / workers, as a share
  of the wall time (startup, dispatch, the driver's writes, the last cells' tail);
- Ray against in process (issue 15's comparison, target <= 15%): (wall_ray - wall_local) / wall_local, what
  running the same sweep on the local Ray costs beyond running it in process on the same machine;
- Ray against a perfect split (stricter, for context): the Ray wall time beyond the in-process wall time
  divided by the workers, (wall_ray - wall_local / workers) / wall_ray; on 2 cores shared by the driver,
  Ray's own processes and 2 workers, no engine reaches a perfect split;
- per-cell overhead (Ray, steady state): (last finish - first start) x workers / cells - mean cell.
Cells per hour for a cluster of N GPUs (one cell per GPU) follow as N x 3600 / (cell + per-cell overhead).
Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pruning_core.infra.store import Store  # noqa: E402


def run_cli(engine: str, db: Path, workers: int, local_threads: int, seeds: str) -> dict:
    argv = [sys.executable, "-m", "pruning_core", "sweep", "--preset", "quick", "--seeds", seeds, "--db", str(db),
            "--json", "--quiet", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    if engine == "local" and local_threads > 0:
        env["PRUNING_TORCH_THREADS"] = str(local_threads)  # runs set torch's threads from it, not from OMP
    if engine == "ray":
        argv += ["--engine", "ray"]
        env["RAY_OVERRIDE_RESOURCES"] = json.dumps({"CPU": workers})  # the local instance's CPUs = workers
    launched = time.time()
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{engine}: exit {result.returncode}\n{result.stderr[-3000:]}")
    cells = json.loads(result.stdout)["cells"]
    store = Store(db, recover=False)
    runs = [store.get_run(int(cell["run_id"])) for cell in cells]
    cell_s = [run["timings"]["total_s"] for run in runs]
    first_start = min(run["started_at"] for run in runs)
    last_finish = max(run["finished_at"] for run in runs)
    parallel = workers if engine == "ray" else 1
    steady = (last_finish - first_start) * parallel / len(runs) - sum(cell_s) / len(runs)
    return {"engine": engine, "workers": parallel, "cells": len(cells), "wall": wall,
            "startup": first_start - launched, "cell": sum(cell_s) / len(cell_s), "sum_cells": sum(cell_s),
            "idle": wall - sum(cell_s) / parallel, "per_cell_overhead": max(steady, 0.0),
            "dense_accuracy": next(c["final_test_accuracy"] for c in cells if c["method"] == "dense")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="CPUs (= workers) of the local Ray (default 2)")
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--seeds", default="0", help="seeds of the quick preset (default 0: 21 cells; 0,1,2: 63)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine, interleaved (a shared machine's "
                                                                "load changes from minute to minute)")
    parser.add_argument("--local-threads", type=int, default=0,
                        help="torch threads per cell in process (default 0: the package's, half the cores)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(args.repeat):
            for engine in args.engines.split(","):
                load = os.getloadavg()[0]
                result = run_cli(engine, Path(folder) / f"{engine}-{attempt}.db", args.workers, args.local_threads,
                                 args.seeds)
                results.append({**result, "load": load})
                print(f"{engine}: {result['wall']:.1f} s (load {load:.1f})", file=sys.stderr, flush=True)
    print(f"\n{datetime.date.today().isoformat()}, {platform.machine()} CPU with {os.cpu_count()} cores; "
          f"`sweep --preset quick --seeds {args.seeds} --device cpu`, {results[0]['cells']} cells; torch threads "
          f"per cell in process: {args.local_threads or 'the default, half the cores'}; on Ray: the default\n")
    print("| engine | workers | load before | wall s | startup s | mean cell s | sum of cells s | idle s | "
          "idle share | dense accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['engine']} | {r['workers']} | {r['load']:.1f} | {r['wall']:.1f} | {r['startup']:.1f} | "
              f"{r['cell']:.2f} | {r['sum_cells']:.1f} | {r['idle']:.1f} | {r['idle'] / r['wall']:.0%} | "
              f"{r['dense_accuracy']:.1%} |")
    ray_result = _best_run([r for r in results if r["engine"] == "ray"])
    local_result = _best_run([r for r in results if r["engine"] == "local"])
    if ray_result is not None and local_result is not None:
        ideal = local_result["wall"] / ray_result["workers"]
        extra = (ray_result["wall"] - local_result["wall"]) / local_result["wall"]
        print(f"\nBest runs. Ray against in process: {ray_result['wall']:.1f} s against {local_result['wall']:.1f} s, "
              f"{extra:+.0%} (target <= +15%); speed-up {local_result['wall'] / ray_result['wall']:.2f}x. Against a "
              f"perfect split of the in-process wall time over {ray_result['workers']} workers ({ideal:.1f} s): "
              f"{(ray_result['wall'] - ideal) / ray_result['wall']:.0%} of Ray's wall time.")
    if ray_result is not None:
        per_cell = ray_result["cell"] + ray_result["per_cell_overhead"]
        print(f"\nOn Ray, per-cell overhead in the steady state: {ray_result['per_cell_overhead']:.2f} s "
              f"(mean cell {ray_result['cell']:.2f} s). Cells per hour, one cell per GPU, at this cell time:\n")
        print("| GPUs | cells per hour |")
        print("|---:|---:|")
        for gpus in (1, 4, 8, 32):
            print(f"| {gpus} | {gpus * 3600 / per_cell:,.0f} |")


def _best_run(runs: list[dict]) -> dict | None:
    """The fastest run (the one least slowed by other work on the machine), None for no runs."""
    return min(runs, key=lambda r: r["wall"]) if runs else None


if __name__ == "__main__":
    main()
