"""JobManager: execution in worker processes, one job at a time in order (one worker), sharing, cancelling,
sweeps, masks handed over, and the estimate that decides what a page may prune itself."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch
from support import wait_for

import pruning_core as pc
from pruning_core.infra.jobs import JobManager, Submission, prune_seconds
from pruning_core.infra.store import Store

FAST = dict(dataset="digits", model="mlp", epochs=1)


def test_submitted_run_executes_in_a_worker_process(manager):
    run_id = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.5, **FAST))
    assert manager.store.get_run(run_id)["status"] in ("queued", "running")
    assert manager.wait_idle(120)
    record = manager.store.get_run(run_id)
    assert record["status"] == "done"
    assert record["summary"]["final_test_accuracy"] > 0.1
    # Executed by the manager's worker process, not by a thread of this (the server's) process.
    assert record["owner"]["pid"] != os.getpid()
    assert record["owner"]["pid"] in manager.worker_pids()


def test_runs_execute_one_at_a_time_in_submission_order(manager):
    ids = [manager.submit(pc.RunConfig(method="magnitude", sparsity=s, **FAST)) for s in (0.3, 0.5, 0.7)]
    overlaps = []

    def watch():
        while manager.tracked():
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


def test_queue_positions_count_the_jobs_ahead(manager):
    store = manager.store
    first = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.1, **{**FAST, "epochs": 5000}))
    assert wait_for(lambda: store.get_run(first)["status"] == "running")   # the worker is busy with it
    second = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.2, **FAST))
    third = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.3, **FAST))
    assert (store.queue_position(first), store.queue_position(second), store.queue_position(third)) == (0, 1, 2)
    assert manager.queue_length() == 3
    assert store.get_run(first)["owner"]["pid"] in manager.worker_pids()
    manager.cancel(first)
    assert manager.wait_idle(120)
    assert [store.queue_position(i) for i in (first, second, third)] == [None, None, None]
    assert [store.get_run(i)["status"] for i in (first, second, third)] == ["cancelled", "done", "done"]


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


def test_a_failing_run_is_recorded_and_the_worker_goes_on(tmp_path):
    # A dataset that is not on disk, with downloads off (tests never download): the run fails.
    manager = JobManager(Store(tmp_path / "jobs.db"), device="cpu", workers=1, data_root=str(tmp_path / "no-data"),
                         download=False)
    try:
        bad = manager.submit(pc.RunConfig(dataset="cifar10", model="mlp", method="magnitude", sparsity=0.5, epochs=1))
        good = manager.submit(pc.RunConfig(method="magnitude", sparsity=0.5, **FAST))
        assert manager.wait_idle(120)
        assert manager.store.get_run(good)["status"] == "done"
        failed = manager.store.get_run(bad)
        assert failed["status"] == "failed" and "digits" in failed["error"]
    finally:
        manager.shutdown()


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
def test_handed_over_masks_are_trained_without_pruning_again(manager):
    from pruning_core.infra import runner

    config = pc.RunConfig(method="snip", sparsity=0.9, seed=3, **FAST)
    digits = pc.load_dataset("digits")
    # Masks of another method at the same density: the worker trains exactly these (pruning the configuration
    # again would give SNIP's masks), which shows that it did not prune again.
    other = config.replace(method="random")
    found = runner.prune_with_config(runner.build_model(other, digits), other, digits)
    own = runner.prune_with_config(runner.build_model(config, digits), config, digits)
    assert any(bool((found.masks[n] != own.masks[n]).any()) for n in own.masks)
    submission = manager.submit_or_reuse(config, masks=found.masks)
    assert not submission.reused
    assert manager.wait_idle(120)
    record = manager.store.get_run(submission.run_id)
    assert record["status"] == "done"
    stored = manager.store.load_masks(submission.run_id)
    assert all(bool((stored[n] == found.masks[n]).all()) for n in found.masks)
    assert record["summary"]["kept"] == found.summary()["kept"]
    assert manager.store.layers(submission.run_id)["kept"].tolist() == found.layers["kept"].tolist()
    # Submitted again: the finished run is reused, and said to be.
    again = manager.submit_or_reuse(config, masks=found.masks)
    assert again == Submission(submission.run_id, reused=True)


def test_masks_that_cannot_stand_in_for_pruning_are_not_used(manager):
    # Reinitialising the kept weights is part of pruning this configuration: masks alone do not reproduce it.
    config = pc.RunConfig(method="magnitude", sparsity=0.5, sanity="reinit", **FAST)
    wrong = {name: torch.zeros_like(weight, dtype=torch.bool)
             for name, _, weight in pc.prunable_weights(pc.MODELS["mlp"]((1, 8, 8), 10))}
    run_id = manager.submit_or_reuse(config, masks=wrong).run_id
    assert manager.wait_idle(120)
    record = manager.store.get_run(run_id)
    assert record["status"] == "done" and record["summary"]["kept"] > 0   # pruned for real, not the all-zero masks


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


# ---- what a page may prune itself ------------------------------------------------------------------------
def test_prune_estimate_grows_with_rounds_model_and_method():
    base = pc.RunConfig(dataset="digits", model="conv", method="synflow")
    default = prune_seconds(base)
    # Rounds multiply the cost: a link asking for 100,000 SynFlow rounds costs 1,000 times the default 100.
    assert prune_seconds(base.replace(iterations=100_000)) == pytest.approx(1000 * default)
    assert prune_seconds(base.replace(model="vgg16")) > 10 * default          # 150x the weights
    assert prune_seconds(base.replace(method="magnitude")) < default / 10     # one round, no forward pass
    assert prune_seconds(base.replace(method="imp")) == float("inf")          # trains to find its mask
    assert prune_seconds(base.replace(method="dense", sparsity=0.0)) == 0.0
    # On a GPU the same prune is estimated faster.
    assert prune_seconds(base.replace(model="vgg16"), gpu=True) < prune_seconds(base.replace(model="vgg16")) / 10
