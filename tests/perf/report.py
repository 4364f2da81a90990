"""The comparison as a small markdown report (ratios first) and one PNG."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from pathlib import Path

from tests.perf.compare import WORKLOADS, Results

# The performance targets, as (label, numerator, denominator, minimum ratio).
Target = tuple[str, tuple[str, str, str], tuple[str, str, str], float]
TARGETS: tuple[Target, ...] = (
    (
        "write throughput @64 vs etcd",
        ("raftd", "writes, 64 clients", "ops_per_s"),
        ("etcd", "writes, 64 clients", "ops_per_s"),
        1.0,
    ),
    (
        "write throughput @64 vs PySyncObj",
        ("raftd", "writes, 64 clients", "ops_per_s"),
        ("PySyncObj", "writes, 64 clients", "ops_per_s"),
        1.0,
    ),
    (
        "write p50 @1: etcd's / ours (at least 1.0 means ours is no slower)",
        ("etcd", "writes, 1 client", "p50_ms"),
        ("raftd", "writes, 1 client", "p50_ms"),
        1.0,
    ),
    (
        "linearizable reads @64 vs etcd",
        ("raftd", "linearizable reads, 64 clients", "ops_per_s"),
        ("etcd", "linearizable reads, 64 clients", "ops_per_s"),
        1.0,
    ),
    (
        "tracing cost: default sampler / tracing off, writes @64",
        ("raftd", "writes, 64 clients", "ops_per_s"),
        ("raftd", "writes, 64 clients, tracing off", "ops_per_s"),
        0.95,
    ),
    (
        "TLS cost: with / without mutual TLS, writes @64",
        ("raftd", "writes, 64 clients, TLS", "ops_per_s"),
        ("raftd", "writes, 64 clients", "ops_per_s"),
        0.85,
    ),
    (
        "TLS cost: write p50 @1 without / with mutual TLS",
        ("raftd", "writes, 1 client", "p50_ms"),
        ("raftd", "writes, 1 client, TLS", "p50_ms"),
        0.85,
    ),
)
SYSTEMS = ("raftd", "etcd", "PySyncObj")


def render_markdown(results: Results, *, command: str, plot_name: str | None) -> str:
    lines = [
        "# raftd vs etcd vs PySyncObj, one run on this machine",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"Python {platform.python_version()}. Produced by `{command}`.",
        "Medians over the repetitions; every ratio below compares figures of this one run.",
        "",
        "## Targets",
        "",
        "| target | ratio | needed | met |",
        "|---|---|---|---|",
    ]
    for label, top, bottom, needed in TARGETS:
        a, b = results.median(*top), results.median(*bottom)
        if a is None or b is None or b == 0:
            lines.append(f"| {label} | not measured | {needed:g} | - |")
            continue
        ratio = a / b
        lines.append(
            f"| {label} | {ratio:.2f} | {needed:g} | {'yes' if ratio >= needed else 'no'} |"
        )
    lines += [
        "",
        "## Every workload",
        "",
        "| workload | " + " | ".join(SYSTEMS) + " |",
        "|---|" + "---|" * len(SYSTEMS),
    ]
    for workload in WORKLOADS:
        cells = []
        for system in SYSTEMS:
            ops = results.median(system, workload.name, "ops_per_s")
            if ops is None:
                cells.append("-")
                continue
            p50 = results.median(system, workload.name, "p50_ms")
            p99 = results.median(system, workload.name, "p99_ms")
            cells.append(f"{ops:,.0f} ops/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        lines.append(f"| {workload.name} | " + " | ".join(cells) + " |")
    if results.skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- {what}: {why}" for what, why in results.skipped.items()]
    lines += [
        "",
        "## How the work was defined",
        "",
        "3 replicas on 127.0.0.1; closed-loop Python clients; 16-byte keys chosen uniformly "
        "from 10,000 (reads: from 1,000 pre-written); 16-byte values; warm-up, then a measured "
        "window. raftd: fsync on, tracing on at the default sampler unless the row says "
        "otherwise, load from `raftctl bench` over its client protocol; rows marked TLS run "
        "`raftd cluster --tls` (mutual TLS on the peer and client ports, client certificates "
        "required) and raftctl with the client certificate. etcd 3.4 (Debian), "
        "fsync on, loaded by the anchors' raw gRPC client. PySyncObj never fsyncs and has no "
        "client protocol: its load runs inside the leader process (no client network hop), "
        "which flatters it.",
    ]
    if plot_name:
        lines += ["", f"![throughput]({plot_name})"]
    lines += ["", "## Commands", "", *[f"    {c}" for c in results.commands]]
    return "\n".join(lines) + "\n"


def draw(results: Results, path: Path) -> bool:
    """A grouped bar chart of ops/s per workload and system; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(SYSTEMS)
    for i, system in enumerate(SYSTEMS):
        values = [results.median(system, w.name, "ops_per_s") or 0.0 for w in WORKLOADS]
        positions = [x + i * width for x in range(len(WORKLOADS))]
        bars = axes.bar(positions, values, width, label=system)
        axes.bar_label(bars, labels=[f"{v:,.0f}" if v else "" for v in values], fontsize=7)
    axes.set_xticks([x + width for x in range(len(WORKLOADS))])
    axes.set_xticklabels([w.name for w in WORKLOADS], fontsize=8)
    axes.set_ylabel("ops/s (median)")
    axes.set_title("Throughput on the same work, one run, this machine")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
