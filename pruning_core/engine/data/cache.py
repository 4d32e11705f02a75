"""Loaded datasets kept in memory, one per dataset, data folder and options."""

from __future__ import annotations

import inspect
import os
import pathlib
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: the cache calls whatever loader a spec names
    from pruning_core.engine.data.dataset import Dataset, DatasetSpec

_cache: dict[tuple, Dataset] = {}
_cache_lock = threading.Lock()
_key_locks: dict[tuple, threading.Lock] = {}


def load_cached(spec: DatasetSpec, root: pathlib.Path, download: bool, options: dict[str, Any]) -> Dataset:
    """`spec`'s loader called with `root` (resolved), `download` and `options`, or the Dataset it returned
    when it was called before with the same root and the same options (defaults spelled out or not)."""
    bound = _bind_options(spec, options)
    key = (spec.name, str(root), tuple((name, _hashable(name, value)) for name, value in bound.items()))
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
        dataset = spec.loader(spec, root, download, **bound)
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
