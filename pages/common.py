"""Streamlit helpers shared by every page of the dashboard (not a page: app.py does not list it).

- one run store and one job manager per server (`store()`, `manager()`), so jobs of every viewer queue on
  the one GPU or CPU and pages only read the store;
- the sidebar (device, job queue), the error boundary that turns exceptions into plain messages;
- config widgets built from `RunConfig` fields (label, help text and choices come from the field), whose
  values live in the session and in the URL, so a link reproduces the setup;
- the job status panel: a fragment that polls the store while a run is queued or running, with a progress
  bar, an ETA, the queue position and a cancel button;
- the views a run is shown with on every page (pruning result, training curves), and method explanations.

Nothing here runs long work in the script thread, and nothing called from the job manager's worker uses
`st.*`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import torch

from pruning_core.config import DENSE, RunConfig, config_field, field_choices, field_label, field_type, help_text
from pruning_core.engine.data import DATASETS, DatasetUnavailableError, data_root, load_dataset
from pruning_core.engine.methods import METHODS
from pruning_core.engine.models import MODELS
from pruning_core.engine.training import default_device, device_name
from pruning_core.infra import runner
from pruning_core.infra.jobs import JobManager
from pruning_core.infra.store import ACTIVE_STATUSES, DEFAULT_PATH, ENV_VAR, Store, UnknownRunError
from pruning_core.presentation import charts, findings, units
from pruning_core.registry import UnknownNameError

log = logging.getLogger(__name__)

# Page files, as app.py registers them (st.page_link / st.switch_page take these paths).
PAGES = {
    "prune": "pages/prune_and_train.py",
    "compare": "pages/compare_methods.py",
    "collapse": "pages/layer_collapse.py",
    "runs": "pages/runs.py",
    "lottery": "pages/lottery_tickets.py",
    "gradient_flow": "pages/gradient_flow.py",
    "sanity": "pages/sanity_checks.py",
}

POLL_S = 1.0                 # how often a live panel re-reads the store
QUEUE_POLL_S = 5.0           # how often the sidebar re-reads the job queue
LIGHT_MODELS = ("mlp", "conv", "resnet20")  # pruned inline on a CPU (about a second or less on digits)
# Datasets the dashboard cannot offer: 'image_folder' needs the path of your folder, which a RunConfig does not
# carry (the Python API takes it: pc.load_dataset("image_folder", path=...)).
UNSUPPORTED_DATASETS = ("image_folder",)
CPU_DEFAULTS = {"dataset": "digits", "model": "conv", "method": "synflow", "sparsity": 0.99, "epochs": 10}
GPU_DEFAULTS = {"dataset": "cifar10", "model": "resnet20", "method": "synflow", "sparsity": 0.99, "epochs": 10}


# ---- one store and one job manager per server ------------------------------------------------------------
def db_path() -> str:
    """The run store's file: $PRUNING_DB, else ./runs/pruning.db (absolute)."""
    return str(Path(os.environ.get(ENV_VAR) or DEFAULT_PATH).expanduser().resolve())


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    return Store(path)


@st.cache_resource(show_spinner=False)
def _manager(path: str) -> JobManager:
    return JobManager(_store(path))


def store() -> Store:
    """The server's run store (shared by every session)."""
    return _store(db_path())


def manager() -> JobManager:
    """The server's job manager: one worker thread runs every viewer's jobs one at a time."""
    return _manager(db_path())


@st.cache_resource(show_spinner=False)
def analysis_pool() -> Any:
    """The server's pool for background analyses that are not runs (pages/analyses.py)."""
    from pages.analyses import TaskPool

    return TaskPool()


def masks_archive(run_ids: Sequence[int]) -> bytes:
    """A zip with one compressed .npz of boolean masks per run (layer name -> array, True = kept)."""
    import io
    import zipfile

    import numpy as np

    db = store()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for run_id in run_ids:
            masks = db.load_masks(run_id)
            if masks is None:
                continue
            npz = io.BytesIO()
            np.savez_compressed(npz, **{name: mask.numpy().astype(bool) for name, mask in masks.items()})
            archive.writestr(f"run-{run_id}-masks.npz", npz.getvalue())
    return buffer.getvalue()


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
    """Defaults that finish fast here: digits and the small CNN on a CPU; CIFAR-10 and ResNet-20 on a GPU
    when CIFAR-10 is already on disk (else digits, which needs no download)."""
    if on_gpu() and dataset_on_disk(GPU_DEFAULTS["dataset"]):
        return dict(GPU_DEFAULTS)
    return dict(CPU_DEFAULTS)


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


def runs_inline(config: RunConfig) -> bool:
    """Whether pruning this configuration is quick enough to do in the page (about a second): any model on
    a GPU, small models on a CPU; methods that train to find their masks always go to the job manager."""
    spec = METHODS.get(config.method) if config.method != DENSE else None
    if spec is not None and spec.run is not None:
        return False
    return on_gpu() or config.model in LIGHT_MODELS


def limit_cpu_threads() -> None:
    """On a machine without a GPU, give torch half of the cores (at least one; $PRUNING_TORCH_THREADS
    overrides): the job worker and the page's own pruning run side by side, and small models only lose
    time to more threads (waiting for busy cores made pruning on digits up to 8x slower)."""
    if torch.cuda.is_available():
        return
    wanted = os.environ.get("PRUNING_TORCH_THREADS")
    threads = int(wanted) if wanted and wanted.isdigit() and int(wanted) > 0 else max(1, (os.cpu_count() or 2) // 2)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# ---- errors ------------------------------------------------------------------------------------------
def friendly_error(error: BaseException) -> str:
    """One plain message (markdown) for an exception: what went wrong and what to do; never a traceback."""
    if isinstance(error, DatasetUnavailableError):
        return f"**The dataset is not available.** {error}"
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(error).lower():
        return (f"**{runner.describe_error(error)}** The page is still usable: pick one of these and run "
                "again.")
    if isinstance(error, UnknownRunError):
        return f"**That run no longer exists** ({error}). It may have been deleted from the Runs page."
    if isinstance(error, (UnknownNameError, ValueError)):
        return f"**This input does not work:** {error}"
    return (f"**Something went wrong:** {runner.describe_error(error)}. The page is still usable: change a "
            "setting or reload the page.")


def show_error(error: BaseException) -> None:
    st.error(friendly_error(error), icon=":material/error:")


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """Show any exception raised inside as a plain message instead of a traceback, and carry on.
    Streamlit's own control flow (st.rerun, st.stop) is not an Exception and passes through."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - turning every error into a message is the point
        log.warning("error shown to the user: %s", error, exc_info=True)
        show_error(error)


# ---- widget values in the session and in the URL -----------------------------------------------------
_SHADOW = "_values"   # last value of every config widget, kept across page switches (widget state is not)
_URL_NOTES = "_url_notes"
_PAGE = "_page"           # the page of the previous script run
_ENTERED = "_entered"     # whether this run is the first on its page


def remember(key: str, default: Any, parse: Callable[[Any], Any] | None = None, url_key: str | None = None,
             many: bool = False) -> None:
    """Before a widget with this key is drawn: give it this session's last value, else the value in the URL
    (parsed and checked by `parse`, which raises ValueError for bad input), else `default`.
    A bad URL value is ignored with a note (`url_notes`), never an exception."""
    shadow = st.session_state.setdefault(_SHADOW, {})
    if key in st.session_state and not (st.session_state.get(_ENTERED) and key in shadow):
        return
    if key in shadow:
        # Just entered the page: a value left by another page's widget of the same key is stale for this
        # page's widget, so assign it again (an assignment is what a new widget takes).
        st.session_state[key] = shadow[key]
        return
    url_key = url_key or key
    if url_key in st.query_params:
        raw: Any = st.query_params.get_all(url_key) if many else st.query_params.get(url_key)
        try:
            st.session_state[key] = parse(raw) if parse is not None else raw
            return
        except (ValueError, TypeError, KeyError) as error:
            st.session_state.setdefault(_URL_NOTES, []).append(f"`{url_key}={raw}` was ignored: {error}")
    st.session_state[key] = default


def keep(*keys: str) -> None:
    """After the widgets are drawn: remember their values for the next visit of the page."""
    shadow = st.session_state.setdefault(_SHADOW, {})
    for key in keys:
        if key in st.session_state:
            shadow[key] = st.session_state[key]


def set_values(values: Mapping[str, Any]) -> None:
    """Set widget values (e.g. from a preset, in a button's on_click) and remember them."""
    shadow = st.session_state.setdefault(_SHADOW, {})
    for key, value in values.items():
        st.session_state[key] = value
        shadow[key] = value


def url_notes() -> None:
    """Show (once) what was ignored in the URL."""
    for note in st.session_state.pop(_URL_NOTES, []):
        st.warning(f"Link parameter {note}", icon=":material/link_off:")


def sync_url(params: Mapping[str, Any]) -> None:
    """Make the URL hold exactly these parameters (None leaves one out; lists become repeated parameters),
    so that a copied link reproduces the page's setup and carries nothing from other pages."""
    for key in [k for k in st.query_params.keys() if k not in params]:
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


def parse_field(name: str, raw: Any) -> Any:
    """A URL value for a RunConfig field, converted to the field's type and checked (ValueError if bad)."""
    base, optional = field_type(name)
    if raw in (None, "", "none", "None"):
        if optional:
            return None
        raise ValueError(f"{name} needs a value")
    if base is bool:
        if str(raw).lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} must be true or false")
        value: Any = str(raw).lower() in ("true", "1")
    elif base is int:
        value = int(float(raw)) if float(raw).is_integer() else int(raw)
    elif base is float:
        value = float(raw)
    else:
        value = str(raw)
    choices = field_choices(name)
    if choices is not None and value not in choices:
        raise ValueError(f"unknown {field_label(name).lower()} {value!r}")
    if name != "method":
        RunConfig().replace(**{name: value}).validate()
    return value


def choice_label(name: str, value: Any) -> str:
    """How a choice of a registry-backed field is shown (dataset, model and method labels)."""
    if value is None:
        return "default"
    if name == "dataset" and value in DATASETS:
        return DATASETS[value].label
    if name == "model" and value in MODELS:
        return MODELS[value].label
    if name in ("method", "methods", "compare"):
        return units.method_label(value)
    return str(value)


def dataset_choices() -> list[str]:
    return [d for d in field_choices("dataset") if d not in UNSUPPORTED_DATASETS]


def method_choices() -> list[str]:
    return [m for m in field_choices("method") if m != DENSE]


def field_input(name: str, key: str | None = None, default: Any = None, options: Sequence[Any] | None = None,
                container: Any = None, label: str | None = None, help: str | None = None,
                url_key: str | None = None, **kwargs: Any) -> Any:
    """A widget for a RunConfig field: label, help text and choices come from the field; the value from
    `remember` (session, URL parameter of the field's name, or `default`). `label` replaces the field's
    label, `help` is added after the field's help text, and `url_key` names the URL parameter (for two
    widgets of one field on a page)."""
    key = key or name
    container = container or st
    field = config_field(name)
    base, optional = field_type(field.name)
    meta = field.metadata
    remember(key, field.default if default is None and not optional else default,
             lambda raw: parse_field(name, raw), url_key=url_key or name)
    common = dict(label=label or field_label(name), key=key,
                  help=help_text(name) + (f" {help}" if help else ""))
    choices = list(options) if options is not None else field_choices(name)
    if choices is not None:
        if st.session_state.get(key) not in choices:
            # A value this page does not offer (e.g. ?method=dense where only pruning methods are listed): the
            # page's default, with a note when the link asked for it.
            wrong = st.session_state.get(key)
            st.session_state[key] = default if default in choices else choices[0]
            link = url_key or name
            if wrong is not None and link in st.query_params and st.query_params.get(link) == str(wrong):
                st.session_state.setdefault(_URL_NOTES, []).append(
                    f"`{link}={wrong}` was ignored: this page does not offer {choice_label(name, wrong)}")
        value = container.selectbox(options=choices, format_func=lambda v: choice_label(name, v), **common, **kwargs)
    elif base is bool:
        value = container.toggle(**common, **kwargs)
    elif base is int:
        value = container.number_input(min_value=int(meta["minimum"]) if meta["minimum"] is not None else None,
                                       max_value=int(meta["maximum"]) if meta["maximum"] is not None else None,
                                       step=1, value=None if optional else "min", **common, **kwargs)
    else:
        value = container.number_input(min_value=meta["minimum"], max_value=meta["maximum"],
                                       value=None if optional else "min", **common, **kwargs)
    keep(key)
    return value


def sparsity_slider(key: str, default: float, container: Any = None, url_key: str = "sparsity",
                    max_log: float = 4.0, help: str | None = None) -> float:
    """The sparsity as a slider of compression 10^x (as on Prune & train), its value in the URL as a sparsity
    (?sparsity=0.9); returns the sparsity (10^1 -> exactly 0.9)."""
    container = container or st
    low = 0.1

    def parse(raw: Any) -> float:
        x = round(units.log_compression(parse_field("sparsity", raw)), 1)
        if not low <= x <= max_log:
            raise ValueError(f"this page takes sparsities from {units.percent(units.sparsity_from_log(low))} to "
                             f"{units.percent(units.sparsity_from_log(max_log))}")
        return x

    remember(key, round(units.log_compression(default), 1), parse, url_key=url_key)
    x = container.slider(f"{field_label('sparsity')}: compression 10^x", min_value=low, max_value=max_log, step=0.1,
                         format="10^%.1f", key=key,
                         help=help_text("sparsity") + " The slider moves in powers of ten: 10^1 keeps 1 in 10 weights, "
                                                      "10^2 keeps 1 in 100." + (f" {help}" if help else ""))
    keep(key)
    sparsity = units.sparsity_from_log(x)
    container.caption(f"**{units.percent(sparsity)} of the weights removed** · compression "
                      f"{units.compression_text(sparsity)} · density {units.percent(1 - sparsity)}")
    return sparsity


# ---- sidebar -------------------------------------------------------------------------------------------
def sidebar() -> None:
    """Device, job queue (refreshed every few seconds) and a link to the run history, on every page."""
    with st.sidebar:
        st.markdown(f"**:material/memory: Device:** {device_label()}")
        if not on_gpu():
            st.caption("No GPU: defaults are the built-in digits and the small CNN, which train in seconds.")
        st.fragment(_queue_line, run_every=QUEUE_POLL_S, key="sidebar-queue")()
        st.page_link(PAGES["runs"], label="Run history", icon=":material/history:")


def _queue_line() -> None:
    queued = manager().queue_length()
    if queued:
        st.markdown(f"**:material/queue: Job queue:** {queued} job{'s' if queued != 1 else ''} queued or running")
        st.caption("Everyone's jobs run one at a time on this machine, in the order they were asked for.")
    else:
        st.markdown("**:material/check_circle: Job queue:** idle")


# ---- method explanations ------------------------------------------------------------------------------
def explain_method(name: str) -> None:
    """A method's plain-language explanation with its score formula and paper (all from METHODS)."""
    spec = METHODS[name]
    st.markdown(f"**{spec.label}**: {spec.summary}")
    st.markdown("Score of each weight (the highest scores are kept):")
    st.code(spec.formula, language=None)
    st.markdown(spec.explanation)
    facts = ["needs a few batches of training data" if spec.needs_data else "data-free (needs no data)",
             f"{spec.default_iterations} pruning round{'s' if spec.default_iterations != 1 else ''} by default"]
    st.caption(" · ".join(facts) + f"  \nPaper: {spec.paper}")


def method_popover(name: str, container: Any = None) -> None:
    if name == DENSE or name not in METHODS:
        return
    with (container or st).popover(f"How {METHODS[name].label} works", icon=":material/info:", width="stretch"):
        explain_method(name)


def methods_glossary(names: Sequence[str]) -> None:
    """Every listed method's explanation, one tab each, inside an expander."""
    names = [n for n in names if n in METHODS]
    if not names:
        return
    with st.expander("What do these methods do? Scores and papers", icon=":material/menu_book:"):
        for tab, name in zip(st.tabs([METHODS[n].label for n in names]), names):
            with tab:
                explain_method(name)


# ---- pruning results -------------------------------------------------------------------------------------
@st.cache_data(max_entries=256, show_spinner=False)
def prune_preview(config_json: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Prune one configuration in the page (fast configurations only, see `runs_inline`) and return its
    layer table and summary. Cached by the configuration, so a widget change back is instant."""
    config = RunConfig.from_dict(json.loads(config_json))
    dataset = load_dataset(config.dataset, download=False)
    model = runner.build_model(config, dataset).to(device())
    result = runner.prune_with_config(model, config, dataset)
    return result.layers, {**result.summary(), "method": config.method}


def stored_result(key: str) -> tuple[pd.DataFrame, dict[str, Any], int] | None:
    """The layer table and summary of a finished run of this key (trained, else prune-only), if any."""
    db = store()
    for kind in ("train", "prune"):
        done = db.find_done(key, kind=kind)
        if done is not None:
            layers = db.layers(done["id"])
            if layers is not None:
                return layers, done.get("summary") or {}, done["id"]
    return None


def pruning_result(layers: pd.DataFrame, summary: Mapping[str, Any], *, key: str, label: str = "kept",
                   compare: Mapping[str, pd.DataFrame] | None = None) -> None:
    """The pruning result as every page shows it: per-layer density bars (log-scale toggle) on the left;
    weights and FLOPs kept and the layer-collapse findings on the right."""
    chart, facts = st.columns([2.3, 1], gap="medium")
    with chart:
        log_scale = st.toggle("Log scale", key=f"{key}-log", help="Show densities on a logarithmic axis: small "
                              "densities (0.1%, 0.01%) become visible next to large ones.")
        fig = charts.density_bars(layers, log_scale=log_scale, compare=compare, label=label,
                                  uirevision=f"{key}-density")
        st.plotly_chart(fig, width="stretch", key=f"{key}-density", config={"displaylogo": False})
        st.caption("Each bar is one layer's **density** (kept fraction); the number on it is how many weights "
                   "it kept. ✕ marks a layer that kept none; ◇ the density of weights still connected "
                   "input-to-output.")
    with facts:
        kept, total = int(summary.get("kept", layers["kept"].sum())), int(summary.get("total", layers["total"].sum()))
        flops_kept = int(summary.get("flops_kept", layers["flops_kept"].sum()))
        flops_dense = int(summary.get("flops_dense", layers["flops_dense"].sum()))
        a, b = st.columns(2)
        a.metric("Weights kept", f"{kept:,}", help=f"{kept:,} of {total:,} prunable weights "
                                                 f"({units.percent(kept / total if total else 0)}).")
        a.caption(f"of {total:,} ({units.percent(kept / total if total else 0)})")
        b.metric("FLOPs kept", _short(flops_kept), help="Multiply-adds (x2) per input image in the pruned layers, "
                                                        "counting only kept weights.")
        b.caption(f"of {_short(flops_dense)} ({units.percent(flops_kept / flops_dense if flops_dense else 0)})")
        density = float(summary.get("density", kept / total if total else 0))
        effective = float(summary.get("effective_density", density))
        st.metric("Connected density", units.percent(effective), help="Effective density: the fraction of all "
                  "weights that are kept AND lie on a path from input to output. Below the nominal density "
                  "when pruning left dead ends.", delta=None)
        st.caption(f"nominal density {units.percent(density)}")
        for level, text in findings.collapse_findings(summary):
            getattr(st, level)(text, icon={"error": ":material/link_off:", "warning": ":material/warning:",
                                           "success": ":material/check_circle:"}[level])
        for name, table in (compare or {}).items():
            level, text = findings.collapse_brief(findings.layer_summary(table))
            mark = {"error": ":red[:material/link_off:]", "warning": ":orange[:material/warning:]",
                    "success": ":green[:material/check_circle:]"}[level]
            st.markdown(f"{mark} **{units.method_label(name)}**: {text}.")


def _short(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:,.0f}"


# ---- training curves and job status ---------------------------------------------------------------------
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


def job_status(record: Mapping[str, Any], key: str, metrics: pd.DataFrame | None = None) -> None:
    """One run's state: queue position, progress bar with ETA, cancel button, or its error."""
    run_id, status = record["id"], record["status"]
    if status == "queued":
        position = store().queue_position(run_id) or 0
        text, cancel = st.columns([5, 1], vertical_alignment="center")
        ahead = "next in line" if position == 0 else f"{position} job{'s' if position != 1 else ''} ahead of it"
        text.info(f"Run #{run_id} is queued: {ahead}. Jobs run one at a time on this machine; this page picks "
                  "the run up when it starts, even after a reload.", icon=":material/hourglass_top:")
        cancel.button("Cancel", key=f"{key}-cancel-{run_id}", on_click=manager().cancel, args=(run_id,),
                      icon=":material/close:", help="Remove this run from the queue.", width="stretch")
    elif status == "running":
        progress = record["progress"]
        total = float(progress["total"] or 0)
        fraction = min(max(float(progress["done"]) / total, 0.0), 1.0) if total > 0 else 0.0
        eta = eta_seconds(record, metrics)
        message = progress["message"] or "starting"
        bar, cancel = st.columns([5, 1], vertical_alignment="bottom")
        bar.progress(fraction, text=f"Run #{run_id}: {message} · {fraction:.0%}"
                     + (f" · about {units.duration_text(eta)} left" if eta is not None else ""))
        cancel.button("Cancel", key=f"{key}-cancel-{run_id}", on_click=manager().cancel, args=(run_id,),
                      icon=":material/stop_circle:", help="Stop this run at its next progress point.",
                      width="stretch")
    elif status == "failed":
        st.error(f"**Run #{run_id} failed:** {record.get('error') or 'no message recorded'}", icon=":material/error:")
    elif status == "cancelled":
        st.warning(f"Run #{run_id} was cancelled before it finished.", icon=":material/cancel:")


def runs_status(records: Mapping[str, Mapping[str, Any]], key: str) -> None:
    """The state of several runs shown together (label -> record), compactly: a progress bar for each one
    running, a line for each one queued, failed or cancelled (nothing for those done), and one button that
    cancels every one still queued or running."""
    shown = {label: r for label, r in records.items() if r["status"] != "done"}
    if not shown:
        return
    active = [int(r["id"]) for r in shown.values() if r["status"] in ACTIVE_STATUSES]
    lines, button = st.columns([5, 1], vertical_alignment="center")
    with lines:
        for label, record in shown.items():
            run_id, status = record["id"], record["status"]
            if status == "running":
                progress = record["progress"]
                total = float(progress["total"] or 0)
                fraction = min(max(float(progress["done"]) / total, 0.0), 1.0) if total > 0 else 0.0
                eta = eta_seconds(record, store().metrics(run_id))
                st.progress(fraction, text=f"**{label}** (run #{run_id}): {progress['message'] or 'starting'} · "
                                           f"{fraction:.0%}" + (f" · about {units.duration_text(eta)} left"
                                                                if eta is not None else ""))
            elif status == "queued":
                ahead = store().queue_position(run_id) or 0
                st.markdown(f":material/hourglass_top: **{label}** (run #{run_id}): queued, "
                            + ("next in line" if ahead == 0 else f"{ahead} job{'s' if ahead != 1 else ''} ahead"))
            elif status == "failed":
                st.error(f"**{label}** (run #{run_id}) failed: {record.get('error') or 'no message recorded'}",
                         icon=":material/error:")
            elif status == "cancelled":
                st.warning(f"**{label}** (run #{run_id}) was cancelled before it finished.", icon=":material/cancel:")
    if active:
        button.button("Cancel", key=f"{key}-cancel-all", icon=":material/stop_circle:", width="stretch",
                      on_click=lambda: [manager().cancel(r) for r in active],
                      help="Cancel every one of these runs that is still queued or running (finished ones are kept).")


def live_panel(run_id: int, key: str, draw: Callable[[dict[str, Any]], None] | None = None) -> None:
    """A fragment that shows a run's status (and `draw(record)`) and, while the run is queued or running,
    re-reads the store every POLL_S seconds; when the run ends the whole page reruns once to show the
    final state, and polling stops. The job itself lives in the job manager, so a rerun, another widget
    or a closed tab never stops it: the panel re-attaches from the store."""
    first = store().get_run(run_id)
    active = first["status"] in ACTIVE_STATUSES

    def panel() -> None:
        record = None
        with error_boundary():
            record = store().get_run(run_id)
            metrics = store().metrics(run_id) if record["kind"] != "prune" else None
            job_status(record, key, metrics)
            if draw is not None:
                draw(record)
        if active and record is not None and record["status"] not in ACTIVE_STATUSES:
            st.rerun()

    st.fragment(panel, run_every=POLL_S if active else None, key=f"{key}-live-{run_id}")()


def live_runs(run_ids: Sequence[int], key: str, draw: Callable[[dict[int, dict[str, Any]]], None]) -> None:
    """`live_panel` for several runs shown together (a method's sanity checks, IMP and GemMiner): a fragment
    that calls draw({run id: record}) and, while any of them is queued or running, re-reads the store every
    POLL_S seconds; when the last one ends the whole page reruns once. `draw` shows the runs' statuses
    (`job_status`) where it wants them."""
    ids = list(dict.fromkeys(int(r) for r in run_ids))
    active = any(store().get_run(r)["status"] in ACTIVE_STATUSES for r in ids)

    def panel() -> None:
        records = None
        with error_boundary():
            records = {r: store().get_run(r) for r in ids}
            draw(records)
        if active and records is not None and not any(r["status"] in ACTIVE_STATUSES for r in records.values()):
            st.rerun()

    st.fragment(panel, run_every=POLL_S if active else None, key=f"{key}-live")()


def stored_runs(configs: Mapping[str, RunConfig]) -> tuple[dict[str, int], dict[str, str]]:
    """Each labelled configuration's training run in the store (done, else active, else the newest) and its
    status, by label; labels without a run are left out. One query for all of them."""
    labels = {config.key(): label for label, config in configs.items()}
    runs = store().latest_runs(list(labels), kind="train")
    return ({labels[r.key]: int(r.run_id) for r in runs.itertuples()},
            {labels[r.key]: r.status for r in runs.itertuples()})


def submit_runs(configs: Mapping[str, RunConfig], started_key: str) -> None:
    """on_click: queue every configuration (the job manager reuses finished or active runs of the same one) and
    remember, under `started_key`, the ids this session started, so a page can tell reuse from a new run."""
    started = st.session_state.setdefault(started_key, set())
    for config in configs.values():
        run_id = manager().submit(config, kind="train")
        if store().get_run(run_id)["status"] != "done":
            started.add(run_id)


def task_status(task: Any, key: str, cancel: Callable[[], None], what: str = "Computing") -> None:
    """A background analysis task's progress bar (pages/analyses.py), with its ETA and a cancel button."""
    eta = task.eta_s()
    bar, button = st.columns([5, 1], vertical_alignment="bottom")
    waiting = task.started is None
    bar.progress(task.fraction, text=("Waiting for another analysis to finish…" if waiting else
                                      f"{what}: {task.message} · {task.fraction:.0%}")
                 + (f" · about {units.duration_text(eta)} left" if eta is not None else ""))
    button.button("Cancel", key=f"{key}-cancel", on_click=cancel, icon=":material/stop_circle:", width="stretch",
                  help="Stop this computation at its next progress point.")


def training_curves(run_id: int, key: str, record: Mapping[str, Any] | None = None) -> None:
    """A run's loss and accuracy curves (live while it trains)."""
    record = record or store().get_run(run_id)
    metrics = store().metrics(run_id)
    dataset = record.get("dataset")
    classes = DATASETS[dataset].num_classes if dataset in DATASETS else 0
    if findings.split_metrics(metrics)[0].empty:
        st.caption("The curves appear after the first evaluation (before training starts).")
        return
    fig = charts.training_curves(metrics, chance=1 / classes if classes else None, uirevision=f"{key}-curves")
    st.plotly_chart(fig, width="stretch", key=f"{key}-curves", config={"displaylogo": False})


def run_summary(record: Mapping[str, Any]) -> None:
    """Headline numbers of a finished training run."""
    summary = record.get("summary") or {}
    if record.get("status") != "done" or "final_test_accuracy" not in summary:
        return
    timings = record.get("timings") or {}
    cols = st.columns(4)
    cols[0].metric("Final test accuracy", units.percent(summary["final_test_accuracy"]))
    cols[1].metric("Best test accuracy", units.percent(summary.get("best_test_accuracy", math.nan)))
    cols[2].metric("Training time", units.duration_text(timings.get("train_s")),
                   help=f"Pruning took {units.duration_text(timings.get('prune_s'))}.")
    speed = summary.get("images_per_s")
    cols[3].metric("Speed", f"{speed:,.0f} img/s" if speed else "–", help=f"On {record.get('device') or '?'}.")


def config_caption(config: Mapping[str, Any]) -> str:
    """'SynFlow · 99% removed · compression 10^2.0 (100×) · Small CNN on Digits · seed 0 · 10 epochs'."""
    c = RunConfig.from_dict(dict(config)).canonical()
    parts = [units.method_label(c.method), units.sparsity_text(c.sparsity),
             f"{choice_label('model', c.model)} on {choice_label('dataset', c.dataset)}", f"seed {c.seed}",
             f"{c.epochs} epoch{'s' if c.epochs != 1 else ''}"]
    if not c.is_dense:
        parts.insert(2, f"{c.schedule}, {c.iterations or METHODS[c.method].default_iterations} round(s), {c.scope}")
    return " · ".join(parts)


def ensure_navigation() -> None:
    """Run this page through app.py. Until some session has run app.py's st.navigation, Streamlit treats
    the `pages/` folder as old-style auto-discovered pages, so a link straight to a page (/runs) on a
    freshly started server runs the page alone, without the app's layout, sidebar and error boundary
    (AppTest starts every run this way). Then run app.py here instead (it routes to this same page) and
    end the lone run."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        import runpy

        runpy.run_path(str(Path(__file__).resolve().parent.parent / "app.py"), run_name="__main__")
        st.stop()


def page_header(title: str, intro: str) -> None:
    """The page's title and introduction; call it first on every page (it also notes a page switch)."""
    ensure_navigation()
    st.session_state[_ENTERED] = st.session_state.get(_PAGE) != title
    st.session_state[_PAGE] = title
    st.title(title)
    st.caption(intro)
