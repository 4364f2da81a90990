"""``raftctl bench --plot``: one PNG with the latency distribution and the throughput.

matplotlib is an optional extra (``pip install 'raftd[bench]'``), so it is imported only
here and only when a plot is asked for: raftctl starts as fast without it, and works
without it installed. The figure is drawn with the Agg canvas directly, never through
pyplot, so nothing here depends on a display or on pyplot's global state.

Two panels:

* latency: a histogram on logarithmic bins over a log-scale axis (a latency distribution
  spans orders of magnitude, and its tail is the interesting part), with the percentile
  lines the text summary reports;
* throughput: operations per second for every second of the measured window, errors
  on a scale of their own, so a stall or an election shows up where it happened.
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from cli.bench import BenchResult

__all__ = ["INSTALL_HINT", "available", "check_target", "plot"]

INSTALL_HINT = "pip install 'raftd[bench]' (or 'matplotlib>=3.7,<4')"
PNG_DPI = 110
HISTOGRAM_BINS = 60


def available() -> bool:
    """Whether matplotlib can be imported (it is imported for real: a broken install
    should fail here, before the bench, not after it)."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def check_target(path: Path) -> str | None:
    """Why a plot could not be written to ``path``, or None: checked before the run."""
    if not available():
        return f"needs matplotlib, which is not installed: {INSTALL_HINT}"
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        return f"the directory {str(directory)!r} does not exist"
    if not os.access(directory, os.W_OK):
        return f"the directory {str(directory)!r} is not writable"
    if path.is_dir():
        return f"{str(path)!r} is a directory"
    return None


def plot(result: BenchResult, path: Path) -> str | None:
    """Draws ``result`` into ``path`` (PNG); returns why it could not, or None."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return f"needs matplotlib, which is not installed: {INSTALL_HINT}"
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    latency_axes, throughput_axes = figure.subplots(1, 2)
    _draw_latency(latency_axes, result)
    _draw_throughput(throughput_axes, result)
    figure.suptitle(result.config.describe(), fontsize=9)
    try:
        figure.savefig(path, format="png", dpi=PNG_DPI)
    except OSError as exc:
        return f"cannot write {str(path)!r}: {exc.strerror or exc}"
    return None


def _draw_latency(axes: Axes, result: BenchResult) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    latencies_ms = [value * 1000 for value in result.latencies_s]
    axes.set_title("latency distribution", fontsize=10)
    axes.set_xlabel("latency (ms, log scale)")
    axes.set_ylabel("requests")
    if not latencies_ms:
        axes.text(0.5, 0.5, "no successful requests", ha="center", transform=axes.transAxes)
        return
    low = max(min(latencies_ms), 1e-3)
    high = max(max(latencies_ms), low * 1.01)
    ratio = (high / low) ** (1 / HISTOGRAM_BINS)
    edges = [low * ratio**i for i in range(HISTOGRAM_BINS + 1)]
    edges[-1] = high * 1.0001  # the maximum falls inside the last bin
    axes.hist(latencies_ms, bins=edges, color="tab:blue", alpha=0.8)
    axes.set_xscale("log")
    # Plain numbers at 1-2-5 steps (0.5, 1, 2, 5, 10 ...): readable, and never so many
    # that they collide, which matplotlib's default in-between labels do.
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    summary = result.latency
    for label, value, style in (
        ("p50", summary.p50_ms, "-"),
        ("p99", summary.p99_ms, "--"),
        ("p99.9", summary.p999_ms, ":"),
    ):
        if value is not None and math.isfinite(value):
            axes.axvline(
                value, color="black", linestyle=style, linewidth=1, label=f"{label} {value:.3g} ms"
            )
    axes.legend(fontsize=8, loc="upper right")


def _draw_throughput(axes: Axes, result: BenchResult) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.set_title("throughput over the measured window", fontsize=10)
    axes.set_xlabel("second")
    axes.set_ylabel("ops/s")
    seconds = [point.t_s for point in result.timeline]
    axes.bar(
        seconds,
        [point.ops_per_s for point in result.timeline],
        width=0.9,
        align="edge",
        color="tab:green",
        label="ops/s",
    )
    axes.axhline(result.ops_per_s, color="black", linewidth=1, linestyle="--", label="mean")
    axes.set_xlim(0, max(len(seconds), 1))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize=8, loc="lower right")
    errors = [point.errors / point.span_s for point in result.timeline]
    if any(errors):
        # Their own scale: a few errors a second would vanish beside thousands of ops.
        twin = axes.twinx()
        middles = [t + 0.45 for t in seconds]
        twin.plot(middles, errors, color="tab:red", marker="o", linewidth=1)
        twin.set_ylabel("errors/s", color="tab:red")
        twin.set_ylim(bottom=0)
