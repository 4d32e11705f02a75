"""pc.sweep: the grid, a fair comparison, the dense baseline, collapsed cells, reuse through the store."""

from __future__ import annotations

import math

import pytest

import pruning_core as pc
from pruning_core.infra.store import Store
from pruning_core.studies.sweep import SWEEP_COLUMNS, sweep_cells


def test_cells_cover_the_grid_with_one_baseline_per_seed():
    cells = sweep_cells("mlp", "digits", ["synflow", "snip"], [0.5, 0.9, 0.99], [0, 1], epochs=1)
    assert len(cells) == 2 * (1 + 2 * 3)
    dense = [c for c in cells if c.method == pc.DENSE]
    assert sorted(c.seed for c in dense) == [0, 1]
    assert {(c.method, c.sparsity, c.seed) for c in cells if c.method != pc.DENSE} == {
        (m, s, seed) for m in ("synflow", "snip") for s in (0.5, 0.9, 0.99) for seed in (0, 1)}
    assert len({c.key() for c in cells}) == len(cells)


def test_sparsity_zero_in_the_grid_is_the_baseline_once():
    cells = sweep_cells("mlp", "digits", ["synflow", "snip"], [0.0, 0.9], [0], epochs=1)
    assert [c.method for c in cells].count(pc.DENSE) == 1
    assert len(cells) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"methods": []}, "method"), ({"sparsities": []}, "sparsity"), ({"seeds": []}, "seed"),
    ({"methods": ["nope"]}, "choose one of"), ({"sparsities": [1.2]}, "sparsity"),
])
def test_bad_grids_are_rejected_before_anything_runs(kwargs, message):
    grid = {"methods": ["synflow"], "sparsities": [0.9], "seeds": [0], **kwargs}
    with pytest.raises(ValueError, match=message):
        pc.sweep(model="mlp", dataset="digits", epochs=1, **grid)


def test_sweep_yields_every_cell_and_records_collapse(tmp_path):
    store = Store(tmp_path / "sweep.db")
    run = pc.sweep(model="conv", dataset="digits", methods=["magnitude", "synflow"], sparsities=[0.999],
                   seeds=[0], epochs=2, store=store, device="cpu", iterations=None)
    rows = list(run)
    table = run.table
    assert list(table.columns) == SWEEP_COLUMNS
    assert len(rows) == 3 and len(table) == 3
    by_method = table.set_index("method")
    assert not by_method.loc[pc.DENSE, "collapsed"]
    assert by_method.loc[pc.DENSE, "compression"] == 1.0
    # Magnitude empties the wide middle layers at 10^3; it is still trained, and stays near chance.
    assert by_method.loc["magnitude", "collapsed"]
    assert "conv2.weight" in by_method.loc["magnitude", "collapsed_layers"]
    assert by_method.loc["magnitude", "final_test_accuracy"] < 0.3
    assert not by_method.loc["synflow", "collapsed"]
    assert by_method.loc["synflow", "log_compression"] == pytest.approx(3.0, abs=0.01)
    assert math.isclose(by_method.loc["synflow", "density"], 0.001, rel_tol=0.01)
    sweeps = store.list_sweeps()
    assert len(sweeps) == 1 and sweeps.iloc[0]["status"] == "done"
    assert len(store.list_runs(sweep_id=int(sweeps.iloc[0]["sweep_id"]))) == 3

    again = pc.sweep(model="conv", dataset="digits", methods=["magnitude", "synflow"], sparsities=[0.999],
                     seeds=[0], epochs=2, store=store, device="cpu").run()
    assert again["reused"].all()
    assert again["final_test_accuracy"].tolist() == table["final_test_accuracy"].tolist()
    assert len(store.list_runs()) == 3


def test_sweep_can_be_cancelled_between_cells(tmp_path):
    store = Store(tmp_path / "sweep.db")
    finished = []
    run = pc.sweep(model="mlp", dataset="digits", methods=["magnitude"], sparsities=[0.5, 0.9], epochs=1,
                   store=store, device="cpu", should_stop=lambda: len(finished) >= 1)
    with pytest.raises(pc.Cancelled):
        for row in run:
            finished.append(row)
    assert len(finished) == 1
    assert store.list_sweeps().iloc[0]["status"] == "cancelled"
