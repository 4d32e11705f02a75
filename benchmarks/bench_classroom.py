"""A classroom on one server: N students open Prune & train and start a short digits run at the same moment.

Starts a real server (`streamlit run app.py`, its own run store in a temporary folder) and drives N simulated
students over Streamlit's websocket protocol (`tests/st_client.py`: what a browser tab sends and receives,
timers of the live panels included, without a browser; 30 Chromium tabs do not fit on 2 cores beside the
server). With `--browser`, N real Chromium contexts (Playwright, /usr/bin/chromium) do the same instead.

Figures (printed as the Markdown table recorded in BENCHMARKS.md):
- runs submitted / finished / lost;
- the last student's wait for a result against (position / workers) x one run's click-to-result time alone;
- a long run watched by N tabs against the same run with no tab open (the worker's training time);
- a fresh tab's first render (title and first chart) while the N tabs watch, p95;
- the server's CPU with the N tabs open and every run done;
- the server's memory growth over 100 page loads.

    .venv/bin/python benchmarks/bench_classroom.py --students 30
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from st_client import Session, free_port, start_server, wait_healthy

from pruning_core.config import RunConfig
from pruning_core.infra.store import Store

RESULT = "Final test accuracy"
PAGE_QUERY = "dataset=digits&model=conv&method=synflow&sparsity=0.99&epochs={epochs}&seed={seed}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Student(threading.Thread):
    """One tab: load the page, press Train when told, then poll as the page's timers say until the result shows;
    then stay open (idle) until `leave` is set."""

    def __init__(self, port: int, query: str, go: threading.Event, leave: threading.Event, deadline_s: float,
                 click: bool = True):
        super().__init__(daemon=True)
        self.port, self.query, self.go, self.leave, self.deadline_s, self.click = port, query, go, leave, \
            deadline_s, click
        self.loaded = threading.Event()
        self.started = threading.Event()   # the click's (or the first) page run is drawn: the tab now watches
        self.clicked_at: float | None = None
        self.result_at: float | None = None
        self.polls = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            session = Session(self.port)
            page = session.run(query=self.query)
            button = page.button_id("train")
            self.loaded.set()
            self.go.wait()
            self.clicked_at = time.monotonic()
            shown = session.run(query=self.query, click=button) if self.click and button else page
            self.started.set()
            due = {f: time.monotonic() + i for f, i in session.timers.items()}
            while RESULT not in " ".join(shown.texts()) and time.monotonic() - self.clicked_at < self.deadline_s:
                due = {f: due.get(f, time.monotonic() + i) for f, i in session.timers.items()}
                if not due:
                    break   # nothing polls any more and no result: lost
                fragment, at = min(due.items(), key=lambda item: item[1])
                time.sleep(max(0.0, at - time.monotonic()))
                shown = session.run(query=self.query, fragment_id=fragment)
                self.polls += 1
                due[fragment] = at + session.timers.get(fragment, 0.0)
                if fragment not in session.timers:
                    due.pop(fragment, None)
            if RESULT in " ".join(shown.texts()):
                self.result_at = time.monotonic()
            self.leave.wait()
            session.close()
        except Exception as error:  # noqa: BLE001 - a student's failure is a figure (lost), not a crash
            self.error = f"{type(error).__name__}: {error}"
            self.loaded.set()
            self.started.set()


class Prober(threading.Thread):
    """Fresh tabs opening the landing page (the class's configuration, pruned and cached already) one after
    another while the class watches: seconds until the title and the first chart are drawn."""

    def __init__(self, port: int, query: str, server_pid: int, every_s: float = 1.0):
        super().__init__(daemon=True)
        self.port, self.query, self.server_pid, self.every_s = port, query, server_pid, every_s
        self.times: list[tuple[float, float, float]] = []   # (seconds, server CPU seconds meanwhile, load)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started, cpu = time.monotonic(), cpu_seconds(self.server_pid)
            session = Session(self.port)
            shown = session.run(query=self.query)
            if shown.charts() and "Prune & train" in shown.texts():
                self.times.append((time.monotonic() - started, cpu_seconds(self.server_pid) - cpu,
                                   os.getloadavg()[0]))
            session.close()
            self.stop.wait(self.every_s)


def classroom(port: int, students: int, epochs: int, seed0: int, deadline_s: float,
              prober: Prober | None = None) -> dict:
    go, leave = threading.Event(), threading.Event()
    tabs = [Student(port, PAGE_QUERY.format(epochs=epochs, seed=seed0 + i), go, leave, deadline_s)
            for i in range(students)]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.loaded.wait(300)
    go.set()
    for tab in tabs:
        tab.started.wait(300)
    if prober is not None:   # the class has pressed Train and watches its runs
        prober.start()
    for tab in tabs:
        while tab.is_alive() and tab.result_at is None and tab.error is None and \
                (tab.clicked_at is None or time.monotonic() - tab.clicked_at < deadline_s):
            time.sleep(0.2)
    if prober is not None:
        prober.stop.set()
        prober.join(60)
    return {"tabs": tabs, "leave": leave}


def watched_run(port: int, store: Store, config: RunConfig, blocker: RunConfig, tabs: int,
                prober: Prober | None = None, server_pid: int | None = None) -> tuple[float, int, float]:
    """A run with `tabs` tabs watching it from start to end (0: none): its worker's training time, the polls, and
    the server's CPU share (of one core) while the run trained.
    A shorter run queued first keeps the worker busy while the tabs open the page, so that the measured run
    starts with every tab already watching (its place in the queue, then its progress)."""
    config, blocker = config.canonical(), blocker.canonical()
    first = store.create_run(blocker.to_dict(), blocker.key(), queue=True)
    run_id = store.create_run(config.to_dict(), config.key(), queue=True)
    query = PAGE_QUERY.format(epochs=config.epochs, seed=config.seed) + f"&run={run_id}"
    go, leave = threading.Event(), threading.Event()
    watchers = [Student(port, query, go, leave, 600.0, click=False) for _ in range(tabs)]
    for watcher in watchers:
        watcher.start()
    go.set()
    for watcher in watchers:
        watcher.started.wait(300)
    if store.get_run(first)["status"] != "running" and tabs:
        print(f"note: the tabs took longer to open than run {first} to finish", file=sys.stderr)
    if prober is not None:   # every tab has the run's page open and polls it
        prober.start()
    while store.get_run(run_id)["status"] == "queued":
        time.sleep(0.05)
    cpu0, wall0 = (cpu_seconds(server_pid) if server_pid else 0.0), time.monotonic()
    while store.get_run(run_id)["status"] == "running":
        time.sleep(0.05)
    share = (cpu_seconds(server_pid) - cpu0) / (time.monotonic() - wall0) if server_pid else float("nan")
    if prober is not None:
        prober.stop.set()
        prober.join(60)
    deadline = time.monotonic() + 60
    while any(w.result_at is None and w.error is None for w in watchers) and time.monotonic() < deadline:
        time.sleep(0.2)   # every tab shows the result (and stops polling)
    leave.set()
    record = store.get_run(run_id)
    if record["status"] != "done":
        raise RuntimeError(f"run {run_id} {record['status']}: {record['error']}")
    return float(record["timings"]["train_s"]), sum(w.polls for w in watchers), share


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def browser_classroom(port: int, students: int, epochs: int, deadline_s: float, seed0: int) -> dict:
    """The classroom with real tabs: one Chromium, a context (own cookies, own session) per student; every tab
    loads the page, then all press Train; seconds from each click to its result, and the tabs that saw none."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        pages = [browser.new_context(viewport={"width": 1200, "height": 900}).new_page() for _ in range(students)]
        for i, page in enumerate(pages):
            page.goto(f"http://127.0.0.1:{port}/?{PAGE_QUERY.format(epochs=epochs, seed=seed0 + i)}", timeout=120_000)
        train = re.compile(f"Train {epochs} epochs")
        for page in pages:
            page.get_by_role("button", name=train).wait_for(timeout=120_000)
        clicked = []
        for page in pages:
            page.get_by_role("button", name=train).click()
            clicked.append(time.monotonic())
        waits: list[float | None] = [None] * students
        while any(w is None for w in waits) and time.monotonic() - clicked[0] < deadline_s:
            for i, page in enumerate(pages):
                if waits[i] is None and page.get_by_text(RESULT).count():
                    waits[i] = time.monotonic() - clicked[i]
            time.sleep(0.2)
        browser.close()
    return {"waits": waits}


def browser_main(args: argparse.Namespace, port: int, store: Store) -> None:
    warm = classroom(port, 1, args.epochs, 900, 120)   # the job manager and a warm worker
    warm["leave"].set()
    alone = browser_classroom(port, 1, args.epochs, 120, 1999)["waits"][0]
    result = browser_classroom(port, args.students, args.epochs, args.deadline, 2000)
    waits = [w for w in result["waits"] if w is not None]
    runs = store.list_runs()
    print(f"# classroom benchmark in Chromium, {datetime.date.today()}, {platform.machine()} CPU, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"| N = {args.students} browser tabs | submitted {len(runs) - 2} / finished "
          f"{int((runs['status'] == 'done').sum()) - 2} / lost {args.students - len(waits)} | one tab alone "
          f"{alone:.2f} s | last result {max(waits):.1f} s, median {statistics.median(waits):.1f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2, help="each student's run (digits, small CNN)")
    parser.add_argument("--watch-epochs", type=int, default=30, help="the long run watched by every tab")
    parser.add_argument("--page-loads", type=int, default=100)
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds a student waits at most")
    parser.add_argument("--repeats", type=int, default=3, help="watched / unwatched long runs, alternating")
    parser.add_argument("--browser", action="store_true", help="real Chromium tabs (small N): the classroom only")
    parser.add_argument("--teacher", action="store_true",
                        help="serve a classroom (a teacher password set): every tab a student of its own, limits on")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-classroom-"))
    env = {**os.environ, "PRUNING_DB": str(folder / "runs.db"), "PRUNING_DATA_DIR": str(folder / "data")}
    if args.teacher:
        env["PRUNING_TEACHER_PASSWORD"] = "bench"
        # The default limits stay on, except that the watched run's epochs must be allowed (a teacher raises it).
        env.setdefault("PRUNING_MAX_EPOCHS", str(max(30, args.watch_epochs)))
    port = free_port()
    server = start_server(port, env, folder / "server.log")
    own_start = resource.getrusage(resource.RUSAGE_SELF)
    try:
        wait_healthy(port)
        store = Store(folder / "runs.db", recover=False)
        if args.browser:
            browser_main(args, port, store)
            return
        warm = classroom(port, 1, args.epochs, 900, 120)   # creates the job manager, starts a worker
        warm["leave"].set()
        workers = int(env.get("PRUNING_WORKERS") or max(1, (os.cpu_count() or 2) - 1))

        # One run's click-to-result time on an otherwise idle server (3 students one after another).
        alone = []
        for i in range(3):
            one = classroom(port, 1, args.epochs, 800 + i, 120)
            tab = one["tabs"][0]
            one["leave"].set()
            if tab.result_at is not None:
                alone.append(tab.result_at - tab.clicked_at)
        one_run_s = statistics.median(alone)

        long_config = RunConfig(dataset="digits", model="conv", method="synflow", sparsity=0.99,
                                epochs=args.watch_epochs, seed=700)
        landing = PAGE_QUERY.format(epochs=args.epochs, seed=0)

        # The classroom.
        runs_before = len(store.list_runs())
        started = time.monotonic()
        class_probes = Prober(port, landing, server.pid)
        lesson = classroom(port, args.students, args.epochs, 0, args.deadline, class_probes)
        lesson_s = time.monotonic() - started
        tabs = lesson["tabs"]
        new_runs = store.list_runs().iloc[:len(store.list_runs()) - runs_before]   # newest first
        submitted = len(new_runs)
        finished = int((new_runs["status"] == "done").sum())
        shown = [t for t in tabs if t.result_at is not None]
        lost = args.students - len(shown)
        waits = sorted(t.result_at - t.clicked_at for t in shown)
        last_wait = waits[-1] if waits else float("nan")
        expected_last = args.students / workers * one_run_s

        # Every run done, every tab still open: what idle tabs cost the server.
        time.sleep(10)
        cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(30)
        idle_cpu = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - wall0)
        lesson["leave"].set()

        # A long run with no tab open, then watched by N tabs from start to end (alternating, `--repeats` times).
        ratios, watch_polls, watch_probes, shares = [], 0, [], []
        blocker = long_config.replace(epochs=max(1, args.watch_epochs // 3))
        for rep in range(args.repeats):
            unwatched_s, _, _ = watched_run(port, store, long_config.replace(seed=700 + 4 * rep),
                                            blocker.replace(seed=701 + 4 * rep), 0)
            probes = Prober(port, landing, server.pid)
            watched_s, polls, share = watched_run(port, store, long_config.replace(seed=702 + 4 * rep),
                                                  blocker.replace(seed=703 + 4 * rep), args.students, probes,
                                                  server.pid)
            ratios.append((watched_s, unwatched_s))
            shares.append(share)
            watch_polls += polls
            watch_probes += probes.times

        # Memory over page loads (closed tabs' sessions are kept for disconnectedSessionTTL, as in class).
        for i in range(5):
            session = Session(port)
            session.run(query=PAGE_QUERY.format(epochs=args.epochs, seed=5000 + i))
            session.close()
        rss0 = rss_mb(server.pid)
        for i in range(args.page_loads):
            session = Session(port)
            session.run(query=PAGE_QUERY.format(epochs=args.epochs, seed=6000 + i % 10))
            session.close()
        rss1 = rss_mb(server.pid)
    finally:
        os.killpg(server.pid, 9)
        server.wait(10)
    own = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = own.ru_utime + own.ru_stime - own_start.ru_utime - own_start.ru_stime

    timed = sorted(class_probes.times + watch_probes, reverse=True)
    probes = sorted(t for t, _, _ in timed)
    p95 = probes[max(0, round(0.95 * len(probes)) - 1)] if probes else float("nan")
    watched = [w / u for w, u in ratios]
    ratio = statistics.median(watched)
    print(f"# classroom benchmark, {datetime.date.today()}, {platform.machine()} CPU, {os.cpu_count()} cores, "
          f"{workers} worker(s), load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| figure | measured | target |")
    print("|---|---|---|")
    print(f"| runs submitted / finished / lost, N = {args.students} | {submitted} / {finished} / {lost} | "
          f"all finish, none lost |")
    print(f"| one run alone, click to result (median of {len(alone)}) | {one_run_s:.2f} s | - |")
    print(f"| last student's result / ((position {args.students} / {workers} worker) x one run) | "
          f"{last_wait:.1f} s / {expected_last:.1f} s = {last_wait / expected_last:.2f} | <= 1.20 |")
    print(f"| {args.watch_epochs}-epoch run watched by {args.students} tabs / with no tab open (training s, "
          f"median of {len(ratios)}) | {ratio:.2f} ({', '.join(f'{w:.1f}/{u:.1f}' for w, u in ratios)} s; "
          f"{watch_polls} polls; the server took {100 * statistics.median(shares):.0f}% of a core meanwhile) | "
          f"<= 1.2 |")
    print(f"| fresh tab renders (title and first chart) while {args.students} tabs watch, p95 of {len(probes)} | "
          f"{p95:.2f} s (median {statistics.median(probes) if probes else float('nan'):.2f} s) | < 2 s |")
    print(f"| server CPU, {args.students} idle tabs open, all runs done | {100 * idle_cpu:.1f}% of a core | < 2% |")
    print(f"| server memory growth over {args.page_loads} page loads | {rss1 - rss0:+.1f} MB "
          f"({rss0:.0f} -> {rss1:.0f} MB) | < 50 MB |")
    print("\nslowest fresh tabs (seconds; server CPU seconds meanwhile; load average): "
          + "; ".join(f"{t:.2f} s, {c:.2f} s, {load:.1f}" for t, c, load in timed[:4]))
    print(f"\nclassroom of {args.students}: {lesson_s:.0f} s from the first click to the last result; waits "
          f"median {statistics.median(waits) if waits else float('nan'):.1f} s; polls per tab "
          f"{statistics.mean(t.polls for t in tabs):.0f}; errors: "
          f"{sorted({t.error for t in tabs if t.error}) or 'none'}; this client's CPU {client_cpu:.0f} s")


if __name__ == "__main__":
    main()
