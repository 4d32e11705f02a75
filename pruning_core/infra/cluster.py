"""The Ray engine: sweep cells and dashboard jobs as Ray tasks, on one machine or on a cluster.

Imported only when asked for (`pc.sweep(engine="ray")`, `sweep --engine ray`, PRUNING_RAY_ADDRESS); the
embedded default never imports Ray.

How a cell's records flow:
- The driver (the process that holds the run store) creates the run (queued) and submits `compute_cell` as
  a Ray task with the configuration, a ticket number and a handle to an event hub actor, never the store's
  path; a worker refuses to open any store (`refuse_in_this_process`).
- The worker runs `runner.compute` with a `ForwardingRecorder`: each recorder call (start, progress, metrics,
  pruned, finish, cancel, fail) becomes a numbered event. Events are batched (sent at once for start, pruned
  and the end, else at most every FLUSH_EVERY_S) as fire-and-forget calls to the hub, for the live curves;
  calls from one worker to one actor run in order. The task also returns every event of its attempt.
- The driver drains the hub at every poll and replays each event, in number order, on a `StoreRecorder`;
  when the task returns, it replays the returned events it has not seen (all of them if the hub was lost:
  Ray's memory monitor may kill it like any worker; it restarts empty). The store keeps one writer and one
  schema, and a cell is recorded by the same calls as an in-process run.
- Ray retries a task whose worker died (`max_retries`, default 1). The new attempt announces itself with a
  new token; the driver puts the run back to queued (`Store.requeue_run`, partial records dropped) and
  ignores late events of the dead attempt. Once the retries are spent, the run is failed with the reason.
  A cancel is `store.cancel_run` + `ray.cancel` (a KeyboardInterrupt in the worker).
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import ray
    from ray import exceptions as ray_errors
except ImportError as error:  # an optional dependency: say how to get it
    raise ImportError("the Ray engine needs Ray: pip install -r requirements-ray.txt") from error

import torch

from pruning_core.config import RunConfig
from pruning_core.engine.prune import Cancelled
from pruning_core.infra.interrupts import InterruptsOutsideImports, half_imported_modules
from pruning_core.infra.runner import ProgressCallback, Recorder, StoreRecorder, compute, describe_error
from pruning_core.infra.store import Store, library_versions, refuse_in_this_process

log = logging.getLogger(__name__)

RESOURCE_OPTIONS = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type")
FLUSH_EVERY_S = 0.25  # a worker sends its buffered events at least this often: the live curves' delay
URGENT_EVENTS = ("start", "pruned", "final_mask", "finish", "cancel", "fail")
WORKER_REFUSAL = ("this process is a Ray worker of pruning_core: it sends its events to the driver, which is the "
                  "run store's only writer; open the store in the driver instead")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


# ---- connecting ------------------------------------------------------------------------------------
def connect(address: str | None = None) -> bool:
    """Join the Ray cluster at `address` ("host:port", or "auto" for one started here with `ray start`), or
    start a local Ray instance when None. Returns True when this call connected, False when this process
    was connected already. A cluster that cannot be reached is a ValueError (Ray itself would wait a minute
    and then end the process)."""
    if ray.is_initialized():
        return False
    if address is None or address == "local":
        # "local", not None: None would join a cluster that `ray start` left running on this machine.
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        return True
    if address != "auto":
        _check_reachable(address)
    try:
        # The workers import this driver's copy of pruning_core, so that every machine computes with the
        # same code (the other machines only need the libraries of requirements.txt and Ray).
        ray.init(address=address, logging_level=logging.WARNING, runtime_env={"py_modules": [str(PACKAGE_DIR)]})
    except Exception as error:  # connection refused, a wrong token, another Ray version, ...
        raise ValueError(f"could not join the Ray cluster at {address}: {error}") from error
    return True


def _check_reachable(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"a Ray address is HOST:PORT (e.g. 10.0.0.5:6379), got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise ValueError(f"no Ray cluster answers at {address} ({error.strerror or error}); start one there with "
                         f"`ray start --head --port={port}`, or check the address") from error


def default_resources(device: str | None = None) -> dict[str, float]:
    """One GPU per cell where the cluster has GPUs (unless the device is the CPU), else one CPU."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and (device is None or str(device).startswith("cuda")):
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": 1}


def check_resources(resources: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validated Ray task options for one cell, e.g. {"num_cpus": 2, "num_gpus": 0.5}."""
    if resources is None:
        return None
    if not isinstance(resources, Mapping):
        raise ValueError(f"resources must be a dict such as {{'num_cpus': 1, 'num_gpus': 1}}, got {resources!r}")
    unknown = sorted(set(resources) - set(RESOURCE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown resource option(s) {', '.join(unknown)}; use {', '.join(RESOURCE_OPTIONS)}")
    for name in ("num_cpus", "num_gpus", "memory"):
        value = resources.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return dict(resources)


# ---- the worker side --------------------------------------------------------------------------------
class ForwardingRecorder(Recorder):
    """A worker's recorder: every call becomes an event for the driver, sent through the hub in batches."""

    def __init__(self, hub: Any, ticket: int, interrupts: InterruptsOutsideImports | None = None):
        self.hub = hub
        self.ticket = ticket
        self.interrupts = interrupts
        self.attempt = {"token": secrets.token_hex(8), "pid": os.getpid(), "node": socket.gethostname()}
        self.history: list[tuple[int, str, tuple]] = []  # every event of this attempt: the task returns it
        self._events: list[tuple[int, str, tuple]] = []
        self._sent_at = time.monotonic()
        self._last: Any = None

    def _send(self, name: str, *args: Any) -> None:
        event = (len(self.history), name, args)
        self.history.append(event)
        self._events.append(event)
        if name in URGENT_EVENTS or time.monotonic() - self._sent_at >= FLUSH_EVERY_S:
            self.flush()

    def flush(self, wait: bool = False) -> None:
        """Send the buffered events; with `wait`, until the hub has every batch sent so far."""
        if self._events:
            self._last = self.hub.put.remote(self.ticket, self.attempt, self._events)
            self._events = []
            self._sent_at = time.monotonic()
        if wait and self._last is not None:
            try:
                ray.get(self._last)
            except ray_errors.RayError:  # the hub was lost: the driver replays this attempt's returned log
                log.warning("the event hub is gone; the driver will record this cell from its result")

    def start(self, device: str, versions: dict[str, str] | None = None) -> None:
        self._send("start", device, versions or library_versions())  # the versions of where it computes

    def progress(self, message: str, done: float, total: float) -> str:
        self._send("progress", message, done, total)
        if self.interrupts is not None:
            self.interrupts.raise_pending()  # a cancel that arrived during an import
        return "running"  # a cancel arrives as ray.cancel's KeyboardInterrupt

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        self._send("metrics", rows)

    def pruned(self, layers: Any, masks: Mapping[str, Any] | None, prune_s: float) -> None:
        self._send("pruned", layers, _arrays(masks), prune_s)

    def final_mask(self, masks: Mapping[str, Any], layers: Any) -> None:
        self._send("final_mask", _arrays(masks), layers)  # dynamic sparse training moved the mask

    def finish(self, summary: dict[str, Any], timings: dict[str, float]) -> None:
        self._send("finish", summary, timings)

    def cancel(self) -> None:
        self._send("cancel")

    def fail(self, error: str) -> None:
        self._send("fail", error)


def _arrays(masks: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Masks as numpy arrays (sent to the driver without torch's tensor sharing)."""
    if masks is None:
        return None
    return {name: mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask for name, mask in masks.items()}


def compute_cell(config: dict[str, Any], ticket: int, kind: str, device: str | None, hub: Any,
                 data_root: str | None, download: bool) -> dict[str, Any]:
    """The Ray task: compute one configuration, forwarding its records; returns the run's summary with this
    attempt's token and every event it sent."""
    broken = half_imported_modules()
    if broken:  # an import was interrupted before this task could guard it: this worker is not to be trusted
        log.error("a worker with half-imported modules (%s) leaves; Ray gives the cell to a new one",
                  ", ".join(broken[:5]))
        os._exit(70)
    refuse_in_this_process(WORKER_REFUSAL)
    with InterruptsOutsideImports() as interrupts:
        recorder = ForwardingRecorder(hub, ticket, interrupts)
        try:
            run = RunConfig.from_dict(config).canonical().validate()
            summary = compute(run, recorder, kind=kind, device=device, data_root=data_root,
                              download=download).summary
            return {"summary": summary, "attempt": recorder.attempt, "events": recorder.history}
        finally:
            recorder.flush(wait=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # a worker lives on: give the GPU back to other workers' cells


def _hub_class() -> Any:
    # Defined in a function so that Ray ships the class by value: the hub's process then imports neither
    # pruning_core nor torch (it starts in a fraction of a second and holds little memory).
    class EventHub:
        """Holds the event batches workers send until the driver drains them."""

        def __init__(self) -> None:
            self._batches: list[tuple[int, dict[str, Any], list]] = []

        def put(self, ticket: int, attempt: dict[str, Any], events: list) -> None:
            self._batches.append((ticket, attempt, events))

        def drain(self) -> list[tuple[int, dict[str, Any], list]]:
            batches, self._batches = self._batches, []
            return batches

    # Restarted (empty) if it dies, and calls to it retried: the workers keep sending, the driver keeps draining.
    return ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(EventHub)


# ---- the driver side --------------------------------------------------------------------------------
def _coalesced(events: list[tuple[int, str, tuple]]) -> list[tuple[str, tuple]]:
    """A batch with each stretch of metrics and progress events written as one metrics call (rows in order)
    and its last progress: the same records in fewer store transactions (a training step sends both)."""
    out: list[tuple[str, tuple]] = []
    rows: list[dict[str, Any]] = []
    progress: tuple | None = None
    for _, name, args in events:
        if name == "metrics":
            rows.extend(args[0])
            continue
        if name == "progress":
            progress = args
            continue
        if rows:
            out.append(("metrics", (rows,)))
            rows = []
        if progress is not None:
            out.append(("progress", progress))
            progress = None
        out.append((name, args))
    if rows:
        out.append(("metrics", (rows,)))
    if progress is not None:
        out.append(("progress", progress))
    return out


@dataclass
class CellDone:
    """A cell the cluster is finished with: status 'done' (with its summary), 'failed' or 'cancelled'."""

    ticket: int
    run_id: int | None
    config: RunConfig
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class _Cell:
    ticket: int
    config: RunConfig
    run_id: int | None
    kind: str
    ref: Any
    recorder: Recorder
    attempt: str | None = None
    applied: int = -1  # the number of the attempt's last event written into the store
    attempts: int = 0
    worker: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False


class RayCells:
    """Runs configurations as Ray tasks and records them in `store` from this (the driver's) process.

    `submit` a cell, then call `poll` in a loop: it writes the workers' events into the store and returns
    the cells that ended. `cancel` / `cancel_run` may be called from any thread."""

    def __init__(self, store: Store | None = None, *, address: str | None = None,
                 resources: Mapping[str, Any] | None = None, max_retries: int = 1, device: str | None = None,
                 data_root: str | None = None, download: bool = True, on_progress: ProgressCallback | None = None):
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        self.store = store
        self.address = address
        self.resources = check_resources(resources)
        self.max_retries = max_retries
        self.device = device
        self.data_root = data_root
        self.download = download
        self.on_progress = on_progress
        self._lock = threading.RLock()
        self._cells: dict[int, _Cell] = {}
        self._tickets = itertools.count()
        self._hub: Any = None
        self._task: Any = None

    def connect(self) -> None:
        """Join the cluster (or start the local instance) now, rather than at the first `submit`."""
        with self._lock:
            self._connect()

    def _connect(self) -> None:
        if self._hub is None:
            connect(self.address)
            self._task = ray.remote(compute_cell).options(
                max_retries=self.max_retries, retry_exceptions=False,
                **(self.resources if self.resources is not None else default_resources(self.device)))
            self._hub = _hub_class().remote()

    def slots(self) -> int:
        """How many cells the cluster can run at once: its total CPUs (GPUs) over a cell's, at least one."""
        with self._lock:
            self._connect()
        need = self.resources if self.resources is not None else default_resources(self.device)
        total = ray.cluster_resources()
        counts = [int(total.get(name, 0.0) // amount) for name, amount in
                  (("CPU", need.get("num_cpus")), ("GPU", need.get("num_gpus"))) if amount]
        return max(1, min(counts) if counts else int(total.get("CPU", 1.0)))

    # ---- submitting and cancelling ----
    def submit(self, config: RunConfig, run_id: int | None = None, kind: str = "train") -> int:
        """Queue one validated configuration on the cluster (its run `run_id`, queued in the store);
        returns the cell's ticket."""
        with self._lock:
            self._connect()
            ticket = next(self._tickets)
            recorder = StoreRecorder(self.store, run_id) if self.store is not None and run_id is not None \
                else Recorder()
            ref = self._task.remote(config.to_dict(), ticket, kind, self.device, self._hub, self.data_root,
                                    self.download)
            self._cells[ticket] = _Cell(ticket, config, run_id, kind, ref, recorder)
            return ticket

    def cancel(self, ticket: int) -> None:
        """Cancel a cell: recorded cancelled at once; Ray drops it if waiting, interrupts it if running."""
        with self._lock:
            cell = self._cells.get(ticket)
            if cell is None or cell.cancelled:
                return
            cell.cancelled = True
        cell.recorder.cancel()
        ray.cancel(cell.ref)

    def cancel_run(self, run_id: int) -> None:
        with self._lock:
            tickets = [c.ticket for c in self._cells.values() if c.run_id == run_id]
        for ticket in tickets:
            self.cancel(ticket)

    def cancel_all(self) -> None:
        with self._lock:
            tickets = list(self._cells)
        for ticket in tickets:
            self.cancel(ticket)

    @property
    def pending(self) -> int:
        """Cells submitted and not yet returned by `poll` (cancelled ones until Ray lets them go)."""
        with self._lock:
            return len(self._cells)

    # ---- the driver's loop ----
    def poll(self, timeout: float = 0.2) -> list[CellDone]:
        """Wait up to `timeout` seconds for a cell to end, write every event received into the store, and
        return the cells that ended."""
        with self._lock:
            cells = {c.ref: c for c in self._cells.values()}
        if not cells:
            time.sleep(timeout)
            return []
        refs = list(cells)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ticket, attempt, events in self._drain():
            with self._lock:
                cell = self._cells.get(ticket)
            if cell is not None:
                self._apply(cell, attempt, events)
        return [self._settle(cells[ref]) for ref in ready]

    def _drain(self) -> list[tuple[int, dict[str, Any], list]]:
        """The event batches the hub holds (after the wait: they include a ready cell's last events)."""
        try:
            return ray.get(self._hub.drain.remote())
        except ray_errors.RayError as error:  # the hub is restarting: the cells' results carry their events
            log.warning("could not drain the event hub (%s); live progress resumes when it is back", error)
            return []

    def _apply(self, cell: _Cell, attempt: dict[str, Any], events: list[tuple[int, str, tuple]]) -> None:
        """Write an attempt's events into the store: only the next ones in number order (none twice, none
        after a gap left by a lost hub: those come with the task's result)."""
        if cell.cancelled:
            return  # cancelled here: its late events change nothing
        if attempt["token"] != cell.attempt:
            if not events or events[0][0] != 0:
                return  # an attempt that died, or one whose first events were lost with the hub
            if cell.attempt is not None and cell.run_id is not None and self.store is not None:
                log.warning("run %s: Ray retries it on a new worker; its partial records are dropped", cell.run_id)
                try:
                    self.store.requeue_run(cell.run_id)
                except (ValueError, KeyError):  # cancelled or deleted in the store meanwhile
                    self.cancel(cell.ticket)
                    return
            cell.attempt, cell.applied, cell.worker = attempt["token"], -1, dict(attempt, since=time.time())
            cell.attempts += 1
        fresh = []
        for event in events:
            if event[0] == cell.applied + 1 + len(fresh):
                fresh.append(event)
            elif event[0] > cell.applied + len(fresh):
                break  # a gap
        for name, args in _coalesced(fresh):
            try:
                answer = getattr(cell.recorder, name)(*args)
            except (ValueError, KeyError, Cancelled) as error:  # cancelled or deleted in the store
                log.warning("run %s: stopping it, its record cannot take %s (%s)", cell.run_id, name, error)
                self.cancel(cell.ticket)
                return
            if name == "progress":
                if answer == "cancelled":  # cancelled in the store (by another process, say)
                    self.cancel(cell.ticket)
                    return
                if self.on_progress is not None:
                    self.on_progress(*args)
        if fresh:
            cell.applied = fresh[-1][0]

    def _settle(self, cell: _Cell) -> CellDone:
        with self._lock:
            self._cells.pop(cell.ticket, None)
        done = CellDone(cell.ticket, cell.run_id, cell.config, "cancelled" if cell.cancelled else "done")
        try:
            result = ray.get(cell.ref)
            self._apply(cell, result["attempt"], result["events"])  # what the hub did not bring
            done.summary = result["summary"]
            if cell.cancelled:  # its record could not take the result (cancelled or deleted in the store)
                done.status = "cancelled"
        except ray_errors.TaskCancelledError:
            done.status = "cancelled"
        except ray_errors.RayTaskError as error:  # the computation raised: recorded by the worker already
            cause = getattr(error, "cause", None)
            if isinstance(cause, (Cancelled, KeyboardInterrupt)):
                done.status = "cancelled"
            else:
                done.status, done.error = "failed", describe_error(cause) if cause is not None else str(error)
        except ray_errors.RayError as error:  # the worker (or its machine) was lost, retries spent
            done.status = "failed"
            done.error = (f"the Ray worker computing this cell was lost (its process was killed, ran out of memory, "
                          f"or its machine left the cluster); tried {max(cell.attempts, 1)} time(s), Ray retries "
                          f"a lost worker {self.max_retries} time(s) ({type(error).__name__})")
        if done.status == "cancelled":
            cell.recorder.cancel()
        elif done.status == "failed":
            cell.recorder.fail(done.error)  # no-op when the worker recorded its error already
        return done

    def close(self, cancel: bool = True, timeout: float = 15.0) -> None:
        """Cancel what is left (with `cancel`), wait up to `timeout` s for Ray to let it go, stop the hub."""
        if cancel:
            self.cancel_all()
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self.poll(0.1)
        if self._hub is not None:
            ray.kill(self._hub)
            self._hub = None

    # ---- what the dashboard shows ----
    def status(self) -> dict[str, Any]:
        """The cluster at a glance, for the dashboard's sidebar: nodes, GPUs and CPUs (total and free), and
        the cells running now (run id, configuration, machine, worker pid, attempt) and waiting."""
        info: dict[str, Any] = {"address": self.address or "local", "connected": ray.is_initialized(), "nodes": 0,
                                "cpus": 0.0, "gpus": 0.0, "cpus_free": 0.0, "gpus_free": 0.0, "running": [],
                                "waiting": 0}
        if info["connected"]:
            total, free = ray.cluster_resources(), ray.available_resources()
            info.update(nodes=sum(1 for node in ray.nodes() if node.get("Alive")), cpus=total.get("CPU", 0.0),
                        gpus=total.get("GPU", 0.0), cpus_free=free.get("CPU", 0.0), gpus_free=free.get("GPU", 0.0))
        with self._lock:
            cells = [c for c in self._cells.values() if not c.cancelled]
        for cell in cells:
            if cell.attempt is None:
                info["waiting"] += 1
                continue
            info["running"].append({"run_id": cell.run_id, "method": cell.config.method,
                                    "sparsity": cell.config.sparsity, "seed": cell.config.seed,
                                    "node": cell.worker.get("node"), "pid": cell.worker.get("pid"),
                                    "attempt": cell.attempts, "since": cell.worker.get("since")})
        return info


def cluster_status(cells: RayCells | None) -> dict[str, Any] | None:
    """`cells.status()`, or None where jobs run in this process (no cluster)."""
    return None if cells is None else cells.status()

