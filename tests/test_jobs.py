"""JobManager: background execution, one job at a time in order, sharing, cancelling, sweeps."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import pruning_core as pc
from pruning_core.infra.jobs import JobManager, Submission
from pruning_core.infra.store import Store

FAST = dict(dataset="digits", model="mlp", epochs=1)


@pytest.fixture()
def manager(tmp_path):
    jobs = JobManager(Store(tmp_path / "jobs.db"), device="cpu")
    yield jobs
    jobs.shutdown()


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_submitted_run_executes_in_the_background(manager):
    run_id = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.5, **FAST))
    assert manager.store.get_run(run_id)["status"] in ("queued", "running")
    assert manager.wait_idle(120)
    record = manager.store.get_run(run_id)
    assert record["status"] == "done"
    assert record["summary"]["final_test_accuracy"] > 0.1


def test_runs_execute_one_at_a_time_in_submission_order(manager):
    ids = [manager.submit(pc.RunConfig(method="magnitude", sparsity=s, **FAST)) for s in (0.3, 0.5, 0.7)]
    overlaps = []

    def watch():
        while not manager.idle():
            running = manager.store.list_runs(status="running")
            overlaps.append(len(running))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert manager.wait_idle(120)
    watcher.join()
    assert max(overlaps, default=0) <= 1
    records = [manager.store.get_run(i) for i in ids]
    assert all(r["status"] == "done" for r in records)
    starts = [r["started_at"] for r in records]
    assert starts == sorted(starts)


def test_queue_positions_count_the_jobs_ahead(tmp_path, monkeypatch):
    import pruning_core.infra.jobs as jobs_module

    gate = threading.Event()
    real_execute = jobs_module.execute

    def held_execute(*args, **kwargs):
        gate.wait(30)  # hold the worker inside the first run so that the others stay queued
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(jobs_module, "execute", held_execute)
    store = Store(tmp_path / "q.db")
    jobs = JobManager(store, device="cpu")
    try:
        first = jobs.submit(pc.RunConfig(method="magnitude", sparsity=0.1, **FAST))
        assert wait_for(lambda: jobs.current == first)
        second = jobs.submit(pc.RunConfig(method="magnitude", sparsity=0.2, **FAST))
        third = jobs.submit(pc.RunConfig(method="magnitude", sparsity=0.3, **FAST))
        assert (store.queue_position(first), store.queue_position(second), store.queue_position(third)) == (0, 1, 2)
        assert jobs.queue_length() == 3
        gate.set()
        assert jobs.wait_idle(120)
        assert [store.queue_position(i) for i in (first, second, third)] == [None, None, None]
    finally:
        gate.set()
        jobs.shutdown()


def test_the_same_configuration_is_shared_not_queued_twice(manager):
    config = pc.RunConfig(method="random", sparsity=0.5, **FAST)
    first = manager.submit(config)
    second = manager.submit(config.replace(schedule=config.schedule))
    assert first == second
    assert manager.wait_idle(120)
    third = manager.submit(config)  # finished: the stored result is reused
    assert third == first
    assert len(manager.store.list_runs()) == 1


def test_cancelling_a_queued_run_means_it_never_runs(manager):
    blocker = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.4, **{**FAST, "epochs": 3}))
    queued = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.6, **FAST))
    manager.cancel(queued)
    assert manager.wait_idle(120)
    assert manager.store.get_run(blocker)["status"] == "done"
    record = manager.store.get_run(queued)
    assert record["status"] == "cancelled" and record["started_at"] is None


def test_cancelling_a_running_run_stops_it(manager):
    run_id = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.5, **{**FAST, "epochs": 50}))
    assert wait_for(lambda: (manager.store.get_run(run_id)["progress"]["message"] or "").startswith("training"))
    manager.cancel(run_id)
    assert manager.wait_idle(60)
    record = manager.store.get_run(run_id)
    assert record["status"] == "cancelled"
    assert len(manager.store.metrics(run_id)) < 50


def test_a_failing_run_is_recorded_and_the_worker_goes_on(manager, tmp_path):
    # A dataset that is not on disk, with downloads off (tests never download): the run fails.
    manager.data_root, manager.download = str(tmp_path / "no-data"), False
    bad = manager.submit(pc.RunConfig(dataset="cifar10", model="mlp", method="magnitude", sparsity=0.5, epochs=1))
    good = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.5, **FAST))
    assert manager.wait_idle(120)
    assert manager.store.get_run(good)["status"] == "done"
    failed = manager.store.get_run(bad)
    assert failed["status"] == "failed" and "digits" in failed["error"]


def test_sweep_cells_run_and_the_sweep_finishes(manager):
    from pruning_core.studies.sweep import sweep_cells

    cells = sweep_cells("mlp", "digits", ["magnitude"], [0.5, 0.9], [0], epochs=1)
    sweep_id = manager.submit_sweep(cells, {"model": "mlp"})
    assert manager.wait_idle(120)
    sweep = manager.store.get_sweep(sweep_id)
    assert sweep["status"] == "done" and sweep["cells"]["done"] == len(cells)
    table = manager.store.latest_runs(sweep["config"]["cells"])
    assert table["status"].tolist() == ["done"] * len(cells)


def test_bad_config_is_rejected_at_submit(manager):
    with pytest.raises(ValueError, match="sparsity"):
        manager.submit(pc.RunConfig(sparsity=2.0, **FAST))
    assert manager.store.list_runs().empty


def test_a_sweep_of_reused_cells_is_done_at_once(manager):
    from pruning_core.studies.sweep import sweep_cells

    cells = sweep_cells("mlp", "digits", ["magnitude"], [0.5], [0], epochs=1)
    first = manager.submit_sweep(cells, {"model": "mlp"})
    assert manager.wait_idle(120)
    again = manager.submit_sweep(cells, {"model": "mlp"})
    assert manager.store.get_sweep(first)["status"] == "done"
    assert manager.store.get_sweep(again)["status"] == "done"
    assert len(manager.store.list_runs()) == len(cells)


# ---- masks handed over with a submission ----------------------------------------------------------------
def counting_prunes(monkeypatch) -> list[str]:
    """Record the method of every pc.prune the runner calls (the page's and the worker's pruning go through it)."""
    from pruning_core.infra import runner

    calls: list[str] = []
    real = runner.prune

    def prune(model, method, *args, **kwargs):
        calls.append(method)
        return real(model, method, *args, **kwargs)

    monkeypatch.setattr(runner, "prune", prune)
    return calls


def test_handed_over_masks_are_trained_without_pruning_again(manager, monkeypatch):
    from pruning_core.infra import runner

    config = pc.RunConfig(method="snip", sparsity=0.9, seed=3, **FAST)
    digits = pc.load_dataset("digits")
    found = runner.prune_with_config(runner.build_model(config, digits), config, digits)   # as the page prunes
    calls = counting_prunes(monkeypatch)
    submission = manager.submit_or_reuse(config, masks=found.masks)
    assert not submission.reused
    assert manager.wait_idle(120)
    record = manager.store.get_run(submission.run_id)
    assert record["status"] == "done" and calls == []          # trained the masks it was given
    stored = manager.store.load_masks(submission.run_id)
    assert all(bool((stored[n] == found.masks[n]).all()) for n in found.masks)
    assert record["summary"]["kept"] == found.summary()["kept"]
    assert manager.store.layers(submission.run_id)["kept"].tolist() == found.layers["kept"].tolist()
    # Submitted again: the finished run is reused, and said to be.
    again = manager.submit_or_reuse(config, masks=found.masks)
    assert again == Submission(submission.run_id, reused=True) and calls == []


def test_masks_that_cannot_stand_in_for_pruning_are_not_used(manager, monkeypatch):
    # Reinitialising the kept weights is part of pruning this configuration: masks alone do not reproduce it.
    config = pc.RunConfig(method="magnitude", sparsity=0.5, sanity="reinit", **FAST)
    wrong = {name: torch.zeros_like(weight, dtype=torch.bool)
             for name, _, weight in pc.prunable_weights(pc.MODELS["mlp"]((1, 8, 8), 10))}
    calls = counting_prunes(monkeypatch)
    run_id = manager.submit_or_reuse(config, masks=wrong).run_id
    assert manager.wait_idle(120)
    assert calls == ["magnitude"]
    assert manager.store.get_run(run_id)["summary"]["kept"] > 0   # pruned for real, not the all-zero masks


def test_a_submission_is_validated_and_looked_up_once(manager, monkeypatch):
    # The job manager checks the configuration and asks the store for a finished run when it is submitted; its
    # worker then runs it without checking or looking it up again.
    validations, lookups = [], []
    validate, find_done = pc.RunConfig.validate, manager.store.find_done
    monkeypatch.setattr(pc.RunConfig, "validate", lambda self: validations.append(self.key()) or validate(self))
    monkeypatch.setattr(manager.store, "find_done", lambda *a, **k: lookups.append(a) or find_done(*a, **k))
    config = pc.RunConfig(method="magnitude", sparsity=0.5, seed=4, **FAST)
    run_id = manager.submit(config)
    assert manager.wait_idle(120)
    assert manager.store.get_run(run_id)["status"] == "done"
    assert validations == [config.key()] and lookups == [(config.key(),)]
