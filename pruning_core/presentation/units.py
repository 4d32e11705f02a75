"""Units and wording shared by the figures and the pages: sparsity as "% removed" and as compression 10^x,
durations, method names and the one colour each method has on every chart.

Nothing here imports Streamlit or Plotly, so the wording is tested in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from pruning_core.config import DENSE
from pruning_core.engine.compression import log_compression, sparsity_from_log  # noqa: F401 (re-exported)
from pruning_core.engine.methods import METHODS

# A colour-blind-friendly qualitative palette (Okabe & Ito), then a few more for long method lists.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C564B", "#9467BD", "#17BECF",
           "#F0E442", "#7F7F7F", "#BCBD22", "#E7298A", "#66A61E", "#1F3A93", "#A6761D"]
DENSE_COLOR = "#333333"
COLLAPSE_COLOR = "#C62828"


# ---- names, colours and numbers ------------------------------------------------------------------
def method_label(name: str) -> str:
    """The display name of a method ('Dense baseline' for unpruned runs)."""
    if name == DENSE:
        return "Dense baseline"
    return METHODS[name].label if name in METHODS else str(name)


# What a sanity check (Frankle et al. 2021) or the sparsity-aware initialisation changed about a run, as
# said in its name: without it a run with inverted scores reads as plain "SynFlow 90%" next to the real one,
# and its chance-level accuracy looks like a bug.
RUN_VARIANTS = {"shuffle": "mask shuffled", "reinit": "weights reinitialised",
                "invert": "scores inverted: best weights removed"}
SPARSE_INIT_TAG = "sparsity-aware init"


def run_variant(config: Mapping[str, Any] | None) -> str:
    """What sets a run apart from the plain method at its sparsity ('scores inverted: best weights removed',
    'sparsity-aware init', both joined by ' · '), from its configuration (a `RunConfig.to_dict`); '' if none."""
    config = config or {}
    tags = [RUN_VARIANTS.get(config.get("sanity") or "none", "")]
    if config.get("sparse_init"):
        tags.append(SPARSE_INIT_TAG)
    return " · ".join(t for t in tags if t)


def run_name(method: str | None, sparsity: float | None, variant: str = "", run_id: int | None = None) -> str:
    """The one name of a run wherever it is listed: '#12 SynFlow 90% (scores inverted: best weights removed)';
    the dense baseline has no sparsity. `variant` is `run_variant` of its configuration."""
    label = method_label(method) if method else "?"
    removed = "" if method == DENSE or sparsity is None or sparsity != sparsity else f" {percent(sparsity)}"
    prefix = f"#{run_id} " if run_id is not None else ""
    return f"{prefix}{label}{removed}" + (f" ({variant})" if variant else "")


# Fixed colours for the methods the pages show most, so that SynFlow is blue on every chart.
METHOD_COLORS = {"synflow": "#0072B2", "snip": "#D55E00", "grasp": "#009E73", "magnitude": "#CC79A7",
                 "random": "#7F7F7F", "random_erk": "#BCBD22", "iter_snip": "#E69F00", "force": "#56B4E9",
                 "imp": "#9467BD", "gemminer": "#17BECF"}


def method_color(name: str) -> str:
    """The same colour for a method on every page (fixed for known methods, else by registry order)."""
    if name == DENSE:
        return DENSE_COLOR
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    names = [n for n in METHODS if n not in METHOD_COLORS]
    index = names.index(name) if name in names else len(names) + sum(map(ord, str(name)))
    free = [c for c in PALETTE if c not in METHOD_COLORS.values()] or PALETTE  # not a fixed method's colour
    return free[index % len(free)]


def rgba(color: str, alpha: float) -> str:
    """'#0072B2' at alpha 0.18 -> 'rgba(0,114,178,0.18)' (a method's colour for its error band)."""
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def count_text(value: float) -> str:
    """1234 -> '1,234', 25118.9 -> '25,119', 3.16 -> '3.2'."""
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def percent(fraction: float) -> str:
    """A fraction as a percentage with as many digits as it needs: 0.99 -> '99%', 0.999 -> '99.9%',
    0.00098 -> '0.098%'."""
    value = 100.0 * fraction
    if value == 0 or value == 100:
        return f"{value:.0f}%"
    if value < 1:
        return f"{value:.2g}%"
    for decimals in range(1, 7):  # 99.999 must not read as 100
        text = f"{value:.{decimals}f}"
        if float(text) != 100:
            break
    return text.rstrip("0").rstrip(".") + "%"


def compression_text(sparsity: float) -> str:
    """'10^2.0 (100×)' for sparsity 0.99; 'none (dense)' for 0."""
    if sparsity == 0:
        return "none (dense)"
    x = log_compression(sparsity)
    return f"10^{x:.1f} ({count_text(10 ** x)}×)"


def sparsity_text(sparsity: float) -> str:
    """Sparsity in both vocabularies: '99.9% removed · compression 10^3.0 (1,000×)'."""
    if sparsity == 0:
        return "0% removed · dense network (no compression)"
    return f"{percent(sparsity)} removed · compression {compression_text(sparsity)}"


def seconds_text(seconds: float | None) -> str:
    """A short duration with the precision it needs: '0.42 s', '3.1 s', '45 s', '3 min 20 s'."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    return duration_text(seconds)


def duration_text(seconds: float | None) -> str:
    """'45 s', '3 min 20 s', '1 h 05 min'; '–' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def compression_ticks(densities: Sequence[float]) -> tuple[list[float], list[str]]:
    """Tick positions (compression ratios) and texts ('dense'; '4.6×<br>78% removed') for these densities."""
    xs = sorted({float(f"{1.0 / d:.3g}") for d in densities if d and d > 0})   # 9.9998x and 10x: one tick
    return xs, ["dense" if x == 1 else f"{count_text(x)}×<br>{percent(1 - 1 / x)} removed" for x in xs]


def wrap_label(text: str, width: int = 16) -> str:
    """Break a label into lines of about `width` characters (<br>) for a category axis."""
    lines, line = [], ""
    for word in str(text).split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join(lines + [line])


# Gradient flow's networks (Evci et al. 2022): the lottery ticket in IMP's colour; SET and RigL (dynamic sparse
# training) in two palette colours no other variant uses.
VARIANT_COLORS = {"dense": DENSE_COLOR, "sparse": "#D55E00", "sparse_init": "#009E73", "lottery": METHOD_COLORS["imp"],
                  "set": "#E69F00", "rigl": "#0072B2"}


# ---- CSV exports -------------------------------------------------------------------------------------
# One convention for every CSV the dashboard writes, said in its download help: a program reading it gets the
# numbers as they are, a person reading it gets times they can read.
EXPORT_NOTE = ("Sparsity, accuracies and densities are plain fractions (0.99 = 99%) at full precision; "
               "compression is the ratio 1/(1 − sparsity), to 6 significant digits; times are ISO 8601 in UTC.")
TIME_COLUMNS = ("created_at", "started_at", "finished_at", "started")


def iso_time(seconds: float | None) -> str:
    """Seconds since the epoch as ISO 8601 in UTC ('2026-12-01T09:30:00+00:00'); '' when unknown."""
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return ""
    return datetime.fromtimestamp(float(seconds), tz=timezone.utc).isoformat(timespec="seconds")


def export_csv(table, drop: Sequence[str] = ()) -> str:
    """A table (pandas DataFrame) as CSV text in the export convention (`EXPORT_NOTE`): epoch-second time
    columns become ISO 8601 times, the compression ratio loses its float noise (1/(1-0.99) is
    100.00000000000009), fractions are left exactly as computed. `drop`: columns left out, besides a classroom
    user's token (their key to their own runs), which is never exported."""
    out = table.drop(columns=[c for c in (*drop, "user_token") if c in table.columns])
    for column in TIME_COLUMNS:
        if column in out.columns:
            out[column] = [iso_time(v) for v in out[column]]
    if "compression" in out.columns:
        out["compression"] = [float(f"{v:.6g}") if isinstance(v, (int, float)) and math.isfinite(v) else v
                              for v in out["compression"]]
    return out.to_csv(index=False)


def cluster_text(info: Mapping[str, Any]) -> str:
    """One line for the sidebar from `RayCells.status()`: where the jobs run and how busy it is, e.g.
    'Ray cluster at 10.0.0.5:6379: 2 machines · 4 GPUs (1 free) · 32 CPUs (30 free) · 3 running, 1 waiting'."""
    where = "local Ray" if info.get("address") in (None, "local") else f"Ray cluster at {info['address']}"
    if not info.get("connected"):
        return f"{where}: not connected"
    nodes = int(info.get("nodes", 0))
    parts = [f"{nodes} machine{'s' if nodes != 1 else ''}"]
    for name, total_key, free_key in (("GPU", "gpus", "gpus_free"), ("CPU", "cpus", "cpus_free")):
        total = info.get(total_key, 0.0) or 0.0
        if total or name == "CPU":
            parts.append(f"{total:g} {name}{'s' if total != 1 else ''} ({info.get(free_key, 0.0):g} free)")
    parts.append(f"{len(info.get('running', []))} running, {int(info.get('waiting', 0))} waiting")
    return f"{where}: " + " · ".join(parts)
