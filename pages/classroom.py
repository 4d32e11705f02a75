"""Classroom: the job queue with whose each run is, in the order the queue's turns take them, the server's limits,
and, for the teacher, the controls: pause, resume or clear the queue, cancel any run, change the limits."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import classroom, errors, navigation, state
from pruning_core.infra.limits import LIMITS
from pruning_core.infra.store import ACTIVE_STATUSES
from pruning_core.presentation import units


def queue_table() -> pd.DataFrame:
    """Every queued or running run, in the order the queue serves them, with its owner's name."""
    db = state.store()
    active = db.list_runs(status=list(ACTIVE_STATUSES))
    if active.empty:
        return active
    active = active.assign(ahead=[db.queue_position(int(r)) for r in active["run_id"]])
    return active.sort_values(["ahead", "run_id"]).reset_index(drop=True)


def show_queue(table: pd.DataFrame) -> None:
    st.subheader("Job queue", anchor=False)
    if state.store().queue_paused():
        st.warning("**The queue is paused** by the teacher: running jobs finish, no other starts.",
                   icon=":material/pause_circle:")
    if table.empty:
        st.info("Nothing is queued or running.", icon=":material/check_circle:")
        return
    shown = pd.DataFrame({
        "run": table["run_id"], "status": table["status"], "ahead": table["ahead"],
        "by": table["user_name"].fillna("(no name)").where(table["user_token"].notna(), "(nobody in particular)"),
        "kind": table["kind"], "method": table["method"].map(lambda m: units.method_label(m) if m else ""),
        "model": table["model"], "sweep": table["sweep_id"],
    })
    st.dataframe(shown, hide_index=True, width="stretch", key="classroom-queue",
                 column_config={"run": st.column_config.NumberColumn("Run", format="#%d", width="small"),
                                "ahead": st.column_config.NumberColumn("Jobs ahead", width="small"),
                                "by": st.column_config.TextColumn("Started by")})
    st.caption("The queue takes turns: the next job is the oldest one of the person served least recently, so a "
               "long sweep yields to someone else's run after each of its cells.")


def show_limits() -> None:
    st.subheader("Limits", anchor=False)
    current = classroom.limits().as_dict()
    st.dataframe(pd.DataFrame({"limit": list(current), "what": [LIMITS[n].label for n in current],
                               "value": ["none" if v is None else f"{v:,}" for v in current.values()],
                               "environment variable": [LIMITS[n].env for n in current]}),
                 hide_index=True, width="stretch", key="classroom-limits")
    st.caption("Above a limit a page says which one and queues nothing. The teacher can change them here while "
               "the server runs; the environment variables set them when it starts.")


def save_limits(names: list[str]) -> None:
    """on_click: the teacher's new limits (0: no limit)."""
    classroom.set_limits({n: (int(st.session_state[f"limit-{n}"]) or "none") for n in names})


def teacher_controls(table: pd.DataFrame) -> None:
    st.subheader("Teacher", anchor=False)
    manager = state.manager()
    cols = st.columns(3, gap="small")
    if state.store().queue_paused():
        cols[0].button("Resume the queue", key="classroom-resume", icon=":material/play_arrow:", width="stretch",
                       on_click=errors.callback(manager.pause), args=(False,))
    else:
        cols[0].button("Pause the queue", key="classroom-pause", icon=":material/pause:", width="stretch",
                       on_click=errors.callback(manager.pause), args=(True,),
                       help="Running jobs finish; no other starts until you resume.")
    cols[1].button("Clear the queue", key="classroom-clear", icon=":material/clear_all:", width="stretch",
                   on_click=errors.callback(manager.clear_queue), disabled=table.empty,
                   help="Cancel every job still waiting (running ones go on: cancel them below).")
    if not table.empty:
        chosen = st.multiselect("Cancel these runs", [int(r) for r in table["run_id"]], key="classroom-cancel-ids",
                                format_func=lambda r: f"#{r}", placeholder="choose runs")
        st.button("Cancel them", key="classroom-cancel", icon=":material/stop_circle:", disabled=not chosen,
                  on_click=errors.callback(classroom.cancel_runs), args=(chosen,))
    with st.form("classroom-limits-form", border=True):
        st.markdown("**Change the limits** (0 = no limit)")
        current = classroom.limits().as_dict()
        columns = st.columns(4, gap="small")
        for i, (name, value) in enumerate(current.items()):
            columns[i % 4].number_input(LIMITS[name].label, min_value=0, step=1, value=int(value or 0),
                                        key=f"limit-{name}")
        st.form_submit_button("Save the limits", icon=":material/save:", on_click=errors.callback(save_limits),
                              args=(list(current),))


navigation.page_header("Classroom", "Everyone's jobs, whose they are and when their turn comes; the server's limits; "
                                    "and the teacher's controls.")
with errors.error_boundary():
    table = queue_table()
    show_queue(table)
    show_limits()
    if not classroom.classroom_mode():
        st.info("Single-user mode: no teacher password is set, so you may do everything and no limit applies "
                "unless the environment sets one.", icon=":material/person:")
    elif classroom.is_teacher():
        teacher_controls(table)
    else:
        st.caption("The teacher unlocks the controls with the teacher password in the sidebar.")
