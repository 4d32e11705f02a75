"""Mask files: a run's masks beside the database, bit-packed and compressed, in step with the database.

A file is ``<db_dir>/masks/<db_name>-<run_id>.npz``: one packed uint8 array per mask (``m0``, ``m1``, ...) and
``__meta__``, the masks' names and shapes as JSON. The run's row names its file, and the row is the truth:

- a save writes the whole file under a temporary name, ``.<file name>.<writer pid>.<writer start>.<random>.tmp``,
  with the writer in the name so that another process can tell whether it is still being written;
- the row is updated in a transaction, and only once that commits is the file moved to its name (replacing the
  one before); a rollback removes the temporary file, so a rolled-back save leaves nothing behind and the masks
  saved before stay as they were;
- opening a store tidies what a killed process left (`clean_leftovers`): a finished temporary file whose name
  the database records is moved into place (the process died between the commit and the move), any other
  temporary file of a writer that is gone is removed, and so is a mask file that no run names any more.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pruning_core.infra.store import recovery

STALE_LEGACY_TMP_S = 3600.0   # a temporary file of an older version (no writer in its name) is left alone this long


def mask_path(masks_dir: Path, db_path: Path, run_id: int) -> Path:
    """Where the masks of run `run_id` of the database at `db_path` live (two databases may share a folder)."""
    return masks_dir / f"{db_path.stem}-{int(run_id)}.npz"


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


def temporary_path(target: Path) -> Path:
    """Where `target` is written before it is moved into place: the writing process is part of the name (and a
    random part keeps two saves of one process apart)."""
    start = recovery.OWN_START or "0"
    return target.parent / f".{target.name}.{os.getpid()}.{start}.{secrets.token_hex(4)}.tmp"


def write_temporary(target: Path, masks: Mapping[str, Any]) -> Path:
    """Write `masks` completely (flushed to disk) to `temporary_path(target)` and return that path; `publish`
    moves it to `target`. A bad mask raises ValueError and writes nothing."""
    names, shapes, arrays = pack_masks(masks)
    meta = np.array(json.dumps({"names": names, "shapes": shapes}))
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    try:
        with open(temporary, "xb") as f:
            np.savez_compressed(f, __meta__=meta, **arrays)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        discard(temporary)
        raise
    return temporary


def publish(temporary: Path, target: Path) -> None:
    """After the commit that names `target`: move the written file into place (replacing the one before)."""
    os.replace(temporary, target)


def discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def write_masks(target: Path, masks: Mapping[str, Any]) -> None:
    """Write `masks` to `target` at once, replacing it (outside any store: a reader never sees half a file)."""
    publish(write_temporary(target, masks), target)


def read_masks(path: Path) -> dict[str, Any]:
    """The masks in a file written by `write_temporary`, as name -> bool torch tensor, in their saved order."""
    import torch  # only readers of masks need torch; the store itself does not

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        masks = {}
        for i, (name, shape) in enumerate(zip(meta["names"], meta["shapes"])):
            count = int(np.prod(shape, dtype=np.int64))
            bits = np.unpackbits(data[f"m{i}"], count=count).astype(bool).reshape(shape)
            masks[name] = torch.from_numpy(bits)
    return masks


def _writer_gone(pid_text: str, start_text: str) -> bool:
    """Whether the process that wrote a temporary file (its pid and start time, "0" if unknown) is gone; the
    start time tells a later process with the same pid (a restarted container) apart."""
    pid, start = int(pid_text), None if start_text == "0" else start_text
    if pid == os.getpid():
        return start is not None and recovery.OWN_START is not None and start != recovery.OWN_START
    return recovery.owner_gone(pid, None, start)


def clean_leftovers(masks_dir: Path, db_path: Path, referenced: Callable[[], Collection[str]],
                    now: float) -> list[str]:
    """Tidy the files of the database at `db_path` that a killed process left in `masks_dir` (see the module
    docstring); `referenced()` reads the file names the database's runs name. Files of other databases, and
    files a live process is writing, are never touched. Returns the names of the files removed or moved into
    place."""
    if not masks_dir.is_dir():
        return []
    # The folder is listed before the names are read: a file listed was moved into place after its commit, so
    # the names read afterwards include it if it is still current (the other order could miss a save that
    # commits in between and remove its file).
    paths = sorted(masks_dir.iterdir())
    names = set(referenced())
    stem = re.escape(db_path.stem)
    current = re.compile(rf"{stem}-\d+\.npz")
    temporary = re.compile(rf"\.({stem}-\d+\.npz)\.(\d+)\.(\d+)\.[0-9a-f]+\.tmp")
    legacy_temporary = re.compile(rf"\.{stem}-\d+-[A-Za-z0-9_]+\.tmp")   # older versions' mkstemp names
    tidied = []
    for path in paths:
        name = path.name
        try:
            match = temporary.fullmatch(name)
            if match is not None:
                target_name, pid, start = match.groups()
                if not _writer_gone(pid, start):
                    continue
                target = masks_dir / target_name
                if target_name in names and not target.exists():
                    os.replace(path, target)   # committed, then killed before the move: finish it
                else:
                    path.unlink()
                tidied.append(name)
            elif legacy_temporary.fullmatch(name) and now - path.stat().st_mtime > STALE_LEGACY_TMP_S:
                path.unlink()
                tidied.append(name)
            elif current.fullmatch(name) and name not in names:
                # A file only gets its name after the commit that records it, so one no run names belongs to a
                # deleted run whose removal was cut short.
                path.unlink()
                tidied.append(name)
        except FileNotFoundError:
            continue   # another process tidied it first
    return tidied
