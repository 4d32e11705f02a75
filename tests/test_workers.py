"""Worker processes and their supervision: a killed worker fails its run with the reason and is replaced, queued
jobs survive a restart of the server, the worker loop survives what a job or its clean-up raises, two processes
writing to one store lose nothing, and runs and sweeps of processes that died are recovered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import STORE_ONLY_CHILD, wait_for

import pruning_core as pc
from pruning_core.infra import jobs, workers
from pruning_core.infra.jobs import JobManager
from pruning_core.infra.store import INTERRUPTED_ERROR, Store

REPO = Path(__file__).resolve().parents[1]
FAST = {"dataset": "digits", "model": "mlp", "method": "magnitude", "epochs": 1}
LONG = {"dataset": "digits", "model": "mlp", "method": "magnitude", "epochs": 5000}   # minutes: stopped by the test


def training(store: Store, run_id: int) -> bool:
    record = store.get_run(run_id)
    return record["status"] == "running" and record["progress"]["message"].startswith("training")


def test_a_killed_worker_fails_its_run_with_the_reason_and_the_next_job_runs(tmp_path):
    manager = JobManager(Store(tmp_path / "jobs.db"), device="cpu", workers=1)
    try:
        doomed = manager.submit(pc.RunConfig(sparsity=0.5, **LONG))
        following = manager.submit(pc.RunConfig(sparsity=0.6, **FAST))
        assert wait_for(lambda: training(manager.store, doomed))
        (pid,) = manager.worker_pids()
        assert manager.store.get_run(doomed)["owner"]["pid"] == pid
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: manager.store.get_run(following)["status"] == "done", 120)
        failed = manager.store.get_run(doomed)
        assert failed["status"] == "failed"
        assert failed["error"].startswith("interrupted: the worker process running it died (killed by SIGKILL")
        (replacement,) = manager.worker_pids()
        assert replacement != pid and manager.store.get_run(following)["owner"]["pid"] == replacement
    finally:
        manager.shutdown()


def test_queued_jobs_survive_a_server_restart_and_the_interrupted_run_is_failed_at_once(tmp_path):
    path = tmp_path / "jobs.db"
    first = JobManager(Store(path), device="cpu", workers=1)
    interrupted = first.submit(pc.RunConfig(sparsity=0.5, **LONG))
    waiting = first.submit(pc.RunConfig(sparsity=0.6, **FAST))
    assert wait_for(lambda: training(first.store, interrupted))
    first.shutdown(cancel=False, timeout=0)    # the server dies: its worker is killed, nothing is cancelled
    assert first.store.get_run(waiting)["status"] == "queued"
    # A new server: recovery runs when its job manager is created, before anyone submits or looks.
    second = JobManager(Store(path, recover=False), device="cpu", workers=1)
    try:
        record = second.store.get_run(interrupted)
        assert record["status"] == "failed" and record["error"] == INTERRUPTED_ERROR
        assert second.store.get_run(waiting)["status"] in ("queued", "running", "done")   # not failed
        assert second.wait_idle(120)
        assert second.store.get_run(waiting)["status"] == "done"
    finally:
        second.shutdown()


def test_the_worker_loop_survives_failing_jobs_and_a_failing_clean_up(tmp_path):
    store = Store(tmp_path / "jobs.db")
    broken = store.create_run({"dataset": "digits", "model": "no-such-model"}, key="broken", queue=True)
    good = [store.create_run(pc.RunConfig(sparsity=s, **FAST).canonical().to_dict(), key=f"good-{s}", queue=True)
            for s in (0.3, 0.6)]
    cleanups = []

    def cleanup():
        cleanups.append(1)
        raise RuntimeError("CUDA error: the device is busy")   # what torch.cuda.empty_cache() may raise

    # In this process: the loop is what is under test, and it ends when the queue is empty.
    workers.serve(store, device="cpu", cleanup=cleanup, wait=lambda seconds: False)
    assert len(cleanups) == 3
    assert store.get_run(broken)["status"] == "failed" and "no-such-model" in store.get_run(broken)["error"]
    assert [store.get_run(r)["status"] for r in good] == ["done", "done"]


WRITER = textwrap.dedent("""
    import sys, types
    from pathlib import Path
    repo = Path(sys.argv[3])
    for name in ("pruning_core", "pruning_core.infra"):    # only the store package: no torch, a quick start
        package = types.ModuleType(name)
        package.__path__ = [str(repo.joinpath(*name.split(".")))]
        sys.modules[name] = package
    from pruning_core.infra.store import Store
    store = Store(sys.argv[1])
    tag = sys.argv[2]
    for i in range(40):
        run = store.create_run({"seed": i, "writer": tag}, key=f"{tag}-{i}")
        store.start_run(run, "cpu")
        store.add_metrics(run, [{"epoch": e, "test_accuracy": 0.1 * e} for e in range(5)])
        store.update_progress(run, 1, 1, "done")
        store.finish_run(run, {"writer": tag})
""")


def test_two_processes_writing_to_one_store_at_once_lose_no_row(tmp_path):
    path = tmp_path / "shared.db"
    Store(path).close()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(REPO)], stderr=subprocess.PIPE,
                                text=True) for tag in ("a", "b")]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    store = Store(path)
    runs = store.list_runs()
    assert len(runs) == 80 and (runs["status"] == "done").all()
    assert sorted(runs["key"]) == sorted(f"{t}-{i}" for t in "ab" for i in range(40))
    assert all(len(store.metrics(int(r))) == 5 for r in runs["run_id"])


SWEEPER = STORE_ONLY_CHILD + textwrap.dedent("""
    store = Store(sys.argv[1])
    sweep = store.create_sweep({"cells": ["c1", "c2"]}, status="running")   # as pc.sweep does
    done = store.create_run({"seed": 1}, "c1", sweep_id=sweep)
    store.start_run(done, "cpu")
    store.finish_run(done, {})
    running = store.create_run({"seed": 2}, "c2", sweep_id=sweep)
    store.start_run(running, "cpu")
    print(sweep, flush=True)
    time.sleep(60)
""")


def test_the_sweep_of_a_process_that_died_is_settled_and_a_live_ones_is_not(tmp_path):
    path = tmp_path / "sweeps.db"
    child = subprocess.Popen([sys.executable, "-c", SWEEPER, str(path), str(REPO)], stdout=subprocess.PIPE,
                             text=True)
    try:
        sweep = int(child.stdout.readline())
        with Store(path) as again:   # opening the store recovers: the child is alive, so nothing changes
            assert again.get_sweep(sweep)["status"] == "running"
            # Between its cells, pc.sweep has none queued or running: a live driver's sweep is still not settled.
            assert again.settle_sweeps() == []
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    with Store(path) as after:
        assert after.get_sweep(sweep)["status"] == "failed"       # one cell was interrupted
        assert after.list_runs(sweep_id=sweep)["status"].tolist() == ["failed", "done"]


def test_a_queue_sweep_settles_once_its_cells_are_final(tmp_path):
    store = Store(tmp_path / "s.db")
    sweep = store.create_sweep({"cells": ["k1", "k2"]}, status="running", queue=True)
    runs = [store.create_run({"seed": i}, f"k{i}", sweep_id=sweep, queue=True) for i in (1, 2)]
    assert store.settle_sweeps() == []               # cells still queued
    for run in runs:
        store.start_run(run, "cpu")
        store.finish_run(run, {})
    assert store.settle_sweeps() == [sweep] and store.get_sweep(sweep)["status"] == "done"


def test_the_supervisor_recovers_runs_killed_outside_the_dashboard(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "RECOVER_S", 0.2)
    path = tmp_path / "jobs.db"
    manager = JobManager(Store(path), device="cpu", workers=1)
    try:
        # A CLI run in another process, killed mid-run: nobody reopens the store, the supervisor finds it.
        child = subprocess.Popen([sys.executable, "-c", SWEEPER, str(path), str(REPO)], stdout=subprocess.PIPE,
                                 text=True)
        sweep = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        assert wait_for(lambda: manager.store.get_sweep(sweep)["status"] == "failed", 30)
        (cell,) = manager.store.list_runs(sweep_id=sweep, status="failed")["run_id"]
        assert manager.store.get_run(int(cell))["error"] == INTERRUPTED_ERROR
    finally:
        manager.shutdown()


def test_worker_count_comes_from_the_environment_or_the_machine():
    assert workers.worker_count({"PRUNING_WORKERS": "3"}) == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="PRUNING_WORKERS must be a positive whole number"):
            workers.worker_count({"PRUNING_WORKERS": bad})
    if not workers.torch.cuda.is_available():
        assert workers.worker_count({}) == max(1, (os.cpu_count() or 2) - 1)   # one core stays with the server
    assert workers.worker_devices(2, "cpu") == ["cpu", "cpu"]


def test_death_reasons_say_what_happened():
    assert "killed by SIGKILL, perhaps for lack of memory" in workers.death_reason(-9)
    assert "exited with code 3" in workers.death_reason(3)
    assert workers.death_reason(-15).startswith("interrupted: the worker process running it died (killed by SIGTERM")
