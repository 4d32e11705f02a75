"""The real server, killed: `streamlit run app.py` in a subprocess with its own run store; a run trains in its
worker process when the server and its workers are killed with SIGKILL. After a restart the killed run is failed
as interrupted (once a visitor's session creates the job manager, before anything else happens), the job that was
only queued runs to the end, and the run that had finished is intact."""

from __future__ import annotations

import os
import signal

from st_client import Session, free_port, start_server, wait_healthy
from support import wait_for

from pruning_core.config import RunConfig
from pruning_core.infra.store import INTERRUPTED_ERROR, Store

FAST = RunConfig(dataset="digits", model="mlp", method="magnitude", sparsity=0.5, epochs=1).canonical()
LONG = FAST.replace(sparsity=0.6, epochs=5000).canonical()
QUEUED = FAST.replace(sparsity=0.7).canonical()


def visit(port: int) -> None:
    """A visitor opens the landing page (which creates the server's job manager)."""
    session = Session(port)
    try:
        assert session.run(query="dataset=digits&model=mlp&method=magnitude&epochs=1").status == 0
    finally:
        session.close()


def test_a_server_killed_mid_run_fails_that_run_as_interrupted_and_keeps_the_rest(tmp_path):
    path = tmp_path / "runs.db"
    env = {**os.environ, "PRUNING_DB": str(path), "PRUNING_DATA_DIR": str(tmp_path / "data"),
           "PRUNING_WORKERS": "1"}
    store = Store(path, recover=False)
    port = free_port()
    server = start_server(port, env, tmp_path / "server-1.log")
    try:
        wait_healthy(port)
        visit(port)
        # Jobs as the pages submit them: queued in the store, left to the server's workers.
        finished = store.create_run(FAST.to_dict(), FAST.key(), queue=True)
        assert wait_for(lambda: store.get_run(finished)["status"] == "done", 120), \
            (tmp_path / "server-1.log").read_text()[-3000:]
        killed = store.create_run(LONG.to_dict(), LONG.key(), queue=True)
        waiting = store.create_run(QUEUED.to_dict(), QUEUED.key(), queue=True)
        assert wait_for(lambda: store.get_run(killed)["n_metrics"] > 0, 60)   # training in the worker
        worker = store.get_run(killed)["owner"]["pid"]
        assert worker != server.pid
    finally:
        os.killpg(server.pid, signal.SIGKILL)    # the server and its worker, as a crash or an OOM kill would
        server.wait(10)
    assert wait_for(lambda: not os.path.exists(f"/proc/{worker}"), 10)
    assert store.get_run(killed)["status"] == "running"      # nobody has looked yet
    metrics_before = store.metrics(finished)

    port = free_port()
    server = start_server(port, env, tmp_path / "server-2.log")
    try:
        wait_healthy(port)
        visit(port)
        assert wait_for(lambda: store.get_run(killed)["status"] == "failed", 30)
        assert store.get_run(killed)["error"] == INTERRUPTED_ERROR
        assert wait_for(lambda: store.get_run(waiting)["status"] == "done", 120), \
            (tmp_path / "server-2.log").read_text()[-3000:]
        record = store.get_run(finished)
        assert record["status"] == "done" and record["summary"]["final_test_accuracy"] > 0.1
        assert store.metrics(finished).equals(metrics_before)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)

