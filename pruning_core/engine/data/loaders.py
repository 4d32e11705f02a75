"""Where each dataset's images come from: the loaders that `DatasetSpec.loader` names.

A loader is called as ``loader(spec, root, download, **options)`` and returns a `Dataset`; its keyword-only
parameters are the dataset's options. Only the torchvision datasets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN)
ever touch the network, and only when the user asked for that dataset with `download=True`; every failure to
find or fetch files becomes a `DatasetUnavailableError` that says which files were expected where, and what to
do offline.
"""

from __future__ import annotations

import hashlib
import math
import os
import pathlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from pruning_core.engine.data.dataset import DATA_DIR_ENV, SPLITS, Dataset, DatasetSpec, DatasetUnavailableError

# The same files torchvision's ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

OFFLINE_ADVICE = ("Download it on a machine with internet access into that folder, set "
                  f"{DATA_DIR_ENV} to a folder that has it, or use the embedded 'digits' dataset, "
                  "which needs no download.")


# ---- embedded and synthetic datasets ------------------------------------------------------------

def load_digits_dataset(spec: DatasetSpec, root: pathlib.Path, download: bool) -> Dataset:
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


def load_synthetic(spec: DatasetSpec, root: pathlib.Path, download: bool, *,
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
    """Readers that keep torchvision's parsing but never download over files already on disk.

    torchvision's CIFAR and SVHN verify md5 sums and, with download=True, fetch again whenever a
    check fails; these only check that the files exist, so files that are present are never
    replaced by a download (a damaged one is reported instead). CIFAR's files are pickles, which
    `load_torchvision` checks against torchvision's published checksums before they are read
    (`verify_cifar_files`); a real download still verifies the downloaded archive.
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


def published_cifar_checksums(name: str) -> dict[str, str]:
    """File name -> MD5 of the members of CIFAR-10's or CIFAR-100's python tarball, as torchvision publishes
    them (its dataset classes' `train_list`, `test_list` and `meta`)."""
    from torchvision import datasets

    reader = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    return {**{file: md5 for file, md5 in reader.train_list + reader.test_list},
            reader.meta["filename"]: reader.meta["md5"]}


def _md5(path: pathlib.Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_cifar_files(spec: DatasetSpec, folder: pathlib.Path) -> None:
    """Refuse CIFAR files that are not the published ones before anything unpickles them: a pickle can run
    code when it is loaded, so only files whose MD5 matches torchvision's published checksum are read."""
    for file, expected in published_cifar_checksums(spec.name).items():
        path = folder / file
        actual = _md5(path)
        if actual != expected:
            raise DatasetUnavailableError(
                f"{path} is not the published {spec.label} file: its MD5 checksum is {actual}, the published one "
                f"is {expected}. {spec.label}'s files are Python pickles, which can run code when they are read, "
                "so only the original files are loaded. Delete the folder to download them again, or copy the "
                "original files there; offline, use the embedded 'digits' dataset.")


def load_torchvision(spec: DatasetSpec, root: pathlib.Path, download: bool) -> Dataset:
    reader = _torchvision_classes()[spec.name]
    expected = _expected_files(spec.name, reader, root)
    missing = [path for path in expected if not path.is_file()]
    if missing and not download:
        raise DatasetUnavailableError(
            f"{spec.label} is not in {root} (missing {_describe_files(missing)}) and download=False. "
            + OFFLINE_ADVICE)
    if not missing and spec.name in ("cifar10", "cifar100"):
        # (Files that are missing are downloaded: torchvision checks the archive's checksum before extracting.)
        verify_cifar_files(spec, root / reader.base_folder)
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


def load_image_folder(spec: DatasetSpec, root: pathlib.Path, download: bool, *,
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


def load_tiny_imagenet(spec: DatasetSpec, root: pathlib.Path, download: bool, *,
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
