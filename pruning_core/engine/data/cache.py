"""Loaded datasets kept in memory, one per dataset, data folder and options, least recently used first out.

A server that has loaded a big dataset once (Tiny ImageNet: 1.3 GB, and as much again for its copy on the GPU)
must be able to give it back: the cache keeps at most `MAX_DATASETS` datasets and `max_bytes()` bytes, counting
each dataset's copies on other devices (`Dataset.to`), and forgets the least recently used ones beyond that. The
dataset used last always stays, however big. A forgotten dataset also forgets its device copies, so that memory
is freed as soon as the runs still using them end.
"""

from __future__ import annotations

import collections
import inspect
import os
import pathlib
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: the cache calls whatever loader a spec names
    from pruning_core.engine.data.dataset import Dataset, DatasetSpec

MAX_DATASETS = 4
CACHE_MB_ENV = "PRUNING_DATA_CACHE_MB"
DEFAULT_CACHE_MB = 2048

_cache: collections.OrderedDict[tuple, Dataset] = collections.OrderedDict()   # least recently used first
_cache_lock = threading.Lock()
_key_locks: dict[tuple, threading.Lock] = {}


def max_bytes() -> int:
    """How many bytes of datasets (with their device copies) the cache keeps: $PRUNING_DATA_CACHE_MB megabytes
    (a whole number), else 2048 MB."""
    wanted = os.environ.get(CACHE_MB_ENV, "").strip()
    megabytes = int(wanted) if wanted.isdigit() else DEFAULT_CACHE_MB
    return megabytes * 2**20


def load_cached(spec: DatasetSpec, root: pathlib.Path, download: bool, options: dict[str, Any]) -> Dataset:
    """`spec`'s loader called with `root` (resolved), `download` and `options`, or the Dataset it returned
    when it was called before with the same root and the same options (defaults spelled out or not)."""
    bound = _bind_options(spec, options)
    key = (spec.name, str(root), tuple((name, _hashable(name, value)) for name, value in bound.items()))
    with _cache_lock:
        cached = _use(key)
        if cached is not None:
            return cached
        key_lock = _key_locks.setdefault(key, threading.Lock())
    # One lock per dataset: a second caller waits for the first load instead of downloading again,
    # while loads of other datasets go ahead.
    with key_lock:
        with _cache_lock:
            cached = _use(key)
        if cached is not None:
            return cached
        dataset = spec.loader(spec, root, download, **bound)
        with _cache_lock:
            _cache[key] = dataset
            _evict()
        return dataset


def _use(key: tuple) -> Dataset | None:
    """With the lock held: the cached dataset of `key`, now the most recently used, or None. Copies made on
    other devices since the last use count now, so the cache is trimmed here too."""
    dataset = _cache.get(key)
    if dataset is not None:
        _cache.move_to_end(key)
        _evict()
    return dataset


def _evict() -> None:
    """With the lock held: forget least recently used datasets until the limits hold (keeping the last one)."""
    limit = max_bytes()
    sizes = {key: dataset_bytes(dataset) for key, dataset in _cache.items()}
    total = sum(sizes.values())
    while len(_cache) > 1 and (len(_cache) > MAX_DATASETS or total > limit):
        key, dataset = _cache.popitem(last=False)
        total -= sizes[key]
        dataset.forget_copies()


def dataset_bytes(dataset: Dataset) -> int:
    """The memory a dataset holds: its four tensors and those of its copies on other devices."""
    return sum(tensor.numel() * tensor.element_size()
               for copy in (dataset, *dataset.copies()) for tensor in copy.split("train") + copy.split("test"))


def cached() -> list[tuple[str, int]]:
    """(dataset name, bytes held) of every cached dataset, least recently used first."""
    with _cache_lock:
        return [(key[0], dataset_bytes(dataset)) for key, dataset in _cache.items()]


def clear_cache() -> None:
    """Forget every loaded dataset (e.g. after the files of an image folder changed)."""
    with _cache_lock:
        for dataset in _cache.values():
            dataset.forget_copies()
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
