"""Tests of pruning_core.engine.data: the dataset registry, the loaders and the on-device batching.

The torchvision datasets are tested on tiny files written here in each dataset's real on-disk
format, read by torchvision's own parsing code. The network is blocked for every test, so a
download attempt fails the test instead of reaching the internet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import socket
import struct

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from pruning_core.engine import data
from pruning_core.engine.data import (DATASETS, Dataset, DatasetUnavailableError, clear_cache, data_root, load_dataset)
from pruning_core.registry import UnknownNameError

TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")


@pytest.fixture(autouse=True)
def network_attempts(monkeypatch):
    """Block all network access; the returned list records every attempt."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is blocked in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


# ---- registry and specs ---------------------------------------------------------------------------

def test_registry_lists_datasets_in_display_order():
    assert list(DATASETS) == ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn",
                              "tiny_imagenet", "image_folder", "synthetic"]


@pytest.mark.parametrize("name", list(DATASETS))
def test_spec_is_consistent(name):
    spec = DATASETS[name]
    assert spec.name == name
    assert spec.description.strip().endswith(".") and spec.description.count(". ") == 0
    assert set(spec.train_defaults) == set(data.TRAIN_DEFAULT_KEYS)
    assert spec.train_defaults["optimizer"] in ("sgd", "adam")
    assert spec.train_defaults["lr_schedule"] in ("onecycle", "cosine", "constant")
    assert len(spec.mean) == len(spec.std) and all(s > 0 for s in spec.std)
    assert len(spec.mean) in (1, spec.input_shape[0])
    assert spec.needs_download == (name in TORCHVISION_DATASETS)
    assert spec.local_path == (name in ("tiny_imagenet", "image_folder"))


def test_digit_datasets_are_never_flipped():
    for name in ("digits", "mnist", "svhn"):
        assert DATASETS[name].flip is False
    assert DATASETS["cifar10"].flip and DATASETS["cifar10"].crop_padding == 4


def test_spec_rejects_bad_train_defaults():
    spec = DATASETS["digits"]
    with pytest.raises(ValueError, match="optimizer"):
        dataclasses.replace(spec, train_defaults={**spec.train_defaults, "optimizer": "lbfgs"})
    with pytest.raises(ValueError, match="keys"):
        dataclasses.replace(spec, train_defaults={"lr": 0.1})


def test_unknown_dataset_name_lists_valid_names():
    with pytest.raises(UnknownNameError, match="digits") as caught:
        load_dataset("imagenet-1k")
    assert isinstance(caught.value, ValueError)
    assert "cifar10" in str(caught.value)


def test_unknown_option_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="takes no options"):
        load_dataset("digits", path="x")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("image_folder", size=3)


def test_data_root_prefers_argument_then_environment_then_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data_root() == tmp_path.resolve() / "data"
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data_root() == (tmp_path / "env").resolve()
    assert data_root(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert data_root("relative") == (tmp_path / "relative").resolve()


# ---- digits ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_and_values(digits):
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10 and digits.name == "digits"
    assert len(digits.train_y) + len(digits.test_y) == 1797
    assert len(digits.test_y) == 360
    assert digits.train_x.dtype == torch.uint8 and digits.train_x.shape == (1437, 1, 8, 8)
    assert digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_y.dtype == torch.int64
    assert int(digits.train_x.max()) == 16 and digits.scale == 16
    for labels in (digits.train_y, digits.test_y):
        assert labels.min() >= 0 and labels.max() <= 9


def test_digits_split_is_stratified(digits):
    train_counts = torch.bincount(digits.train_y, minlength=10)
    test_counts = torch.bincount(digits.test_y, minlength=10)
    assert (train_counts > 0).all() and (test_counts > 0).all()
    share = test_counts.double() / (train_counts + test_counts).double()
    assert torch.allclose(share, torch.full_like(share, 360 / 1797), atol=0.02)


def test_digits_is_cached_and_the_split_is_deterministic(digits):
    assert load_dataset("digits") is digits
    assert DATASETS["digits"].load() is digits
    clear_cache()
    fresh = load_dataset("digits")
    assert fresh is not digits
    assert torch.equal(fresh.train_x, digits.train_x) and torch.equal(fresh.test_y, digits.test_y)


def test_normalize_centres_the_digits_training_split(digits):
    normalised = digits.normalize(digits.train_x)
    assert normalised.dtype == torch.float32 and normalised.shape == digits.train_x.shape
    per_channel = normalised.transpose(0, 1).reshape(1, -1)
    assert per_channel.mean(dim=1).abs().max() < 0.01
    assert (per_channel.std(dim=1) - 1).abs().max() < 0.01
    by_hand = (digits.train_x.double() / 16 - digits.mean[0]) / digits.std[0]
    assert torch.allclose(normalised.double(), by_hand, atol=1e-5)


# ---- torchvision formats, written by hand ----------------------------------------------------------

def _write_idx(path, array: np.ndarray) -> None:
    # IDX: two zero bytes, the type (8 = unsigned byte), the number of dimensions, big-endian sizes.
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", size) for size in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist_like(root, folder, rng):
    raw = root / folder / "raw"
    expected = []
    for prefix, count in (("train", 7), ("t10k", 4)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        expected += [images[:, None], labels]
    return expected


def _pickle(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _write_cifar10(root, rng):
    folder = root / "cifar-10-batches-py"
    train_images, train_labels = [], []
    for batch in range(1, 6):
        rows = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 2).tolist()
        _pickle(folder / f"data_batch_{batch}", {"data": rows, "labels": labels})
        train_images.append(rows)
        train_labels += labels
    test_rows = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    test_labels = rng.integers(0, 10, 3).tolist()
    _pickle(folder / "test_batch", {"data": test_rows, "labels": test_labels})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    # Each row is the red plane, then green, then blue, each 32x32 row-major.
    return [np.vstack(train_images).reshape(-1, 3, 32, 32), np.array(train_labels),
            test_rows.reshape(-1, 3, 32, 32), np.array(test_labels)]


def _write_cifar100(root, rng):
    folder = root / "cifar-100-python"
    expected = []
    for split, count in (("train", 6), ("test", 3)):
        rows = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = rng.integers(0, 100, count).tolist()
        _pickle(folder / split, {"data": rows, "fine_labels": labels, "coarse_labels": [0] * count})
        expected += [rows.reshape(-1, 3, 32, 32), np.array(labels)]
    _pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)]})
    return expected


def _write_svhn(root, rng):
    expected = []
    for split, count in (("train", 6), ("test", 4)):
        images = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)  # (H, W, C, N) as published
        labels = np.array([10, 1, 5, 10, 9, 3][:count], dtype=np.uint8)  # 10 is the digit 0
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": images, "y": labels[:, None]})
        expected += [images.transpose(3, 2, 0, 1), np.where(labels == 10, 0, labels)]
    return expected


WRITERS = {
    "mnist": lambda root, rng: _write_mnist_like(root, "MNIST", rng),
    "fashion_mnist": lambda root, rng: _write_mnist_like(root, "FashionMNIST", rng),
    "cifar10": _write_cifar10,
    "cifar100": _write_cifar100,
    "svhn": _write_svhn,
}
EXPECTED_FILE = {
    "mnist": "train-images-idx3-ubyte",
    "fashion_mnist": "train-images-idx3-ubyte",
    "cifar10": "data_batch_1",
    "cifar100": "train",
    "svhn": "train_32x32.mat",
}


def publish_fake_cifar(monkeypatch, root, name) -> None:
    """Make torchvision's published checksums of CIFAR's files those of the fake files written under `root`, as
    if they were the originals (real ones are never downloaded in tests)."""
    from torchvision import datasets

    reader = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    folder = root / reader.base_folder

    def md5(file: str) -> str:
        return hashlib.md5((folder / file).read_bytes()).hexdigest()

    monkeypatch.setattr(reader, "train_list", [[file, md5(file)] for file, _ in reader.train_list])
    monkeypatch.setattr(reader, "test_list", [[file, md5(file)] for file, _ in reader.test_list])
    monkeypatch.setattr(reader, "meta", {**reader.meta, "md5": md5(reader.meta["filename"])})


@pytest.mark.parametrize("name", TORCHVISION_DATASETS)
def test_torchvision_files_round_trip_without_downloading(name, tmp_path, network_attempts, monkeypatch):
    expected = WRITERS[name](tmp_path, np.random.default_rng(7))
    if name.startswith("cifar"):
        publish_fake_cifar(monkeypatch, tmp_path, name)
    dataset = load_dataset(name, root=tmp_path, download=True)
    assert network_attempts == []  # files that are present are read, never downloaded over
    spec = DATASETS[name]
    assert dataset.input_shape == spec.input_shape and dataset.num_classes == spec.num_classes
    for tensor, array in zip((dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y), expected):
        assert tensor.dtype == (torch.uint8 if tensor.dim() == 4 else torch.int64)
        assert np.array_equal(tensor.numpy(), array.astype(tensor.numpy().dtype))
    assert load_dataset(name, root=tmp_path) is dataset


def test_svhn_maps_label_10_to_digit_0(tmp_path):
    _write_svhn(tmp_path, np.random.default_rng(0))
    dataset = load_dataset("svhn", root=tmp_path, download=False)
    assert dataset.train_y.tolist() == [0, 1, 5, 0, 9, 3]
    assert dataset.test_y.tolist() == [0, 1, 5, 0]


def test_cifar_class_names_come_from_the_meta_file(tmp_path, monkeypatch):
    _write_cifar10(tmp_path, np.random.default_rng(0))
    publish_fake_cifar(monkeypatch, tmp_path, "cifar10")
    assert load_dataset("cifar10", root=tmp_path, download=False).class_names[3] == "class3"


@pytest.mark.parametrize("name", TORCHVISION_DATASETS)
def test_missing_files_without_download_explain_what_to_do(name, tmp_path, network_attempts):
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset(name, root=tmp_path, download=False)
    message = str(caught.value)
    assert EXPECTED_FILE[name] in message and str(tmp_path) in message and "'digits'" in message
    assert "download=False" in message
    assert network_attempts == []


@pytest.mark.parametrize("name", TORCHVISION_DATASETS)
def test_failed_download_explains_what_to_do(name, tmp_path, network_attempts):
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset(name, root=tmp_path, download=True)
    message = str(caught.value)
    assert "could not be downloaded" in message
    assert EXPECTED_FILE[name] in message and str(tmp_path) in message and "'digits'" in message
    assert network_attempts, "the download should have been tried (and blocked)"
    assert not list(tmp_path.rglob(EXPECTED_FILE[name])), "no partial file may be left behind"


def test_failed_download_keeps_the_files_that_were_there(tmp_path):
    _write_svhn(tmp_path, np.random.default_rng(0))
    (tmp_path / "test_32x32.mat").unlink()
    before = (tmp_path / "train_32x32.mat").read_bytes()
    with pytest.raises(DatasetUnavailableError, match="test_32x32.mat"):
        load_dataset("svhn", root=tmp_path, download=True)
    assert (tmp_path / "train_32x32.mat").read_bytes() == before


def test_damaged_file_is_reported_not_downloaded_over(tmp_path, network_attempts):
    _write_svhn(tmp_path, np.random.default_rng(0))
    (tmp_path / "test_32x32.mat").write_bytes(b"not a MATLAB file")
    with pytest.raises(DatasetUnavailableError, match="could not be read"):
        load_dataset("svhn", root=tmp_path, download=True)
    assert network_attempts == [] and (tmp_path / "test_32x32.mat").read_bytes() == b"not a MATLAB file"


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_files_are_checked_against_the_published_checksums_before_unpickling(name, tmp_path, monkeypatch,
                                                                                 network_attempts):
    from torchvision import datasets

    WRITERS[name](tmp_path, np.random.default_rng(0))
    publish_fake_cifar(monkeypatch, tmp_path, name)
    reader = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    tampered = tmp_path / reader.base_folder / reader.train_list[0][0]
    tampered.write_bytes(tampered.read_bytes() + b"\n")   # one byte more: a different file
    published = reader.train_list[0][1]

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a file that does not match its checksum was unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset(name, root=tmp_path, download=True)
    message = str(caught.value)
    assert str(tampered) in message and f"the published one is {published}" in message
    assert hashlib.md5(tampered.read_bytes()).hexdigest() in message and "'digits'" in message
    assert network_attempts == [] and tampered.exists()     # refused, neither downloaded over nor removed


def test_the_checksums_are_torchvisions_published_ones():
    from torchvision import datasets

    from pruning_core.engine.data.loaders import published_cifar_checksums

    cifar10 = published_cifar_checksums("cifar10")
    assert set(cifar10) == {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta"}
    assert cifar10["test_batch"] == dict(datasets.CIFAR10.test_list)["test_batch"]
    assert published_cifar_checksums("cifar100")["meta"] == datasets.CIFAR100.meta["md5"]


# ---- image folders and Tiny ImageNet ---------------------------------------------------------------

COLOURS = {"bird": (200, 30, 30), "cat": (30, 200, 30), "dog": (30, 30, 200)}


def _write_images(folder, colour, count, size=(16, 16), suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", size, colour).save(folder / f"img{i}{suffix}")


def _assert_colours_match_labels(dataset, class_names, tolerance=0):
    for images, labels in ((dataset.train_x, dataset.train_y), (dataset.test_x, dataset.test_y)):
        for image, label in zip(images, labels):
            colour = torch.tensor(COLOURS[class_names[label]], dtype=torch.int16)
            assert (image.to(torch.int16) - colour[:, None, None]).abs().max() <= tolerance


def test_image_folder_uses_val_folder_as_test_split(tmp_path):
    for name, colour in COLOURS.items():
        _write_images(tmp_path / "train" / name, colour, 3)
        _write_images(tmp_path / "val" / name, colour, 2)
    (tmp_path / "train" / "notes").mkdir()  # a folder without images is not a class
    dataset = load_dataset("image_folder", path=tmp_path, image_size=8)
    assert dataset.num_classes == 3 and dataset.class_names == ("bird", "cat", "dog")
    assert dataset.input_shape == (3, 8, 8)
    assert len(dataset.train_y) == 9 and len(dataset.test_y) == 6
    assert torch.bincount(dataset.test_y).tolist() == [2, 2, 2]
    _assert_colours_match_labels(dataset, dataset.class_names)
    # Statistics come from the folder's own training images, so they normalise to mean 0.
    assert dataset.normalize(dataset.train_x).mean(dim=(0, 2, 3)).abs().max() < 1e-4


def test_image_folder_without_splits_holds_out_a_stratified_fifth(tmp_path):
    _write_images(tmp_path / "cat", COLOURS["cat"], 10, size=(20, 10))  # not square: resized and cropped
    _write_images(tmp_path / "dog", COLOURS["dog"], 5, suffix=".jpg")
    dataset = load_dataset("image_folder", path=tmp_path, image_size=6)
    assert dataset.input_shape == (3, 6, 6) and dataset.num_classes == 2
    assert torch.bincount(dataset.test_y).tolist() == [2, 1]
    assert torch.bincount(dataset.train_y).tolist() == [8, 4]
    _assert_colours_match_labels(dataset, dataset.class_names, tolerance=3)  # JPEG is lossy
    clear_cache()
    again = load_dataset("image_folder", path=tmp_path, image_size=6)
    assert torch.equal(again.test_x, dataset.test_x) and torch.equal(again.test_y, dataset.test_y)


def test_image_folder_bad_paths_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="path="):
        load_dataset("image_folder")
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load_dataset("image_folder", path=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetUnavailableError, match="subfolder"):
        load_dataset("image_folder", path=tmp_path / "empty")
    _write_images(tmp_path / "one" / "cat", COLOURS["cat"], 2)
    with pytest.raises(ValueError, match="two class"):
        load_dataset("image_folder", path=tmp_path / "one")


def _write_tiny_imagenet(folder):
    wnids = {"n001": "bird", "n002": "cat", "n003": "dog"}
    for wnid, animal in wnids.items():
        _write_images(folder / "train" / wnid / "images", COLOURS[animal], 2, size=(64, 64), suffix=".JPEG")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    (folder / "val" / "images").mkdir(parents=True)
    rows = []
    for i, wnid in enumerate(["n003", "n001", "n003", "n002"]):
        Image.new("RGB", (64, 64), COLOURS[wnids[wnid]]).save(folder / "val" / "images" / f"val_{i}.JPEG")
        rows.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return wnids


def test_tiny_imagenet_reads_the_official_layout(tmp_path):
    wnids = _write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    dataset = load_dataset("tiny_imagenet", root=tmp_path)
    assert dataset.input_shape == (3, 64, 64) and dataset.num_classes == 3
    assert dataset.class_names == ("n001", "n002", "n003")
    assert len(dataset.train_y) == 6 and dataset.test_y.tolist() == [2, 0, 2, 1]
    animals = [wnids[wnid] for wnid in dataset.class_names]
    _assert_colours_match_labels(dataset, animals, tolerance=3)
    assert load_dataset("tiny_imagenet", path=tmp_path / "tiny-imagenet-200") is not None


def test_missing_tiny_imagenet_names_the_expected_files(tmp_path):
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset("tiny_imagenet", root=tmp_path)
    message = str(caught.value)
    assert "val_annotations.txt" in message and str(tmp_path / "tiny-imagenet-200") in message
    assert "'digits'" in message


# ---- synthetic -------------------------------------------------------------------------------------

def test_synthetic_has_the_requested_shape_and_is_reproducible():
    options = dict(shape=(2, 5, 7), num_classes=4, train_size=40, test_size=12, seed=3)
    dataset = load_dataset("synthetic", **options)
    assert dataset.input_shape == (2, 5, 7) and dataset.num_classes == 4
    assert dataset.train_x.shape == (40, 2, 5, 7) and dataset.test_x.shape == (12, 2, 5, 7)
    assert torch.bincount(dataset.train_y).tolist() == [10, 10, 10, 10]
    assert load_dataset("synthetic", **{**options, "shape": [2, 5, 7]}) is dataset
    clear_cache()
    again = load_dataset("synthetic", **options)
    assert again is not dataset and torch.equal(again.train_x, dataset.train_x)
    assert torch.equal(again.test_y, dataset.test_y)
    other = load_dataset("synthetic", **{**options, "seed": 4})
    assert not torch.equal(other.train_x, dataset.train_x)


# ---- batching ----------------------------------------------------------------------------------------

def _indexed_dataset(count=250, crop_padding=0, flip=False, classes=5) -> Dataset:
    """Image i is filled with the value i, and normalisation is the identity, so a batch names its samples."""
    spec = dataclasses.replace(DATASETS["synthetic"], crop_padding=crop_padding, flip=flip)
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 3, 3).contiguous()
    labels = torch.arange(count) % classes
    return Dataset(spec, images, labels, images[:10], labels[:10], scale=1.0, mean=[0.0], std=[1.0],
                   num_classes=classes)


def _indices(batches):
    return torch.cat([x[:, 0, 0, 0] for x, _ in batches]).long()


def test_shuffled_epoch_visits_every_sample_once():
    dataset = _indexed_dataset()
    batches = list(dataset.batches(batch_size=64, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [64, 64, 64, 58]
    seen = _indices(batches)
    assert sorted(seen.tolist()) == list(range(250))
    assert seen.tolist() != list(range(250))
    assert torch.equal(torch.cat([y for _, y in batches]), seen % 5)  # labels travel with their images


def test_batches_respect_drop_last_limit_and_order():
    dataset = _indexed_dataset()
    dropped = list(dataset.batches(batch_size=100, drop_last=True))
    assert [len(y) for _, y in dropped] == [100, 100] and len(set(_indices(dropped).tolist())) == 200
    assert len(list(dataset.batches(batch_size=10, limit=3))) == 3
    assert _indices(dataset.batches(batch_size=100, shuffle=False)).tolist() == list(range(250))
    assert _indices(dataset.batches("test", batch_size=4, shuffle=False)).tolist() == list(range(10))
    with pytest.raises(ValueError, match="split"):
        dataset.batches("validation")


def test_same_generator_seed_gives_the_same_batches():
    dataset = load_dataset("synthetic", train_size=300, test_size=10)

    def epoch(seed):
        return list(dataset.batches(batch_size=128, augment=True, generator=torch.Generator().manual_seed(seed)))

    first, second, other = epoch(1), epoch(1), epoch(2)
    assert len(first) == len(second) == 3  # ceil(300 / 128) batches, so the comparison below is not vacuous
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    assert not torch.equal(first[0][1], other[0][1])


def test_augmenting_digits_changes_nothing(digits):
    plain = list(digits.batches(batch_size=500, generator=torch.Generator().manual_seed(5)))
    augmented = list(digits.batches(batch_size=500, augment=True, generator=torch.Generator().manual_seed(5)))
    assert len(plain) == len(augmented) == 3  # ceil(1437 / 500) batches, so the comparison below is not vacuous
    assert all(torch.equal(a[0], b[0]) for a, b in zip(plain, augmented))


@pytest.mark.parametrize("flip", [True, False])
def test_augment_is_a_black_padded_crop_and_a_mirror(flip):
    padding, size = 2, 6
    spec = dataclasses.replace(DATASETS["synthetic"], crop_padding=padding, flip=flip)
    image = (torch.arange(2 * size * size) + 1).to(torch.uint8).view(1, 2, size, size)  # distinct, non-zero
    count = 100
    dataset = Dataset(spec, image.expand(count, -1, -1, -1).contiguous(), torch.zeros(count, dtype=torch.int64),
                      image, torch.zeros(1, dtype=torch.int64), mean=[0.5, 0.4], std=[0.2, 0.3])
    padded = torch.nn.functional.pad(image[0], (padding,) * 4)  # black = raw pixel value 0
    candidates = {}
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy:dy + size, dx:dx + size]
            candidates[(dy, dx, False)] = dataset.normalize(crop)
            candidates[(dy, dx, True)] = dataset.normalize(crop.flip(-1))
    (augmented, _), = dataset.batches(batch_size=count, augment=True, generator=torch.Generator().manual_seed(0))
    assert augmented.shape == (count, 2, size, size)
    seen = set()
    for sample in augmented:
        matches = [key for key, candidate in candidates.items() if torch.allclose(sample, candidate)]
        assert len(matches) == 1, "every augmented image is one crop of the black-padded image, maybe mirrored"
        seen.add(matches[0])
    assert len(seen) > 20  # offsets and flips vary from image to image
    assert {flipped for _, _, flipped in seen} == ({False, True} if flip else {False})
    black = dataset.normalize(torch.zeros(2, 1, 1, dtype=torch.uint8)).flatten()
    assert torch.allclose(black, torch.tensor([-0.5 / 0.2, -0.4 / 0.3]))


def test_class_balanced_batch_has_per_class_of_every_class():
    dataset = _indexed_dataset(count=250, classes=5)
    images, labels = dataset.class_balanced_batch(10, generator=torch.Generator().manual_seed(0))
    assert images.shape == (50, 1, 3, 3)
    assert torch.bincount(labels).tolist() == [10] * 5
    indices = images[:, 0, 0, 0].long()
    assert len(set(indices.tolist())) == 50
    assert torch.equal(indices % 5, labels)
    again, _ = dataset.class_balanced_batch(10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, images)
    other, _ = dataset.class_balanced_batch(10, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other, images)
    with pytest.raises(ValueError, match="class"):
        dataset.class_balanced_batch(51)


def test_to_same_device_is_free(digits):
    assert digits.to("cpu") is digits


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_the_gpu_match_the_cpu(digits):
    on_gpu = digits.to("cuda")
    assert on_gpu.train_x.is_cuda and digits.to("cuda") is on_gpu
    cpu = list(digits.batches(batch_size=256, generator=torch.Generator().manual_seed(0)))
    gpu = list(on_gpu.batches(batch_size=256, generator=torch.Generator().manual_seed(0)))
    assert len(cpu) == len(gpu) == 6  # ceil(1437 / 256) batches
    for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(cpu, gpu):
        assert x_gpu.is_cuda and torch.allclose(x_gpu.cpu(), x_cpu) and torch.equal(y_gpu.cpu(), y_cpu)
    cifar_like = load_dataset("synthetic", train_size=64, test_size=8).to("cuda")
    gpu_generator = torch.Generator(device="cuda").manual_seed(0)
    x, _ = next(cifar_like.batches(batch_size=64, augment=True, generator=gpu_generator))
    assert x.is_cuda and x.shape == (64, 3, 32, 32)


# ---- the load cache is bounded (issue 10, item 12) ---------------------------------------------------------
def small_noise(seed: int, images: int = 20) -> Dataset:
    return load_dataset("synthetic", seed=seed, shape=(3, 32, 32), num_classes=2, train_size=images,
                        test_size=images // 2)


def test_the_load_cache_forgets_the_least_recently_used_beyond_its_count(monkeypatch):
    from pruning_core.engine.data import cache

    clear_cache()
    monkeypatch.setattr(cache, "MAX_DATASETS", 2)
    first, second = small_noise(1), small_noise(2)
    assert small_noise(1) is first           # used again: now the most recently used
    third = small_noise(3)                   # over the count: the second goes
    assert [name for name, _ in cache.cached()] == ["synthetic", "synthetic"]
    assert small_noise(1) is first and small_noise(3) is third
    again = small_noise(2)
    assert again is not second and torch.equal(again.train_x, second.train_x)
    clear_cache()


def test_the_load_cache_counts_bytes_with_device_copies(monkeypatch):
    from pruning_core.engine.data import cache

    clear_cache()
    images = 200                              # 200 + 100 images of 3 x 32 x 32 bytes: 0.88 MiB with the labels
    size = (images + images // 2) * (3 * 32 * 32 + 8)
    monkeypatch.setenv(cache.CACHE_MB_ENV, "2")
    first = small_noise(1, images)
    copy = first.to("meta")                   # a copy on another device (a GPU's, say) is kept with it
    assert first.copies() == [copy] and cache.cached() == [("synthetic", 2 * size)]
    second = small_noise(2, images)           # 3 x 0.88 MiB > 2 MiB: the least recently used goes, with its copy
    assert cache.cached() == [("synthetic", size)] and first.copies() == []
    assert small_noise(2, images) is second and small_noise(1, images) is not first
    monkeypatch.setenv(cache.CACHE_MB_ENV, "1")
    big = small_noise(3, 2 * images)          # bigger than the whole budget: kept alone, as the one in use
    assert cache.cached() == [("synthetic", 2 * size)] and small_noise(3, 2 * images) is big
    clear_cache()
