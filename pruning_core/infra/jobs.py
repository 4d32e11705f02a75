"""A background job manager: one worker thread runs queued runs one at a time, in order.

Long work (training, sweeps) must never run in a web page's script thread, where any widget change
aborts it. The dashboard keeps ONE JobManager per server (in `st.cache_resource`); every viewer submits
to it, so jobs queue on the single GPU or CPU instead of fighting over it. The run store is the single
source of truth: the manager writes progress there and pages only read it. Nothing here knows about
Streamlit.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pruning_core.config import RunConfig
from pruning_core.engine.prune import Cancelled
from pruning_core.infra.runner import execute, masks_reusable
from pruning_core.infra.store import ACTIVE_STATUSES, InvalidTransitionError, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """A submitted run: its id, and whether it is a finished run of the same configuration, reused (nothing
    will be computed) rather than a new or an already active one."""

    run_id: int
    reused: bool


class JobManager:
    """Queue runs and sweeps in `store` and execute them on a daemon worker thread."""

    def __init__(self, store: Store, device: str | None = None, data_root: str | None = None,
                 download: bool = True):
        self.store = store
        self.device = device
        self.data_root = data_root
        self.download = download
        self._queue: collections.deque[tuple[int, RunConfig, str]] = collections.deque()
        self._wake = threading.Condition()
        self._current: int | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="pruning-jobs", daemon=True)
        self._thread.start()

    # ---- submitting ----------------------------------------------------------------------------
    def submit(self, config: RunConfig, kind: str = "train", sweep_id: int | None = None) -> int:
        """Queue one run and return its id. A finished run of the same configuration is returned instead
        of queued again, and so is one already queued or running (two viewers asking for the same thing
        share one job)."""
        return self.submit_or_reuse(config, kind, sweep_id).run_id

    def submit_or_reuse(self, config: RunConfig, kind: str = "train", sweep_id: int | None = None,
                        masks: Mapping[str, torch.Tensor] | None = None) -> Submission:
        """`submit`, saying whether the run was reused. `masks`: the configuration's masks, already found (the
        page pruned it to show them): saved with a new run, whose worker trains them instead of pruning again
        (`runner.execute`). The configuration is validated, and looked up in the store, here and only here."""
        return self._enqueue(config.canonical().validate(), kind, sweep_id, masks)

    def submit_sweep(self, cells: Sequence[RunConfig], description: dict[str, Any]) -> int:
        """Queue every cell of a sweep (reusing finished or active cells) and return the sweep id."""
        cells = [c.canonical().validate() for c in cells]
        sweep_id = self.store.create_sweep({**description, "cells": [c.key() for c in cells]}, status="running")
        for cell in cells:
            self._enqueue(cell, "train", sweep_id)
        self._settle_sweeps()  # every cell may have been reused: then the sweep is already done
        return sweep_id

    def _enqueue(self, config: RunConfig, kind: str, sweep_id: int | None,
                 masks: Mapping[str, torch.Tensor] | None = None) -> Submission:
        """Queue a validated, canonical configuration unless the store has it done or this manager runs it."""
        key = config.key()
        with self._wake:
            done = self.store.find_done(key, kind=kind)
            if done is not None:
                return Submission(int(done["id"]), reused=True)
            active = self.store.latest_runs([key], kind=kind)
            if len(active) and active.iloc[0]["status"] in ACTIVE_STATUSES and int(active.iloc[0]["run_id"]) in \
                    self.tracked():
                return Submission(int(active.iloc[0]["run_id"]), reused=False)
            run_id = self.store.create_run(config.to_dict(), key=key, kind=kind, sweep_id=sweep_id)
            if masks is not None and masks_reusable(config):
                try:
                    self.store.save_masks(run_id, masks)   # before the worker can see the run
                except (ValueError, OSError):
                    log.warning("masks handed over for run %s not saved: it prunes them again", run_id,
                                exc_info=True)
            self._queue.append((run_id, config, kind))
            self._wake.notify()
            return Submission(run_id, reused=False)

    # ---- control and state ---------------------------------------------------------------------
    def cancel(self, run_id: int) -> None:
        """Cancel a queued run at once, or a running one at its next progress point."""
        try:
            self.store.cancel_run(run_id)
        except InvalidTransitionError:
            pass  # already finished: nothing to cancel
        with self._wake:
            self._queue = collections.deque(job for job in self._queue if job[0] != run_id)

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
            ids = {job[0] for job in self._queue}
            if self._current is not None:
                ids.add(self._current)
            return ids

    @property
    def current(self) -> int | None:
        return self._current

    def queue_length(self) -> int:
        with self._wake:
            return len(self._queue) + (self._current is not None)

    def idle(self) -> bool:
        return self.queue_length() == 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running (for scripts and tests)."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._queue and self._current is None, timeout)

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
                    # Validated and looked up in the store when it was submitted: not again here.
                    execute(config, self.store, kind=kind, run_id=run_id, reuse=False, validated=True,
                            device=self.device, data_root=self.data_root, download=self.download)
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
