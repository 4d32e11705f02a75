"""Mask files: bit-packed round trips through the store, atomic writes, two databases in one folder, a file in step
with its transaction, and what a killed writer left tidied on open."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pruning_core.config import RunConfig
from pruning_core.infra.store import Store, mask_files
from pruning_core.infra.store.recovery import OWN_START


def config(**changes) -> dict:
    return RunConfig().replace(**changes).to_dict()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db" / "runs.db")
    yield s
    s.close()


def test_masks_round_trip_bit_packed(store):
    gen = torch.Generator().manual_seed(0)
    shapes = {"features.0.weight": (16, 1, 3, 3), "features.3.weight": (3, 5, 7), "fc.bias": (13,),
              "odd.single": (1,), "scalar": (), "empty.weight": (0, 4), "big.weight": (257, 129)}
    masks = {name: torch.rand(shape, generator=gen) > 0.7 for name, shape in shapes.items()}
    run = store.create_run(config(), "k", "prune")
    assert store.load_masks(run) is None
    path = store.save_masks(run, masks)
    assert path.parent == store.masks_dir and path.exists()
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]
    with np.load(path) as data:  # bits are packed: ceil(n / 8) bytes per mask
        packed = [data[k] for k in data.files if k != "__meta__"]
        assert sorted(a.size for a in packed) == sorted(-(-int(np.prod(s)) // 8) for s in shapes.values())
        assert all(a.dtype == np.uint8 for a in packed)
    loaded = store.load_masks(run)
    assert list(loaded) == list(masks)
    for name, mask in masks.items():
        assert loaded[name].dtype == torch.bool and loaded[name].shape == mask.shape
        assert torch.equal(loaded[name], mask)
    assert store.get_run(run)["has_masks"]

    # overwriting replaces; 0/1 numeric masks are accepted as bool, other values refused
    store.save_masks(run, {"w": torch.tensor([[1.0, 0.0, 1.0]])})
    assert torch.equal(store.load_masks(run)["w"], torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="0/1"):
        store.save_masks(run, {"w": torch.tensor([0.5, 1.0])})
    assert torch.equal(store.load_masks(run)["w"], torch.tensor([[True, False, True]]))


def test_masks_of_two_databases_in_one_folder_do_not_collide(tmp_path):
    with Store(tmp_path / "a.db") as a, Store(tmp_path / "b.db") as b:
        ra, rb = a.create_run(config(), "k", "prune"), b.create_run(config(), "k", "prune")
        assert ra == rb
        a.save_masks(ra, {"w": torch.tensor([True, False])})
        b.save_masks(rb, {"w": torch.tensor([False, True, True])})
        assert a.load_masks(ra)["w"].tolist() == [True, False]
        assert b.load_masks(rb)["w"].tolist() == [False, True, True]


# ---- leftovers (issue 10, item 4) ------------------------------------------------------------------------------
MASKS = {"w": torch.tensor([True, False, True]), "v": torch.tensor([[False], [True]])}

# Saves masks in another process that kills itself (kill -9) while the file is being written, or after the
# commit that records it but before the file is moved into place.
KILLED_WRITER = """
import os, signal, sys
import torch
from pruning_core.infra.store import Store, mask_files

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[3] == "writing":
    mask_files.os.fsync = die
else:
    mask_files.publish = die
Store(sys.argv[1]).save_masks(int(sys.argv[2]), {"w": torch.tensor([True, False, True]),
                                                  "v": torch.tensor([[False], [True]])})
"""


def files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def same_masks(a, b) -> bool:
    return list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)


def test_a_rolled_back_save_leaves_no_file_and_keeps_the_masks_before(store):
    run = store.create_run(config(), "k", "prune")
    with pytest.raises(RuntimeError, match="injected"):
        with store.transaction():
            store.save_masks(run, MASKS)
            raise RuntimeError("injected")
    assert store.load_masks(run) is None and files_in(store.masks_dir) == []
    before = {"w": torch.tensor([False, False, True])}
    path = store.save_masks(run, before)
    with pytest.raises(RuntimeError, match="injected"):
        with store.transaction():
            store.save_masks(run, MASKS)
            raise RuntimeError("injected")
    assert files_in(store.masks_dir) == [path.name]
    assert same_masks(store.load_masks(run), before)
    with store.transaction():   # a committed save inside a transaction takes its name at the commit
        store.save_masks(run, MASKS)
        assert same_masks(mask_files.read_masks(path), before)
    assert same_masks(store.load_masks(run), MASKS) and files_in(store.masks_dir) == [path.name]


@pytest.mark.parametrize("moment", ["writing", "committed"])
def test_what_a_killed_writer_left_is_tidied_when_the_store_opens(tmp_path, moment):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        run = store.create_run(config(), "k", "prune")
    writer = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path), str(run), moment], timeout=120,
                            capture_output=True, text=True)
    assert writer.returncode == -9, writer.stderr
    masks_dir = tmp_path / "masks"
    (left,) = files_in(masks_dir)
    assert left.startswith(f".runs-{run}.npz.") and left.endswith(".tmp")
    with Store(path) as store:
        if moment == "writing":   # never recorded: the half-written file goes
            assert files_in(masks_dir) == [] and store.load_masks(run) is None
        else:                     # recorded, then killed before the move: the move is finished
            assert files_in(masks_dir) == [f"runs-{run}.npz"] and same_masks(store.load_masks(run), MASKS)


def test_an_old_versions_temporary_file_is_removed_once_stale(tmp_path):
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    stale, fresh = masks_dir / ".runs-3-k2j4_x8a.tmp", masks_dir / ".runs-4-q9w8e7r6.tmp"   # mkstemp's names
    stale.write_bytes(b"half a file")
    fresh.write_bytes(b"being written")
    an_hour_ago = time.time() - mask_files.STALE_LEGACY_TMP_S - 60
    os.utime(stale, (an_hour_ago, an_hour_ago))
    Store(tmp_path / "runs.db").close()
    assert files_in(masks_dir) == [fresh.name]


def test_live_writers_and_other_databases_files_are_left_alone(tmp_path):
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    gone = dead_pid()
    kept = [f".runs-1.npz.{os.getpid()}.{OWN_START or 0}.ab12.tmp",   # this process is writing it
            f".other-1.npz.{gone}.0.ab12.tmp", "other-1.npz",          # another database's
            "runs-1-2.npz", f".runs-1-2.npz.{gone}.0.ab12.tmp"]        # a database named runs-1's
    removed = [f".runs-2.npz.{gone}.0.cd34.tmp", "runs-7.npz"]        # a dead writer's; a deleted run's file
    for name in kept + removed:
        (masks_dir / name).write_bytes(b"x")
    with Store(tmp_path / "runs.db") as store:
        assert files_in(masks_dir) == sorted(kept)
        assert sorted(store.tidy_mask_files()) == []
