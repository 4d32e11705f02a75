"""Worker processes: the job queue's runs execute here, never in the web server.

The run store is the channel. A submission is a queued run left to the queue (`Store.create_run(queue=True)`,
its configuration in the row); a worker claims the oldest one (`Store.claim_queued`), runs it, and writes its
progress, metrics and result back to the store, where every page reads them. The server's `JobManager` starts
the workers as subprocesses (`python -m pruning_core.infra.workers`: a fresh interpreter, nothing copied from
the server, and no re-import of the server's main script), wakes them through their stdin when something is
queued, restarts one that died and fails the run it held with the reason.

A worker survives anything a job or its clean-up raises. Its stdin is its line to the server: when it reaches
end-of-file (the server stopped, or was killed), the worker finishes the job in hand and ends. Nothing here
knows about Streamlit.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pruning_core.config import RunConfig
from pruning_core.engine.prune import Cancelled
from pruning_core.infra.runner import describe_error, execute
from pruning_core.infra.store import InvalidTransitionError, Store, UnknownRunError
from pruning_core.studies import tasks

log = logging.getLogger(__name__)

WORKERS_ENV = "PRUNING_WORKERS"   # how many worker processes (default: one per GPU, else one per spare core)
THREADS_ENV = "PRUNING_TORCH_THREADS"
IDLE_POLL_S = 2.0                 # an idle worker also looks at the store this often, besides being woken
RESTART_BACKOFF_S = (0.0, 1.0, 5.0, 30.0)   # a worker that keeps dying at start is restarted ever more slowly
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def worker_count(environ: dict[str, str] | None = None) -> int:
    """$PRUNING_WORKERS (a positive integer), else one worker per GPU, else one per spare CPU core (the
    server keeps one): 1 on a 2-core machine."""
    raw = (environ if environ is not None else os.environ).get(WORKERS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a positive whole number of worker processes, got {raw!r}")
        return int(raw)
    if torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return max(1, (os.cpu_count() or 2) - 1)


def worker_devices(count: int, device: str | None = None) -> list[str | None]:
    """The device of each worker: the given one for all, else worker i on GPU i (round robin), else the default."""
    if device is not None:
        return [device] * count
    if torch.cuda.is_available():
        gpus = max(1, torch.cuda.device_count())
        return [f"cuda:{i % gpus}" for i in range(count)]
    return [None] * count


def death_reason(returncode: int | None) -> str:
    """Why a worker process ended, for the run it was running."""
    if returncode is None:
        how = "it stopped answering"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        how = f"killed by {name}" + (", perhaps for lack of memory" if -returncode == signal.SIGKILL else "")
    else:
        how = f"it exited with code {returncode}"
    return (f"interrupted: the worker process running it died ({how}) before it finished. Run it again; if it "
            "dies again, the job may need more memory than this machine has.")


# ---- one job -----------------------------------------------------------------------------------------------
def run_job(store: Store, run_id: int, device: str | None = None, data_root: str | None = None,
            download: bool = True) -> None:
    """Execute one claimed run: a study (`tasks.run_study`) or a configuration (`runner.execute`). Whatever
    goes wrong is recorded on the run (failed with its message, or cancelled); nothing is raised."""
    try:
        record = store.get_run(run_id)
        if record["status"] != "queued":
            return   # cancelled (or deleted) while it waited
        if record["kind"] == tasks.STUDY_KIND:
            tasks.run_study(store, run_id, device=device)
        else:
            # Validated and canonical when it was submitted, and looked up in the store then: not again here.
            config = RunConfig.from_dict(record["config"])
            execute(config, store, kind=record["kind"], run_id=run_id, reuse=False, validated=True,
                    device=device, data_root=data_root, download=download)
    except (Cancelled, UnknownRunError):
        pass   # cancelled, or deleted while it ran
    except Exception as error:  # noqa: BLE001 - execute recorded it; a failure before that is recorded here
        log.warning("run %s failed: %s", run_id, error)
        _fail_quietly(store, run_id, describe_error(error))
        # Only the message is kept: the traceback's frames (and the tensors they hold) go with the exception.


def _fail_quietly(store: Store, run_id: int, message: str) -> None:
    try:
        store.fail_run(run_id, message)
    except (InvalidTransitionError, UnknownRunError):
        pass   # already final, or deleted
    except Exception:
        log.exception("could not record the failure of run %s", run_id)


def release_memory() -> None:
    """Between jobs: give the GPU's cached memory back to the next job (and other programs)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def serve(store: Store, *, device: str | None = None, data_root: str | None = None, download: bool = True,
          wait: Callable[[float], bool] | None = None, should_stop: Callable[[], bool] = lambda: False,
          cleanup: Callable[[], None] = release_memory, idle_poll_s: float = IDLE_POLL_S,
          kinds: Sequence[str] | None = None) -> None:
    """The worker loop: claim the oldest queued run (of these `kinds`; None: any), run it, clean up, settle finished sweeps; when nothing is
    queued, `wait(seconds)` for a wake-up (returning False ends the loop; default: sleep). Ends when
    `should_stop()` says so; no job, clean-up or store error ends it."""
    wait = wait or (lambda seconds: time.sleep(seconds) or True)
    while not should_stop():
        try:
            run_id = store.claim_queued(kinds)
        except Exception:
            log.exception("could not read the job queue; trying again")
            run_id = None
        if run_id is None:
            if not wait(idle_poll_s):
                return
            continue
        try:
            run_job(store, run_id, device=device, data_root=data_root, download=download)
        except Exception:   # run_job records everything; this is the last line of defence
            log.exception("run %s ended with an unexpected error", run_id)
        finally:
            for step in (cleanup, store.settle_sweeps):
                try:
                    step()
                except Exception:   # e.g. torch.cuda.empty_cache() raising: the next job still runs
                    log.exception("clean-up after run %s failed", run_id)


def _limit_threads(workers: int) -> None:
    """Torch's threads in a worker on a CPU: $PRUNING_TORCH_THREADS, else the cores left to each worker beside
    the server (at least one); small models only lose time to more threads on a busy machine."""
    if torch.cuda.is_available():
        return
    wanted = os.environ.get(THREADS_ENV, "")
    cores = os.cpu_count() or 2
    threads = int(wanted) if wanted.isdigit() and int(wanted) > 0 else max(1, (cores - 1) // max(workers, 1))
    torch.set_num_threads(threads)


class ServerLine:
    """A worker's stdin, its line to the server: a byte wakes it, end-of-file means the server is gone."""

    def __init__(self, stream=None):
        self.fd = (stream or sys.stdin.buffer).fileno()
        self.closed = False

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a wake-up; False once the server is gone."""
        if self.closed:
            return False
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if ready and not os.read(self.fd, 4096):
            self.closed = True
        return not self.closed


def main(argv: list[str] | None = None) -> int:
    """`python -m pruning_core.infra.workers --db PATH`: one worker loop, run by the job manager (its stdin a
    pipe from the server) or by hand (Ctrl-C ends it)."""
    parser = argparse.ArgumentParser(prog="python -m pruning_core.infra.workers", description=main.__doc__)
    parser.add_argument("--db", default=None, help="the run store (default: $PRUNING_DB, else ./runs/pruning.db)")
    parser.add_argument("--device", default=None, help="torch device for the runs (default: the best one here)")
    parser.add_argument("--data-root", default=None, help="where datasets are (default: $PRUNING_DATA_DIR)")
    parser.add_argument("--no-download", action="store_true", help="never download a dataset")
    parser.add_argument("--workers", type=int, default=1, help="how many workers share this machine (threads)")
    parser.add_argument("--kinds", default=None,
                        help="comma-separated run kinds this worker takes (default: all; the job manager with a Ray "
                             "cluster leaves train and prune runs to Ray)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    _limit_threads(args.workers)
    store = Store(args.db, recover=False)
    line = ServerLine() if not sys.stdin.isatty() else None
    try:
        serve(store, device=args.device, data_root=args.data_root, download=not args.no_download,
              wait=line.wait if line is not None else None,
              should_stop=(lambda: line.closed) if line is not None else (lambda: False),
              kinds=args.kinds.split(",") if args.kinds else None)
    except KeyboardInterrupt:
        pass   # Ctrl-C: the run in hand was recorded as cancelled
    finally:
        store.close()
    return 0


# ---- the pool the server supervises ------------------------------------------------------------------------
@dataclass
class Worker:
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)


class WorkerPool:
    """Worker subprocesses over one store: started on demand, woken on submission, restarted when one dies."""

    def __init__(self, db_path: str, count: int, devices: list[str | None] | None = None,
                 data_root: str | None = None, download: bool = True, kinds: Sequence[str] | None = None):
        if count < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {count}")
        self.db_path, self.count = db_path, count
        self.devices = devices or [None] * count
        self.data_root, self.download = data_root, download
        self.kinds = list(kinds) if kinds is not None else None   # the run kinds its workers take (None: all)
        self._workers: list[Worker | None] = [None] * count
        self._failures = [0] * count          # quick deaths in a row, per slot (restart backoff)
        self._not_before = [0.0] * count
        self._lock = threading.Lock()
        self._stopped = False
        self.restarts = 0
        self.all_pids: set[int] = set()       # every worker this pool started (the runs they own are the pool's)

    def _command(self, slot: int) -> list[str]:
        command = [sys.executable, "-m", "pruning_core.infra.workers", "--db", self.db_path,
                   "--workers", str(self.count)]
        if self.devices[slot] is not None:
            command += ["--device", str(self.devices[slot])]
        if self.data_root is not None:
            command += ["--data-root", str(self.data_root)]
        if not self.download:
            command.append("--no-download")
        if self.kinds is not None:
            command += ["--kinds", ",".join(self.kinds)]
        return command

    def _spawn(self, slot: int) -> Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(self._command(slot), stdin=subprocess.PIPE, env=env)
        self.all_pids.add(process.pid)
        return Worker(process)

    def start(self) -> None:
        """Start the workers that are not running (no-op once started, or after `stop`)."""
        with self._lock:
            if self._stopped:
                return
            for slot, worker in enumerate(self._workers):
                if worker is None and time.monotonic() >= self._not_before[slot]:
                    self._workers[slot] = self._spawn(slot)

    @property
    def started(self) -> bool:
        return any(w is not None for w in self._workers)

    def wake(self) -> None:
        """Tell idle workers that something was queued."""
        with self._lock:
            workers = [w for w in self._workers if w is not None]
        for worker in workers:
            try:
                worker.process.stdin.write(b"\n")
                worker.process.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass   # dead: `check` restarts it

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers if w is not None]

    def check(self) -> list[tuple[int, str]]:
        """Restart every worker that died (those dying at start ever more slowly); return (pid, reason) for each
        dead one, so that the caller fails the runs it held."""
        dead = []
        with self._lock:
            if self._stopped:
                return dead
            for slot, worker in enumerate(self._workers):
                if worker is None:
                    if self.started and time.monotonic() >= self._not_before[slot]:
                        self._workers[slot] = self._spawn(slot)
                    continue
                code = worker.process.poll()
                if code is None:
                    continue
                dead.append((worker.process.pid, death_reason(code)))
                log.warning("worker %s (pid %s) died (exit code %s); starting another", slot, worker.process.pid,
                            code)
                with_backoff = time.monotonic() - worker.started < 10.0
                self._failures[slot] = self._failures[slot] + 1 if with_backoff else 0
                delay = RESTART_BACKOFF_S[min(self._failures[slot], len(RESTART_BACKOFF_S) - 1)]
                self._not_before[slot] = time.monotonic() + delay
                self._workers[slot] = self._spawn(slot) if delay == 0 else None
                self.restarts += 1
        return dead

    def stop(self, timeout: float = 10.0) -> None:
        """End every worker: close its line and terminate it (the caller has cancelled, or given up on, the runs
        they hold: a run left running is recovered as interrupted), killing any still there after `timeout`."""
        with self._lock:
            self._stopped = True
            workers = [w for w in self._workers if w is not None]
            self._workers = [None] * self.count
        for worker in workers:
            try:
                worker.process.stdin.close()
            except OSError:
                pass
            if worker.process.poll() is None:
                worker.process.terminate()
        deadline = time.monotonic() + timeout
        for worker in workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(5)


if __name__ == "__main__":
    raise SystemExit(main())
