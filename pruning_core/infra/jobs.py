"""The job manager: one queue for all long work (training, prune jobs, sweeps, sanity checks, lottery tickets,
studies), executed by worker processes (`pruning_core.infra.workers`), never by the web server.

The dashboard keeps ONE JobManager per server (in `st.cache_resource`); every viewer submits to it. A
submission is a queued run in the run store, left to the queue: the store is the single source of truth, so
every viewer sees the same queue positions, a queued job survives a restart of the server, and the workers
write progress and results where the pages read them. The manager's supervisor thread restarts a worker that
died (failing the run it held, with the reason) and recovers runs and sweeps left behind by processes that
died elsewhere. Nothing here knows about Streamlit; the CLI and `pc.sweep` run in their own process, as ever.

With PRUNING_RAY_ADDRESS set (host:port of a Ray cluster, or "local"), train and prune jobs go to Ray instead
(`infra/cluster_jobs.py`: Ray runs them side by side on its GPUs/CPUs, and this process writes their records, so
the store keeps one writer); studies stay with the local worker processes.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pruning_core.config import DENSE, RunConfig
from pruning_core.engine.masks import prunable_weights
from pruning_core.engine.data import DATASETS
from pruning_core.engine.layers import layer_table
from pruning_core.engine.methods import METHODS
from pruning_core.engine.models import MODELS
from pruning_core.infra.runner import masks_reusable
from pruning_core.infra.store import (ACTIVE_STATUSES, QUEUE_TOKEN, InvalidTransitionError, Store, UnknownRunError,
                                      User)
from pruning_core.infra.workers import WorkerPool, worker_count, worker_devices
from pruning_core.studies.tasks import STUDY_KIND

log = logging.getLogger(__name__)

RAY_ADDRESS_ENV = "PRUNING_RAY_ADDRESS"   # host:port of a Ray cluster (or "local"): train and prune jobs go there
SUPERVISE_S = 1.0    # how often the supervisor checks the workers
RECOVER_S = 5.0      # how often it recovers runs and sweeps of processes that died

# What a pruning round costs, fitted to prunes of the MLP, the small CNN and ResNet-20 on digits (1 CPU thread,
# 2026-12-01: within 1.5x): a fixed part, a part per prunable weight (scoring, ranking, masking) and the
# forward and backward passes over the images a round scores (a batch of 256 for data methods, one input for a
# data-free score such as SynFlow's).
ROUND_S = {"cpu": (1e-3, 3e-8, 5e10), "gpu": (2e-3, 1e-9, 2e12)}   # (fixed s, s per weight, FLOP/s)
SCORED_IMAGES = 256


@functools.lru_cache(maxsize=64)
def model_size(model: str, dataset: str) -> tuple[int, int]:
    """(prunable weights, dense FLOPs per image) of a model on a dataset's input shape."""
    spec = DATASETS[dataset]
    net = MODELS[model](spec.input_shape, spec.num_classes, seed=0)
    masks = {name: torch.ones_like(weight, dtype=torch.bool) for name, _, weight in prunable_weights(net)}
    table = layer_table(net, masks, spec.input_shape)
    return int(table["total"].sum()), int(table["flops_dense"].sum())


def prune_seconds(config: RunConfig, gpu: bool = False) -> float:
    """About how long pruning this configuration takes (seconds): model size x rounds x the method's cost per
    round; infinite for methods that train to find their masks (IMP, GemMiner). For deciding what a page may
    do itself and what must go to the job queue."""
    if config.method == DENSE:
        return 0.0
    spec = METHODS[config.method]
    if spec.run is not None:
        return float("inf")
    weights, flops = model_size(config.model, config.dataset)
    fixed, per_weight, flop_rate = ROUND_S["gpu" if gpu else "cpu"]
    images = SCORED_IMAGES if spec.needs_data else (1 if spec.layer_densities is None else 0)
    rounds = config.iterations or spec.default_iterations
    return rounds * (fixed + per_weight * weights + 3 * flops * images / flop_rate)


@dataclass(frozen=True)
class Submission:
    """A submitted run: its id, and whether it is a finished run of the same configuration, reused (nothing
    will be computed) rather than a new or an already active one."""

    run_id: int
    reused: bool


class JobManager:
    """Queue work in `store` and have `workers` worker processes execute it, in order.

    Workers start at the first submission, at once when the store already holds queued jobs (a restarted
    server), or `prewarm_s` seconds after the manager was created (so that a first click finds one ready);
    `prewarm_s=None` waits for work; `autostart=False` leaves starting them to `start_workers` (benchmarks of
    the submission alone). Recovery runs when the manager is created, then every RECOVER_S seconds.
    """

    def __init__(self, store: Store, device: str | None = None, data_root: str | None = None,
                 download: bool = True, workers: int | None = None, prewarm_s: float | None = None,
                 autostart: bool = True, ray_address: str | None = None):
        self.store = store
        self.device = device
        self.data_root = data_root
        self.download = download
        address = ray_address or os.environ.get(RAY_ADDRESS_ENV) or None
        self._dispatch = None
        if address is not None:   # Ray is imported only when a cluster is asked for
            from pruning_core.infra.cluster_jobs import ClusterDispatch

            self._dispatch = ClusterDispatch(store, address, device=device, data_root=data_root, download=download)
        # The Ray engine (RayCells) when jobs go to a cluster, else None; `cluster.status()` is what a sidebar shows.
        self.cluster = self._dispatch.cells if self._dispatch is not None else None
        count = workers if workers is not None else worker_count()
        self.pool = WorkerPool(str(store.path), count, worker_devices(count, device), data_root, download,
                               kinds=[STUDY_KIND] if self._dispatch is not None else None)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._created = time.monotonic()
        self._prewarm_s = prewarm_s
        self._autostart = autostart
        self.recover()
        if autostart and self._queued_jobs():
            self.pool.start()
        self._supervisor = threading.Thread(target=self._supervise, name="pruning-jobs-supervisor", daemon=True)
        self._supervisor.start()

    # ---- submitting ----------------------------------------------------------------------------
    def submit(self, config: RunConfig, kind: str = "train", sweep_id: int | None = None,
               user: User | None = None) -> int:
        """Queue one run and return its id. A finished run of the same configuration is returned instead
        of queued again, and so is one already queued or running (two viewers asking for the same thing
        share one job). `user`: whose run a new one is (a classroom server's student; None: nobody's)."""
        return self.submit_or_reuse(config, kind, sweep_id, user=user).run_id

    def submit_or_reuse(self, config: RunConfig, kind: str = "train", sweep_id: int | None = None,
                        masks: Mapping[str, torch.Tensor] | None = None, user: User | None = None) -> Submission:
        """`submit`, saying whether the run was reused. `masks`: the configuration's masks, already found (the
        page pruned it to show them): saved with a new run, whose worker trains them instead of pruning again
        (`runner.execute`). The configuration is validated, and looked up in the store, here and only here."""
        config = config.canonical().validate()
        handed = masks if masks is not None and masks_reusable(config) else None
        return self._enqueue(config.to_dict(), config.key(), kind, sweep_id, handed, user)

    def submit_job(self, config: Mapping[str, Any], key: str, kind: str, user: User | None = None) -> Submission:
        """Queue work that is not a `RunConfig` (a study: `pruning_core.studies.tasks`), described by a JSON-able
        `config` and named by `key`; reused or shared like a run."""
        return self._enqueue(dict(config), key, kind, None, None, user)

    def submit_sweep(self, cells: Sequence[RunConfig], description: dict[str, Any], user: User | None = None) -> int:
        """Queue every cell of a sweep (reusing finished or active cells) and return the sweep id. Each cell is
        a run of its own in the queue, so the queue's turns between users come round after every cell."""
        cells = [c.canonical().validate() for c in cells]
        with self.store.transaction():
            sweep_id = self.store.create_sweep({**description, "cells": [c.key() for c in cells]},
                                               status="running", queue=True)
            if user is not None:
                self.store.set_sweep_user(sweep_id, user.token, user.name)
        for cell in cells:
            self._enqueue(cell.to_dict(), cell.key(), "train", sweep_id, None, user)
        self.store.settle_sweeps()   # every cell may have been reused: then the sweep is already done
        return sweep_id

    def _enqueue(self, config: dict[str, Any], key: str, kind: str, sweep_id: int | None,
                 masks: Mapping[str, torch.Tensor] | None, user: User | None = None) -> Submission:
        """Queue a validated configuration unless the store has it done or on its way (queued or running)."""
        with self._lock:   # two viewers submitting the same thing at once get one job
            done = self.store.find_done(key, kind=kind)
            if done is not None:
                return Submission(int(done["id"]), reused=True)
            active = self.store.active_run(key, kind=kind)
            if active is not None:
                return Submission(active, reused=False)
            with self.store.transaction():   # the run with its user: no worker claims it before its turn is known
                # With masks, held by this process until they are saved, so no worker starts it before; then queued.
                run_id = self.store.create_run(config, key=key, kind=kind, sweep_id=sweep_id, queue=masks is None)
                if user is not None:
                    self.store.set_run_user(run_id, user.token, user.name)
            if masks is not None:
                try:
                    self.store.save_masks(run_id, masks)
                except (ValueError, OSError):
                    log.warning("masks handed over for run %s not saved: it prunes them again", run_id,
                                exc_info=True)
                self.store.release_to_queue(run_id)
        if self._dispatch is not None and kind != STUDY_KIND:
            self._dispatch.wake()
            return Submission(run_id, reused=False)
        if self._autostart:
            self.pool.start()
        self.pool.wake()
        return Submission(run_id, reused=False)

    def start_workers(self) -> None:
        """Start the worker processes now (they start by themselves on submission unless `autostart` is off)."""
        self.pool.start()

    # ---- control and state ---------------------------------------------------------------------
    def cancel(self, run_id: int) -> None:
        """Cancel a queued run at once, or a running one at its next progress point (its worker sees the status
        in the store)."""
        try:
            self.store.cancel_run(run_id)
        except (InvalidTransitionError, UnknownRunError):
            pass  # already finished, or deleted: nothing to cancel
        if self._dispatch is not None:
            self._dispatch.cancel_run(run_id)

    def cancel_sweep(self, sweep_id: int) -> None:
        for run_id in self.store.list_runs(status=list(ACTIVE_STATUSES), sweep_id=sweep_id)["run_id"]:
            self.cancel(int(run_id))
        try:
            self.store.set_sweep_status(sweep_id, "cancelled")
        except (InvalidTransitionError, ValueError):
            pass

    def pause(self, paused: bool = True) -> None:
        """Pause the queue (no worker starts another run; those running go on) or resume it (a classroom's
        teacher). Kept in the store, where the workers look."""
        self.store.pause_queue(paused)
        if not paused:
            self.pool.wake()
            if self._dispatch is not None:
                self._dispatch.wake()

    def clear_queue(self) -> list[int]:
        """Cancel every run waiting in the queue (those running go on); return their ids."""
        cleared = self.store.clear_queue()
        self.store.settle_sweeps()
        return cleared

    def tracked(self) -> set[int]:
        """Ids of the queue's runs still to finish: waiting for a worker, or held by one of this manager's."""
        pids = self.pool.all_pids
        active = self.store.active_runs()
        held = self._dispatch.held() if self._dispatch is not None else set()   # read after: misses no claim
        return {r["id"] for r in active
                if (r["owner_token"] == QUEUE_TOKEN and r["owner_pid"] is None) or r["owner_pid"] in pids
                or r["id"] in held}

    def worker_pids(self) -> list[int]:
        return self.pool.pids()

    def queue_length(self) -> int:
        """How many runs are queued or running on this machine (the job queue's, and any other process's)."""
        return len(self.store.active_runs())

    def wait_idle(self, timeout: float | None = None, poll_s: float = 0.05) -> bool:
        """Block until none of the queue's runs is queued or running (for scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.tracked():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
        return True

    def shutdown(self, cancel: bool = True, timeout: float | None = 30.0) -> None:
        """Stop the supervisor and the workers; with `cancel`, the queue's runs are cancelled first (without,
        queued runs stay queued for the next server, and a running one is recovered as interrupted). The workers
        are terminated, and killed if they have not ended within `timeout` seconds."""
        if cancel:
            for run_id in self.tracked():
                self.cancel(run_id)
        self._stopping.set()
        if self._dispatch is not None:
            self._dispatch.stop(cancel=cancel)
        self.pool.stop(timeout if timeout is not None else 30.0)
        if threading.current_thread() is not self._supervisor:
            self._supervisor.join(5)

    # ---- supervision and recovery --------------------------------------------------------------
    def recover(self) -> None:
        """Fail the runs whose process died (reason "interrupted"; queued jobs stay queued) and settle sweeps
        with no active cell left or whose process died."""
        try:
            recovered = self.store.recover_orphans()
            if recovered:
                log.warning("runs %s were interrupted (their process died): marked failed", recovered)
            self.store.settle_sweeps()
        except Exception:   # bookkeeping must never end the supervisor (a busy store, a sweep deleted, ...)
            log.exception("could not recover interrupted runs and sweeps")

    def _fail_runs_of(self, pid: int, reason: str) -> None:
        """Fail the runs a dead worker held (running, or claimed and about to start), with the reason."""
        for run in self.store.active_runs():
            if run["owner_pid"] == pid:
                try:
                    self.store.fail_run(run["id"], reason)
                except (InvalidTransitionError, UnknownRunError):
                    pass   # it finished (or was deleted) just before its worker died

    def _queued_jobs(self) -> bool:
        return any(r["status"] == "queued" and r["owner_token"] == QUEUE_TOKEN
                   and (self._dispatch is None or r["kind"] == STUDY_KIND) for r in self.store.active_runs())

    def _supervise(self) -> None:
        last_recovery = time.monotonic()
        while not self._stopping.wait(SUPERVISE_S):
            try:
                for pid, reason in self.pool.check():
                    self._fail_runs_of(pid, reason)
                if self._autostart and not self.pool.started and self._prewarm_s is not None and \
                        time.monotonic() - self._created >= self._prewarm_s:
                    self.pool.start()
                if time.monotonic() - last_recovery >= RECOVER_S:
                    last_recovery = time.monotonic()
                    self.recover()
                    if self._autostart and self._queued_jobs():
                        self.pool.start()
                        self.pool.wake()
            except Exception:
                log.exception("job supervisor: unexpected error; carrying on")
