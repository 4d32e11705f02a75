"""Training throughput of the masked training loop, and the wall time of the quick CPU preset.

    python benchmarks/bench_train.py                    # on cuda if present: a full 50,000-image epoch
    python benchmarks/bench_train.py --device cpu --images 2048

1. Images/s for one epoch of CIFAR-10-shaped data (synthetic) for VGG-16 and ResNet-20 at 0%, 90% and
   99% sparsity (SynFlow masks; sparse weights still run as dense kernels, so speed should not depend on
   sparsity). Targets on one H100 (issue #3): VGG-16 >= 45,000 images/s, ResNet-20 >= 30,000 images/s.
2. Wall time of the quick preset: digits, `conv`, 5 methods x 4 sparsities + dense, 1 seed, 10 epochs.
   Target on a 2-core CPU: under 60 s.
Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pruning_core as pc  # noqa: E402
from pruning_core.engine.training import device_name  # noqa: E402
from pruning_core.studies.presets import PRESETS  # noqa: E402


def throughput(model_name: str, sparsity: float, dataset, device: torch.device, batch_size: int) -> float:
    torch.manual_seed(0)
    model = pc.MODELS[model_name]((3, 32, 32), 10)
    if sparsity > 0:
        pc.prune(model, "synflow", sparsity, input_shape=(3, 32, 32), iterations=20)
    # One short warm-up epoch (kernel selection, allocator), then the timed epoch.
    pc.train(model, None, dataset, 1, batch_size=batch_size, device=device, steps_per_event=10**9).run()
    result = pc.train(model, None, dataset, 1, batch_size=batch_size, device=device,
                      steps_per_event=10**9).run()
    return result.images_per_s


def quick_preset_seconds(device: torch.device) -> tuple[float, float]:
    preset = PRESETS["quick_sweep"]
    start = time.perf_counter()
    table = pc.sweep(**preset.config, **preset.grid, device=str(device)).run()
    seconds = time.perf_counter() - start
    dense = table.loc[table["method"] == pc.DENSE, "final_test_accuracy"].iloc[0]
    return seconds, float(dense)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=None,
                        help="training images per epoch (default: 50,000 on CUDA, 2,048 on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 128 on CPU")
    parser.add_argument("--models", default="vgg16_bn,resnet20")
    parser.add_argument("--sparsities", default="0,0.9,0.99")
    parser.add_argument("--skip-quick", action="store_true", help="skip the quick-preset timing")
    parser.add_argument("--quick-device", default="cpu", help="device for the quick preset (default: cpu)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    images = args.images or (50_000 if cuda else 2_048)
    batch_size = args.batch_size or (512 if cuda else 128)
    dataset = pc.load_dataset("synthetic", shape=(3, 32, 32), num_classes=10, train_size=images, test_size=1024)
    rows = []
    for model_name in args.models.split(","):
        for sparsity in (float(s) for s in args.sparsities.split(",")):
            speed = throughput(model_name, sparsity, dataset, device, batch_size)
            rows.append((model_name, sparsity, speed))
            print(f"{model_name:10s} sparsity {sparsity:<5g} {speed:10.0f} images/s", file=sys.stderr, flush=True)
    print(f"\nDevice: {device_name(device)}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; "
          f"{datetime.date.today().isoformat()}; epoch of {images:,} CIFAR-shaped images, batch {batch_size}"
          f"{', bf16 autocast + channels_last' if cuda else ', float32'}\n")
    print("| model | sparsity | images/s |")
    print("|---|---:|---:|")
    for model_name, sparsity, speed in rows:
        print(f"| {model_name} | {sparsity:g} | {speed:,.0f} |")
    if not args.skip_quick:
        seconds, dense = quick_preset_seconds(torch.device(args.quick_device))
        print(f"\nQuick preset (digits, conv, 5 methods x 4 sparsities + dense, 1 seed, 10 epochs) on "
              f"{device_name(torch.device(args.quick_device))}: {seconds:.1f} s (dense accuracy {dense:.1%})")


if __name__ == "__main__":
    main()
