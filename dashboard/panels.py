"""Panels that follow background work: a run's status (queue position, progress bar with ETA, cancel button,
its error), live fragments that poll the store while runs are queued or running, the submit buttons' helpers
and the "reused from the store" note, studies in the queue, and the sidebar's job queue.

The work itself runs in the job manager's worker processes: a rerun, another widget or a closed tab never stops
it, and a panel re-attaches to it from the store. Watching costs little: a queued run's panel shows only its
place; a running one fetches only the metric rows added since its last poll; polling slows down while nothing
changes and stops when the run ends (or is deleted).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
import torch
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.scriptrunner_utils.script_run_context import ThreadState, get_script_run_ctx

from dashboard import classroom, state
from dashboard.errors import callback, error_boundary
from dashboard.navigation import PAGES
from pruning_core.config import RunConfig
from pruning_core.engine.data import DATASETS, DatasetUnavailableError, load_dataset
from pruning_core.infra.store import ACTIVE_STATUSES, UnknownRunError
from pruning_core.presentation import units
from pruning_core.studies import tasks

POLL_S = 1.0                 # how often a live panel re-reads the store while its run changes
QUEUED_POLL_S = 2.0          # ... while its run waits in the queue (only its place is shown)
QUIET_POLLS = ((60.0, 10.0), (10.0, 3.0))   # nothing changed for this many seconds: poll this slowly
VIEWER_POLLS_PER_S = 10.0    # all the tabs watching one run poll it about this often together, at most
VIEWER_SPAN_S = 12.0         # a tab that polled a run this recently counts as one of its viewers
POLL_STEPS = (1.0, 2.0, 3.0, 5.0, 10.0)
QUEUE_POLL_S = 5.0           # how often the sidebar re-reads the job queue
RERUN_STATUSES = (None, "failed", "cancelled")   # a configuration without a run, or whose run did not finish


# ---- one run's status ---------------------------------------------------------------------------------------
def eta_seconds(record: Mapping[str, Any], metrics: pd.DataFrame | None = None,
                now: float | None = None) -> float | None:
    """Seconds left for a running run: from the training clock of its metric rows while it trains, else
    from the time since it started and the progress of the current phase."""
    progress = record.get("progress") or {}
    done, total = float(progress.get("done") or 0), float(progress.get("total") or 0)
    if record.get("status") != "running" or total <= 0 or done <= 0:
        return None
    if metrics is not None and not metrics.empty and str(progress.get("message", "")).startswith("training"):
        rows = metrics[metrics["elapsed_s"].notna() & (metrics["epoch"] > 0)]
        if not rows.empty:
            last = rows.iloc[-1]
            return max(float(last["elapsed_s"]) * (total - float(last["epoch"])) / float(last["epoch"]), 0.0)
    started = record.get("started_at")
    if started is None:
        return None
    elapsed = (now or time.time()) - float(started)
    return max(elapsed * (total - done) / done, 0.0)


def show_run_state(record: Mapping[str, Any], name: str, metrics: pd.DataFrame | None = None,
                   brief: bool = False) -> None:
    """One run's state under `name` ('Run #3', 'GemMiner (run #3)'): its queue position, a progress bar with
    the ETA, its error, or that it was cancelled (nothing once it is done). `brief` keeps a queued run to one
    line, for several runs shown together."""
    run_id, status = record["id"], record["status"]
    if status == "queued":
        position = state.store().queue_position(run_id) or 0
        ahead = "next in line" if position == 0 else f"{position} job{'s' if position != 1 else ''} ahead of it"
        if brief:
            st.markdown(f":material/hourglass_top: **{name}**: queued, {ahead}")
        else:
            st.info(f"**{name}** is queued: {ahead}. Everyone's jobs run in the order they were asked for; this "
                    "page picks the run up when it starts, even after a reload.", icon=":material/hourglass_top:")
    elif status == "running":
        progress = record["progress"]
        total = float(progress["total"] or 0)
        fraction = min(max(float(progress["done"]) / total, 0.0), 1.0) if total > 0 else 0.0
        eta = eta_seconds(record, metrics)
        st.progress(fraction, text=f"**{name}**: {progress['message'] or 'starting'} · {fraction:.0%}"
                    + (f" · about {units.duration_text(eta)} left" if eta is not None else ""))
    elif status == "failed":
        st.error(f"**{name} failed:** {record.get('error') or 'no message recorded'}", icon=":material/error:")
    elif status == "cancelled":
        st.warning(f"**{name}** was cancelled before it finished.", icon=":material/cancel:")


def job_status(record: Mapping[str, Any], key: str, metrics: pd.DataFrame | None = None,
               name: str | None = None) -> None:
    """One run's state (`show_run_state`, under `name`, default 'Run #<id>') with a button that cancels it while
    it is queued or running."""
    run_id = record["id"]
    name = name or f"Run #{run_id}"
    if record["status"] not in ACTIVE_STATUSES or not classroom.may_change((record.get("user") or {}).get("token")):
        show_run_state(record, name, metrics)   # finished, or someone else's on a classroom server: read-only
        return
    text, cancel = st.columns([5, 1], vertical_alignment="center" if record["status"] == "queued" else "bottom")
    with text:
        show_run_state(record, name, metrics)
    queued = record["status"] == "queued"
    cancel.button("Cancel", key=f"{key}-cancel-{run_id}", on_click=callback(classroom.cancel), args=(run_id,),
                  icon=":material/close:" if queued else ":material/stop_circle:",
                  help="Remove this run from the queue." if queued else "Stop this run at its next progress point.",
                  width="stretch")


def runs_status(records: Mapping[str, Mapping[str, Any]], key: str,
                metrics: Mapping[int, pd.DataFrame] | None = None) -> None:
    """The state of several runs shown together (label -> record), compactly: a progress bar for each one
    running, a line for each one queued, failed or cancelled (nothing for those done), and one button that
    cancels every one still queued or running. `metrics` (run id -> rows) saves reading them again."""
    shown = {label: r for label, r in records.items() if r["status"] != "done"}
    if not shown:
        return
    active = [int(r["id"]) for r in shown.values() if r["status"] in ACTIVE_STATUSES
              and classroom.may_change((r.get("user") or {}).get("token"))]   # on a classroom server: your own
    lines, button = st.columns([5, 1], vertical_alignment="center")
    with lines:
        for label, record in shown.items():
            run_id = int(record["id"])
            rows = None
            if record["status"] == "running":   # the ETA reads the training clock of its metric rows
                rows = metrics[run_id] if metrics is not None and run_id in metrics else state.store().metrics(run_id)
            show_run_state(record, f"{label} (run #{run_id})", rows, brief=True)
    if active:
        button.button("Cancel", key=f"{key}-cancel-all", icon=":material/stop_circle:", width="stretch",
                      on_click=callback(classroom.cancel_runs), args=(active,),
                      help="Cancel every one of these runs that is still queued or running (finished ones are kept).")


# ---- live fragments -----------------------------------------------------------------------------------------
def poll_interval(statuses: Collection[str], quiet_s: float, viewers: int = 1) -> float | None:
    """How often a panel of runs in these statuses re-reads the store, nothing having changed for `quiet_s`
    seconds, with `viewers` tabs watching the same run: None (never) once none is queued or running; slowly while
    they only wait in the queue; every POLL_S while something changes, ever more slowly while nothing does; and
    more slowly when many tabs watch one run, so that together they poll it about VIEWER_POLLS_PER_S times a
    second (a class watching the teacher's run does not slow that run down). Steps of POLL_STEPS, so that a
    changing number of viewers does not change the interval at every poll."""
    if not any(s in ACTIVE_STATUSES for s in statuses):
        return None
    base = POLL_S if "running" in statuses else QUEUED_POLL_S
    wanted = max([base, viewers / VIEWER_POLLS_PER_S] + [i for after, i in QUIET_POLLS if quiet_s >= after])
    return next((step for step in POLL_STEPS if step >= wanted), POLL_STEPS[-1])


@dataclass
class _Viewers:
    lock: threading.Lock
    seen: dict   # (store, run id) -> {session id: last poll}


@st.cache_resource(show_spinner=False)
def _viewers() -> _Viewers:
    return _Viewers(threading.Lock(), {})


def viewers(run_id: int, now: float | None = None) -> int:
    """Note that this session looks at the run; return how many sessions looked at it in the last VIEWER_SPAN_S."""
    now = time.time() if now is None else now
    ctx = get_script_run_ctx()
    session = ctx.session_id if ctx is not None else ""
    shared = _viewers()
    with shared.lock:
        seen = shared.seen.setdefault((state.db_path(), int(run_id)), {})
        seen[session] = now
        for other in [s for s, at in seen.items() if now - at > VIEWER_SPAN_S]:
            del seen[other]
        if len(shared.seen) > 4 * SHARED_RUNS:   # forget runs nobody looks at any more
            for key in [k for k, v in shared.seen.items() if now - max(v.values(), default=0.0) > VIEWER_SPAN_S]:
                del shared.seen[key]
        return len(seen)


@dataclass
class Watch:
    """What one session's panel knows of the runs it follows: what they looked like at the last poll and since
    when, and the polling interval its fragment was registered with."""

    seen: tuple = ()
    changed_at: float = 0.0
    interval: float | None = None

    def note(self, records: Sequence[Mapping[str, Any]], now: float | None = None) -> float:
        """Record the runs' state at this poll; return the seconds since it last changed."""
        now = time.time() if now is None else now
        seen = tuple((r["id"], r["status"], r.get("n_metrics"), (r.get("progress") or {}).get("done"),
                      (r.get("progress") or {}).get("message")) for r in records)
        if seen != self.seen:
            self.seen, self.changed_at = seen, now
        return now - self.changed_at


@dataclass
class _Rows:
    frame: pd.DataFrame
    cursor: int
    fetched_at: float


@st.cache_resource(show_spinner=False)
def _shared_rows() -> tuple[threading.Lock, OrderedDict]:
    return threading.Lock(), OrderedDict()


SHARED_RUNS = 64   # runs whose metric rows the server keeps for its viewers


def run_metrics(record: Mapping[str, Any], now: float | None = None) -> pd.DataFrame:
    """A run's metric rows for its viewers, shared by every session of the server: fetched incrementally (only
    the rows added since the last fetch, `Store.new_metrics`), and while the run trains at most once every POLL_S,
    however many tabs watch it, so that they all draw the same rows (and share one figure, `views`). A run that
    has ended gets all its rows."""
    now = time.time() if now is None else now
    lock, runs = _shared_rows()
    key = (state.db_path(), int(record["id"]))
    with lock:
        held = runs.get(key)
        if held is not None:
            runs.move_to_end(key)
            fresh = len(held.frame) == record.get("n_metrics")
            if fresh or (record.get("status") == "running" and now - held.fetched_at < POLL_S * 0.9):
                return held.frame
        new, cursor = state.store().new_metrics(key[1], after=held.cursor if held is not None else 0)
        frame = new if held is None or held.frame.empty else (held.frame if new.empty else
                                                              pd.concat([held.frame, new], ignore_index=True))
        runs[key] = _Rows(frame, cursor, now)
        while len(runs) > SHARED_RUNS:
            runs.popitem(last=False)
        return frame


def _watch(key: str) -> Watch:
    return st.session_state.setdefault(f"_watch-{key}", Watch())


def _gone(run_id: int) -> None:
    st.info(f"Run #{run_id} is no longer in the store: it was deleted.", icon=":material/delete:")


def _fragment_rerun() -> str | None:
    """The id of the fragment this code runs in, when the run is a rerun of fragments (a poll), else None."""
    ctx = get_script_run_ctx()
    return ThreadState.get().fragment_id if ctx is not None and ctx.fragment_ids_this_run else None


def repoll(interval: float | None) -> bool:
    """From inside a poll: change how often this fragment polls (None: stop), with the message Streamlit itself
    sends for `run_every` (auto-rerun) and for a nested fragment that is gone (stop auto-rerun), so that the page
    is not drawn again just for that. False when not in a poll: then the caller reruns the page instead."""
    fragment_id = _fragment_rerun()
    if fragment_id is None:
        return False
    msg = ForwardMsg()
    if interval is None:
        msg.stop_auto_rerun.fragment_ids.append(fragment_id)
    else:
        msg.auto_rerun.interval = interval
        msg.auto_rerun.fragment_id = fragment_id
    get_script_run_ctx().enqueue(msg)
    return True


def _follow(watch: Watch, interval: float | None, page_draws_the_end: bool) -> None:
    """After a poll: poll at the new `interval` (None once nothing is active). When the runs have ended and the
    page draws their outcome outside the panel (`page_draws_the_end`), the whole page reruns once instead."""
    if watch.interval is None or interval == watch.interval or _fragment_rerun() is None:
        return
    if interval is None and page_draws_the_end:
        watch.interval = None
        st.rerun()
    elif repoll(interval):
        watch.interval = interval
    else:
        st.rerun()


def live_panel(run_id: int, key: str, draw: Callable[[dict[str, Any], pd.DataFrame | None], None] | None = None,
               name: str | None = None) -> None:
    """A fragment that shows a run's status (and, once it has started, `draw(record, metrics)`: its metric rows,
    None for a prune-only run) and re-reads the store while the run is queued or running (`poll_interval`).
    A queued run shows only its place in the queue. When the run ends, the panel draws its final state and stops
    polling; the whole page reruns once instead when the page draws the outcome itself (no `draw`: a prune job, a
    study) or offers to run it again (it failed or was cancelled), or when the run was deleted. `name`: what the
    status calls the run (default 'Run #<id>')."""
    watch = _watch(f"{key}-{run_id}")
    try:
        first = state.store().get_run(run_id)
    except UnknownRunError:
        _gone(run_id)
        return
    watch.interval = poll_interval([first["status"]], watch.note([first]), viewers(run_id))

    def panel() -> None:
        try:
            record = state.store().get_run(run_id)
        except UnknownRunError:
            _gone(run_id)
            if watch.interval is not None:
                st.rerun()   # registered again without polling
            return
        with error_boundary():
            if record["status"] == "queued":
                job_status(record, key, name=name)
            else:
                trains = record["kind"] not in ("prune", tasks.STUDY_KIND)
                metrics = run_metrics(record) if trains else None
                job_status(record, key, metrics, name=name)
                if draw is not None:
                    draw(record, metrics)
        _follow(watch, poll_interval([record["status"]], watch.note([record]), viewers(run_id)),
                page_draws_the_end=draw is None or record["status"] != "done")

    st.fragment(panel, run_every=watch.interval, key=f"{key}-live-{run_id}")()


def live_runs(run_ids: Sequence[int], key: str, draw: Callable[[dict[int, dict[str, Any]]], None]) -> None:
    """`live_panel` for several runs shown together (a method's sanity checks, IMP and GemMiner): a fragment
    that calls draw({run id: record}) for those still in the store and re-reads the store while any of them is
    queued or running (more slowly while nothing changes); when the last one ends the whole page reruns once.
    `draw` shows the runs' statuses (`job_status`, `runs_status`) where it wants them."""
    ids = list(dict.fromkeys(int(r) for r in run_ids))
    watch = _watch(f"{key}-runs")

    def records() -> dict[int, dict[str, Any]]:
        found = {}
        for run_id in ids:
            try:
                found[run_id] = state.store().get_run(run_id)
            except UnknownRunError:
                pass   # deleted: not drawn, not polled
        return found

    first = records()
    watch.interval = poll_interval([r["status"] for r in first.values()], watch.note(list(first.values())))

    def panel() -> None:
        current = None
        with error_boundary():
            current = records()
            draw(current)
        if current is not None:
            _follow(watch, poll_interval([r["status"] for r in current.values()], watch.note(list(current.values()))),
                    page_draws_the_end=True)

    st.fragment(panel, run_every=watch.interval, key=f"{key}-live")()


# ---- submitting, and what the store already has ------------------------------------------------------------
@dataclass(frozen=True)
class StoredRuns:
    """Labelled configurations and their training runs in the store (done, else active, else the newest)."""

    labels: tuple[str, ...]
    run_ids: dict[str, int]     # label -> run id, for the labels that have a run
    statuses: dict[str, str]    # label -> that run's status

    @property
    def missing(self) -> list[str]:
        """The labels whose configuration has no run yet, or whose run failed or was cancelled."""
        return [label for label in self.labels if self.statuses.get(label) in RERUN_STATUSES]

    @property
    def all_done(self) -> bool:
        return all(self.statuses.get(label) == "done" for label in self.labels)


def stored_runs(configs: Mapping[str, RunConfig]) -> StoredRuns:
    """Each labelled configuration's training run in the store, in one query for all of them."""
    labels = {config.key(): label for label, config in configs.items()}
    runs = state.store().latest_runs(list(labels), kind="train")
    return StoredRuns(tuple(configs), {labels[r.key]: int(r.run_id) for r in runs.itertuples()},
                      {labels[r.key]: r.status for r in runs.itertuples()})


def submit_run(config: RunConfig, started_key: str, masks: Mapping[str, torch.Tensor] | None = None) -> int:
    """Queue one training run (the job manager reuses a finished or active run of the same configuration) and
    remember its id under `started_key` unless a finished run was reused, so a page can tell reuse from a new
    run. `masks`: the configuration's masks, already found, which the run then trains instead of pruning. Within
    the server's limits (`classroom.submit`), for this viewer."""
    submission = classroom.submit(config, kind="train", masks=masks)
    if not submission.reused:
        st.session_state.setdefault(started_key, set()).add(submission.run_id)
    return submission.run_id


def submit_runs(configs: Mapping[str, RunConfig], started_key: str) -> None:
    """on_click: queue every configuration's training run (all of them within the server's limits, or none),
    remembering the new ones under `started_key` as `submit_run` does."""
    started = st.session_state.setdefault(started_key, set())
    started.update(s.run_id for s in classroom.submit_runs(list(configs.values())) if not s.reused)


def reused_note(run_ids: Collection[int], done: bool, started_key: str, what: str) -> None:
    """'Reused from the store: <what>, so nothing was recomputed.' when these runs are all `done` and this
    session started none of them (`submit_run` with `started_key`)."""
    if done and run_ids and not set(run_ids) & st.session_state.get(started_key, set()):
        st.success(f"**Reused from the store:** {what}, so nothing was recomputed.", icon=":material/recycling:")


def require_dataset(name: str, downloads: bool = True) -> None:
    """Before work on a dataset is queued: nothing when it is here; when it is not, a downloadable one is
    explained with `downloads` (the job manager fetches it first), else DatasetUnavailableError says what
    is missing (the error boundary shows it)."""
    try:
        load_dataset(name, download=False)
    except DatasetUnavailableError:
        spec = DATASETS[name]
        if not (downloads and spec.needs_download):
            raise
        st.info(f"**{spec.label} is not on this machine yet.** The runs download it first, which needs internet "
                "access; offline, choose the built-in digits dataset.", icon=":material/cloud_download:")


# ---- studies and the job queue ------------------------------------------------------------------------------
def study_record(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The study of these parameters in the store (`pruning_core.studies.tasks`): a finished one, else one on its
    way, else the newest that failed or was cancelled; None when it was never asked for."""
    db, key = state.store(), tasks.study_key(spec)
    done = db.find_done(key, kind=tasks.STUDY_KIND)
    if done is not None:
        return done
    latest = db.latest_runs([key], kind=tasks.STUDY_KIND)
    return db.get_run(int(latest.iloc[0]["run_id"])) if not latest.empty else None


def submit_study(spec: Mapping[str, Any]) -> int:
    """Queue a study (a finished or active one of the same parameters is shared) and return its run id."""
    return classroom.submit_job(spec, tasks.study_key(spec), tasks.STUDY_KIND).run_id


def live_study(run_id: int, key: str, name: str) -> None:
    """A study's place in the queue, then its progress bar with the ETA and a cancel button, then its error if
    it failed or that it was cancelled, under `name` (`live_panel`)."""
    live_panel(run_id, key, name=name)


def sidebar() -> None:
    """Device, job queue (refreshed every few seconds while it is not empty) and a link to the run history, on
    every page."""
    state.freeze_long_lived_objects()   # the sidebar is drawn at the start of every script run
    with st.sidebar:
        classroom.sidebar()
        st.markdown(f"**:material/memory: Device:** {state.device_label()}")
        if not state.on_gpu():
            st.caption("No GPU: defaults are the built-in digits and the small CNN, which train in seconds.")
        polling = state.manager().queue_length() > 0
        st.fragment(lambda: _queue_line(polling), run_every=QUEUE_POLL_S if polling else None,
                    key="sidebar-queue")()
        st.page_link(PAGES["runs"], label="Run history", icon=":material/history:")
        classroom.remember_user()   # last: its (invisible) element leaves no gap between the lines above


def _queue_line(polling: bool) -> None:
    manager = state.manager()
    queued = manager.queue_length()
    if manager.cluster is not None:   # PRUNING_RAY_ADDRESS: the jobs run on Ray
        st.markdown(f"**:material/hub: Cluster:** {units.cluster_text(manager.cluster.status())}")
    if queued:
        st.markdown(f"**:material/queue: Job queue:** {queued} job{'s' if queued != 1 else ''} queued or running")
        where = "on the Ray cluster" if manager.cluster is not None else "in the server's worker processes"
        st.caption(f"Everyone's jobs take turns (one person's, then the next person's), {where}.")
    else:
        st.markdown("**:material/check_circle: Job queue:** idle")
        if polling and not repoll(None):   # the queue has emptied: this line polls no more
            st.rerun()
