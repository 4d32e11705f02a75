"""Evci et al. 2022 on digits: dynamic sparse training's gradient flow, and lottery tickets relearning their
pruning solution.

    python benchmarks/bench_gradient_flow.py                        # conv, 90% and 98%, seeds 0-2, 10 epochs
    python benchmarks/bench_gradient_flow.py --sparsities 0.9 --seeds 0 --epochs 5 --lottery

Part 1 (pc.gradient_flow): every network starts from the same initial weights per seed; the sparse ones from the
same `random_erk` mask (RigL's initial mask). The static sparse network keeps it; SET and RigL update it (ΔT
chosen by the study so that a short run still updates the mask at least ten times, α = 0.3, T_end = 75%). The
gradient norm is measured on 256 held-out training images ten times per epoch; "in training" is its mean after
initialisation. Paper's claim: SET / RigL above the static sparse network.

Part 2 (pc.lottery_relearning): the dense network trained is the pruning solution; one-shot IMP prunes it to the
ticket, rewound to the initial weights; the same mask also trains from a fresh random and a fresh sparsity-aware
initialisation. Distances are L2 over the kept weights. Paper's claim: the ticket ends closer to the pruning
solution than the others.

Prints Markdown tables for BENCHMARKS.md (mean ± standard deviation over the seeds).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pruning_core as pc  # noqa: E402
from pruning_core.engine.training import device_name  # noqa: E402
from pruning_core.presentation.findings import gradient_flow_summary  # noqa: E402
from pruning_core.studies.gradient_flow import VARIANT_LABELS  # noqa: E402
from pruning_core.studies.relearning import RELEARNING_LABELS  # noqa: E402


def spread(values, digits: str = ".3g", percent: bool = False) -> str:
    values = [float(v) for v in values]
    scale = 100.0 if percent else 1.0
    mean = statistics.fmean(values) * scale
    std = (statistics.stdev(values) if len(values) > 1 else 0.0) * scale
    unit = "%" if percent else ""
    return f"{mean:{digits}}{unit} ± {std:{digits}}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="conv")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--method", default="random_erk", help="mask of the sparse networks of part 1")
    parser.add_argument("--sparsities", default="0.9,0.98")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lottery", action="store_true", help="add the IMP lottery ticket (5 rounds) to part 1")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = ["dense", "sparse", "sparse_init", *(["lottery"] if args.lottery else []), "set", "rigl"]
    started = time.perf_counter()

    flows, relearning = [], []
    for sparsity in sparsities:
        for seed in seeds:
            t0 = time.perf_counter()
            table = pc.gradient_flow(args.model, args.dataset, sparsity, args.method, variants, args.epochs, seed=seed,
                                     device=args.device)
            summary = gradient_flow_summary(table).assign(sparsity=sparsity, seed=seed)
            flows.append(summary)
            t1 = time.perf_counter()
            rows = pc.lottery_relearning(args.model, args.dataset, sparsity, args.epochs, seed=seed,
                                         device=args.device).assign(sparsity=sparsity, seed=seed)
            relearning.append(rows)
            print(f"sparsity {sparsity:g} seed {seed}: gradient flow {t1 - t0:.0f} s, relearning "
                  f"{time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)
    flows_df, relearning_df = pd.concat(flows, ignore_index=True), pd.concat(relearning, ignore_index=True)

    print(f"\n{args.model} on {args.dataset}, {args.epochs} epochs, seeds {args.seeds}, {args.method} masks; "
          f"{device_name(torch.device(args.device))} ({args.threads} thread(s)), torch {torch.__version__}, "
          f"{datetime.date.today().isoformat()}; {time.perf_counter() - started:.0f} s in all\n")
    print("| sparsity | network | gradient norm at init | gradient norm in training | final test accuracy | "
          "seeds above static |")
    print("|---:|---|---:|---:|---:|---:|")
    for sparsity in sparsities:
        part = flows_df[flows_df["sparsity"] == sparsity]
        static = part[part["variant"] == "sparse"].set_index("seed")["mean_grad_norm"]
        for variant in variants:
            rows = part[part["variant"] == variant]
            above = ""
            if variant not in ("sparse", "dense"):
                wins = sum(float(r.mean_grad_norm) > float(static[r.seed]) for r in rows.itertuples())
                above = f"{wins} of {len(rows)}"
            print(f"| {sparsity:.0%} | {VARIANT_LABELS[variant]} | {spread(rows['init_grad_norm'])} | "
                  f"{spread(rows['mean_grad_norm'])} | {spread(rows['final_test_accuracy'], '.1f', True)} | {above} |")

    print("\n| sparsity | network | L2 distance at init | L2 distance trained | relative to ‖solution‖ | "
          "test disagreement | test accuracy | seeds closer than the ticket |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for sparsity in sparsities:
        part = relearning_df[relearning_df["sparsity"] == sparsity]
        ticket = part[part["variant"] == "lottery"].set_index("seed")["distance"]
        for variant in RELEARNING_LABELS:
            rows = part[part["variant"] == variant]
            closer = ""
            if variant in ("scratch", "scratch_sparse_init"):
                wins = sum(float(r.distance) < float(ticket[r.seed]) for r in rows.itertuples())
                closer = f"{wins} of {len(rows)}"
            print(f"| {sparsity:.0%} | {RELEARNING_LABELS[variant]} | {spread(rows['init_distance'])} | "
                  f"{spread(rows['distance'])} | {spread(rows['relative_distance'], '.2f')} | "
                  f"{spread(rows['disagreement'], '.1f', True)} | {spread(rows['test_accuracy'], '.1f', True)} | "
                  f"{closer} |")


if __name__ == "__main__":
    main()
