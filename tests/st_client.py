"""A minimal Streamlit client over the server's websocket (what a browser tab does, without a browser): open a
session, run a page with URL parameters, read what the server sends back, rerun a fragment as its timer would.

For the tests and benchmarks that start a real `streamlit run` server: a session is what creates the server's
job manager, and many of them cost far less than browser tabs on a small machine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg, ForwardMsgList
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`streamlit run app.py` headless on `port`, in a process group of its own (so that it can be killed with
    its workers), its output in `log_path`."""
    log = open(log_path, "wb")
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the server on port {port} did not answer within {timeout:.0f} s")


@dataclass
class Run:
    """What one script run sent: its messages, its status, and the texts and auto-reruns among them."""

    messages: list[ForwardMsg] = field(default_factory=list)
    status: int | None = None

    def texts(self) -> list[str]:
        found = []
        for msg in self.messages:
            if msg.WhichOneof("type") != "delta" or msg.delta.WhichOneof("type") != "new_element":
                continue
            element = msg.delta.new_element
            kind = element.WhichOneof("type")
            if kind in ("markdown", "alert", "heading", "text", "caption"):
                found.append(getattr(element, kind).body)
            elif kind == "progress":
                found.append(element.progress.text)
            elif kind == "metric":
                found.append(f"{element.metric.label}: {element.metric.body}")
        return found

    def button_id(self, key: str) -> str | None:
        """The widget id of the button with this user key, if the run drew it."""
        for msg in self.messages:
            if msg.WhichOneof("type") == "delta" and msg.delta.WhichOneof("type") == "new_element":
                element = msg.delta.new_element
                if element.WhichOneof("type") == "button" and element.button.id.endswith(f"-{key}"):
                    return element.button.id
        return None

    def auto_reruns(self) -> list[tuple[str, float]]:
        return [(m.auto_rerun.fragment_id, m.auto_rerun.interval) for m in self.messages
                if m.WhichOneof("type") == "auto_rerun"]

    def charts(self) -> int:
        return sum(1 for m in self.messages if m.WhichOneof("type") == "delta"
                   and m.delta.WhichOneof("type") == "new_element"
                   and m.delta.new_element.WhichOneof("type") == "plotly_chart")


class Session:
    """One browser tab's websocket session."""

    def __init__(self, port: int, timeout: float = 60.0):
        self.port = port
        self._connection = connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"],
                                   max_size=None, open_timeout=timeout)
        self.ws = self._connection.__enter__()
        self.page_hash = ""
        self.timers: dict[str, float] = {}   # fragment id -> seconds: the auto-reruns a browser would keep
    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def run(self, page: str = "", query: str = "", fragment_id: str = "", click: str | None = None,
            timeout: float = 120.0) -> Run:
        """Run the app (on `page`, its URL path name, with `query`), or one of its fragments, or the app again
        with the button of widget id `click` pressed, and collect what the server sends until the run finishes."""
        back = BackMsg()
        state = back.rerun_script
        state.query_string = query
        state.page_name = page
        state.page_script_hash = self.page_hash if (fragment_id or click) else ""
        if fragment_id:
            state.fragment_id = fragment_id
            state.is_auto_rerun = True
        if click:
            widget = state.widget_states.widgets.add()
            widget.id = click
            widget.trigger_value = True
        self.ws.send(back.SerializeToString())
        return self.read(timeout)

    def read(self, timeout: float = 120.0) -> Run:
        run = Run()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            for msg in _messages(data):
                run.messages.append(msg)
                kind = msg.WhichOneof("type")
                if kind == "new_session":
                    self.page_hash = msg.new_session.page_script_hash
                    if not msg.metadata.run.fragment_ids:
                        self.timers.clear()   # a full run: as the browser does, only its own auto-reruns stay
                elif kind == "navigation" and msg.navigation.page_script_hash:
                    self.page_hash = msg.navigation.page_script_hash
                elif kind == "auto_rerun":
                    self.timers[msg.auto_rerun.fragment_id] = msg.auto_rerun.interval
                elif kind == "stop_auto_rerun":
                    for fragment_id in msg.stop_auto_rerun.fragment_ids:
                        self.timers.pop(fragment_id, None)
                elif kind == "script_finished":
                    run.status = msg.script_finished
                    if run.status != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                        return run
        raise TimeoutError(f"no script_finished within {timeout:.0f} s")


def _messages(data: bytes) -> list[ForwardMsg]:
    msg = ForwardMsg()
    msg.ParseFromString(data)
    if msg.WhichOneof("type") is not None:
        return [msg]
    batch = ForwardMsgList()
    batch.ParseFromString(data)
    return list(batch.messages)
