"""The run store: round trips, status transitions, crash recovery, concurrency and migrations."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
from pruning_core.config import RunConfig
from pruning_core.infra import store as store_module
from pruning_core.infra.store import (INTERRUPTED_ERROR, SCHEMA_VERSION, InvalidTransitionError, NewerDatabaseError,
                                      Store, UnknownRunError)


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


def test_create_run_from_run_config_derives_key(store):
    cfg = RunConfig(method="grasp", sparsity=0.5)
    run = store.create_run(cfg, kind="prune")
    got = store.get_run(run)
    assert got["key"] == cfg.key() and got["config"] == cfg.to_dict() and got["kind"] == "prune"
    run2 = store.create_run(cfg.to_dict(), kind="prune")
    assert store.get_run(run2)["key"] == cfg.key()


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


# ---- crash recovery ----------------------------------------------------------------------
# The child loads store.py alone (not the whole package with torch), to start quickly.
CHILD = textwrap.dedent("""
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("store_under_test", sys.argv[2])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    Store = module.Store
    s = Store(sys.argv[1])
    running = s.create_run({"dataset": "digits", "seed": 1}, "child", "train")
    s.start_run(running, "cpu")
    queued = s.create_run({"dataset": "digits", "seed": 2}, "child2", "train")
    print(running, queued, flush=True)
    time.sleep(60)
""")


def test_killed_process_runs_are_marked_failed(tmp_path):
    db = tmp_path / "runs.db"
    with Store(db) as mine:
        own = mine.create_run(config(), "mine", "train")
        mine.start_run(own, "cpu")
        own_queued = mine.create_run(config(), "mine2", "train")

        child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), store_module.__file__], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline()
            assert line, child.stderr.read()
            running, queued = map(int, line.split())
            assert mine.get_run(running)["owner"]["pid"] == child.pid
            # while the child lives, opening the store leaves its runs alone
            with Store(db) as again:
                assert again.get_run(running)["status"] == "running"
                assert again.get_run(queued)["status"] == "queued"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            child.stdout.close()
            child.stderr.close()

        with Store(db) as after:
            for run in (running, queued):
                got = after.get_run(run)
                assert got["status"] == "failed" and got["error"] == INTERRUPTED_ERROR
                assert got["finished_at"] is not None
            # runs of this live process are untouched
            assert after.get_run(own)["status"] == "running"
            assert after.get_run(own_queued)["status"] == "queued"
            assert after.recover_orphans() == []


def test_restarted_process_and_reused_pid_are_detected(tmp_path):
    with Store(tmp_path / "runs.db") as s:
        restarted, reused, alive = (s.create_run(config(seed=i), f"k{i}", "train") for i in range(3))
        for run in (restarted, reused, alive):
            s.start_run(run, "cpu")
        parent = os.getppid()
        parent_start = store_module._process_start(parent)
        if parent_start is None:
            pytest.skip("no /proc: process start times unknown")
        conn = sqlite3.connect(s.path)
        with conn:
            # same pid as ours but another token: this process was restarted since
            conn.execute("UPDATE runs SET owner_token = 'an-older-process' WHERE id = ?", (restarted,))
            # a live pid that started at another time: the pid was reused by an unrelated process
            conn.execute("UPDATE runs SET owner_pid = ?, owner_start = '1' WHERE id = ?", (parent, reused))
            # a live pid with its real start time: still the owner
            conn.execute("UPDATE runs SET owner_pid = ?, owner_start = ? WHERE id = ?", (parent, parent_start, alive))
        conn.close()
        assert sorted(s.recover_orphans()) == sorted([restarted, reused])
        assert s.get_run(restarted)["error"] == INTERRUPTED_ERROR
        assert s.get_run(alive)["status"] == "running"


# ---- concurrency -------------------------------------------------------------------------
def test_readers_always_see_consistent_state(store):
    run = store.create_run(config(), "k", "train")
    store.start_run(run, "cpu")
    batches, per_batch = 40, 5
    errors: list[BaseException] = []
    seen: list[int] = []
    finished = threading.Event()

    def writer():
        try:
            for b in range(batches):
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


# ---- schema versions ---------------------------------------------------------------------
V1_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    config TEXT NOT NULL, dataset TEXT, model TEXT, method TEXT, sparsity REAL, seed INTEGER, error TEXT,
    device TEXT, versions TEXT, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    timings TEXT NOT NULL DEFAULT '{}', summary TEXT, progress_done REAL NOT NULL DEFAULT 0,
    progress_total REAL NOT NULL DEFAULT 0, progress_message TEXT NOT NULL DEFAULT '',
    owner_pid INTEGER, owner_token TEXT, layers_meta TEXT, masks_file TEXT);
CREATE TABLE metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL, step INTEGER NOT NULL, epoch REAL,
    train_loss REAL, test_loss REAL, test_accuracy REAL, images_per_s REAL, elapsed_s REAL);
CREATE INDEX metrics_run ON metrics (run_id, step);
CREATE TABLE layers (run_id INTEGER NOT NULL, position INTEGER NOT NULL, name TEXT, row TEXT NOT NULL,
    PRIMARY KEY (run_id, position));
PRAGMA user_version = 1;
"""


def test_migrates_a_version_1_database(tmp_path):
    db = tmp_path / "old.db"
    cfg = config(method="snip")
    conn = sqlite3.connect(db)
    conn.executescript(V1_SCHEMA)
    with conn:
        conn.execute("INSERT INTO runs (key, kind, status, config, dataset, model, method, sparsity, seed, created_at, "
                     "started_at, finished_at, summary, timings) VALUES (?, 'train', 'done', ?, ?, ?, ?, ?, ?, 1.0, 2.0, "
                     "3.0, ?, ?)", (key_of(cfg), json.dumps(cfg), cfg["dataset"], cfg["model"], "snip",
                                    cfg["sparsity"], cfg["seed"], json.dumps({"final_test_accuracy": 0.7}),
                                    json.dumps({"train_s": 1.0})))
        conn.executemany("INSERT INTO metrics (run_id, step, epoch, test_accuracy) VALUES (1, ?, ?, ?)",
                         [(0, 1, 0.5), (1, 2, 0.7)])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()

    with Store(db) as s:
        assert s.schema_version() == SCHEMA_VERSION > 1
        assert s.journal_mode().lower() == "wal"
        old = s.find_done(key_of(cfg))
        assert old is not None and old["config"] == cfg and old["sweep_id"] is None
        assert old["summary"] == {"final_test_accuracy": 0.7}
        assert s.metrics(old["id"])["test_accuracy"].tolist() == [0.5, 0.7]
        # what the newer schema adds works on the migrated file
        sweep = s.create_sweep({"seeds": [0, 1]})
        cell = s.create_run(cfg, key_of(cfg), "sweep_cell", sweep_id=sweep)
        s.add_metrics(cell, [{"test_accuracy": 0.1, "lr": 0.05}])
        assert s.metrics(cell)["lr"].tolist() == [0.05]
        assert s.list_runs(sweep_id=sweep)["run_id"].tolist() == [cell]
    with Store(db) as again:  # reopening a current file changes nothing
        assert again.schema_version() == SCHEMA_VERSION and len(again.list_runs()) == 2


def test_newer_database_is_refused_untouched(tmp_path):
    db = tmp_path / "new.db"
    conn = sqlite3.connect(db)
    conn.executescript(f"CREATE TABLE future (x); PRAGMA user_version = {SCHEMA_VERSION + 1};")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(NewerDatabaseError, match="newer version.*upgrade.*PRUNING_DB"):
        Store(db)
    assert db.read_bytes() == before


def test_foreign_database_is_refused(tmp_path):
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE customers (name TEXT);")
    conn.close()
    with pytest.raises(ValueError, match="not a run store"):
        Store(db)


# ---- a retried attempt (the Ray engine) ------------------------------------------------------
def test_requeue_drops_a_dead_attempts_partial_records_and_the_run_starts_clean(store):
    cfg = config(method="magnitude", sparsity=0.5)
    run_id = store.create_run(cfg)
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
    monkeypatch.setattr(store_module, "_REFUSED_HERE", "workers never open the store")
    with pytest.raises(RuntimeError, match="workers never open the store"):
        Store(tmp_path / "refused.db")
    assert not (tmp_path / "refused.db").exists()
