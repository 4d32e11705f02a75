"""The Ray engine: a sweep on Ray records what the in-process engine records, from the driver only;
cancelling, a killed worker (one retry, then a failed cell), the job manager on a cluster, a cluster joined
by address, and a killed driver (rerun recomputes only the missing cells)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from support import wait_for

import pruning_core as pc
from pruning_core.infra import cluster as cl
from pruning_core.infra.jobs import RAY_ADDRESS_ENV, JobManager
from pruning_core.infra.store import Store
from pruning_core.studies.sweep import SweepCellsFailed

REPO = Path(__file__).resolve().parents[1]
FAST = dict(model="mlp", dataset="digits", device="cpu")
TIMING = ("prune_s", "train_s", "images_per_s", "search_s", "elapsed_s", "total_s")


def comparable(store: Store, run_id: int) -> dict:
    """A stored run without what differs between two computations of it (timings, ids, clock times)."""
    record = store.get_run(run_id)
    summary = {k: v for k, v in record["summary"].items() if k not in TIMING}
    metrics = store.metrics(run_id).drop(columns=["images_per_s", "elapsed_s"])
    metrics = metrics.astype(object).where(metrics.notna(), None)  # NaN != NaN
    masks = {name: mask.tolist() for name, mask in store.load_masks(run_id).items()}
    versions = record["versions"]   # the same in a Ray worker as here (library_versions imports nothing)
    return {**{k: record[k] for k in ("key", "kind", "status", "config", "method", "sparsity", "seed", "error",
                                      "device", "progress", "n_metrics", "has_layers", "has_masks")},
            "versions": versions,
            "summary": summary, "timings": sorted(record["timings"]), "metrics": metrics.to_dict("list"),
            "layers": store.layers(run_id).to_dict("list"), "masks": masks}


def test_a_sweep_on_ray_records_the_same_cells_as_in_process_and_only_the_driver_writes(tmp_path, local_ray):
    grid = dict(methods=["synflow", "magnitude"], sparsities=[0.9], seeds=[0], epochs=1, iterations=None, **FAST)
    here = Store(tmp_path / "here.db")
    local = pc.sweep(store=here, **grid).run()
    there = Store(tmp_path / "ray.db")
    run = pc.sweep(store=there, engine="ray", **grid)
    on_ray = run.run()

    columns = [c for c in local.columns if c not in ("prune_s", "train_s", "run_id")]
    assert len(on_ray) == 3
    pd.testing.assert_frame_equal(local[columns], on_ray[columns])
    assert (on_ray["final_test_accuracy"] > 0.1).all()
    for a, b in zip(local["run_id"], on_ray["run_id"], strict=True):
        assert comparable(here, int(a)) == comparable(there, int(b))
    # One writer: every record was written by this process, none by a worker.
    assert {there.get_run(int(r))["owner"]["pid"] for r in on_ray["run_id"]} == {os.getpid()}
    assert there.list_sweeps().iloc[0]["status"] == "done"
    assert not (tmp_path / "masks").exists() or all(p.name.startswith(("here-", "ray-"))
                                                    for p in (tmp_path / "masks").iterdir())

    again = pc.sweep(store=there, engine="ray", **grid).run()  # reuse by key: nothing goes to Ray
    assert again["reused"].all() and again["run_id"].tolist() == on_ray["run_id"].tolist()


def test_a_worker_that_computed_a_cell_cannot_open_a_store(tmp_path, local_ray):
    @ray.remote(num_cpus=1)
    def cell_then_open(hub, path):
        config = pc.RunConfig(model="mlp", dataset="digits", method="magnitude", sparsity=0.5, epochs=1).to_dict()
        result = cl.compute_cell(config, 0, "train", "cpu", hub, None, False)
        try:
            Store(path)
        except RuntimeError as error:
            return result, str(error)
        return result, None

    hub = cl._hub_class().remote()
    result, refusal = ray.get(cell_then_open.remote(hub, str(tmp_path / "worker.db")))
    sent = [event for _, attempt, batch in ray.get(hub.drain.remote()) for event in batch]
    ray.kill(hub)
    assert result["summary"]["final_test_accuracy"] > 0.1
    assert refusal is not None and "only writer" in refusal
    assert not (tmp_path / "worker.db").exists()
    names = [name for _, name, _ in sent]
    assert names[0] == "start" and names[-1] == "finish" and "pruned" in names and "metrics" in names
    # The hub got every event, numbered in order, and the result carries the same ones.
    assert [seq for seq, _, _ in sent] == list(range(len(sent)))
    assert [(seq, name) for seq, name, _ in result["events"]] == [(seq, name) for seq, name, _ in sent]


def test_cancelling_a_ray_sweep_cancels_the_cells_left(tmp_path, local_ray):
    store = Store(tmp_path / "cancel.db")
    rows = []
    run = pc.sweep(store=store, engine="ray", methods=["magnitude", "random"], sparsities=[0.3, 0.6, 0.9],
                   epochs=40, should_stop=lambda: len(rows) >= 1, **FAST)
    with pytest.raises(pc.Cancelled):
        for row in run:
            rows.append(row)
    runs = store.list_runs()
    assert len(runs) == 7 and len(rows) == 1
    assert set(runs["status"]) <= {"done", "cancelled"}
    assert (runs["status"] == "cancelled").sum() >= 4  # two workers: at most two cells besides the first ran
    assert store.list_sweeps().iloc[0]["status"] == "cancelled"
    assert run.cluster.pending == 0
    assert wait_for(lambda: ray.available_resources().get("CPU") == 2.0, 20)  # the cluster is free again


def test_a_killed_worker_is_retried_once_then_its_cell_fails_and_the_sweep_finishes(tmp_path, local_ray):
    store = Store(tmp_path / "kill.db")
    # IMP trains 30 epochs in each of its 5 rounds, so its cell outlives two kills (each right at its start);
    # the baseline and magnitude (30 epochs once, about a second) finish meanwhile.
    run = pc.sweep(store=store, engine="ray", methods=["imp", "magnitude"], sparsities=[0.9], epochs=30, **FAST)
    killed = []

    def kill_imp_twice():
        while len(killed) < 2:
            for cell in run.cluster.status()["running"]:
                if cell["method"] == "imp" and cell["attempt"] == len(killed) + 1:
                    os.kill(cell["pid"], signal.SIGKILL)
                    killed.append(cell["pid"])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_imp_twice, daemon=True)
    killer.start()
    with pytest.raises(SweepCellsFailed) as failure:
        run.run()
    killer.join(5)
    assert len(killed) == 2 and killed[0] != killed[1]
    runs = store.list_runs().set_index("method")
    assert runs.loc["imp", "status"] == "failed"
    assert runs.loc[pc.DENSE, "status"] == "done" and runs.loc["magnitude", "status"] == "done"
    record = store.get_run(int(runs.loc["imp", "run_id"]))
    assert "lost" in record["error"] and "tried 2 time(s)" in record["error"]
    assert record["key"] in failure.value.failures
    assert sorted(run.table["method"]) == sorted([pc.DENSE, "magnitude"])
    assert store.list_sweeps().iloc[0]["status"] == "failed"


def test_the_job_manager_dispatches_to_ray_when_PRUNING_RAY_ADDRESS_is_set(tmp_path, monkeypatch, local_ray):
    monkeypatch.setenv(RAY_ADDRESS_ENV, "local")
    store = Store(tmp_path / "jobs.db")
    manager = JobManager(store, device="cpu")
    try:
        assert manager.cluster is not None
        # Two long runs (cancelled below, never waited for), then two short ones.
        configs = [pc.RunConfig(model="mlp", dataset="digits", method="magnitude", sparsity=s, epochs=e)
                   for s, e in ((0.3, 3000), (0.6, 3000), (0.9, 2), (0.95, 2))]
        ids = [manager.submit(c) for c in configs]
        assert manager.submit(configs[0]) == ids[0]  # an active run of the same key is shared
        # Two CPUs: two cells run side by side in workers, the others wait their turn in the store's queue
        # (not in Ray's: only as many go to the cluster as it has slots).
        assert wait_for(lambda: len(manager.cluster.status()["running"]) == 2), manager.cluster.status()
        info = manager.cluster.status()
        assert info["cpus"] == 2.0 and info["nodes"] == 1 and info["waiting"] == 0
        assert [store.get_run(i)["status"] for i in ids[2:]] == ["queued", "queued"]
        assert {cell["pid"] for cell in info["running"]}.isdisjoint({os.getpid()})
        assert {cell["run_id"] for cell in info["running"]} == set(ids[:2])
        assert store.queue_position(ids[3]) == 3
        manager.cancel(ids[3])  # still waiting: never starts
        # Live curves: metric rows reach the store while the run is still running.
        assert wait_for(lambda: store.get_run(ids[0])["n_metrics"] > 0)
        assert store.get_run(ids[0])["status"] == "running"
        manager.cancel(ids[1])  # running: stopped in its worker, whose CPU goes to the next run
        assert wait_for(lambda: store.get_run(ids[2])["status"] == "done")
        assert store.get_run(ids[0])["status"] == "running"
        manager.cancel(ids[0])
        assert manager.wait_idle(60)
        statuses = [store.get_run(i)["status"] for i in ids]
        assert statuses == ["cancelled", "cancelled", "done", "cancelled"]
        assert store.get_run(ids[3])["started_at"] is None
        assert manager.submit(configs[2]) == ids[2]  # done: reused by key, not queued again
        assert not manager.tracked() and manager.cluster.status()["running"] == []
    finally:
        manager.shutdown()
    monkeypatch.delenv(RAY_ADDRESS_ENV)
    local = JobManager(Store(tmp_path / "local.db"), device="cpu")
    assert local.cluster is None
    local.shutdown()


def test_a_bad_cluster_address_is_a_clear_error_before_anything_runs(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ValueError, match="no Ray cluster answers"):
        cl._check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(ValueError, match="HOST:PORT"):
        cl._check_reachable("nowhere")
    with pytest.raises(ValueError, match="engine"):
        pc.sweep(methods=["magnitude"], sparsities=[0.5], engine="spark", **FAST)
    with pytest.raises(ValueError, match="engine='ray'"):
        pc.sweep(methods=["magnitude"], sparsities=[0.5], address="127.0.0.1:6379", **FAST)
    with pytest.raises(ValueError, match="num_gpus"):
        pc.sweep(methods=["magnitude"], sparsities=[0.5], engine="ray", resources={"num_gpus": -1}, **FAST)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli(env, *argv):
    return subprocess.Popen([sys.executable, "-m", "pruning_core", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**env, "PYTHONPATH": str(REPO)})


def test_the_cli_joins_a_cluster_by_address_and_a_rerun_after_a_killed_driver_computes_only_the_rest(tmp_path):
    port = free_port()
    head_dir = tempfile.mkdtemp(prefix="rh")  # short: Ray's socket paths live under it
    # A token of this test's own (a joining client must name the cluster's token, as on a real cluster).
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             "--node-ip-address=127.0.0.1", f"--temp-dir={head_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        assert wait_for(lambda: head.poll() is None and _listening(port), 60, 0.2), "ray start --head did not come up"
        db = tmp_path / "cluster.db"
        argv = ["sweep", "--engine", "ray", "--address", f"127.0.0.1:{port}", "--methods", "magnitude,random",
                "--sparsities", "0.5", "--model", "mlp", "--epochs", "3", "--device", "cpu", "--db", str(db),
                "--quiet", "--json"]
        first = cli(env, *argv)
        store = None

        def one_cell_done():
            nonlocal store
            if not db.exists():
                return False
            store = store or Store(db, recover=False)
            return (store.list_runs()["status"] == "done").sum() >= 1
        assert wait_for(one_cell_done, 90, 0.02), first.communicate()[1][-2000:]
        first.send_signal(signal.SIGKILL)  # the driver dies with cells queued or running
        first.wait()
        finished = set(store.list_runs(status="done")["key"])
        assert 1 <= len(finished) < 3

        second = cli(env, *argv)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err[-2000:]
        cells = json.loads(out)["cells"]
        assert len(cells) == 3
        assert {c["key"] for c in cells if c["reused"]} == finished  # only the missing cells were computed
        runs = Store(db).list_runs()
        done = runs[runs["status"] == "done"]
        assert len(done) == 3 and set(done["key"]) == {c["key"] for c in cells}
        # The killed driver's unfinished runs are not left queued or running.
        assert set(runs["status"]) <= {"done", "failed"}
    finally:
        head.send_signal(signal.SIGTERM)  # --block: the head stops its Ray processes on the way out
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(head_dir, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_nothing_imports_ray_unless_asked_for(tmp_path):
    code = ("import sys, pruning_core as pc\n"
            "from pruning_core.infra import cli, jobs\n"
            "from pruning_core.infra.store import Store\n"
            f"manager = jobs.JobManager(Store({str(tmp_path / 'plain.db')!r}), device='cpu')\n"
            "pc.sweep(model='mlp', methods=['magnitude'], sparsities=[0.5], epochs=1, baseline=False).run()\n"
            "manager.shutdown()\n"
            "print('ray' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != RAY_ADDRESS_ENV}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_a_lost_event_hub_loses_no_record(tmp_path, local_ray, monkeypatch):
    grid = dict(methods=["magnitude"], sparsities=[0.5, 0.9], epochs=60, **FAST)  # about a second a cell
    here = Store(tmp_path / "here.db")
    local = pc.sweep(store=here, **grid).run()
    there = Store(tmp_path / "ray.db")
    run = pc.sweep(store=there, engine="ray", **grid)
    # The hub dies holding events the driver has not drained yet (as when Ray's memory monitor kills it).
    holding = threading.Event()
    drain = cl.RayCells._drain
    monkeypatch.setattr(cl.RayCells, "_drain", lambda self: [] if holding.is_set() else drain(self))
    killed = []

    def kill_the_hub_mid_cell():
        assert wait_for(lambda: (there.list_runs()["status"] == "running").any(), 60)
        holding.set()
        time.sleep(0.5)  # the workers keep sending: the hub fills up
        killed.append(run.cluster.pending)
        ray.kill(run.cluster._hub, no_restart=False)  # it restarts, empty
        holding.clear()

    killer = threading.Thread(target=kill_the_hub_mid_cell, daemon=True)
    killer.start()
    on_ray = run.run()
    killer.join(10)
    assert killed and killed[0] >= 1  # the hub died while cells computed
    assert on_ray["key"].tolist() == local["key"].tolist()
    for a, b in zip(local["run_id"], on_ray["run_id"], strict=True):
        assert comparable(here, int(a)) == comparable(there, int(b))  # every record whole, nothing twice


def test_the_dashboard_sends_its_jobs_to_ray_when_PRUNING_RAY_ADDRESS_is_set(db, local_ray, monkeypatch):
    """The Prune & train page in an AppTest, its server's job manager on Ray: the sidebar shows the cluster, a
    run's live panel cancels it on the cluster, and a finished run is reused by key."""
    from test_app import assert_clean, open_page, texts

    from dashboard import state

    monkeypatch.setenv(RAY_ADDRESS_ENV, "local")
    long = dict(model="mlp", method="magnitude", sparsity="0.9", epochs="3000", seed="41")
    at = open_page(**long)
    at.button(key="train").click().run()
    assert_clean(at)
    run_id = int(at.query_params["run"])
    cluster = state.manager().cluster
    assert cluster is not None
    assert wait_for(lambda: run_id in {cell["run_id"] for cell in cluster.status()["running"]})
    (cell,) = cluster.status()["running"]
    assert cell["pid"] not in state.manager().worker_pids() + [os.getpid()]  # a Ray worker, not a local one
    assert wait_for(lambda: Store(db).get_run(run_id)["n_metrics"] > 0)  # live records from the Ray worker
    at.run()
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "**:material/hub: Cluster:** local Ray: 1 machine · 2 CPUs" in sidebar and "1 running, 0 waiting" in sidebar
    at.button(key=f"train-cancel-{run_id}").click().run()
    assert Store(db).get_run(run_id)["status"] == "cancelled"
    assert wait_for(lambda: cluster.status()["running"] == [])

    short = {**long, "epochs": "2"}
    at = open_page(**short)
    at.button(key="train").click().run()
    short_id = int(at.query_params["run"])
    assert wait_for(lambda: Store(db).get_run(short_id)["status"] == "done")
    record = Store(db).get_run(short_id)
    assert record["config"]["epochs"] == 2 and record["n_metrics"] > 0
    again = open_page(**short)   # another viewer, same configuration and seed: the stored run, not a new one
    assert_clean(again)
    assert any("Reused from the store" in s for s in texts(again, "success"))
    assert int(again.query_params["run"]) == short_id and len(Store(db).list_runs()) == 2


def test_on_ray_the_queue_still_takes_turns_between_users(tmp_path, monkeypatch, local_ray):
    """Student A queues six long runs, then student B one short one: with two slots on the cluster, B's run
    is handed to Ray at the first free slot, not after A's six (Ray's own queue is first come, first served)."""
    from pruning_core.infra.store import User

    monkeypatch.setenv(RAY_ADDRESS_ENV, "local")
    store = Store(tmp_path / "turns.db")
    manager = JobManager(store, device="cpu")
    try:
        assert manager.cluster.slots() == 2
        alice, bob = User("a" * 32, "A"), User("b" * 32, "B")
        mine = [manager.submit(pc.RunConfig(model="mlp", method="magnitude", sparsity=0.5, epochs=150, seed=s),
                               user=alice) for s in range(6)]
        # B asks once both slots hold A's runs: first come, first served would run B's seventh.
        assert wait_for(lambda: len(manager.cluster.status()["running"]) == 2), manager.cluster.status()
        theirs = manager.submit(pc.RunConfig(model="mlp", method="magnitude", sparsity=0.5, epochs=2, seed=99),
                                user=bob)
        assert wait_for(lambda: store.get_run(theirs)["status"] == "done", timeout=300)
        finished = store.get_run(theirs)["finished_at"]
        done_before = [i for i in mine if (store.get_run(i)["finished_at"] or float("inf")) < finished]
        assert len(done_before) <= 2, done_before   # only the two A's that held the slots, not five or six
    finally:
        manager.shutdown()   # cancels A's runs still queued or running
