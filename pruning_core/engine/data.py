"""Datasets: where images come from, and how they are batched for pruning and training.

A `Dataset` holds a whole dataset in memory as uint8 tensors, so that moving it to the GPU once
and slicing batches there replaces a DataLoader (whose per-image PIL work is the bottleneck for
32x32 images). Normalisation and augmentation are tensor operations on whatever device the data
is on.

Every dataset is a `DatasetSpec` in the `DATASETS` registry. Only the torchvision datasets
(MNIST, Fashion-MNIST, CIFAR-10/100, SVHN) ever touch the network, and only when the user asked
for that dataset with `download=True`; every failure to find or fetch files becomes a
`DatasetUnavailableError` that says which files were expected where, and what to do offline.
"""

from __future__ import annotations

import inspect
import math
import os
import pathlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pruning_core.engine.vocabulary import LR_SCHEDULES, OPTIMIZERS
from pruning_core.registry import Registry

DATA_DIR_ENV = "PRUNING_DATA_DIR"
TRAIN_DEFAULT_KEYS = ("batch_size", "epochs", "optimizer", "lr", "lr_schedule", "weight_decay", "label_smoothing")
SPLITS = ("train", "test")

# The same files torchvision's ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

OFFLINE_ADVICE = ("Download it on a machine with internet access into that folder, set "
                  f"{DATA_DIR_ENV} to a folder that has it, or use the embedded 'digits' dataset, "
                  "which needs no download.")


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
        return load_dataset(self, root=root, download=download, **options)


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
        target = _resolve_device(device)
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


def _resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


# ---- loading and the cache --------------------------------------------------------------------

_cache: dict[tuple, Dataset] = {}
_cache_lock = threading.Lock()
_key_locks: dict[tuple, threading.Lock] = {}


def load_dataset(name_or_spec: str | DatasetSpec, root: str | os.PathLike | None = None,
                 download: bool = True, **options: Any) -> Dataset:
    """Load a dataset by name (see `DATASETS`), from memory when it was loaded before.

    `root` is the folder of downloaded datasets (default: `data_root()`); `options` are the
    dataset's own (e.g. `path=` for 'image_folder'). Raises `UnknownNameError` for an unknown
    name, `DatasetUnavailableError` when the files are missing and cannot be downloaded, and
    `ValueError` for bad options.
    """
    spec = name_or_spec if isinstance(name_or_spec, DatasetSpec) else DATASETS[name_or_spec]
    resolved_root = data_root(root)
    bound = _bind_options(spec, options)
    key = (spec.name, str(resolved_root), tuple((name, _hashable(name, value)) for name, value in bound.items()))
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        key_lock = _key_locks.setdefault(key, threading.Lock())
    # One lock per dataset: a second caller waits for the first load instead of downloading again,
    # while loads of other datasets go ahead.
    with key_lock:
        with _cache_lock:
            cached = _cache.get(key)
        if cached is not None:
            return cached
        dataset = spec.loader(spec, resolved_root, download, **bound)
        with _cache_lock:
            _cache[key] = dataset
        return dataset


def clear_cache() -> None:
    """Forget every loaded dataset (e.g. after the files of an image folder changed)."""
    with _cache_lock:
        _cache.clear()


def _bind_options(spec: DatasetSpec, options: dict[str, Any]) -> dict[str, Any]:
    """The loader's options with defaults filled in, so that spelling out a default hits the same cache entry."""
    parameters = [p for p in inspect.signature(spec.loader).parameters.values() if p.kind is p.KEYWORD_ONLY]
    valid = [p.name for p in parameters]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        accepted = f"valid options: {', '.join(valid)}" if valid else "it takes no options"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for dataset {spec.name!r}; {accepted}")
    return {p.name: options.get(p.name, p.default) for p in parameters}


def _hashable(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "path" or isinstance(value, os.PathLike):
        return str(pathlib.Path(value).expanduser().resolve())
    if isinstance(value, (list, tuple)):
        return tuple(_hashable("", item) for item in value)
    return value


# ---- embedded and synthetic datasets ------------------------------------------------------------

def _load_digits(spec: DatasetSpec, root: pathlib.Path, download: bool) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    # Fixed seed and stratified, so every run and every user sees the same 1,437/360 split.
    train_index, test_index = train_test_split(np.arange(len(labels)), test_size=360,
                                               stratify=bunch.target, random_state=0)
    train_index, test_index = torch.from_numpy(train_index), torch.from_numpy(test_index)
    return Dataset(spec, images[train_index].contiguous(), labels[train_index],
                   images[test_index].contiguous(), labels[test_index], scale=16.0,
                   class_names=[str(digit) for digit in range(10)])


def _load_synthetic(spec: DatasetSpec, root: pathlib.Path, download: bool, *,
                    shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, train_size: int = 50000,
                    test_size: int = 10000, seed: int = 0) -> Dataset:
    shape = tuple(int(size) for size in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"synthetic shape must be three positive sizes (C, H, W), got {shape}")
    if num_classes < 1 or train_size < 1 or test_size < 1:
        raise ValueError("synthetic num_classes, train_size and test_size must all be >= 1")
    rng = np.random.default_rng(int(seed))

    def split(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Raw random bytes: an order of magnitude faster than drawing integers for 150M pixels.
        pixels = np.frombuffer(bytearray(rng.bytes(size * math.prod(shape))), dtype=np.uint8)
        images = torch.from_numpy(pixels).view(size, *shape)
        # Every class equally often (in random order), so class-balanced batches always work.
        labels = torch.from_numpy(rng.permutation(np.arange(size, dtype=np.int64) % num_classes))
        return images, labels

    train_x, train_y = split(train_size)
    test_x, test_y = split(test_size)
    # Uniform pixels 0..255: these make the normalised images zero-mean, unit-variance.
    mean = 0.5
    std = math.sqrt((256 ** 2 - 1) / 12) / 255
    return Dataset(spec, train_x, train_y, test_x, test_y, mean=[mean] * shape[0], std=[std] * shape[0],
                   num_classes=num_classes)


# ---- torchvision datasets -------------------------------------------------------------------------

def _torchvision_classes():
    """Readers that keep torchvision's parsing but trust files already on disk.

    torchvision's CIFAR and SVHN verify md5 sums and, with download=True, fetch again whenever a
    check fails; these only check that the files exist, so files that are present (a copy from
    another machine, a different packaging) are read and never replaced by a download. A real
    download still verifies the downloaded archive.
    """
    from torchvision import datasets

    class CIFAR10Files(datasets.CIFAR10):
        meta = {**datasets.CIFAR10.meta, "md5": None}

        def _check_integrity(self) -> bool:
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, name))
                       for name, _ in self.train_list + self.test_list)

    class CIFAR100Files(datasets.CIFAR100):
        meta = {**datasets.CIFAR100.meta, "md5": None}
        _check_integrity = CIFAR10Files._check_integrity

    class SVHNFiles(datasets.SVHN):
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

        def download(self) -> None:
            if not self._check_integrity():
                super().download()

    # MNIST and Fashion-MNIST already check only that the extracted files exist.
    return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": CIFAR10Files,
            "cifar100": CIFAR100Files, "svhn": SVHNFiles}


def _expected_files(name: str, reader: type, root: pathlib.Path) -> list[pathlib.Path]:
    if name in ("mnist", "fashion_mnist"):
        raw = root / reader.__name__ / "raw"
        return [raw / os.path.splitext(url_name)[0] for url_name, _ in reader.resources]
    if name in ("cifar10", "cifar100"):
        names = [file for file, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]
        return [root / reader.base_folder / file for file in names]
    return [root / reader.split_list[split][1] for split in SPLITS]


def _describe_files(paths: Sequence[pathlib.Path], most: int = 3) -> str:
    shown = ", ".join(str(path) for path in paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:400] + "..."


def _load_torchvision(spec: DatasetSpec, root: pathlib.Path, download: bool) -> Dataset:
    reader = _torchvision_classes()[spec.name]
    expected = _expected_files(spec.name, reader, root)
    missing = [path for path in expected if not path.is_file()]
    if missing and not download:
        raise DatasetUnavailableError(
            f"{spec.label} is not in {root} (missing {_describe_files(missing)}) and download=False. "
            + OFFLINE_ADVICE)
    splits = {}
    try:
        for split in SPLITS:
            arguments = {"split": split} if spec.name == "svhn" else {"train": split == "train"}
            # Only a dataset with files missing may download; present files are always just read.
            splits[split] = reader(str(root), download=bool(missing), **arguments)
    except Exception as exc:
        if not missing:
            raise DatasetUnavailableError(
                f"{spec.label} files in {root} ({_describe_files(expected)}) could not be read: {_reason(exc)}. "
                "They may be incomplete or damaged: delete them to download again. " + OFFLINE_ADVICE) from exc
        # A failed download can leave a partial file that would later pass the existence check.
        for path in missing:
            if path.is_file():
                path.unlink()
        raise DatasetUnavailableError(
            f"{spec.label} is not in {root} (expected {_describe_files(expected)}) and could not be "
            f"downloaded: {_reason(exc)}. " + OFFLINE_ADVICE) from exc
    tensors = [_torchvision_tensors(splits[split]) for split in SPLITS]
    class_names = getattr(splits["train"], "classes", None) or [str(digit) for digit in range(10)]
    return Dataset(spec, *tensors[0], *tensors[1], class_names=class_names)


def _torchvision_tensors(source) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) images and int64 labels straight from the reader's arrays."""
    data = source.data
    labels = getattr(source, "labels", None)
    if labels is None:
        labels = source.targets
    if isinstance(data, torch.Tensor):  # MNIST: (N, H, W)
        images = data.to(torch.uint8).unsqueeze(1).contiguous()
    elif data.ndim == 4 and data.shape[-1] == 3:  # CIFAR: (N, H, W, C)
        images = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))
    else:  # SVHN: already (N, C, H, W)
        images = torch.from_numpy(np.ascontiguousarray(data))
    return images.to(torch.uint8), torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)


# ---- image folders ------------------------------------------------------------------------------

def _is_image(path: pathlib.Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _class_images(folder: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """Subfolder name -> its image files (searched recursively, sorted), for subfolders with any."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.rglob("*") if _is_image(p))
        if files:
            classes[sub.name] = files
    return classes


def _fit_square(image, size: int):
    """Resize the shorter side to `size` and cut the centre square, keeping the aspect ratio."""
    from PIL import Image

    width, height = image.size
    if (width, height) == (size, size):
        return image
    factor = size / min(width, height)
    new_width, new_height = max(size, round(width * factor)), max(size, round(height * factor))
    image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return image.crop((left, top, left + size, top + size))


def _read_images(paths: Sequence[pathlib.Path], size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size) from image files, decoded on several threads (PIL releases the GIL)."""
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def read(i: int) -> None:
        try:
            with Image.open(paths[i]) as image:
                out[i] = np.asarray(_fit_square(image.convert("RGB"), size))
        except OSError as exc:
            raise DatasetUnavailableError(f"could not read image {paths[i]}: {_reason(exc)}") from exc

    workers = max(1, min(16, os.cpu_count() or 1, len(paths)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(read, range(len(paths))):
            pass
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _stratified_split(labels: np.ndarray, test_fraction: float = 0.2,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a per-class random split; every class with two or more images is in both parts."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = max(1, round(test_fraction * len(members))) if len(members) >= 2 else 0
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def _labelled(classes: dict[str, list[pathlib.Path]],
              class_index: dict[str, int]) -> tuple[list[pathlib.Path], np.ndarray]:
    paths = [path for name, files in classes.items() for path in files]
    labels = np.array([class_index[name] for name, files in classes.items() for _ in files], dtype=np.int64)
    return paths, labels


def _per_channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    pixels = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    std = pixels.std(dim=1).clamp_min(1e-3)  # a constant channel would otherwise divide by zero
    return pixels.mean(dim=1).tolist(), std.tolist()


def _load_image_folder(spec: DatasetSpec, root: pathlib.Path, download: bool, *,
                       path: str | os.PathLike | None = None, image_size: int = 32) -> Dataset:
    if path is None:
        raise ValueError("image_folder needs path=<folder>: a folder with one subfolder of images per class "
                         "(optionally inside train/ with a val/ or test/ folder beside it)")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    image_size = int(image_size)
    folder = pathlib.Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DatasetUnavailableError(f"image folder {folder} does not exist; pass path= a folder with one "
                                      "subfolder of images per class, or use the embedded 'digits' dataset")
    train_folder = folder / "train" if (folder / "train").is_dir() else folder
    train_classes = _class_images(train_folder)
    if not train_classes:
        raise DatasetUnavailableError(
            f"{train_folder} has no class subfolders with images ({', '.join(IMAGE_EXTENSIONS)}); put each "
            "class's images in a subfolder named after the class")
    if len(train_classes) < 2:
        raise ValueError(f"{train_folder} has only one class ({next(iter(train_classes))}); classification "
                         "needs at least two class subfolders with images")
    class_names = list(train_classes)
    class_index = {name: i for i, name in enumerate(class_names)}
    train_paths, train_labels = _labelled(train_classes, class_index)

    test_paths = None
    if train_folder != folder:
        for candidate in ("val", "test"):
            if not (folder / candidate).is_dir():
                continue
            test_classes = _class_images(folder / candidate)
            known = {name: files for name, files in test_classes.items() if name in class_index}
            if not known:
                continue  # e.g. unlabelled test images: not usable as a test split
            unknown = sorted(set(test_classes) - set(known))
            if unknown:
                raise ValueError(f"{folder / candidate} has class folders that train/ lacks: "
                                 f"{', '.join(unknown[:5])}; give both splits the same classes")
            test_paths, test_labels = _labelled(known, class_index)
            break
    if test_paths is None:
        train_index, test_index = _stratified_split(train_labels)
        if len(test_index) == 0:
            raise ValueError(f"{train_folder} has too few images to hold out a test split; "
                             "put at least two images in each class folder")
        test_paths = [train_paths[i] for i in test_index]
        test_labels = train_labels[test_index]
        train_paths = [train_paths[i] for i in train_index]
        train_labels = train_labels[train_index]

    train_x = _read_images(train_paths, image_size)
    test_x = _read_images(test_paths, image_size)
    # An arbitrary folder has no published statistics: normalise with its own training images.
    mean, std = _per_channel_stats(train_x)
    return Dataset(spec, train_x, torch.from_numpy(train_labels), test_x, torch.from_numpy(test_labels),
                   mean=mean, std=std, class_names=class_names)


def _load_tiny_imagenet(spec: DatasetSpec, root: pathlib.Path, download: bool, *,
                        path: str | os.PathLike | None = None) -> Dataset:
    folder = pathlib.Path(path).expanduser().resolve() if path is not None else root / "tiny-imagenet-200"
    annotations = folder / "val" / "val_annotations.txt"
    advice = (f"Tiny ImageNet is not downloaded automatically: download tiny-imagenet-200.zip "
              f"(http://cs231n.stanford.edu/tiny-imagenet-200.zip) on a machine with internet access and "
              f"extract it so that {folder} is the extracted folder, pass path= to where it is, or use the "
              f"embedded 'digits' dataset, which needs no download.")
    if not (folder / "train").is_dir() or not annotations.is_file():
        raise DatasetUnavailableError(
            f"Tiny ImageNet is not in {folder} (expected {folder / 'train'}/<wnid>/images/*.JPEG and "
            f"{annotations}). " + advice)
    train_classes = _class_images(folder / "train")
    if len(train_classes) < 2:
        raise DatasetUnavailableError(f"{folder / 'train'} has {len(train_classes)} class folders with images; "
                                      "expected 200 (train/<wnid>/images/*.JPEG). " + advice)
    class_names = list(train_classes)
    class_index = {name: i for i, name in enumerate(class_names)}
    train_paths, train_labels = _labelled(train_classes, class_index)

    test_paths, test_labels = [], []
    for line_number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_index:
            raise DatasetUnavailableError(f"{annotations} line {line_number} names an unknown class or is not "
                                          f"tab-separated 'filename<TAB>wnid...': {line[:80]!r}")
        image = folder / "val" / "images" / fields[0]
        if not image.is_file():
            raise DatasetUnavailableError(f"{annotations} lists {fields[0]}, but {image} is missing. " + advice)
        test_paths.append(image)
        test_labels.append(class_index[fields[1]])
    if not test_paths:
        raise DatasetUnavailableError(f"{annotations} lists no validation images. " + advice)
    size = spec.input_shape[1]
    return Dataset(spec, _read_images(train_paths, size), torch.from_numpy(train_labels),
                   _read_images(test_paths, size), torch.tensor(test_labels, dtype=torch.int64),
                   class_names=class_names)


# ---- the registry -----------------------------------------------------------------------------------

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
    loader=_load_digits,
)
_register(
    name="mnist", label="MNIST",
    description="70,000 handwritten digits (28x28, greyscale), downloaded once (about 12 MB).",
    input_shape=(1, 28, 28), num_classes=10, mean=(0.1307,), std=(0.3081,),
    crop_padding=0, flip=False, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 10, "sgd", 0.05, "onecycle", 5e-4, 0.0),
    loader=_load_torchvision,
)
_register(
    name="fashion_mnist", label="Fashion-MNIST",
    description="70,000 photos of clothing in 10 categories (28x28, greyscale), a harder stand-in for MNIST, "
                "downloaded once (about 30 MB).",
    input_shape=(1, 28, 28), num_classes=10, mean=(0.2860,), std=(0.3530,),
    crop_padding=0, flip=False, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 15, "sgd", 0.05, "onecycle", 5e-4, 0.1),
    loader=_load_torchvision,
)
_register(
    name="cifar10", label="CIFAR-10",
    description="60,000 colour photos (32x32) of 10 everyday classes such as planes, cats and trucks, the "
                "standard pruning benchmark, downloaded once (about 170 MB).",
    input_shape=(3, 32, 32), num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    crop_padding=4, flip=True, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 30, "sgd", 0.1, "onecycle", 5e-4, 0.1),
    loader=_load_torchvision,
)
_register(
    name="cifar100", label="CIFAR-100",
    description="60,000 colour photos (32x32) in 100 fine-grained classes, downloaded once (about 170 MB).",
    input_shape=(3, 32, 32), num_classes=100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
    crop_padding=4, flip=True, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 30, "sgd", 0.1, "onecycle", 5e-4, 0.1),
    loader=_load_torchvision,
)
_register(
    name="svhn", label="SVHN",
    description="99,289 colour photos (32x32) of house-number digits from Street View, downloaded once "
                "(about 240 MB).",
    input_shape=(3, 32, 32), num_classes=10, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    # Mirrored digits are different digits, so no flip.
    crop_padding=4, flip=False, needs_download=True, local_path=False,
    train_defaults=_defaults(128, 15, "sgd", 0.05, "onecycle", 5e-4, 0.1),
    loader=_load_torchvision,
)
_register(
    name="tiny_imagenet", label="Tiny ImageNet",
    description="110,000 colour photos (64x64) in 200 classes, read from a tiny-imagenet-200 folder you "
                "downloaded and extracted yourself.",
    input_shape=(3, 64, 64), num_classes=200, mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821),
    crop_padding=8, flip=True, needs_download=False, local_path=True,
    train_defaults=_defaults(128, 40, "sgd", 0.1, "onecycle", 5e-4, 0.1),
    loader=_load_tiny_imagenet,
)
_register(
    name="image_folder", label="Your image folder",
    description="Your own images: a folder with one subfolder of pictures per class, resized to small squares.",
    # Placeholders: the loaded Dataset reports the real shape, class count and pixel statistics.
    input_shape=(3, 32, 32), num_classes=0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    crop_padding=4, flip=True, needs_download=False, local_path=True,
    train_defaults=_defaults(64, 30, "sgd", 0.05, "onecycle", 5e-4, 0.1),
    loader=_load_image_folder,
)
_register(
    name="synthetic", label="Synthetic noise",
    description="Random noise images with random labels, for timing the pipeline without any files; there is "
                "nothing in them to learn.",
    input_shape=(3, 32, 32), num_classes=10, mean=(0.5,), std=(0.2892,),
    crop_padding=4, flip=True, needs_download=False, local_path=False,
    train_defaults=_defaults(128, 1, "sgd", 0.1, "constant", 0.0, 0.0),
    loader=_load_synthetic,
)
