"""A dataset in memory, and how it is batched for pruning and training.

A `Dataset` holds a whole dataset in memory as uint8 tensors, so that moving it to the GPU once
and slicing batches there replaces a DataLoader (whose per-image PIL work is the bottleneck for
32x32 images). Normalisation and augmentation are tensor operations on whatever device the data
is on. A `DatasetSpec` says what a dataset is before it is loaded, and how to load it.
"""

from __future__ import annotations

import os
import pathlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from pruning_core.engine.data.cache import load_cached
from pruning_core.engine.vocabulary import LR_SCHEDULES, OPTIMIZERS
from pruning_core.engine.settings import TRAIN_DEFAULT_KEYS  # the settings a dataset gives defaults for

DATA_DIR_ENV = "PRUNING_DATA_DIR"
SPLITS = ("train", "test")


class DatasetUnavailableError(ValueError):
    """The dataset's files are missing, unreadable, or could not be downloaded."""


def data_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """Folder that holds downloaded datasets: `root`, else $PRUNING_DATA_DIR, else ./data (absolute)."""
    chosen = root if root is not None else (os.environ.get(DATA_DIR_ENV) or "data")
    return pathlib.Path(chosen).expanduser().resolve()


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """What the dashboard and the trainer need to know about a dataset before loading it.

    `train_defaults` is shared by every caller: copy it before changing it.
    """

    name: str
    label: str
    description: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool
    needs_download: bool
    local_path: bool
    train_defaults: dict[str, Any]
    loader: Callable[..., Dataset] = field(repr=False)

    def __post_init__(self) -> None:
        # Checked here so that a mistyped default fails at import, not in the middle of a run.
        keys = set(self.train_defaults)
        if keys != set(TRAIN_DEFAULT_KEYS):
            raise ValueError(f"dataset {self.name!r}: train_defaults must have exactly the keys "
                             f"{', '.join(TRAIN_DEFAULT_KEYS)}; got {', '.join(sorted(keys))}")
        if self.train_defaults["optimizer"] not in OPTIMIZERS:
            raise ValueError(f"dataset {self.name!r}: unknown default optimizer {self.train_defaults['optimizer']!r}")
        if self.train_defaults["lr_schedule"] not in LR_SCHEDULES:
            raise ValueError(f"dataset {self.name!r}: unknown default lr_schedule "
                             f"{self.train_defaults['lr_schedule']!r}")
        if len(self.mean) != len(self.std):
            raise ValueError(f"dataset {self.name!r}: mean and std have different lengths")

    def load(self, root: str | os.PathLike | None = None, download: bool = True, **options: Any) -> Dataset:
        """This dataset, from memory when it was loaded before with the same root and options (see
        `load_dataset`)."""
        return load_cached(self, data_root(root), download, options)


class Dataset:
    """A whole dataset held as tensors (uint8 images N,C,H,W + int64 labels).

    Datasets are shared through the load cache, so treat them as read-only: `to()` and the
    batch methods return new tensors and never change these.
    """

    def __init__(self, spec: DatasetSpec, train_x: torch.Tensor, train_y: torch.Tensor,
                 test_x: torch.Tensor, test_y: torch.Tensor, scale: float = 255.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 num_classes: int | None = None, class_names: Sequence[str] | None = None):
        for split, images, labels in (("train", train_x, train_y), ("test", test_x, test_y)):
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise ValueError(f"{split} images must be a uint8 (N, C, H, W) tensor, got {images.dtype} "
                                 f"{tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.dim() != 1 or len(labels) != len(images):
                raise ValueError(f"{split} labels must be an int64 vector with one label per image")
        if train_x.shape[1:] != test_x.shape[1:]:
            raise ValueError(f"train images are {tuple(train_x.shape[1:])} but test images are "
                             f"{tuple(test_x.shape[1:])}")
        self.spec = spec
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        self.scale = float(scale)
        channels = train_x.shape[1]
        mean = tuple(spec.mean if mean is None else mean)
        std = tuple(spec.std if std is None else std)
        if len(mean) == 1 and channels > 1:
            mean, std = mean * channels, std * channels
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"{spec.name}: {channels} channels but {len(mean)} means and {len(std)} stds")
        self.mean, self.std = mean, std
        self.class_names = tuple(class_names) if class_names is not None else None
        if num_classes is None:
            num_classes = len(self.class_names) if self.class_names is not None else spec.num_classes
        self._num_classes = int(num_classes)
        # Per-device (multiplier, offset) for normalize(), and per-device copies made by to():
        # both avoid a host-to-device copy on every call.
        self._affine: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._copies: dict[torch.device, Dataset] = {}
        self._copies_lock = threading.Lock()

    # ---- properties --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, labels) of 'train' or 'test'."""
        if split == "train":
            return self.train_x, self.train_y
        if split == "test":
            return self.test_x, self.test_y
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.train_y)}, test={len(self.test_y)}, "
                f"shape={self.input_shape}, classes={self.num_classes}, device={self.device})")

    # ---- device and normalisation ------------------------------------------------------------
    def to(self, device: str | torch.device) -> Dataset:
        """This dataset with all four tensors on `device`; the copy is kept, so calling again is free."""
        target = resolve_device(device)
        if self.device == target:
            return self
        with self._copies_lock:
            copy = self._copies.get(target)
            if copy is None:
                copy = Dataset(self.spec, self.train_x.to(target), self.train_y.to(target),
                               self.test_x.to(target), self.test_y.to(target), scale=self.scale,
                               mean=self.mean, std=self.std, num_classes=self._num_classes,
                               class_names=self.class_names)
                self._copies[target] = copy
            return copy

    def copies(self) -> list[Dataset]:
        """The copies `to()` has made on other devices (and keeps)."""
        with self._copies_lock:
            return list(self._copies.values())

    def forget_copies(self) -> None:
        """Drop the kept device copies (the load cache does when it forgets this dataset): their memory is freed
        once nothing else uses them, and `to()` copies again when asked."""
        with self._copies_lock:
            self._copies.clear()
            self._affine.clear()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """float32 ((images / scale) - mean) / std per channel, on the images' device."""
        multiplier, offset = self._affine_on(images.device)
        return torch.addcmul(offset, images.to(torch.float32), multiplier)

    def _affine_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        affine = self._affine.get(device)
        if affine is None:
            mean = torch.tensor(self.mean, dtype=torch.float64)
            std = torch.tensor(self.std, dtype=torch.float64)
            # Folded into one multiply-add: x / (scale * std) - mean / std.
            multiplier = (1.0 / (self.scale * std)).to(torch.float32).view(-1, 1, 1)
            offset = (-mean / std).to(torch.float32).view(-1, 1, 1)
            affine = (multiplier.to(device), offset.to(device))
            self._affine[device] = affine
        return affine

    # ---- batches ---------------------------------------------------------------------------
    def batches(self, split: str = "train", batch_size: int = 128, shuffle: bool = True, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised float32 (B, C, H, W) images and their labels, on the dataset's device.

        One pass over the split (one epoch). `augment` applies the spec's random crop (the image
        is padded with black, raw pixel value 0, before normalising) and random horizontal flip.
        Order and augmentation draw from `generator` (default: torch's global generator), so the
        same seeded generator gives the same batches. `limit` stops after that many batches.
        """
        images, labels = self.split(split)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        return self._iterate(images, labels, batch_size, shuffle, augment, generator, drop_last, limit)

    def _iterate(self, images, labels, batch_size, shuffle, augment, generator, drop_last, limit):
        count = len(labels)
        stop = (count // batch_size) * batch_size if drop_last else count
        if limit is not None:
            stop = min(stop, limit * batch_size)
        if stop <= 0:
            return
        random_device = generator.device if generator is not None else torch.device("cpu")
        order = None
        if shuffle:
            order = torch.randperm(count, generator=generator, device=random_device)[:stop].to(images.device)
        padding = self.spec.crop_padding
        augmenting = augment and (padding > 0 or self.spec.flip)
        if augmenting:
            # Drawn for the whole epoch at once: one transfer instead of one per batch.
            offsets = torch.randint(0, 2 * padding + 1, (stop, 2), generator=generator,
                                    device=random_device).to(images.device)
            if self.spec.flip:
                flips = torch.rand(stop, generator=generator, device=random_device).lt(0.5).to(images.device)
            else:
                flips = torch.zeros(stop, dtype=torch.bool, device=images.device)
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, stop)
            if order is None:
                batch_x, batch_y = images[start:end], labels[start:end]
            else:
                index = order[start:end]
                batch_x, batch_y = images[index], labels[index]
            if augmenting:
                batch_x = crop_and_flip(batch_x, padding, offsets[start:end], flips[start:end])
            yield self.normalize(batch_x), batch_y

    def class_balanced_batch(self, per_class: int,
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`per_class` random training images of every class (normalised), grouped by class."""
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        labels = self.train_y
        random_device = generator.device if generator is not None else torch.device("cpu")
        shuffled = torch.randperm(len(labels), generator=generator, device=random_device).to(labels.device)
        # A stable sort of the shuffled labels keeps each class's images in random order,
        # so the first `per_class` of every class's run are a random sample of that class.
        by_class = shuffled[torch.argsort(labels[shuffled], stable=True)]
        counts = torch.bincount(labels, minlength=self.num_classes)
        short = [(c, int(n)) for c, n in enumerate(counts.tolist()) if n < per_class]
        if short:
            described = ", ".join(f"class {c} has {n}" for c, n in short[:5])
            raise ValueError(f"cannot take {per_class} training images of every class: {described}")
        starts = torch.cumsum(counts, 0) - counts
        picks = (starts[:, None] + torch.arange(per_class, device=labels.device)).reshape(-1)
        index = by_class[picks]
        return self.normalize(self.train_x[index]), labels[index]


def crop_and_flip(images: torch.Tensor, padding: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Random-crop (zero padding, offsets in [0, 2*padding]) and mirror a uint8 batch with two gathers."""
    batch, channels, height, width = images.shape
    if padding:
        images = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    rows = offsets[:, 0:1] + torch.arange(height, device=device)
    columns = torch.arange(width, device=device).expand(batch, width)
    columns = torch.where(flips[:, None], width - 1 - columns, columns) + offsets[:, 1:2]
    images = images.gather(2, rows[:, None, :, None].expand(batch, channels, height, images.shape[3]))
    return images.gather(3, columns[:, None, None, :].expand(batch, channels, height, width))


def resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device
