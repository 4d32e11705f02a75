"""What the dashboard shares: one run store and one job manager per server (every viewer's long work, studies
included, queues for the worker processes, and pages only read the store), the device and its defaults, what a
page may compute itself (bounded work only), and each session's widget values, which live in the session and in
the URL, so that a link reproduces a page's setup.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from dashboard.text import escape_markdown as md
from pruning_core.config import RunConfig
from pruning_core.engine.data import DatasetUnavailableError, data_root, load_dataset
from pruning_core.engine.training import default_device, device_name
from pruning_core.infra.jobs import JobManager, prune_seconds
from pruning_core.infra.store import DEFAULT_PATH, ENV_VAR, Store

INLINE_BUDGET_S = 2.0   # the most a page's own pruning may take (estimated); longer work is a queued job
PREWARM_S = 10.0        # the workers start this long after the server's first visitor, if nothing asked sooner
# On a GPU with CIFAR-10 on disk, the pages open on these instead of RunConfig's own (digits, fast on a CPU).
GPU_OVERRIDES = {"dataset": "cifar10", "model": "resnet20"}


# ---- one store and one job manager per server ---------------------------------------------------------------
def db_path() -> str:
    """The run store's file: $PRUNING_DB, else ./runs/pruning.db (absolute)."""
    return _resolved(os.environ.get(ENV_VAR) or str(DEFAULT_PATH), os.getcwd())


@functools.lru_cache(maxsize=16)
def _resolved(path: str, cwd: str) -> str:
    # Every poll asks for the store several times: resolving the path each time was a visible share of a poll.
    return str(Path(path).expanduser().resolve())


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    return Store(path)


@st.cache_resource(show_spinner=False)
def _manager(path: str) -> JobManager:
    # Created with the server's first session: it recovers what a previous server left (queued jobs are run,
    # interrupted ones failed) and starts the worker processes.
    return JobManager(_store(path), prewarm_s=PREWARM_S)


def store() -> Store:
    """The server's run store (shared by every session)."""
    return _store(db_path())


def manager() -> JobManager:
    """The server's job manager: its worker processes run every viewer's jobs, in the order asked for."""
    return _manager(db_path())


_FROZEN_AT = [0]   # how many modules were loaded when the long-lived objects were last frozen


def freeze_long_lived_objects() -> None:
    """Keep Streamlit's collection after every script run cheap. It runs a full gc.collect(2), which walks every
    object the server holds: with torch, pandas and plotly loaded, 310,000 objects and 330 ms on this 2-core CPU,
    ten times a live panel's own work, for every poll of every tab. The objects of imported modules live as long
    as the server, so whenever new modules were loaded, garbage is collected once and what remains is frozen out
    of the collector's walk (gc.freeze); objects freed by reference counting are still freed."""
    if len(sys.modules) > _FROZEN_AT[0]:
        gc.collect()
        gc.freeze()
        _FROZEN_AT[0] = len(sys.modules)


# ---- device ------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def device() -> torch.device:
    return default_device()


def on_gpu() -> bool:
    return device().type == "cuda"


def device_label() -> str:
    return device_name(device())


def dataset_on_disk(name: str) -> bool:
    """Whether a dataset loads without downloading (built in, or its files are already here)."""
    return _on_disk(name, str(data_root()))


@st.cache_resource(show_spinner=False)
def _on_disk(name: str, root: str) -> bool:
    try:
        load_dataset(name, root=root, download=False)
        return True
    except (DatasetUnavailableError, ValueError):
        return False


def device_defaults() -> dict[str, Any]:
    """RunConfig's defaults (digits and the small CNN: fast on a CPU), with CIFAR-10 and ResNet-20 on a GPU
    when CIFAR-10 is already on disk (else digits, which needs no download)."""
    defaults = RunConfig().to_dict()
    if on_gpu() and dataset_on_disk(GPU_OVERRIDES["dataset"]):
        defaults.update(GPU_OVERRIDES)
    return defaults


def runs_inline(config: RunConfig) -> bool:
    """Whether pruning this configuration is bounded enough to do in the page: its estimated cost (model size x
    rounds x the method's cost per round, `jobs.prune_seconds`) is within INLINE_BUDGET_S on this device. Longer
    prunes (a big model on a CPU, a link asking for 100,000 rounds) and methods that train to find their masks
    go to the job queue, where they show progress and can be cancelled."""
    return prune_seconds(config, gpu=on_gpu()) <= INLINE_BUDGET_S


def limit_cpu_threads() -> None:
    """The core's thread policy for the page threads (`pruning_core.engine.threads`; runs apply it themselves)."""
    from pruning_core.engine.threads import limit_cpu_threads as core_policy

    core_policy()


# ---- widget values in the session and in the URL -----------------------------------------------------
# Widget state is dropped when a page is left, so the last value of every config widget is saved here too.
_SAVED_WIDGET_VALUES = "_saved_widget_values"
_IGNORED_LINK_NOTES = "_ignored_link_notes"
_PAGE = "_page"           # the page of the previous script run
_ENTERED = "_entered"     # whether this run is the first on its page


def enter_page(title: str) -> None:
    """Note which page this script run draws (first thing on every page): just entered, or a rerun of it."""
    st.session_state[_ENTERED] = st.session_state.get(_PAGE) != title
    st.session_state[_PAGE] = title


def restore_widget_value(key: str, default: Any, parse: Callable[[Any], Any] | None = None,
                         url_key: str | None = None, many: bool = False) -> None:
    """Before a widget with this key is drawn: give it this session's last value, else the value in the URL
    (parsed and checked by `parse`, which raises ValueError for bad input), else `default`.
    A bad URL value is ignored with a note (`show_ignored_link_notes`), never an exception."""
    saved = st.session_state.setdefault(_SAVED_WIDGET_VALUES, {})
    if key in st.session_state and not (st.session_state.get(_ENTERED) and key in saved):
        return
    if key in saved:
        # Just entered the page: a value left by another page's widget of the same key is stale for this
        # page's widget, so assign it again (an assignment is what a new widget takes).
        st.session_state[key] = saved[key]
        return
    url_key = url_key or key
    if url_key in st.query_params:
        raw: Any = st.query_params.get_all(url_key) if many else st.query_params.get(url_key)
        try:
            st.session_state[key] = parse(raw) if parse is not None else raw
            return
        except (ValueError, TypeError, KeyError) as error:
            note_ignored_link(f"{url_key}={raw}", str(error))
    st.session_state[key] = default


def save_widget_values(*keys: str) -> None:
    """After the widgets are drawn: save their values for the next visit of the page."""
    saved = st.session_state.setdefault(_SAVED_WIDGET_VALUES, {})
    for key in keys:
        if key in st.session_state:
            saved[key] = st.session_state[key]


def has_saved_widget_value(key: str) -> bool:
    """Whether this session has drawn (or set) the widget of this key before: then its value, not a link's
    or a run's, is what the page shows."""
    return key in st.session_state.get(_SAVED_WIDGET_VALUES, {})


def set_widget_values(values: Mapping[str, Any]) -> None:
    """Set widget values (e.g. from a preset, in a button's on_click) and save them."""
    saved = st.session_state.setdefault(_SAVED_WIDGET_VALUES, {})
    for key, value in values.items():
        st.session_state[key] = value
        saved[key] = value


def note_ignored_link(parameter: str, reason: str) -> None:
    """Remember to tell the viewer that a link parameter ('method=nonsense') was ignored, and why."""
    st.session_state.setdefault(_IGNORED_LINK_NOTES, []).append(f"{md(parameter, code=True)} was ignored: {md(reason)}")


def show_ignored_link_notes() -> None:
    """Show (once) what was ignored in the URL."""
    for note in st.session_state.pop(_IGNORED_LINK_NOTES, []):
        st.warning(f"Link parameter {note}", icon=":material/link_off:")


LESSON_PARAMS = ("lock", "hide", "answer")   # a lesson link's locked and hidden controls, and whether it leaves
# the answer out (`dashboard.lessons`): kept in the URL


def sync_url(params: Mapping[str, Any]) -> None:
    """Make the URL hold exactly these parameters (None leaves one out; lists become repeated parameters),
    so that a copied link reproduces the page's setup and carries nothing from other pages (a lesson link's
    `lock`, `hide` and `answer` stay)."""
    for key in [k for k in st.query_params.keys() if k not in params and k not in LESSON_PARAMS]:
        del st.query_params[key]
    for key, value in params.items():
        if value is None or value == []:
            if key in st.query_params:
                del st.query_params[key]
            continue
        text: str | list[str] = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
        current = st.query_params.get_all(key) if isinstance(text, list) else st.query_params.get(key)
        if current != text:
            st.query_params[key] = text
