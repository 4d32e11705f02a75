"""Mask files: a run's masks beside the database, bit-packed and compressed, written atomically.

A file is ``<db_dir>/masks/<db_name>-<run_id>.npz``: one packed uint8 array per mask (``m0``, ``m1``, ...) and
``__meta__``, the masks' names and shapes as JSON. It is written to a temporary file in the same folder and
renamed over the target, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def mask_path(masks_dir: Path, db_path: Path, run_id: int) -> Path:
    """Where the masks of run `run_id` of the database at `db_path` live (two databases may share a folder)."""
    return masks_dir / f"{db_path.stem}-{run_id}.npz"


def pack_masks(masks: Mapping[str, Any]) -> tuple[list[str], list[list[int]], dict[str, np.ndarray]]:
    """Names, shapes and bit-packed arrays of masks given as name -> bool (or 0/1) tensor or array."""
    names, shapes, arrays = [], [], {}
    for i, (name, mask) in enumerate(masks.items()):
        if not isinstance(name, str):
            raise ValueError(f"mask names must be strings, got {name!r}")
        array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
        if array.dtype != np.bool_:
            if not np.isin(array, (0, 1)).all():
                raise ValueError(f"mask {name!r} must hold only 0/1 or True/False values")
            array = array.astype(bool)
        names.append(name)
        shapes.append(list(array.shape))
        arrays[f"m{i}"] = np.packbits(array.reshape(-1))
    return names, shapes, arrays


def write_masks(target: Path, masks: Mapping[str, Any]) -> None:
    """Write `masks` to `target` atomically (replacing it); a bad mask raises ValueError and writes nothing."""
    names, shapes, arrays = pack_masks(masks)
    meta = np.array(json.dumps({"names": names, "shapes": shapes}))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, __meta__=meta, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_masks(path: Path) -> dict[str, Any]:
    """The masks in a file written by `write_masks`, as name -> bool torch tensor, in their saved order."""
    import torch  # only readers of masks need torch; the store itself does not

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        masks = {}
        for i, (name, shape) in enumerate(zip(meta["names"], meta["shapes"])):
            count = int(np.prod(shape, dtype=np.int64))
            bits = np.unpackbits(data[f"m{i}"], count=count).astype(bool).reshape(shape)
            masks[name] = torch.from_numpy(bits)
    return masks
