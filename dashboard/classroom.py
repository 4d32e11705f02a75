"""Serving a classroom: who is looking (a per-browser token and a display name), the teacher's role, who may
cancel or delete what, and the server's limits, applied to every submission a page makes.

With no teacher password configured (PRUNING_TEACHER_PASSWORD in the environment or in .streamlit/secrets.toml),
the server is in single-user mode: the one user may do everything, nothing is asked, and only limits set in the
environment apply. With a password, it is a classroom: everyone sees every result, only a run's owner (or the
teacher) may cancel or delete it, and the device's default limits apply (`pruning_core.infra.limits`).

A browser is known by a random token kept in a cookie (set by a line of JavaScript, read back through
`st.context.cookies` when the browser opens a new session, e.g. on reload); the token is the key to its owner's
work, so it is never shown or exported.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st
import torch

from dashboard import lessons, state
from pruning_core.config import RunConfig
from pruning_core.infra.jobs import Submission
from pruning_core.infra.limits import STORE_SETTING, Limits, check_queue, check_runs, server_limits
from pruning_core.infra.store import ACTIVE_STATUSES, UnknownRunError, User

PASSWORD_ENV = "PRUNING_TEACHER_PASSWORD"
TOKEN_COOKIE = "pruning_user"
NAME_COOKIE = "pruning_user_name"
COOKIE_DAYS = 180
_TOKEN = "_user_token"
_NAME = "classroom-name"        # the display name's widget key
_TEACHER = "_teacher"
_TOKEN_SHAPE = re.compile(r"[0-9a-f]{32}")
NAME_LENGTH = 40


class NotYoursError(ValueError):
    """Cancelling or deleting someone else's work on a classroom server."""


# ---- the teacher and the mode ------------------------------------------------------------------------------
def teacher_password() -> str | None:
    """$PRUNING_TEACHER_PASSWORD, else the same key in .streamlit/secrets.toml, else None (single-user mode)."""
    password = os.environ.get(PASSWORD_ENV)
    if password:
        return password
    try:
        password = st.secrets.get(PASSWORD_ENV)
    except Exception:   # noqa: BLE001 - no secrets file, or one that does not parse: no password
        return None
    return str(password) if password else None


def classroom_mode() -> bool:
    """Whether a teacher password is configured: many users, owners, limits."""
    return teacher_password() is not None


def is_teacher() -> bool:
    """Whether this session may do everything: the teacher unlocked it, or the server has one user."""
    return not classroom_mode() or bool(st.session_state.get(_TEACHER))


def unlock_teacher(password: str) -> bool:
    """Unlock the teacher's role for this session if `password` is the teacher's; whether it is."""
    expected = teacher_password()
    ok = expected is not None and hmac.compare_digest(str(password).encode(), expected.encode())
    st.session_state[_TEACHER] = ok
    return ok


def lock_teacher() -> None:
    st.session_state[_TEACHER] = False


# ---- who is looking -------------------------------------------------------------------------------------------
def _cookie(name: str) -> str | None:
    try:
        value = st.context.cookies.get(name)
    except Exception:   # noqa: BLE001 - no browser request behind this session (a test): no cookies
        return None
    return value if isinstance(value, str) else None


def user_token() -> str:
    """This browser's token: this session's, else the cookie's (a reload), else a new random one."""
    token = st.session_state.get(_TOKEN)
    if token is None:
        cookie = _cookie(TOKEN_COOKIE)
        token = cookie if cookie is not None and _TOKEN_SHAPE.fullmatch(cookie) else secrets.token_hex(16)
        st.session_state[_TOKEN] = token
    return token


def user_name() -> str | None:
    """The display name this browser gave (None: none)."""
    if _NAME not in st.session_state:
        from urllib.parse import unquote

        st.session_state[_NAME] = unquote(_cookie(NAME_COOKIE) or "")[:NAME_LENGTH]
    return str(st.session_state[_NAME]).strip()[:NAME_LENGTH] or None


def user() -> User:
    return User(user_token(), user_name())


def may_change(owner_token: str | None) -> bool:
    """Whether this session may cancel or delete work of this owner (None: work with no owner recorded)."""
    return is_teacher() or (owner_token is not None and owner_token == user_token())


def remember_user() -> None:
    """Keep this browser's token and name in cookies (a line of JavaScript in the sidebar), so that a reload
    or a new tab is the same person. Nothing is shown."""
    max_age = COOKIE_DAYS * 24 * 3600
    lines = [f"{TOKEN_COOKIE}={user_token()}; path=/; max-age={max_age}; SameSite=Strict"]
    if classroom_mode():
        name = json.dumps(user_name() or "").replace("<", "\\u003c")   # never a `</script>` in the script
        lines.append(f"{NAME_COOKIE}=\" + encodeURIComponent({name}) + \"; path=/; "
                     f"max-age={max_age}; SameSite=Strict")
    script = "".join(f'document.cookie = "{line}";' for line in lines)
    st.html(f"<script>{script}</script>", unsafe_allow_javascript=True, width="content")


def sidebar() -> None:
    """In the sidebar of a classroom server: the display name, the teacher's lock and lesson links."""
    if not classroom_mode():
        return
    user_name()   # the widget's first value: the cookie's
    st.text_input("Your name", key=_NAME, max_chars=NAME_LENGTH, placeholder="shown beside your runs",
                  help="Shown to everyone beside the runs you start. Only this browser can cancel or delete them.")
    if is_teacher():
        lessons.link_builder()
        st.button("Leave teacher mode", key="classroom-lock", icon=":material/lock:", on_click=lock_teacher)
        return
    with st.expander("Teacher", icon=":material/school:"):
        password = st.text_input("Teacher password", type="password", key="classroom-password")
        if st.button("Unlock", key="classroom-unlock", icon=":material/lock_open:") and password:
            if not unlock_teacher(password):
                st.error("That is not the teacher's password.")
            else:
                st.rerun()


# ---- guarded actions --------------------------------------------------------------------------------------------
def _refuse(what: str) -> None:
    raise NotYoursError(f"{what} was started by someone else: only they or the teacher can change it.")


def cancel(run_id: int) -> None:
    """Cancel a run, if this session may (`may_change`); one deleted meanwhile has nothing left to cancel."""
    try:
        owner = state.store().run_user(run_id)
    except UnknownRunError:
        return
    if not may_change(owner):
        _refuse(f"Run #{run_id}")
    state.manager().cancel(run_id)


def cancel_runs(run_ids: Sequence[int]) -> None:
    for run_id in run_ids:
        cancel(run_id)


def cancel_sweep(sweep_id: int) -> None:
    """Cancel a sweep's cells still to run, if this session may; one deleted meanwhile has nothing to cancel."""
    try:
        owner = state.store().sweep_user(sweep_id)
    except UnknownRunError:
        return
    if not may_change(owner):
        _refuse(f"Sweep #{sweep_id}")
    state.manager().cancel_sweep(sweep_id)


def delete_run(run_id: int) -> None:
    """Delete a run (cancelled first if it still runs), if this session may."""
    db = state.store()
    if not may_change(db.run_user(run_id)):
        _refuse(f"Run #{run_id}")
    if db.get_run(run_id)["status"] in ACTIVE_STATUSES:
        state.manager().cancel(run_id)
    db.delete_run(run_id)


# ---- limits and submissions ------------------------------------------------------------------------------------
def limits() -> Limits:
    """The limits in force: the device's defaults on a classroom server, the environment's, the teacher's."""
    return server_limits(state.on_gpu(), classroom_mode(), changes=state.store().setting(STORE_SETTING) or {})


def set_limits(values: Mapping[str, int | None]) -> None:
    """The teacher's change of the limits while the server runs (kept in the store: every session sees it)."""
    state.store().set_setting(STORE_SETTING, dict(values))


def _new_runs(keys: Sequence[str], kind: str) -> int:
    """How many of these configuration keys would be new jobs (not done, queued or running already)."""
    found = state.store().latest_runs(list(keys), kind=kind)
    known = set(found.loc[found["status"].isin(["done", *ACTIVE_STATUSES]), "key"])
    return len(set(keys) - known)


def check_run(config: RunConfig) -> None:
    """Raise LimitExceeded when one run of this configuration is above the server's limits (before a page
    computes anything for it)."""
    check_runs([config.canonical()], limits(), state.on_gpu())


def check(configs: Sequence[RunConfig], kind: str = "train", sweep: bool = False,
          queued_keys: Sequence[str] | None = None) -> None:
    """Raise LimitExceeded when these runs (a sweep's cells) ask for more than the server allows, or the new
    jobs among `queued_keys` (default: the runs' keys) would make the queue too long; nothing is queued then.
    The same check for a widget's value and a link's."""
    configs = [c.canonical() for c in configs]
    allowed = limits()
    check_runs(configs, allowed, state.on_gpu(), sweep=sweep)
    if allowed.max_queued is not None or allowed.max_queued_per_user is not None:
        db = state.store()
        keys = queued_keys if queued_keys is not None else [c.key() for c in configs]
        check_queue(allowed, _new_runs(keys, kind), db.active_count(user_token()), db.active_count())


def submit(config: RunConfig, kind: str = "train", masks: Mapping[str, torch.Tensor] | None = None) -> Submission:
    """Queue one run for this user, within the limits."""
    check([config], kind)
    return state.manager().submit_or_reuse(config, kind=kind, masks=masks, user=user())


def submit_runs(configs: Sequence[RunConfig], kind: str = "train") -> list[Submission]:
    """Queue several runs for this user (all within the limits, or none of them)."""
    check(configs, kind)
    return [state.manager().submit_or_reuse(c, kind=kind, user=user()) for c in configs]


def submit_sweep(cells: Sequence[RunConfig], description: dict[str, Any]) -> int:
    """Queue a sweep for this user, within the limits (its cells, seeds, runs and the queue's length)."""
    check(cells, sweep=True)
    return state.manager().submit_sweep(cells, description, user=user())


_RUN_FIELDS = ("dataset", "model", "method", "sparsity", "epochs", "seed")


def submit_job(spec: Mapping[str, Any], key: str, kind: str) -> Submission:
    """Queue a study for this user, within the limits: its model, epochs and method as a run's would be."""
    fields = {name: spec[name] for name in _RUN_FIELDS if name in spec}
    fields.setdefault("method", "magnitude")   # a study of several methods: its model and epochs are checked
    fields.setdefault("epochs", 0)             # a study that trains nothing (layer collapse) asks for no epochs
    check([RunConfig(**fields)], kind, queued_keys=[key])
    return state.manager().submit_job(spec, key, kind, user=user())
