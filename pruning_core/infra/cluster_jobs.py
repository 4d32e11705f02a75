"""The job queue on a Ray cluster: with PRUNING_RAY_ADDRESS set, the dashboard's train and prune jobs go to Ray.

`JobManager` creates one `ClusterDispatch` when the variable is set (host:port of a Ray cluster, or "local" for a
Ray instance on this machine). While the cluster has a free slot (`RayCells.slots`), its thread claims the next
queued train or prune run of the job queue (`Store.claim_queued`, which takes turns between users: the server
process owns it from then on, so a restart recovers it as interrupted) and hands it to Ray; the others wait in
the store's queue, where queue positions count them as before. It writes the workers' events into the store
(`cluster.RayCells.poll`): the server stays the store's one writer. Studies stay with the local worker
processes, which then take only them (`WorkerPool(kinds=...)`). Imported only when the
variable is set: the default never imports Ray.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pruning_core.config import RunConfig
from pruning_core.infra.cluster import RayCells
from pruning_core.infra.runner import describe_error
from pruning_core.infra.store import InvalidTransitionError, Store, UnknownRunError

log = logging.getLogger(__name__)

RAY_KINDS = ("train", "prune")   # what goes to the cluster; studies stay with the local worker processes
SLOTS_EVERY_S = 5.0              # how often the dispatcher asks the cluster its size again


class ClusterDispatch:
    """Claims the queue's train and prune runs and computes them as Ray tasks, recording them from here."""

    def __init__(self, store: Store, address: str, device: str | None = None, data_root: str | None = None,
                 download: bool = True):
        self.store = store
        self.cells = RayCells(store, address=None if address == "local" else address, device=device,
                              data_root=data_root, download=download)
        self._lock = threading.Lock()
        self._held: set[int] = set()      # claimed here and not yet ended on the cluster
        self._slots_known: tuple[int, float] | None = None   # (slots, when asked)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cancel_on_stop = True
        self._thread = threading.Thread(target=self._work, name="pruning-jobs-ray", daemon=True)
        self._thread.start()

    def held(self) -> set[int]:
        """Ids of the runs this dispatcher has claimed and the cluster has not finished."""
        with self._lock:
            return set(self._held)

    def wake(self) -> None:
        self._wake.set()

    def cancel_run(self, run_id: int) -> None:
        """Stop a run on the cluster (the caller cancelled it in the store): dropped if waiting, else interrupted."""
        self.cells.cancel_run(run_id)

    def stop(self, cancel: bool = True, timeout: float = 15.0) -> None:
        self._cancel_on_stop = cancel
        self._stopping.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout + 5)

    def _claim_all(self) -> None:
        """Claim queued runs while the cluster has a free slot. The rest wait in the store's queue, not in
        Ray's: the store's turns between users (a classroom server) then decide who goes next, as with the
        local workers, instead of Ray's first come, first served."""
        slots = self._slots()
        while not self._stopping.is_set():
            with self._lock:   # claimed and held in one step: `held` never misses a claimed run
                if len(self._held) >= slots:
                    return
                run_id = self.store.claim_queued(RAY_KINDS)
                if run_id is None:
                    return
                self._held.add(run_id)
            self._submit(run_id)

    def _slots(self) -> int:
        """The cluster's slots (`RayCells.slots`), asked again every SLOTS_EVERY_S: a machine joins or leaves
        rarely, and this loop runs several times a second."""
        now = time.monotonic()
        if self._slots_known is None or now - self._slots_known[1] >= SLOTS_EVERY_S:
            try:
                self._slots_known = (self.cells.slots(), now)
            except Exception:   # no cluster (yet): one run is claimed, and fails with the reason when handed on
                return 1
        return self._slots_known[0]

    def _submit(self, run_id: int) -> None:
        try:
            record = self.store.get_run(run_id)
            if record["status"] == "queued":
                # Validated and canonical when it was submitted (JobManager.submit_or_reuse).
                self.cells.submit(RunConfig.from_dict(record["config"]), run_id=run_id, kind=record["kind"])
                return
        except UnknownRunError:
            pass   # deleted meanwhile
        except Exception as error:   # no cluster at that address, ...
            log.exception("run %s could not go to the cluster", run_id)
            try:
                self.store.fail_run(run_id, describe_error(error))
            except (InvalidTransitionError, UnknownRunError):
                pass
        with self._lock:
            self._held.discard(run_id)

    def _work(self) -> None:
        """A local Ray instance belongs to the thread that starts it: this one."""
        try:
            self.cells.connect()   # at once, so that the sidebar can show the cluster before the first job
        except Exception:   # tried again at the first job, which fails with the reason if it still cannot
            log.exception("could not join the Ray cluster")
        while not self._stopping.is_set():
            try:
                self._claim_all()
                if not self.cells.pending:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                ended = self.cells.poll(0.2)
                if ended:
                    self.store.settle_sweeps()
                with self._lock:
                    self._held -= {cell.run_id for cell in ended}
            except Exception:   # bookkeeping must never end the dispatcher (a run deleted meanwhile, ...)
                log.exception("could not record the cluster's events")
                time.sleep(1.0)   # not a busy loop while, say, the cluster is gone
        try:
            self.cells.close(cancel=self._cancel_on_stop)
        except Exception:
            log.exception("could not close the Ray engine")
        with self._lock:
            self._held.clear()

    def status(self) -> dict[str, Any]:
        return self.cells.status()
