"""The run store's queries: round trips, status transitions, listing, sweeps, bad input and concurrency.

Crash recovery, mask files and schema migrations have their own test files."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
from pruning_core.config import RunConfig
from pruning_core.infra.store import SCHEMA_VERSION, InvalidTransitionError, Store, UnknownRunError, recovery


def config(**changes) -> dict:
    return RunConfig().replace(**changes).to_dict()


def key_of(cfg: dict) -> str:
    return RunConfig.from_dict(cfg).key()


def dump(path: Path) -> list[str]:
    """The whole database content, to compare before and after."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db" / "runs.db")
    yield s
    s.close()


def layer_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "name": ["features.0.weight", "features.3.weight", "classifier.weight"],
        "kind": ["conv", "conv", "linear"],
        "shape": [(16, 1, 3, 3), (32, 16, 3, 3), (10, 32)],
        "total": np.array([144, 4608, 320], dtype=np.int64),
        "kept": np.array([20, 300, 0], dtype=np.int64),
        "density": [20 / 144, 300 / 4608, 0.0],
        "effective_kept": np.array([18, 250, 0], dtype=np.int64),
        "effective_density": [18 / 144, 250 / 4608, float("nan")],
        "flops_dense": np.array([9216.0, 294912.0, 320.0], dtype=np.float32),
        "flops_kept": [1280.0, 19200.0, 0.0],
    })


# ---- basics ------------------------------------------------------------------------------
def test_creates_folders_uses_env_var_and_wal(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b" / "env.db"
    monkeypatch.setenv("PRUNING_DB", str(target))
    with Store() as s:
        assert s.path == target.resolve()
        assert target.exists()
        assert s.journal_mode().lower() == "wal"
        assert s.schema_version() == SCHEMA_VERSION
    explicit = tmp_path / "explicit.db"
    with Store(explicit) as s:  # the argument wins over the environment
        assert s.path == explicit.resolve()
    assert explicit.exists()


def test_round_trip_config_summary_timings_metrics(store):
    cfg = config(method="snip", sparsity=0.98, seed=3, iterations=5)
    run = store.create_run(cfg, key_of(cfg), "train")
    store.start_run(run, "cpu")
    rows = [{"step": i, "epoch": i + 1, "train_loss": 2.0 / (i + 1), "test_loss": float("nan") if i == 1 else 1.5 / (i + 1),
             "test_accuracy": 0.5 + 0.1 * i, "images_per_s": 1000.0 + i, "elapsed_s": 0.25 * i, "lr": 0.1 / (i + 1)}
            for i in range(4)]
    store.add_metrics(run, rows[:2])
    store.add_metrics(run, rows[2:])
    summary = {"final_test_accuracy": 0.83, "collapsed_layers": ["classifier.weight"], "effective_density": 0.0123,
               "per_class": {"0": 0.9, "1": 0.7}}
    store.finish_run(run, summary, timings={"prune_s": 1.5, "train_s": 12.25})

    got = store.get_run(run)
    assert got["config"] == cfg
    assert got["key"] == key_of(cfg)
    assert (got["dataset"], got["model"], got["method"], got["sparsity"], got["seed"]) == (
        cfg["dataset"], cfg["model"], "snip", 0.98, 3)
    assert got["summary"] == summary
    assert got["timings"] == {"prune_s": 1.5, "train_s": 12.25}
    assert got["status"] == "done" and got["device"] == "cpu" and got["error"] is None
    assert got["versions"]["python"] and got["versions"]["torch"] == torch.__version__
    assert got["created_at"] <= got["started_at"] <= got["finished_at"]
    assert got["n_metrics"] == 4

    m = store.metrics(run)
    expected = pd.DataFrame(rows)
    assert list(m.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(m, expected, check_dtype=False)
    assert m["step"].dtype == np.int64 and m["epoch"].dtype == np.int64
    assert m["test_loss"].dtype == np.float64 and np.isnan(m["test_loss"][1])


def test_metrics_steps_default_to_next_and_empty_frame(store):
    run = store.create_run(config(), "k", "train")
    empty = store.metrics(run)
    assert len(empty) == 0 and "test_accuracy" in empty.columns
    store.add_metrics(run, [{"epoch": 0.5, "test_accuracy": 0.1}, {"epoch": 1.0, "test_accuracy": 0.2}])
    store.add_metrics(run, [{"epoch": 1.5}])
    m = store.metrics(run)
    assert m["step"].tolist() == [0, 1, 2]
    assert m["epoch"].tolist() == [0.5, 1.0, 1.5] and m["epoch"].dtype == np.float64


def test_layers_round_trip_exactly(store):
    run = store.create_run(config(), "k", "prune")
    assert store.layers(run) is None
    df = layer_frame()
    store.set_layers(run, df)
    out = store.layers(run)
    pd.testing.assert_frame_equal(out, df)
    assert isinstance(out["shape"][0], tuple)
    store.set_layers(run, df.iloc[:1])  # replaces, not appends
    pd.testing.assert_frame_equal(store.layers(run), df.iloc[:1])


# ---- statuses, reuse, listing --------------------------------------------------------------
def test_status_transitions(store):
    run = store.create_run(config(), "k", "train")
    assert store.get_run(run)["status"] == "queued"
    with pytest.raises(InvalidTransitionError):
        store.finish_run(run, {})  # not running yet
    store.start_run(run, "cuda:0")
    with pytest.raises(InvalidTransitionError):
        store.start_run(run, "cpu")
    assert store.update_progress(run, 3, 10, "epoch 3/10") == "running"
    assert store.get_run(run)["progress"] == {"done": 3, "total": 10, "message": "epoch 3/10"}
    store.fail_run(run, "CUDA out of memory")
    got = store.get_run(run)
    assert got["status"] == "failed" and got["error"] == "CUDA out of memory" and got["finished_at"] is not None
    for call in (lambda: store.finish_run(run, {}), lambda: store.cancel_run(run), lambda: store.fail_run(run, "x")):
        with pytest.raises(InvalidTransitionError):
            call()

    cancelled = store.create_run(config(), "k2", "train")
    store.start_run(cancelled, "cpu")
    store.cancel_run(cancelled)
    # a worker learns about the cancellation from update_progress; progress is not changed any more
    assert store.update_progress(cancelled, 5, 10) == "cancelled"
    assert store.get_run(cancelled)["progress"]["done"] == 0
    assert store.get_run(cancelled)["status"] == "cancelled"


def test_find_done_returns_newest_done_run_only(store):
    cfg = config(seed=7)
    k = key_of(cfg)
    assert store.find_done(k) is None
    first = store.create_run(cfg, k, "train")
    store.start_run(first, "cpu")
    store.finish_run(first, {"final_test_accuracy": 0.5})
    failed = store.create_run(cfg, k, "train")
    store.start_run(failed, "cpu")
    store.fail_run(failed, "boom")
    store.create_run(cfg, k, "train")  # queued
    other = store.create_run(config(seed=8), key_of(config(seed=8)), "train")
    store.start_run(other, "cpu")
    store.finish_run(other, {})
    assert store.find_done(k)["id"] == first
    second = store.create_run(cfg, k, "train")
    store.start_run(second, "cpu")
    store.finish_run(second, {"final_test_accuracy": 0.6})
    found = store.find_done(k)
    assert found["id"] == second and found["summary"]["final_test_accuracy"] == 0.6
    assert store.find_done(k, kind="prune") is None


def test_create_run_takes_a_plain_dict_and_the_callers_key(store):
    cfg = RunConfig(method="grasp", sparsity=0.5)
    run = store.create_run(cfg.to_dict(), cfg.key(), kind="prune")
    got = store.get_run(run)
    assert got["key"] == cfg.key() and got["config"] == cfg.to_dict() and got["kind"] == "prune"
    before = dump(store.path)
    # the store does not know how a RunConfig is keyed: the caller converts it and names the key
    with pytest.raises(ValueError, match="config must be a dict, got RunConfig"):
        store.create_run(cfg, cfg.key(), kind="prune")
    with pytest.raises(ValueError, match="key must be a non-empty string, got None"):
        store.create_run(cfg.to_dict(), None, kind="prune")
    assert dump(store.path) == before

def test_list_runs_filters_and_order(store):
    ids = []
    for method, sparsity in (("synflow", 0.9), ("snip", 0.9), ("synflow", 0.99)):
        cfg = config(method=method, sparsity=sparsity)
        run = store.create_run(cfg, key_of(cfg), "train")
        store.start_run(run, "cpu")
        store.finish_run(run, {"final_test_accuracy": sparsity / 2}, {"train_s": 2.0})
        ids.append(run)
    queued = store.create_run(config(), "q", "prune")
    df = store.list_runs()
    assert df["run_id"].tolist() == [queued, *reversed(ids)]
    assert df.loc[df.run_id == ids[2], "final_test_accuracy"].item() == pytest.approx(0.495)
    assert df.loc[df.run_id == ids[2], "train_s"].item() == 2.0
    assert np.isnan(df.loc[df.run_id == queued, "final_test_accuracy"].item())
    assert store.list_runs(method="synflow")["run_id"].tolist() == [queued, ids[2], ids[0]]
    assert store.list_runs(status="queued")["run_id"].tolist() == [queued]
    assert store.list_runs(status=["done"], kind="train", limit=1)["run_id"].tolist() == [ids[2]]
    assert len(store.list_runs(dataset="nope")) == 0 and "final_test_accuracy" in store.list_runs(dataset="nope")


def test_queue_position(store):
    runs = [store.create_run(config(seed=i), f"k{i}", "train") for i in range(4)]
    store.start_run(runs[0], "cpu")
    assert [store.queue_position(r) for r in runs] == [0, 1, 2, 3]
    store.finish_run(runs[0], {})
    store.cancel_run(runs[2])
    assert [store.queue_position(r) for r in runs] == [None, 0, None, 1]


def test_delete_removes_run_metrics_layers_and_mask_file(store):
    run = store.create_run(config(), "k", "prune")
    keep = store.create_run(config(), "k", "prune")
    for r in (run, keep):
        store.add_metrics(r, [{"test_accuracy": 0.1}])
        store.set_layers(r, layer_frame())
        store.save_masks(r, {"w": torch.ones(3, dtype=torch.bool)})
    path = store.masks_dir / f"{store.path.stem}-{run}.npz"
    assert path.exists()
    store.delete_run(run)
    assert not path.exists()
    with pytest.raises(ValueError, match=f"no run with id {run}"):
        store.get_run(run)
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT count(*) FROM metrics WHERE run_id = ?", (run,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM layers WHERE run_id = ?", (run,)).fetchone()[0] == 0
    conn.close()
    assert store.get_run(keep)["n_metrics"] == 1 and store.load_masks(keep) is not None


def test_sweeps(store):
    sweep = store.create_sweep({"methods": ["snip", "synflow"], "sparsities": [0.5, 0.9], "seeds": [0]})
    cells = [store.create_run(config(method=m), key_of(config(method=m)), "sweep_cell", sweep_id=sweep)
             for m in ("snip", "synflow")]
    store.create_run(config(), "other", "train")
    store.start_run(cells[0], "cpu")
    store.finish_run(cells[0], {})
    got = store.get_sweep(sweep)
    assert got["config"]["sparsities"] == [0.5, 0.9] and got["status"] == "queued"
    assert got["cells"]["done"] == 1 and got["cells"]["queued"] == 1 and got["n_cells"] == 2
    assert sorted(store.list_runs(sweep_id=sweep)["run_id"]) == sorted(cells)
    store.set_sweep_status(sweep, "running")
    assert store.list_sweeps()["status"].tolist() == ["running"]
    with pytest.raises(ValueError, match="no sweep"):
        store.create_run(config(), "k", "sweep_cell", sweep_id=sweep + 1)
    store.delete_sweep(sweep)
    assert len(store.list_sweeps()) == 0 and len(store.list_runs()) == 1


def test_export_is_strict_json(store):
    run = store.create_run(config(), "k", "train")
    store.start_run(run, "cpu")
    store.add_metrics(run, [{"epoch": 1, "test_loss": float("nan"), "test_accuracy": 0.4}])
    store.set_layers(run, layer_frame())
    store.finish_run(run, {"final_test_accuracy": 0.4})
    [record] = store.export_runs([run])
    text = json.dumps(record, allow_nan=False)
    back = json.loads(text)
    assert back["config"] == config() and back["summary"]["final_test_accuracy"] == 0.4
    assert back["metrics"][0]["test_loss"] is None and back["metrics"][0]["test_accuracy"] == 0.4
    assert [r["name"] for r in back["layers"]] == layer_frame()["name"].tolist()
    assert back["layers"][1]["shape"] == [32, 16, 3, 3]


# ---- bad input -----------------------------------------------------------------------------
def test_bad_input_raises_and_changes_nothing(store):
    run = store.create_run(config(), "k", "train")
    store.start_run(run, "cpu")
    store.add_metrics(run, [{"test_accuracy": 0.1}])
    sweep = store.create_sweep({"a": 1})
    before = dump(store.path)
    bad_calls = [
        lambda: store.create_run(config(), "k", "train", status="finished"),
        lambda: store.create_run(config(), "", "train"),
        lambda: store.create_run(config(), "k", "train", sweep_id=999),
        lambda: store.create_run({"model": object()}, "k", "train"),
        lambda: store.list_runs(status="bogus"),
        lambda: store.set_sweep_status(sweep, "paused"),
        lambda: store.get_run(999),
        lambda: store.get_run("1"),
        lambda: store.start_run(999, "cpu"),
        lambda: store.fail_run(999, "x"),
        lambda: store.update_progress(999, 1, 2),
        lambda: store.update_progress(run, -1, 2),
        lambda: store.add_metrics(run, [{"test_accuracy": 0.2}, {"test_accuracy": "high"}]),
        lambda: store.add_metrics(999, [{"test_accuracy": 0.2}]),
        lambda: store.set_layers(run, [1, 2]),
        lambda: store.delete_run(999),
        lambda: store.get_sweep(999),
        lambda: store.start_run(run, "cpu"),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()
    with pytest.raises(UnknownRunError) as info:  # an unknown id is also a KeyError, like a dict lookup
        store.get_run(999)
    assert isinstance(info.value, KeyError) and str(info.value) == f"no run with id 999 in {store.path}"
    with pytest.raises(RuntimeError):  # an error inside a transaction rolls back all of it
        with store.transaction():
            store.add_metrics(run, [{"test_accuracy": 0.3}])
            store.update_progress(run, 9, 9)
            raise RuntimeError("boom")
    assert dump(store.path) == before


# ---- concurrency -------------------------------------------------------------------------
def test_readers_always_see_consistent_state(store):
    run = store.create_run(config(), "k", "train")
    store.start_run(run, "cpu")
    batches, per_batch = 40, 5
    errors: list[BaseException] = []
    seen: list[int] = []
    finished = threading.Event()
    read = threading.Event()

    def writer():
        try:
            for b in range(batches):
                if b == batches // 2:
                    # On a busy machine the writer can finish before a reader thread runs at all: halfway,
                    # wait for a read, so that some read falls between the writes.
                    read.clear()
                    read.wait(timeout=10)
                with store.transaction():
                    store.add_metrics(run, [{"test_accuracy": b / batches} for _ in range(per_batch)])
                    store.update_progress(run, (b + 1) * per_batch, batches * per_batch, f"batch {b + 1}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            finished.set()

    def reader():
        try:
            while not finished.is_set():
                with store.snapshot():
                    progress = store.get_run(run)["progress"]["done"]
                    rows = len(store.metrics(run))
                assert rows == progress, f"saw {rows} metric rows but progress {progress}"
                assert rows % per_batch == 0
                seen.append(rows)
                read.set()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert seen, "the readers never read"
    assert len(store.metrics(run)) == batches * per_batch


def test_concurrent_writers_wait_instead_of_failing(tmp_path):
    db = tmp_path / "runs.db"
    stores = [Store(db), Store(db)]  # separate connections, like two processes
    run = stores[0].create_run(config(), "k", "train")
    errors: list[BaseException] = []

    def write(s: Store, tag: int):
        try:
            for i in range(40):
                with s.transaction():
                    s.add_metrics(run, [{"step": tag * 1000 + i, "test_accuracy": 0.5}])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert len(stores[1].metrics(run)) == 80
    for s in stores:
        s.close()


# ---- lookups by key -------------------------------------------------------------------------------------
def test_latest_runs_prefers_done_then_active_then_newest_in_the_order_of_the_keys(store):
    a, b, c = (config(seed=s) for s in (1, 2, 3))
    failed_a = store.create_run(a, key=key_of(a))
    store.fail_run(failed_a, "boom")
    done_a = store.create_run(a, key=key_of(a))
    store.start_run(done_a, "CPU")
    store.finish_run(done_a, {"final_test_accuracy": 0.5})
    store.create_run(a, key=key_of(a))                  # a newer queued run does not hide the done one
    old_b = store.create_run(b, key=key_of(b))
    store.fail_run(old_b, "boom")
    queued_b = store.create_run(b, key=key_of(b))
    failed_c = store.create_run(c, key=key_of(c))
    store.fail_run(failed_c, "boom")
    table = store.latest_runs([key_of(c), "0" * 16, key_of(a), key_of(b), key_of(a)])
    assert table["run_id"].tolist() == [failed_c, done_a, queued_b]
    assert table.loc[1, "final_test_accuracy"] == 0.5
    assert store.latest_runs([]).empty and store.latest_runs([key_of(a)], kind="prune").empty


def test_latest_runs_and_active_run_work_past_the_bound_parameter_chunk(store):
    cells = [config(seed=s) for s in range(1200)]        # more keys than one query binds
    with store.transaction():
        ids = [store.create_run(cell, key=key_of(cell)) for cell in cells]
    keys = [key_of(cell) for cell in reversed(cells)]
    assert store.latest_runs(keys)["run_id"].tolist() == ids[::-1]
    assert store.active_run(key_of(cells[7])) == ids[7]
    store.cancel_run(ids[7])
    assert store.active_run(key_of(cells[7])) is None
    assert store.active_run(key_of(cells[8]), kind="prune") is None


# ---- deletion is one transaction (issue 10, item 4) -------------------------------------------------------
def fail_deleting(path: Path, run_id: int) -> None:
    """A fault half-way through a deletion: SQLite refuses to delete this run's row."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TRIGGER refuse BEFORE DELETE ON runs WHEN old.id = {int(run_id)} "
                 "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    conn.commit()
    conn.close()


def test_deleting_a_sweep_fails_whole_or_deletes_everything(store):
    sweep = store.create_sweep({"methods": ["snip", "synflow"]})
    cells = [store.create_run(config(method=m), key_of(config(method=m)), "sweep_cell", sweep_id=sweep)
             for m in ("snip", "synflow", "magnitude")]
    for cell in cells:
        store.add_metrics(cell, [{"test_accuracy": 0.5}])
        store.save_masks(cell, {"w": torch.tensor([True, False])})
    before = dump(store.path)
    files = sorted(p.name for p in store.masks_dir.iterdir())
    fail_deleting(store.path, cells[1])    # the second cell's row: after the first cell is gone
    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        store.delete_sweep(sweep)
    conn = sqlite3.connect(store.path)
    conn.execute("DROP TRIGGER refuse")
    conn.commit()
    conn.close()
    assert dump(store.path) == before
    assert sorted(p.name for p in store.masks_dir.iterdir()) == files
    assert all(store.load_masks(cell) is not None for cell in cells)
    store.delete_sweep(sweep)
    assert store.list_sweeps().empty and store.list_runs().empty and list(store.masks_dir.iterdir()) == []


def test_a_run_deleted_in_a_rolled_back_transaction_keeps_its_mask_file(store):
    run = store.create_run(config(), "k", "prune")
    store.save_masks(run, {"w": torch.tensor([True, False])})
    with pytest.raises(RuntimeError, match="injected"):
        with store.transaction():
            store.delete_run(run)
            raise RuntimeError("injected")
    assert store.load_masks(run)["w"].tolist() == [True, False]


# ---- a retried attempt (the Ray engine) ------------------------------------------------------
def test_requeue_drops_a_dead_attempts_partial_records_and_the_run_starts_clean(store):
    cfg = config(method="magnitude", sparsity=0.5)
    run_id = store.create_run(cfg, key_of(cfg))
    store.start_run(run_id, "CPU", versions={"python": "3.0", "torch": "9.9"})
    assert store.get_run(run_id)["versions"] == {"python": "3.0", "torch": "9.9"}  # the computing process's
    store.add_metrics(run_id, [{"epoch": 0.5, "train_loss": 2.0}, {"epoch": 1.0, "test_accuracy": 0.4}])
    store.set_layers(run_id, layer_frame())
    mask_file = store.save_masks(run_id, {"w": torch.ones(3, 3, dtype=torch.bool)})
    store.add_timings(run_id, {"prune_s": 1.5})
    store.update_progress(run_id, 3, 10, "training: epoch 1 of 3")

    store.requeue_run(run_id)
    record = store.get_run(run_id)
    assert record["status"] == "queued" and record["started_at"] is None and record["device"] is None
    assert record["n_metrics"] == 0 and not record["has_layers"] and not record["has_masks"]
    assert record["timings"] == {} and record["progress"] == {"done": 0, "total": 0, "message": ""}
    assert store.layers(run_id) is None and not mask_file.exists()
    store.start_run(run_id, "CPU")  # the new attempt records as a first one does
    store.add_metrics(run_id, [{"epoch": 1.0, "test_accuracy": 0.9}])
    assert store.metrics(run_id)["step"].tolist() == [0]
    store.finish_run(run_id, {"final_test_accuracy": 0.9})
    with pytest.raises(InvalidTransitionError, match="only a queued or running run"):
        store.requeue_run(run_id)


def test_a_process_that_refuses_stores_cannot_open_one(tmp_path, monkeypatch):
    monkeypatch.setattr(recovery, "_REFUSED_HERE", "workers never open the store")
    with pytest.raises(RuntimeError, match="workers never open the store"):
        Store(tmp_path / "refused.db")
    assert not (tmp_path / "refused.db").exists()


def test_library_versions_do_not_depend_on_what_this_process_imported(monkeypatch):
    import importlib.metadata
    import sys
    import types

    from pruning_core.infra.store import library_versions

    before = library_versions()
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(__version__="0.29.1+somebuild"))
    after = library_versions()
    assert after == before
    assert after["torchvision"] == importlib.metadata.version("torchvision")
    assert after["torch"] == torch.__version__   # the build tag torch names itself
