"""Time every pruning method on VGG-16 (CIFAR-10 input, 14.7M prunable weights) and ResNet-20.

    python benchmarks/bench_prune.py                      # all methods, both models, on cuda if present
    python benchmarks/bench_prune.py --device cpu --rounds 10 --models resnet20

Prints a Markdown table (paste into BENCHMARKS.md): method, rounds, seconds, peak extra device memory
as a multiple of the model's size (CUDA only). Scoring data are synthetic CIFAR-shaped batches of 256.
Methods that train to find masks (IMP, GemMiner) are timed separately by bench_lottery.py.
Targets on one H100 (issue #2): SynFlow 100 rounds on VGG-16 <= 0.5 s; Iterative SNIP / FORCE 100 rounds
<= 1.5 s; SNIP and GraSP one-shot <= 0.1 s; peak extra memory <= 2x the model.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pruning_core as pc  # noqa: E402
from pruning_core.engine.training import device_name  # noqa: E402

BATCH = 256


def time_method(model_name: str, method: str, rounds: int | None, device: torch.device, dataset) -> dict:
    torch.manual_seed(0)
    model = pc.MODELS[model_name]((3, 32, 32), 10).to(device)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    spec = pc.METHODS[method]
    iterations = rounds if rounds is not None else spec.default_iterations
    if spec.batches_per_round:
        batches = [(x.to(device), y.to(device)) for x, y in dataset.batches("train", BATCH, limit=min(iterations, 10))]
    elif spec.balanced_data:
        batches = [tuple(t.to(device) for t in dataset.class_balanced_batch(10))]
    else:
        batches = [(x.to(device), y.to(device)) for x, y in dataset.batches("train", BATCH, limit=1)]
    # Warm-up: first CUDA calls load kernels and allocate; time the second run like a user's next click.
    pc.prune(model, method, 0.99, batches, iterations=1)
    torch.manual_seed(0)
    model = pc.MODELS[model_name]((3, 32, 32), 10).to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    result = pc.prune(model, method, 0.99, batches, iterations=iterations)
    seconds = result.elapsed_s  # scoring and selection; the per-layer analysis is timed apart
    peak = (torch.cuda.max_memory_allocated(device) - base) / model_bytes if device.type == "cuda" else None
    return {"model": model_name, "method": method, "rounds": iterations, "seconds": seconds, "peak_extra": peak,
            "density": result.density, "collapsed": len(result.collapsed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="vgg16_bn,resnet20", help="comma-separated model names")
    parser.add_argument("--methods", default=",".join(n for n, s in pc.METHODS.items() if s.score is not None),
                        help="comma-separated methods (default: every scoring method)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds for iterative methods (default: 100 for synflow/iter_snip/force, as in the targets)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dataset = pc.load_dataset("synthetic", shape=(3, 32, 32), num_classes=10, train_size=BATCH * 10, test_size=BATCH)
    rows = []
    for model_name in args.models.split(","):
        for method in args.methods.split(","):
            spec = pc.METHODS[method]
            rounds = args.rounds if spec.default_iterations > 1 and args.rounds is not None else (
                100 if spec.default_iterations > 1 else 1)
            row = time_method(model_name, method, rounds, device, dataset)
            rows.append(row)
            peak = "n/a" if row["peak_extra"] is None else f"{row['peak_extra']:.2f}x"
            print(f"{model_name:10s} {method:11s} {row['rounds']:4d} rounds {row['seconds']:8.3f} s  peak {peak}",
                  file=sys.stderr, flush=True)
    print(f"\nDevice: {device_name(device)}; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads; torch {torch.__version__}; "
          f"{datetime.date.today().isoformat()}\n")
    print("| model | method | rounds | seconds | peak extra memory |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        peak = "n/a (CPU)" if row["peak_extra"] is None else f"{row['peak_extra']:.2f}x model"
        print(f"| {row['model']} | {row['method']} | {row['rounds']} | {row['seconds']:.3f} | {peak} |")


if __name__ == "__main__":
    main()
