"""Configuration widgets built from `RunConfig` fields: label, help text, choices and bounds come from the field,
values from the session or the URL (`state.restore_widget_value`), and a bad link value is ignored with a note.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import streamlit as st

from dashboard import lessons, state
from pruning_core.config import DENSE, RunConfig, config_field, field_choices, field_label, field_type, help_text
from pruning_core.engine.data import DATASETS
from pruning_core.engine.models import MODELS
from pruning_core.presentation import units

ID_MAX = 2**63 - 1   # the largest id the run store (SQLite) can hold

# Datasets the dashboard cannot offer: 'image_folder' needs the path of your folder, which a RunConfig does not
# carry (the Python API takes it: pc.load_dataset("image_folder", path=...)).
UNSUPPORTED_DATASETS = ("image_folder",)


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


def parse_id(raw: Any, what: str = "run") -> int:
    """A link's run or sweep id (?run=12) as an int, or ValueError: ids are whole numbers from 1 to 2^63 - 1 (a
    20-digit number would overflow the store's integers)."""
    text = str(raw).strip()
    if not (0 < len(text) <= len(str(ID_MAX)) and text.isascii() and text.isdigit()) or not 1 <= int(text) <= ID_MAX:
        raise ValueError(f"{what} ids are whole numbers from 1 to {ID_MAX:,}")
    return int(text)


def compression_parser(low: float, high: float) -> Callable[[Any], float]:
    """A parser for a link's ?sparsity= into a compression slider's 10^x (one decimal): ValueError for a sparsity
    the field refuses, or one outside the slider's range from 10^low to 10^high."""

    def parse(raw: Any) -> float:
        x = round(units.log_compression(parse_field("sparsity", raw)), 1)
        if not low <= x <= high:
            raise ValueError(f"this page takes sparsities from {units.percent(units.sparsity_from_log(low))} to "
                             f"{units.percent(units.sparsity_from_log(high))}")
        return x

    return parse


def known_names(what: str, names: Iterable[str]) -> Callable[[Sequence[str]], list[str]]:
    """A parser for a link's list of names (?methods=a&methods=b): the list as given when every name is one of
    `names`, else ValueError("unknown method(s) a, b") with `what` naming the kind."""
    known = set(names)

    def parse(raw: Sequence[str]) -> list[str]:
        unknown = [name for name in raw if name not in known]
        if unknown:
            raise ValueError(f"unknown {what}(s) {', '.join(unknown)}")
        return list(raw)

    return parse


def choice_label(name: str, value: Any) -> str:
    """How a choice of a registry-backed field is shown (dataset, model and method labels)."""
    if value is None:
        return "default"
    if name == "dataset" and value in DATASETS:
        # The short name: 'Digits (8x8, built in)' was cut to 'Digits (8x8, bui' in a select box. The whole
        # label is in the widget's help (`choices_help`).
        return DATASETS[value].label.split(" (", 1)[0]
    if name == "model" and value in MODELS:
        return MODELS[value].label
    if name in ("method", "methods", "compare"):
        return units.method_label(value)
    return str(value)


def choices_help(name: str, choices: Sequence[Any]) -> str:
    """What the short choice names stand for, for a widget's help ('Digits: 8x8, built in.'); '' if nothing
    is shortened."""
    if name != "dataset":
        return ""
    full = [DATASETS[c].label for c in choices if c in DATASETS and " (" in DATASETS[c].label]
    return " ".join(f"{label.split(' (', 1)[0]}: {label.split(' (', 1)[1].rstrip(')')}." for label in full)


def dataset_choices() -> list[str]:
    return [d for d in field_choices("dataset") if d not in UNSUPPORTED_DATASETS]


def method_choices() -> list[str]:
    return [m for m in field_choices("method") if m != DENSE]


def field_input(name: str, key: str | None = None, default: Any = None, options: Sequence[Any] | None = None,
                container: Any = None, label: str | None = None, help: str | None = None,
                url_key: str | None = None, own_help: str | None = None, **kwargs: Any) -> Any:
    """A widget for a RunConfig field: label, help text and choices come from the field; the value from
    `state.restore_widget_value` (session, URL parameter of the field's name, or `default`). `label` replaces
    the field's label, `help` is added after the field's help text (`own_help` replaces it, where the field's
    text does not fit the widget's use), and `url_key` names the URL parameter (for two widgets of one field on
    a page)."""
    key = key or name
    container = container or st
    field = config_field(name)
    base, optional = field_type(field.name)
    meta = field.metadata
    state.restore_widget_value(key, field.default if default is None and not optional else default,
                               lambda raw: parse_field(name, raw), url_key=url_key or name)
    if lessons.hidden(url_key or name):   # a lesson link hides it: the link's value, no widget
        state.save_widget_values(key)
        return st.session_state[key]
    if lessons.locked(url_key or name):   # a lesson link locks it: shown, not changeable
        kwargs["disabled"] = True
    choices = list(options) if options is not None else field_choices(name)
    text = own_help if own_help is not None else help_text(name) + (f" {help}" if help else "")
    if choices is not None and choices_help(name, choices):
        text += " " + choices_help(name, choices)
    common = dict(label=label or field_label(name), key=key, help=text)
    if choices is not None:
        if st.session_state.get(key) not in choices:
            # A value this page does not offer (e.g. ?method=dense where only pruning methods are listed): the
            # page's default, with a note when the link asked for it.
            wrong = st.session_state.get(key)
            st.session_state[key] = default if default in choices else choices[0]
            link = url_key or name
            if wrong is not None and link in st.query_params and st.query_params.get(link) == str(wrong):
                state.note_ignored_link(f"{link}={wrong}", f"this page does not offer {choice_label(name, wrong)}")
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
    state.save_widget_values(key)
    return value


def sparsity_slider(key: str, default: float, container: Any = None, url_key: str = "sparsity",
                    min_log: float = 0.1, max_log: float = 4.0, help: str | None = None) -> float:
    """The sparsity as a slider of compression 10^x (every page's one sparsity widget), its value in the URL as
    a sparsity (?sparsity=0.9); returns the sparsity (10^1 -> exactly 0.9). Pages that study a pruned
    network start at 10^0.1; Prune & train starts at 10^0 (dense)."""
    container = container or st
    state.restore_widget_value(key, round(units.log_compression(default), 1), compression_parser(min_log, max_log),
                               url_key=url_key)
    if lessons.hidden(url_key):   # a lesson link hides it: the link's value, no slider
        state.save_widget_values(key)
        return units.sparsity_from_log(st.session_state[key])
    x = container.slider(f"{field_label('sparsity')}: compression 10^x", min_value=min_log, max_value=max_log,
                         step=0.1, disabled=lessons.locked(url_key),   # a lesson link locks it
                         format="10^%.1f", key=key,
                         help=help_text("sparsity") + " The slider moves in powers of ten: 10^1 keeps 1 in 10 weights, "
                                                      "10^2 keeps 1 in 100." + (f" {help}" if help else ""))
    state.save_widget_values(key)
    sparsity = units.sparsity_from_log(x)
    container.caption(f"**{units.percent(sparsity)} of the weights removed** · compression "
                      f"{units.compression_text(sparsity)} · density {units.percent(1 - sparsity)}")
    return sparsity
