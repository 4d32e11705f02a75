"""Every method at its published defaults on VGG-16-BN: pruning time once, and critical compression.

    python benchmarks/bench_critical.py                                   # the methods of issue 14 and SynFlow
    python benchmarks/bench_critical.py --methods synflow,px --tolerance 0.25 --cc-iterations px=10

Pruning time: one `pc.prune` at 99% sparsity with the method's default rounds (no warm-up: on a CPU the
first call is not slower), scoring and selection only (`PruneResult.elapsed_s`). Data-driven methods score on
what `pc.prune` draws from a dataset by default: one synthetic CIFAR-shaped batch of 256 (GraSP: 10 per
class; Iterative SNIP / FORCE: one batch per round).
Critical compression (`pc.critical_compression`): the largest log10 compression without layer collapse, by
bisection to within --tolerance. Each probe is a full prune, so on a CPU the costly iterative methods can
be given fewer rounds (--cc-iterations) and data-driven ones a smaller batch (--cc-batch); the table says
what was used. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pruning_core as pc
from pruning_core.engine.training import device_name

SHAPE = (3, 32, 32)
BATCH = 256


def scoring_batches(method: str, rounds: int, dataset, batch: int, device: torch.device) -> list:
    """What pc.prune would draw from a dataset for this method (batches of `batch` instead of 256)."""
    spec = pc.METHODS[method]
    if spec.balanced_data:
        return [tuple(t.to(device) for t in dataset.class_balanced_batch(10))]
    count = min(rounds, 10) if spec.batches_per_round else 1
    return [(x.to(device), y.to(device)) for x, y in dataset.batches("train", batch, limit=count)]


def parse_overrides(text: str) -> dict[str, int]:
    pairs = [item.split("=") for item in text.split(",") if item]
    return {name: int(value) for name, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="vgg16_bn")
    parser.add_argument("--methods", default="synflow,synflow_l2,px,ntk_sap,prospr")
    parser.add_argument("--tolerance", type=float, default=0.05, help="bisection tolerance in log10 compression")
    parser.add_argument("--max-log-compression", type=float, default=None,
                        help="upper end of the search (default: one weight left, which always collapses)")
    parser.add_argument("--timing-iterations", default="", help="rounds for the timing instead of the default, "
                                                                 "e.g. px=10 (the table shows the rounds timed)")
    parser.add_argument("--cc-iterations", default="", help="rounds for the critical compression, e.g. px=10")
    parser.add_argument("--cc-batch", type=int, default=BATCH, help="samples per scoring batch for the critical "
                                                                     "compression of data-driven methods")
    parser.add_argument("--train-images", type=int, default=BATCH * 10,
                        help="synthetic training images for the methods that train to find their mask (IMP, "
                             "GemMiner): they get the dataset itself, not scoring batches")
    parser.add_argument("--data-seed", type=int, default=0, help="seeds the draw of the scoring batches (the "
                                                                  "critical compression's data)")
    parser.add_argument("--no-timing", action="store_true", help="only the critical compression")
    parser.add_argument("--no-critical", action="store_true", help="only the pruning time")
    args = parser.parse_args()
    device = torch.device(args.device)
    cc_rounds = parse_overrides(args.cc_iterations)
    timing_rounds = parse_overrides(args.timing_iterations)
    dataset = pc.load_dataset("synthetic", shape=SHAPE, num_classes=10, train_size=BATCH * 10, test_size=BATCH)
    train_set = pc.load_dataset("synthetic", shape=SHAPE, num_classes=10, train_size=args.train_images,
                                test_size=BATCH)

    def build() -> torch.nn.Module:
        return pc.MODELS[args.model](SHAPE, 10).to(device)

    rows = []
    for method in args.methods.split(","):
        spec = pc.METHODS[method]
        rounds = timing_rounds.get(method, spec.default_iterations)
        row = {"method": method, "rounds": spec.default_iterations, "timed_rounds": rounds, "prune_s": None, "cc": None}
        if not args.no_timing:
            torch.manual_seed(0)
            batches = train_set if spec.run is not None else scoring_batches(method, rounds, dataset, BATCH, device)
            result = pc.prune(build(), method, 0.99, batches if spec.needs_data else None, input_shape=SHAPE,
                              iterations=rounds)
            row["prune_s"] = result.elapsed_s
            print(f"{method:11s} {rounds:4d} rounds {result.elapsed_s:8.1f} s", file=sys.stderr, flush=True)
        if not args.no_critical:
            rounds = cc_rounds.get(method, spec.default_iterations)
            batch = args.cc_batch if spec.needs_data else 0
            torch.manual_seed(args.data_seed)
            batches = scoring_batches(method, rounds, dataset, args.cc_batch, device) if spec.needs_data else None
            if spec.run is not None:   # IMP, GemMiner: they train, on the dataset itself
                batches, batch = train_set, f"{args.train_images} training images"
            started = time.perf_counter()
            found = pc.critical_compression(build, method, batches, input_shape=SHAPE, tolerance=args.tolerance,
                                            max_log_compression=args.max_log_compression, iterations=rounds)
            row.update(cc=found.log_compression, cc_rounds=rounds, cc_batch=batch, probes=len(found.evaluations),
                       cc_s=time.perf_counter() - started)
            print(f"{method:11s} critical 10^{found.log_compression:.2f} ({len(found.evaluations)} probes, "
                  f"{row['cc_s']:.0f} s)", file=sys.stderr, flush=True)
        rows.append(row)

    print(f"\nModel: {args.model}; device: {device_name(device)}; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads; torch {torch.__version__}; {datetime.date.today().isoformat()}; "
          f"critical compression to within {args.tolerance} in log10, searched up to "
          f"10^{args.max_log_compression or 'log10(weights)'}\n")
    print("| method | default rounds | prune s at 99% (rounds timed) | critical log10 compression "
          "| rounds / batch there | probes | search s |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for row in rows:
        prune_s = "" if row["prune_s"] is None else f"{row['prune_s']:.1f} ({row['timed_rounds']})"
        if row["cc"] is None:
            print(f"| {row['method']} | {row['rounds']} | {prune_s} | | | | |")
            continue
        data = f"{row['cc_rounds']} / {row['cc_batch'] or 'data-free'}"
        print(f"| {row['method']} | {row['rounds']} | {prune_s} | {row['cc']:.2f} | {data} | {row['probes']} "
              f"| {row['cc_s']:.0f} |")


if __name__ == "__main__":
    main()
