"""The cost of a mask update of dynamic sparse training (SET, RigL) against a static training step.

    python benchmarks/bench_sparse_training.py                      # conv on digits and resnet20 on CIFAR-shaped data
    python benchmarks/bench_sparse_training.py --models conv --repeats 50

For each model: the median time of one static training step (forward, backward, optimizer step, mask multiply),
and of one SET and one RigL mask update (RigL: a forward and backward pass for the dense gradient, then per layer
a magnitude drop and a gradient regrowth by exact top-k; SET: the same with random scores and no extra pass).
The overhead per step at RigL's ΔT = 100 is the update's time / 100 over a step's. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pruning_core as pc  # noqa: E402
from pruning_core.engine.settings import TrainSettings  # noqa: E402
from pruning_core.engine.sparse_training import DEFAULT_UPDATE_EVERY, MaskUpdater, SparseTrainingSettings  # noqa: E402
from pruning_core.engine.training import (device_name, make_optimizer, make_scheduler, masked_pairs,  # noqa: E402
                                          training_step)

CASES = {"conv": ("digits", 128), "resnet20": ("synthetic", 128)}


def median_s(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model_name: str, sparsity: float, repeats: int, device: torch.device) -> dict:
    dataset_name, batch = CASES[model_name]
    data = pc.load_dataset(dataset_name).to(device)
    model = pc.MODELS[model_name](data.input_shape, data.num_classes, seed=0).to(device)
    pc.prune(model, "random_erk", sparsity, data, seed=0)
    settings = TrainSettings.resolve(data, batch_size=batch, epochs=1)
    model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, settings)
    scheduler = make_scheduler(opt, settings, 10_000)
    inputs, targets = next(data.batches("train", batch, shuffle=True, augment=True,
                                        generator=torch.Generator(device=device).manual_seed(0), drop_last=True))
    updaters = {mode: MaskUpdater(model, opt, SparseTrainingSettings.resolve(mode, update_every=1, update_until=1.0),
                                  total_steps=10_000) for mode in ("set", "rigl")}
    masked = masked_pairs(model)   # after the updaters: they give the model mask buffers of their own
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.train()
    for _ in range(3):   # warm-up: first-call allocations, oneDNN / cuDNN kernel choice
        training_step(model, opt, scheduler, inputs, targets, 0.0, masked)
    step = median_s(lambda: training_step(model, opt, scheduler, inputs, targets, 0.0, masked), repeats, sync)
    row = {"model": model_name, "dataset": dataset_name, "batch": batch, "sparsity": sparsity, "step_s": step,
           "weights": sum(m.numel() for m in pc.attached_masks(model).values())}
    for mode, updater in updaters.items():
        updater.update(1, inputs, targets)   # warm-up
        row[f"{mode}_s"] = median_s(lambda u=updater: u.update(1, inputs, targets), repeats, sync)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="conv,resnet20")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.models.split(","):
        rows.append(measure(name, args.sparsity, args.repeats, device))
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"\n{device_name(device)}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{datetime.date.today().isoformat()}; random_erk masks at sparsity {args.sparsity:g}, median of "
          f"{args.repeats}\n")
    print("| model (data, batch) | prunable weights | static step | SET update | RigL update | RigL update / step | "
          f"RigL overhead at ΔT = {DEFAULT_UPDATE_EVERY} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["rigl_s"] / r["step_s"]
        print(f"| {r['model']} ({r['dataset']}, {r['batch']}) | {r['weights']:,} | {1000 * r['step_s']:.1f} ms | "
              f"{1000 * r['set_s']:.1f} ms | {1000 * r['rigl_s']:.1f} ms | {ratio:.2f}× | "
              f"{100 * ratio / DEFAULT_UPDATE_EVERY:.1f}% |")


if __name__ == "__main__":
    main()
