"""A classroom server's queue: runs and sweeps record whose they are, the queue takes turns between users (a
sweep yields after each cell), a teacher can pause, resume and clear it, and old files migrate with no user."""

from __future__ import annotations

import json
import sqlite3


import pruning_core as pc
from pruning_core.config import RunConfig
from pruning_core.infra.store import SCHEMA_VERSION, Store, User
from pruning_core.infra.store.schema import MIGRATIONS

ALICE, BOB = User("a" * 32, "Alice"), User("b" * 32, "Bob")
FAST = dict(dataset="digits", model="mlp", epochs=1)


def queued(store: Store, user: User | None, sparsity: float) -> int:
    config = RunConfig(method="random", sparsity=sparsity, **FAST).to_dict()
    with store.transaction():
        run_id = store.create_run(config, key=f"k{sparsity}", queue=True)
        if user is not None:
            store.set_run_user(run_id, user.token, user.name)
    return run_id


def claim_all(store: Store) -> list[int]:
    claimed = []
    while (run_id := store.claim_queued()) is not None:
        claimed.append(run_id)
    return claimed


def test_the_queue_takes_turns_between_users_not_submission_order(tmp_path):
    with Store(tmp_path / "q.db") as store:
        a1, a2, a3 = (queued(store, ALICE, s) for s in (0.1, 0.2, 0.3))
        b1, b2 = (queued(store, BOB, s) for s in (0.4, 0.5))
        # The order the queue will take them, told to whoever waits: Bob's first run goes right after Alice's first.
        assert [store.queue_position(i) for i in (a1, b1, a2, b2, a3)] == [0, 1, 2, 3, 4]
        assert claim_all(store) == [a1, b1, a2, b2, a3]


def test_a_user_who_arrives_later_is_served_next(tmp_path):
    with Store(tmp_path / "q.db") as store:
        sweep = [queued(store, ALICE, s / 100) for s in range(1, 21)]   # Alice's 20 cells
        assert store.claim_queued() == sweep[0]
        single = queued(store, BOB, 0.5)
        assert store.queue_position(single) == 1   # only Alice's running cell is ahead of it, not her 19 others
        assert store.claim_queued() == single
        assert claim_all(store) == sweep[1:]


def test_runs_without_a_user_are_served_first_in_first_out(tmp_path):
    with Store(tmp_path / "q.db") as store:
        ids = [queued(store, None, s) for s in (0.1, 0.2, 0.3)]
        assert claim_all(store) == ids


def test_a_paused_queue_starts_nothing_until_resumed_and_clearing_cancels_only_waiting_runs(tmp_path):
    with Store(tmp_path / "q.db") as store:
        first, second, third = (queued(store, ALICE, s) for s in (0.1, 0.2, 0.3))
        assert store.claim_queued() == first
        store.start_run(first, "cpu")
        store.pause_queue()
        assert store.queue_paused() and store.claim_queued() is None
        with Store(tmp_path / "q.db", recover=False) as worker:   # another process (a worker) sees the pause too
            assert worker.queue_paused() and worker.claim_queued() is None
        store.pause_queue(False)
        assert not store.queue_paused()
        assert store.clear_queue() == [second, third]
        assert [store.get_run(i)["status"] for i in (first, second, third)] == ["running", "cancelled", "cancelled"]
        assert store.claim_queued() is None


def test_users_are_recorded_on_runs_and_sweeps_but_never_exported(tmp_path):
    with Store(tmp_path / "q.db") as store:
        run_id = queued(store, ALICE, 0.5)
        sweep_id = store.create_sweep({"cells": []}, queue=True)
        store.set_sweep_user(sweep_id, BOB.token, BOB.name)
        assert store.run_user(run_id) == ALICE.token and store.sweep_user(sweep_id) == BOB.token
        assert store.get_run(run_id)["user"] == {"token": ALICE.token, "name": "Alice"}
        assert store.list_runs()["user_name"].tolist() == ["Alice"]
        assert store.list_sweeps()["user_name"].tolist() == ["Bob"]
        assert store.active_count(ALICE.token) == 1 and store.active_count(BOB.token) == 0
        assert store.active_count() == 1
        exported = store.export_runs([run_id])[0]
        assert exported["user"] == {"name": "Alice"}   # the token is the key to her runs: it stays on the server


def test_limits_a_teacher_set_are_kept_in_the_store(tmp_path):
    with Store(tmp_path / "q.db") as store:
        assert store.setting("limits", {}) == {}
        store.set_setting("limits", {"max_epochs": 7})
        with Store(tmp_path / "q.db", recover=False) as other:
            assert other.setting("limits") == {"max_epochs": 7}
        store.set_setting("limits", None)
        assert store.setting("limits", "gone") == "gone"


def test_a_version_3_file_migrates_and_its_runs_belong_to_nobody(tmp_path):
    db = tmp_path / "v3.db"
    conn = sqlite3.connect(db)
    for step in MIGRATIONS[:3]:
        for statement in step:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    cfg = RunConfig(method="snip", **FAST).to_dict()
    conn.execute("INSERT INTO runs (key, kind, status, config, created_at) VALUES ('old', 'train', 'done', ?, 1.0)",
                 (json.dumps(cfg),))
    conn.commit()
    conn.close()
    with Store(db) as store:
        assert store.schema_version() == SCHEMA_VERSION == 4
        assert store.run_user(1) is None and store.get_run(1)["user"] == {"token": None, "name": None}


def test_a_students_single_run_finishes_before_another_students_long_sweep(manager):
    from pruning_core.studies.sweep import sweep_cells

    cells = sweep_cells("mlp", "digits", ["magnitude", "random"], [0.05 * i for i in range(1, 11)], [0], epochs=1)[:20]
    sweep_id = manager.submit_sweep(cells, {"model": "mlp"}, user=ALICE)
    single = manager.submit(pc.RunConfig(method="snip", sparsity=0.5, **FAST), user=BOB)
    assert manager.wait_idle(300)
    store = manager.store
    sweep_runs = store.list_runs(sweep_id=sweep_id)
    assert len(sweep_runs) == 20 and set(sweep_runs["status"]) == {"done"}
    assert set(sweep_runs["user_name"]) == {"Alice"} and store.sweep_user(sweep_id) == ALICE.token
    bob = store.get_run(single)
    assert bob["status"] == "done" and bob["user"]["name"] == "Bob"
    # Bob waited for at most the one cell that was running when he asked, not for Alice's 20.
    started_before_bob = (sweep_runs["started_at"] < bob["started_at"]).sum()
    assert started_before_bob <= 2
    assert bob["finished_at"] < sweep_runs["finished_at"].max()


def test_a_csv_export_of_runs_keeps_the_users_name_and_leaves_out_their_token(tmp_path):
    from pruning_core.presentation.units import export_csv

    with Store(tmp_path / "q.db") as store:
        queued(store, ALICE, 0.5)
        text = export_csv(store.list_runs())
    assert "Alice" in text and ALICE.token not in text and "user_token" not in text
