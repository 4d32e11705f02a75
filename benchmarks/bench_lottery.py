"""Cost to a target sparsity: IMP and GemMiner (which train to find their masks) next to one-shot methods.

    python benchmarks/bench_lottery.py                              # digits, conv, 98% sparsity, on cuda if present
    python benchmarks/bench_lottery.py --dataset cifar10 --model resnet20 --sparsity 0.98 --epochs 30

For each method: the mask search (seconds, training steps), the training of the found mask, and the final
test accuracy. IMP runs open_lth-style (20% of the remaining weights per round, rewound to init) and with
a fixed number of rounds; GemMiner learns its mask in as many epochs as the final training. The GemMiner
paper reports IMP-level accuracy up to 19x faster. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pruning_core as pc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="conv")
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--epochs", type=int, default=10, help="final training epochs (and per IMP round)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    base = pc.RunConfig(dataset=args.dataset, model=args.model, sparsity=args.sparsity, epochs=args.epochs,
                        seed=args.seed)
    variants = [
        ("random", "random", {}, {}),
        ("snip", "snip", {}, {}),
        ("synflow (100 rounds)", "synflow", {}, {}),
        ("gemminer", "gemminer", {}, {}),
        ("imp, 5 rounds", "imp", {"iterations": 5}, {}),
        ("imp, 20% per round", "imp", {}, {"prune_fraction": 0.2}),
    ]
    rows = []
    for label, method, fields, options in variants:
        cost = pc.method_cost(base.replace(method=method, **fields), options=options or None, device=args.device)
        rows.append((label, cost))
        print(f"{label:22s} search {cost['search_s']:7.1f} s / {cost['search_steps']:5d} steps, total "
              f"{cost['total_s']:7.1f} s, accuracy {cost['test_accuracy']:.1%}", file=sys.stderr, flush=True)
    device = rows[0][1]["device"]
    print(f"\n{args.model} on {args.dataset}, sparsity {args.sparsity:g}, {args.epochs} training epochs, seed "
          f"{args.seed}; {device}; torch {torch.__version__}; {datetime.date.today().isoformat()}\n")
    print("| method | search steps | search s | total steps | total s | test accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, cost in rows:
        search_s = cost["search_s"] or cost["prune_s"]
        print(f"| {label} | {cost['search_steps']:,} | {search_s:.1f} | {cost['total_steps']:,} | "
              f"{cost['total_s']:.1f} | {cost['test_accuracy']:.1%} |")


if __name__ == "__main__":
    main()
