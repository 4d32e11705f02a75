"""Schema versions: an old file is migrated in place, a newer or foreign one is refused untouched."""

from __future__ import annotations

import json
import sqlite3

import pytest

from pruning_core.config import RunConfig
from pruning_core.infra.store import SCHEMA_VERSION, NewerDatabaseError, Store


def config(**changes) -> dict:
    return RunConfig().replace(**changes).to_dict()


def key_of(cfg: dict) -> str:
    return RunConfig.from_dict(cfg).key()


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
