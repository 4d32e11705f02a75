"""Crash recovery: runs of a killed, restarted or pid-reusing owner are marked failed; live owners' are not."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import STORE_ONLY_CHILD

from pruning_core.config import RunConfig
from pruning_core.infra.store import INTERRUPTED_ERROR, Store
from pruning_core.infra.store.recovery import process_start

REPO = Path(__file__).resolve().parents[1]


def config(**changes) -> dict:
    return RunConfig().replace(**changes).to_dict()


CHILD = STORE_ONLY_CHILD + textwrap.dedent("""
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

        child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(REPO)], stdout=subprocess.PIPE,
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
        parent_start = process_start(parent)
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
