"""The error boundary: every exception a page meets becomes one plain message (what went wrong, what to do),
never a traceback, and the page stays usable. Widget callbacks (on_click, on_change) run before the page's
script, outside any boundary: `callback` wraps them, and the page header shows what they met
(`show_callback_errors`)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st
import torch

from dashboard.text import escape_markdown
from pruning_core.engine.data import DatasetUnavailableError
from pruning_core.infra import runner
from pruning_core.infra.limits import LimitExceeded
from pruning_core.infra.store import UnknownRunError
from pruning_core.registry import UnknownNameError

log = logging.getLogger(__name__)
CALLBACK_ERRORS = "_callback_errors"   # session key: messages of callbacks that failed, for the next run


def friendly_error(error: BaseException) -> str:
    """One plain message (markdown) for an exception: what went wrong and what to do; never a traceback. The
    exception's text is escaped: it may quote a link's values."""
    text = escape_markdown(error)
    if isinstance(error, DatasetUnavailableError):
        return f"**The dataset is not available.** {text}"
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(error).lower():
        return (f"**{escape_markdown(runner.describe_error(error))}** The page is still usable: pick one of these "
                "and run again.")
    if isinstance(error, UnknownRunError):
        return f"**That run no longer exists** ({text}). It may have been deleted from the Runs page."
    if isinstance(error, LimitExceeded):
        return f"**Above this server's limit.** {text}"
    if isinstance(error, (UnknownNameError, ValueError)):
        return f"**This input does not work:** {text}"
    return (f"**Something went wrong:** {escape_markdown(runner.describe_error(error))}. The page is still "
            "usable: change a setting or reload the page.")


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


def callback(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` as a widget callback (on_click=errors.callback(start)): an exception inside becomes a plain
    message that the page shows at its top on the run that follows (`show_callback_errors`), instead of
    Streamlit's error in place of the page. Streamlit's own control flow (st.rerun, st.switch_page) passes."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - see error_boundary
            log.warning("error in a callback, shown to the user: %s", error, exc_info=True)
            st.session_state.setdefault(CALLBACK_ERRORS, []).append(friendly_error(error))
            return None

    return guarded


def show_callback_errors() -> None:
    """Show (once) the messages of the callbacks that failed before this run."""
    for message in st.session_state.pop(CALLBACK_ERRORS, []):
        st.error(message, icon=":material/error:")
