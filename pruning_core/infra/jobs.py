"""A background job manager: one worker thread runs queued runs one at a time, in order.

Long work (training, sweeps) must never run in a web page's script thread, where any widget change
aborts it. The dashboard keeps ONE JobManager per server (in `st.cache_resource`); every viewer submits
to it, so jobs queue on the single GPU or CPU instead of fighting over it. The run store is the single
source of truth: the manager writes progress there and pages only read it. Nothing here knows about
Streamlit.

With PRUNING_RAY_ADDRESS set (host:port of a Ray cluster, or "local"), the worker thread dispatches every
queued job to the cluster instead (`_work_on_cluster`; Ray runs them side by side on its GPUs/CPUs) and
writes their events into the store itself, so the store keeps one writer; see infra/cluster.py.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

from pruning_core.config import RunConfig
from pruning_core.engine.prune import Cancelled
from pruning_core.infra.runner import describe_error, execute
from pruning_core.infra.store import ACTIVE_STATUSES, InvalidTransitionError, Store

log = logging.getLogger(__name__)

RAY_ADDRESS_ENV = "PRUNING_RAY_ADDRESS"


class JobManager:
    """Queue runs and sweeps in `store` and execute them on a daemon worker thread."""

    def __init__(self, store: Store, device: str | None = None, data_root: str | None = None,
                 download: bool = True, ray_address: str | None = None):
        self.store = store
        self.device = device
        self.data_root = data_root
        self.download = download
        self._queue: collections.deque[tuple[int, RunConfig, str]] = collections.deque()
        self._wake = threading.Condition()
        self._current: int | None = None
        self._stopping = False
        # The Ray engine (RayCells) when jobs go to a cluster, else None; `cluster.status()` is what a sidebar
        # shows (GPUs, CPUs, running cells).
        self.cluster = self._cluster_engine(ray_address or os.environ.get(RAY_ADDRESS_ENV) or None)
        self._remote: set[int] = set()  # run ids handed to the cluster and not yet ended
        target = self._work if self.cluster is None else self._work_on_cluster
        self._thread = threading.Thread(target=target, name="pruning-jobs", daemon=True)
        self._thread.start()

    # ---- submitting ----------------------------------------------------------------------------
    def submit(self, config: RunConfig, kind: str = "train", sweep_id: int | None = None) -> int:
        """Queue one run and return its id. A finished run of the same configuration is returned instead
        of queued again, and so is one already queued or running (two viewers asking for the same thing
        share one job)."""
        config = config.canonical().validate()
        key = config.key()
        with self._wake:
            existing = self._existing(key, kind)
            if existing is not None:
                return existing
            run_id = self.store.create_run(config.to_dict(), key=key, kind=kind, sweep_id=sweep_id)
            self._queue.append((run_id, config, kind))
            self._wake.notify()
            return run_id

    def submit_sweep(self, cells: Sequence[RunConfig], description: dict[str, Any]) -> int:
        """Queue every cell of a sweep (reusing finished or active cells) and return the sweep id."""
        cells = [c.canonical().validate() for c in cells]
        sweep_id = self.store.create_sweep({**description, "cells": [c.key() for c in cells]}, status="running")
        for cell in cells:
            self.submit(cell, "train", sweep_id=sweep_id)
        self._settle_sweeps()  # every cell may have been reused: then the sweep is already done
        return sweep_id

    def _existing(self, key: str, kind: str) -> int | None:
        done = self.store.find_done(key, kind=kind)
        if done is not None:
            return done["id"]
        active = self.store.latest_runs([key], kind=kind)
        if len(active) and active.iloc[0]["status"] in ACTIVE_STATUSES and int(active.iloc[0]["run_id"]) in \
                self.tracked():
            return int(active.iloc[0]["run_id"])
        return None

    # ---- control and state ---------------------------------------------------------------------
    def cancel(self, run_id: int) -> None:
        """Cancel a queued run at once, or a running one at its next progress point."""
        try:
            self.store.cancel_run(run_id)
        except InvalidTransitionError:
            pass  # already finished: nothing to cancel
        with self._wake:
            self._queue = collections.deque(job for job in self._queue if job[0] != run_id)
        if self.cluster is not None:
            self.cluster.cancel_run(run_id)

    def cancel_sweep(self, sweep_id: int) -> None:
        for run_id in self.store.list_runs(status=list(ACTIVE_STATUSES), sweep_id=sweep_id)["run_id"]:
            self.cancel(int(run_id))
        try:
            self.store.set_sweep_status(sweep_id, "cancelled")
        except (InvalidTransitionError, ValueError):
            pass

    def tracked(self) -> set[int]:
        """Ids of the runs this manager will still execute (queued here or running now)."""
        with self._wake:
            ids = {job[0] for job in self._queue} | self._remote
            if self._current is not None:
                ids.add(self._current)
            return ids

    @property
    def current(self) -> int | None:
        return self._current

    def queue_length(self) -> int:
        with self._wake:
            return len(self._queue) + (self._current is not None) + len(self._remote)

    def idle(self) -> bool:
        return self.queue_length() == 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running (for scripts and tests)."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._queue and self._current is None and not self._remote,
                                       timeout)

    def shutdown(self, cancel: bool = True, timeout: float | None = 30.0) -> None:
        """Stop the worker; with `cancel`, queued runs are cancelled and the running one is stopped at its
        next progress point. Waits up to `timeout` seconds for the worker to end."""
        if cancel:
            for run_id in self.tracked():
                self.cancel(run_id)
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ---- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                run_id, config, kind = self._queue.popleft()
                self._current = run_id
            try:
                if self.store.get_run(run_id)["status"] == "queued":
                    execute(config, self.store, kind=kind, run_id=run_id, device=self.device,
                            data_root=self.data_root, download=self.download)
            except Cancelled:
                pass
            except Exception:  # recorded in the store as a failed run with its message
                log.exception("run %s failed", run_id)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()  # give the GPU back to the next job (and other programs)
                try:
                    self._settle_sweeps()
                except Exception:  # bookkeeping must never end the worker (a sweep deleted meanwhile, ...)
                    log.exception("could not update sweep statuses")
                with self._wake:
                    self._current = None
                    self._wake.notify_all()

    # ---- the cluster (PRUNING_RAY_ADDRESS) ----------------------------------------------------------
    def _cluster_engine(self, address: str | None) -> Any:
        if address is None:
            return None
        from pruning_core.infra.cluster import RayCells  # Ray is imported only when a cluster is asked for

        return RayCells(self.store, address=None if address == "local" else address, device=self.device,
                        data_root=self.data_root, download=self.download)

    def _work_on_cluster(self) -> None:
        """The worker thread with a cluster: every queued job goes to Ray at once (Ray queues them on its
        resources; the store's queue positions count them as before), and this thread writes the events of
        running jobs into the store. Ray starts here: a local instance belongs to the thread that starts it."""
        try:
            self.cluster.connect()  # at once, so that the sidebar can show the cluster before the first job
        except Exception:  # tried again at the first job, which fails with the reason if it still cannot
            log.exception("could not join the Ray cluster")
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue or self._remote or self._stopping)
                if self._stopping and not self._remote:
                    break
                jobs = [] if self._stopping else list(self._queue)  # stopping: only wait for what runs
                self._queue.clear()
                self._remote.update(job[0] for job in jobs)
            for run_id, config, kind in jobs:
                try:
                    if self.store.get_run(run_id)["status"] == "queued":
                        self.cluster.submit(config, run_id=run_id, kind=kind)
                        continue
                except Exception as error:  # no cluster at that address, a deleted run, ...
                    log.exception("run %s could not go to the cluster", run_id)
                    try:
                        self.store.fail_run(run_id, describe_error(error))
                    except (InvalidTransitionError, ValueError):
                        pass
                with self._wake:
                    self._remote.discard(run_id)
            try:
                ended = self.cluster.poll(0.2) if self.cluster.pending else []
            except Exception:  # bookkeeping must never end the worker (a run deleted meanwhile, ...)
                log.exception("could not record the cluster's events")
                ended = []
                time.sleep(1.0)  # not a busy loop while, say, the cluster is gone
            if ended:
                try:
                    self._settle_sweeps()
                except Exception:
                    log.exception("could not update sweep statuses")
            with self._wake:
                self._remote -= {cell.run_id for cell in ended}
                if not self.cluster.pending:
                    self._remote.clear()
                self._wake.notify_all()
        self.cluster.close(cancel=False)

    def _settle_sweeps(self) -> None:
        """Mark running sweeps done (or failed) once none of their cells is queued or running. Cells are
        found by key, so a cell reused from an earlier run, or shared with another sweep, counts too."""
        for sweep_id in self.store.list_sweeps(status="running")["sweep_id"]:
            sweep = self.store.get_sweep(int(sweep_id))
            keys = sweep["config"].get("cells", [])
            runs = self.store.latest_runs(keys, kind="train")
            if runs["status"].isin(ACTIVE_STATUSES).any():
                continue
            complete = len(runs) == len(set(keys)) and (runs["status"] == "done").all()
            self.store.set_sweep_status(int(sweep_id), "done" if complete else "failed")
