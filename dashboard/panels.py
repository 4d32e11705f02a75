"""Panels that follow background work: a run's status (queue position, progress bar with ETA, cancel button,
its error), live fragments that poll the store while runs are queued or running, the submit buttons' helpers
and the "reused from the store" note, a study's progress, and the sidebar's job queue.

The work itself lives in the job manager (or the study pool): a rerun, another widget or a closed tab never
stops it, and a panel re-attaches to it from the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
import torch

from dashboard import state
from dashboard.errors import error_boundary
from dashboard.navigation import PAGES
from pruning_core.config import RunConfig
from pruning_core.engine.data import DATASETS, DatasetUnavailableError, load_dataset
from pruning_core.infra.store import ACTIVE_STATUSES
from pruning_core.presentation import units

POLL_S = 1.0                 # how often a live panel re-reads the store
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
            st.info(f"**{name}** is queued: {ahead}. Jobs run one at a time on this machine; this page picks "
                    "the run up when it starts, even after a reload.", icon=":material/hourglass_top:")
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


def job_status(record: Mapping[str, Any], key: str, metrics: pd.DataFrame | None = None) -> None:
    """One run's state (`show_run_state`) with a button that cancels it while it is queued or running."""
    run_id = record["id"]
    if record["status"] not in ACTIVE_STATUSES:
        show_run_state(record, f"Run #{run_id}", metrics)
        return
    text, cancel = st.columns([5, 1], vertical_alignment="center" if record["status"] == "queued" else "bottom")
    with text:
        show_run_state(record, f"Run #{run_id}", metrics)
    queued = record["status"] == "queued"
    cancel.button("Cancel", key=f"{key}-cancel-{run_id}", on_click=state.manager().cancel, args=(run_id,),
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
    active = [int(r["id"]) for r in shown.values() if r["status"] in ACTIVE_STATUSES]
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
                      on_click=lambda: [state.manager().cancel(r) for r in active],
                      help="Cancel every one of these runs that is still queued or running (finished ones are kept).")


# ---- live fragments -----------------------------------------------------------------------------------------
def live_panel(run_id: int, key: str,
               draw: Callable[[dict[str, Any], pd.DataFrame | None], None] | None = None) -> None:
    """A fragment that shows a run's status (and `draw(record, metrics)`: its metric rows, None for a prune-only
    run) and, while the run is queued or running, re-reads the store every POLL_S seconds (the record and the
    metrics once each per poll); when the run ends the whole page reruns once to show the final state, and
    polling stops."""
    first = state.store().get_run(run_id)
    active = first["status"] in ACTIVE_STATUSES

    def panel() -> None:
        record = None
        with error_boundary():
            record = state.store().get_run(run_id)
            metrics = state.store().metrics(run_id) if record["kind"] != "prune" else None
            job_status(record, key, metrics)
            if draw is not None:
                draw(record, metrics)
        if active and record is not None and record["status"] not in ACTIVE_STATUSES:
            st.rerun()

    st.fragment(panel, run_every=POLL_S if active else None, key=f"{key}-live-{run_id}")()


def live_runs(run_ids: Sequence[int], key: str, draw: Callable[[dict[int, dict[str, Any]]], None]) -> None:
    """`live_panel` for several runs shown together (a method's sanity checks, IMP and GemMiner): a fragment
    that calls draw({run id: record}) and, while any of them is queued or running, re-reads the store every
    POLL_S seconds; when the last one ends the whole page reruns once. `draw` shows the runs' statuses
    (`job_status`, `runs_status`) where it wants them."""
    ids = list(dict.fromkeys(int(r) for r in run_ids))
    active = any(state.store().get_run(r)["status"] in ACTIVE_STATUSES for r in ids)

    def panel() -> None:
        records = None
        with error_boundary():
            records = {r: state.store().get_run(r) for r in ids}
            draw(records)
        if active and records is not None and not any(r["status"] in ACTIVE_STATUSES for r in records.values()):
            st.rerun()

    st.fragment(panel, run_every=POLL_S if active else None, key=f"{key}-live")()


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
    run. `masks`: the configuration's masks, already found, which the run then trains instead of pruning."""
    submission = state.manager().submit_or_reuse(config, kind="train", masks=masks)
    if not submission.reused:
        st.session_state.setdefault(started_key, set()).add(submission.run_id)
    return submission.run_id


def submit_runs(configs: Mapping[str, RunConfig], started_key: str) -> None:
    """on_click: `submit_run` every configuration."""
    for config in configs.values():
        submit_run(config, started_key)


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
def task_status(task: Any, key: str, cancel: Callable[[], None], what: str = "Computing") -> None:
    """A background study's progress bar (`pruning_core.studies.tasks`), with its ETA and a cancel button."""
    eta = task.eta_s()
    bar, button = st.columns([5, 1], vertical_alignment="bottom")
    waiting = task.started is None
    bar.progress(task.fraction, text=("Waiting for another analysis to finish…" if waiting else
                                      f"{what}: {task.message} · {task.fraction:.0%}")
                 + (f" · about {units.duration_text(eta)} left" if eta is not None else ""))
    button.button("Cancel", key=f"{key}-cancel", on_click=cancel, icon=":material/stop_circle:", width="stretch",
                  help="Stop this computation at its next progress point.")


def sidebar() -> None:
    """Device, job queue (refreshed every few seconds) and a link to the run history, on every page."""
    with st.sidebar:
        st.markdown(f"**:material/memory: Device:** {state.device_label()}")
        if not state.on_gpu():
            st.caption("No GPU: defaults are the built-in digits and the small CNN, which train in seconds.")
        st.fragment(_queue_line, run_every=QUEUE_POLL_S, key="sidebar-queue")()
        st.page_link(PAGES["runs"], label="Run history", icon=":material/history:")


def _queue_line() -> None:
    queued = state.manager().queue_length()
    if queued:
        st.markdown(f"**:material/queue: Job queue:** {queued} job{'s' if queued != 1 else ''} queued or running")
        st.caption("Everyone's jobs run one at a time on this machine, in the order they were asked for.")
    else:
        st.markdown("**:material/check_circle: Job queue:** idle")
