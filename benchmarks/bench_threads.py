"""Torch's thread count and a run's numbers: one configuration trained through `runner.execute` under 1 and 2
threads ($PRUNING_TORCH_THREADS, the core's thread policy), each in a fresh process, repeated: whether the result
depends on the count (it does: float sums add in another order) and what each count costs here.

    python benchmarks/bench_threads.py [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

RUN = """
import json, sys, time
import pruning_core as pc
from pruning_core.infra.runner import execute
config = pc.RunConfig(dataset="digits", model="conv", method="magnitude", sparsity=0.5, epochs=int(sys.argv[1]))
started = time.perf_counter()
summary = execute(config, None, device="cpu").summary
print(json.dumps({"threads": summary["threads"], "accuracy": summary["final_test_accuracy"],
                  "loss": summary["final_test_loss"], "train_s": summary["train_s"],
                  "wall_s": time.perf_counter() - started}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for threads in (1, 2):
        rows = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", RUN, str(args.epochs)], capture_output=True, text=True,
                                 check=True, env={**os.environ, "PRUNING_TORCH_THREADS": str(threads)})
            rows.append(json.loads(out.stdout))
        results = {(r["accuracy"], r["loss"]) for r in rows}
        print(f"{threads} thread(s): accuracy {rows[0]['accuracy']:.4f}, loss {rows[0]['loss']:.8f}, "
              f"{'the same in every repeat' if len(results) == 1 else f'{len(results)} different results'}; "
              f"training {statistics.median(r['train_s'] for r in rows):.2f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
