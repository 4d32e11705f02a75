"""Mask files: bit-packed round trips through the store, atomic writes, two databases in one folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pruning_core.config import RunConfig
from pruning_core.infra.store import Store


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
