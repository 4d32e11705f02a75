"""Text that reaches Streamlit's Markdown from outside the code (a link's values, error messages that quote them,
names from the store) is escaped with `escape_markdown`, the one helper every page uses for it: a crafted link
must never put a link, an image, a code span or formatting into the app's own messages."""

from __future__ import annotations

import re
from typing import Any

# CommonMark shows a backslash-escaped ASCII punctuation character as itself. Escaped here: what can start
# markup anywhere in a line: links and images ([, ], (, ), !), code spans (`), emphasis and strikethrough (*, _,
# ~), HTML and autolinks (<, >), tables (|), headings (#), Streamlit's colours and icons (:red[...],
# :material/...:) and LaTeX ($).
_MARKUP = re.compile(r"([\\`*_{}\[\]()<>#!|~$:])")
_LINE_START = re.compile(r"^([-+=])")   # a list item or a heading underline, at the start of a line
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
# Streamlit turns a bare https://..., www.... or name@host in the text into a link after the Markdown is parsed,
# escapes or not; an invisible word joiner (U+2060) inside each keeps the text as it is and stops that.
_AUTOLINK = re.compile(r"(?i)(?<=:)(?=//)|(?<=\bwww)(?=\.)|(?<=@)")
WORD_JOINER = "\u2060"


def escape_markdown(value: Any, code: bool = False) -> str:
    """`value` as Markdown that shows it as written (bare addresses included, as text), on one line (a line break
    could start a new block: a heading, a quote, a list). With `code`, as a code span (`method=x`), in which
    nothing is markup: its fence is one backtick longer than the longest run of backticks in the value."""
    text = _LINE_BREAKS.sub(" ", str(value))
    if code:
        fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
        # One space inside each fence is dropped when there is one on both sides: pad when the value would
        # touch a fence with a backtick, or itself starts and ends with a space.
        padded = text[:1] == "`" or text[-1:] == "`" or (text[:1] == text[-1:] == " ") or not text.strip()
        return f"{fence} {text} {fence}" if padded else f"{fence}{text}{fence}"
    text = _AUTOLINK.sub(WORD_JOINER, text)
    return _LINE_START.sub(r"\\\1", _MARKUP.sub(r"\\\1", text))
