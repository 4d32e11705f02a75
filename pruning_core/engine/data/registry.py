"""The registered datasets, their shapes, pixel statistics, augmentation and training defaults.

Every dataset is one `DatasetSpec` in `DATASETS`; `load_dataset` loads one by name.
"""

from __future__ import annotations

import os
from typing import Any

from pruning_core.engine.data import loaders
from pruning_core.engine.data.dataset import Dataset, DatasetSpec
from pruning_core.registry import Registry

DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _register(**fields: Any) -> DatasetSpec:
    return DATASETS.register(fields["name"], DatasetSpec(**fields))


def _defaults(batch_size: int, epochs: int, optimizer: str, lr: float, lr_schedule: str, weight_decay: float,
              label_smoothing: float) -> dict[str, Any]:
    return {"batch_size": batch_size, "epochs": epochs, "optimizer": optimizer, "lr": lr,
            "lr_schedule": lr_schedule, "weight_decay": weight_decay, "label_smoothing": label_smoothing}


_register(
    name="digits", label="Digits (8x8, built in)",
    description="1,797 tiny 8x8 scans of handwritten digits that ship with the app: no download, and a run "
                "takes seconds on a CPU.",
    input_shape=(1, 8, 8), num_classes=10,
    # Pixel statistics of the fixed 1,437-image training split.
    mean=(0.3054,), std=(0.3761,),
    # Flipping or shifting an 8x8 digit changes what digit it is.
    crop_padding=0, flip=False, needs_download=False, local_path=False,
    train_defaults=_defaults(128, 15, "sgd", 0.2, "onecycle", 5e-4, 0.0),
    loader=loaders.load_digits_dataset,
)
_register(
    name="mnist", label="MNIST",
    description="70,000 handwritten digits (28x28, greyscale), downloaded once (about 12 MB).",
    input_shape=(1, 28, 28), num_classes=10, mean=(0.1307,), std=(0.3081,),
    crop_padding=0, flip=False, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 10, "sgd", 0.05, "onecycle", 5e-4, 0.0),
    loader=loaders.load_torchvision,
)
_register(
    name="fashion_mnist", label="Fashion-MNIST",
    description="70,000 photos of clothing in 10 categories (28x28, greyscale), a harder stand-in for MNIST, "
                "downloaded once (about 30 MB).",
    input_shape=(1, 28, 28), num_classes=10, mean=(0.2860,), std=(0.3530,),
    crop_padding=0, flip=False, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 15, "sgd", 0.05, "onecycle", 5e-4, 0.1),
    loader=loaders.load_torchvision,
)
_register(
    name="cifar10", label="CIFAR-10",
    description="60,000 colour photos (32x32) of 10 everyday classes such as planes, cats and trucks, the "
                "standard pruning benchmark, downloaded once (about 170 MB).",
    input_shape=(3, 32, 32), num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    crop_padding=4, flip=True, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 30, "sgd", 0.1, "onecycle", 5e-4, 0.1),
    loader=loaders.load_torchvision,
)
_register(
    name="cifar100", label="CIFAR-100",
    description="60,000 colour photos (32x32) in 100 fine-grained classes, downloaded once (about 170 MB).",
    input_shape=(3, 32, 32), num_classes=100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
    crop_padding=4, flip=True, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 30, "sgd", 0.1, "onecycle", 5e-4, 0.1),
    loader=loaders.load_torchvision,
)
_register(
    name="svhn", label="SVHN",
    description="99,289 colour photos (32x32) of house-number digits from Street View, downloaded once "
                "(about 240 MB).",
    input_shape=(3, 32, 32), num_classes=10, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    # Mirrored digits are different digits, so no flip.
    crop_padding=4, flip=False, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 15, "sgd", 0.05, "onecycle", 5e-4, 0.1),
    loader=loaders.load_torchvision,
)
_register(
    name="tiny_imagenet", label="Tiny ImageNet",
    description="110,000 colour photos (64x64) in 200 classes, read from a tiny-imagenet-200 folder you "
                "downloaded and extracted yourself.",
    input_shape=(3, 64, 64), num_classes=200, mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821),
    crop_padding=8, flip=True, needs_download=False, local_path=True,
    train_defaults=_defaults(128, 40, "sgd", 0.1, "onecycle", 5e-4, 0.1),
    loader=loaders.load_tiny_imagenet,
)
_register(
    name="image_folder", label="Your image folder",
    description="Your own images: a folder with one subfolder of pictures per class, resized to small squares.",
    # Placeholders: the loaded Dataset reports the real shape, class count and pixel statistics.
    input_shape=(3, 32, 32), num_classes=0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    crop_padding=4, flip=True, needs_download=False, local_path=True,
    train_defaults=_defaults(64, 30, "sgd", 0.05, "onecycle", 5e-4, 0.1),
    loader=loaders.load_image_folder,
)
_register(
    name="synthetic", label="Synthetic noise",
    description="Random noise images with random labels, for timing the pipeline without any files; there is "
                "nothing in them to learn.",
    input_shape=(3, 32, 32), num_classes=10, mean=(0.5,), std=(0.2892,),
    crop_padding=4, flip=True, needs_download=False, local_path=False,
    train_defaults=_defaults(128, 1, "sgd", 0.1, "constant", 0.0, 0.0),
    loader=loaders.load_synthetic,
)


def load_dataset(name_or_spec: str | DatasetSpec, root: str | os.PathLike | None = None,
                 download: bool = True, **options: Any) -> Dataset:
    """Load a dataset by name (see `DATASETS`), from memory when it was loaded before.

    `root` is the folder of downloaded datasets (default: `data_root()`); `options` are the
    dataset's own (e.g. `path=` for 'image_folder'). Raises `UnknownNameError` for an unknown
    name, `DatasetUnavailableError` when the files are missing and cannot be downloaded, and
    `ValueError` for bad options.
    """
    spec = name_or_spec if isinstance(name_or_spec, DatasetSpec) else DATASETS[name_or_spec]
    return spec.load(root=root, download=download, **options)
