"""The error boundary: every exception a page meets becomes one plain message (what went wrong, what to do),
never a traceback, and the page stays usable."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import streamlit as st
import torch

from dashboard.text import escape_markdown
from pruning_core.engine.data import DatasetUnavailableError
from pruning_core.infra import runner
from pruning_core.infra.store import UnknownRunError
from pruning_core.registry import UnknownNameError

log = logging.getLogger(__name__)


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
