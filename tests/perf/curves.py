"""``python -m tests.perf.curves``: how cost grows with the work, raftd beside etcd.

One setting moves at a time from the comparison's work (3 members, fsync and tracing on,
16-byte keys from 10,000, 16-byte values, closed-loop writers): the number of clients, the
value size, the key count, the number of members; then a long run with snapshots and log
compaction on (throughput second by second as the history grows) and the resident memory
of each member holding a million keys. etcd runs the same work where it can (the anchors'
scripts start 3 members only). Writes bench-results/curves.md and one plot per setting.
Figures for docs/performance.md; nothing here is a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tests.perf.compare import (
    ANCHOR_PYTHON_ENV,
    ANCHORS_ENV,
    ROOT,
    Anchors,
    Results,
    Step,
    Unavailable,
    Workload,
    raftctl,
    raftd_cluster,
    run_raftd,
    run_steps,
)
from tests.perf.cost import member_pids


@dataclass(frozen=True)
class Setting:
    """One curve: a workload per point, built from the point's value."""

    name: str
    unit: str
    points: tuple[int, ...]
    clients: Callable[[int], int]
    value_size: Callable[[int], int]
    keys: Callable[[int], int]
    nodes: Callable[[int], int] = lambda _: 3
    etcd: bool = True


SETTINGS = (
    Setting("clients", "clients", (1, 4, 16, 64, 256), lambda x: x, lambda _: 16, lambda _: 10_000),
    Setting(
        "value size", "bytes", (16, 1024, 16_384, 262_144), lambda _: 16, lambda x: x,
        lambda _: 10_000,
    ),
    Setting("key count", "keys", (10_000, 1_000_000), lambda _: 64, lambda _: 16, lambda x: x),
    Setting(
        "cluster size", "members", (3, 5), lambda _: 64, lambda _: 16, lambda _: 10_000,
        nodes=lambda x: x, etcd=False,
    ),
)  # fmt: skip


@dataclass
class Point:
    setting: str
    x: int
    system: str
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


def _measure(results: Results, system: str, name: str) -> dict[str, Any]:
    found = [m for m in results.measurements if m.system == system and m.workload == name]
    return found[-1].raw if found else {}


def run_curves(
    *,
    duration_s: float,
    warmup_s: float,
    anchors: Anchors | None,
    history_s: float,
    rss_keys: int,
    log: Callable[[str], None],
    only: Sequence[str] = (),
) -> tuple[list[Point], Results]:
    results = Results()
    points: list[Point] = []
    timing = ("--duration", f"{duration_s:g}", "--warmup", f"{warmup_s:g}")
    for setting in SETTINGS:
        if only and setting.name not in only:
            continue
        for x in setting.points:
            name = f"{setting.name}={x}"
            clients, keys = setting.clients(x), setting.keys(x)
            workload = Workload(
                name,
                ("--op", "set", "--clients", str(clients), "--keys", str(keys)),
                ("--op", "put", "--conc", str(clients), "--keyspace", str(keys), "--no-populate"),
                None,
            )
            size, nodes = setting.value_size(x), setting.nodes(x)
            steps: list[Step] = [
                (
                    "raftd",
                    partial(run_raftd, workload, timing, results, value_size=size, nodes=nodes),
                )
            ]
            if anchors is not None and setting.etcd:
                steps.append(("etcd", partial(anchors.run_etcd, workload, timing, results, size)))
            for m in run_steps(steps, results, log, f"{setting.name} {x}", name):
                points.append(Point(setting.name, x, m.system, m.ops_per_s, m.p50_ms, m.p99_ms))
    if history_s > 0 and (not only or "history" in only):
        points += _history(results, history_s, warmup_s, log)
    if rss_keys > 0 and (not only or "memory" in only):
        points += _memory(results, rss_keys, anchors, log)
    return points, results


def _history(
    results: Results, history_s: float, warmup_s: float, log: Callable[[str], None]
) -> list[Point]:
    """A long run at 64 clients with the default snapshot settings: throughput per second."""
    log(f"history: raftd, {history_s:g} s of writes at 64 clients, compaction on ...")
    name = "history"
    workload = Workload(name, ("--op", "set", "--clients", "64"), None, None)
    run_raftd(workload, ("--duration", f"{history_s:g}", "--warmup", f"{warmup_s:g}"), results)
    raw = _measure(results, "raftd", name)
    return [
        Point(name, int(second["t_s"]), "raftd", float(second["ops_per_s"]), 0.0, 0.0)
        for second in raw.get("timeline", [])
    ]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _memory(
    results: Results, keys: int, anchors: Anchors | None, log: Callable[[str], None]
) -> list[Point]:
    """Resident memory of each member once ``keys`` keys of 16 bytes hold 16-byte values."""
    points: list[Point] = []
    log(f"memory: raftd with {keys:,} keys ...")
    with raftd_cluster(dict(os.environ), results) as env:
        subprocess.run(
            [*raftctl("bench"), "--no-progress", "--op", "get", "--clients", "64",
             "--keys", str(keys), "--value-size", "16", "--duration", "1", "--warmup", "0"],
            cwd=ROOT, env=env, capture_output=True, check=True, timeout=3600,
        )  # fmt: skip
        rss = {name: round(_rss_mb(pid), 1) for name, pid in sorted(member_pids().items())}
    log(f"  raftd members: {rss} MB")
    points.append(Point("memory", keys, "raftd", 0.0, 0.0, 0.0, {"rss_mb": rss}))
    if anchors is None:
        return points
    log(f"memory: etcd with {keys:,} keys ...")
    subprocess.run(
        ["bash", "etcd_cluster.sh", "start"], cwd=anchors.dir, check=True, capture_output=True
    )
    try:
        subprocess.run(
            [str(anchors.python), "etcd_load.py", "--op", "get", "--conc", "64", "--keyspace",
             str(keys), "--value-size", "16", "--duration", "1", "--warmup", "0"],
            cwd=anchors.dir, capture_output=True, check=True, timeout=3600,
        )  # fmt: skip
        pids = Path("/tmp/anchors/etcd.pids").read_text().split()
        rss = {f"etcd{i + 1}": round(_rss_mb(int(pid)), 1) for i, pid in enumerate(pids)}
    finally:
        subprocess.run(["bash", "etcd_cluster.sh", "stop"], cwd=anchors.dir, capture_output=True)
    log(f"  etcd members: {rss} MB")
    points.append(Point("memory", keys, "etcd", 0.0, 0.0, 0.0, {"rss_mb": rss}))
    return points


def render(points: list[Point], results: Results, command: str, plots: list[str]) -> str:
    lines = [
        "# How cost grows with the work: raftd beside etcd",
        "",
        f"Produced by `{command}`. One setting moves at a time from the comparison's work "
        "(3 members on 127.0.0.1, fsync on, raftd's tracing on at the default sampler, "
        "16-byte keys from 10,000, 16-byte values, closed-loop Python clients).",
    ]
    for setting in SETTINGS:
        rows = [p for p in points if p.setting == setting.name]
        if not rows:
            continue
        lines += [
            "",
            f"## {setting.name}",
            "",
            f"| {setting.unit} | raftd ops/s | p50 ms | p99 ms "
            "| etcd ops/s | p50 ms | p99 ms | ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for x in setting.points:
            ours = next((p for p in rows if p.x == x and p.system == "raftd"), None)
            theirs = next((p for p in rows if p.x == x and p.system == "etcd"), None)
            cells = [f"{x:,}"]
            for p in (ours, theirs):
                cells += (
                    [f"{p.ops_per_s:,.0f}", f"{p.p50_ms:.2f}", f"{p.p99_ms:.2f}"]
                    if p
                    else ["-", "-", "-"]
                )
            ratio = (
                ours.ops_per_s / theirs.ops_per_s if ours and theirs and theirs.ops_per_s else None
            )
            cells.append(f"{ratio:.2f}" if ratio is not None else "-")
            lines.append("| " + " | ".join(cells) + " |")
    history = [p for p in points if p.setting == "history"]
    if history:
        values = [p.ops_per_s for p in history]
        third = max(1, len(values) // 3)
        first, last = sum(values[:third]) / third, sum(values[-third:]) / third
        lines += [
            "",
            "## history, with snapshots and compaction on",
            "",
            f"{len(values)} s of writes at 64 clients: first third {first:,.0f} ops/s, "
            f"last third {last:,.0f} ops/s, slowest second "
            f"{min(values):,.0f}, fastest {max(values):,.0f}.",
        ]
    memory = [p for p in points if p.setting == "memory"]
    if memory:
        lines += ["", "## resident memory per member", ""]
        lines += [f"- {p.system} at {p.x:,} keys: {p.extra['rss_mb']} MB" for p in memory]
    lines += ["", *[f"![{name}]({name})" for name in plots]]
    if results.skipped:
        lines += ["", "## Not measured", "", *[f"- {k}: {v}" for k, v in results.skipped.items()]]
    lines += ["", "## Commands", "", *[f"    {c}" for c in results.commands]]
    return "\n".join(lines) + "\n"


def draw(points: list[Point], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names: list[str] = []
    for setting in SETTINGS:
        rows = [p for p in points if p.setting == setting.name]
        if not rows:
            continue
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        for system in ("raftd", "etcd"):
            mine = sorted((p for p in rows if p.system == system), key=lambda p: p.x)
            if mine:
                left.plot([p.x for p in mine], [p.ops_per_s for p in mine], "o-", label=system)
                right.plot([p.x for p in mine], [p.p99_ms for p in mine], "o-", label=system)
        right.set_yscale("log")
        for axes, label in ((left, "ops/s"), (right, "p99 ms")):
            if len(setting.points) > 2:
                axes.set_xscale("log")
            axes.set_xlabel(setting.unit)
            axes.set_ylabel(label)
            axes.legend()
        figure.suptitle(f"writes against {setting.name}")
        figure.tight_layout()
        name = f"curve-{setting.name.replace(' ', '-')}.png"
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
        names.append(name)
    history = [p for p in points if p.setting == "history"]
    if history:
        figure, axes = plt.subplots(figsize=(10, 3.2))
        axes.plot([p.x for p in history], [p.ops_per_s for p in history])
        axes.set_xlabel("seconds")
        axes.set_ylabel("ops/s")
        axes.set_title("raftd writes at 64 clients as the history grows (snapshots on)")
        figure.tight_layout()
        figure.savefig(out / "curve-history.png", dpi=100)
        plt.close(figure)
        names.append("curve-history.png")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.curves", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured s per point (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up s per point (1)")
    parser.add_argument(
        "--history", type=float, default=60.0, help="s of the long run (60; 0: none)"
    )
    parser.add_argument("--rss-keys", type=int, default=1_000_000, help="keys for memory (0: none)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated: clients, value size, key count, cluster size, history, memory",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--anchors", type=Path, default=os.environ.get(ANCHORS_ENV) or None)
    parser.add_argument(
        "--anchor-python", type=Path, default=os.environ.get(ANCHOR_PYTHON_ENV) or None
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.history < 0 or args.rss_keys < 0:
        parser.error("--duration must be positive; --warmup, --history and --rss-keys not negative")
    only = [w.strip() for w in args.only.split(",") if w.strip()]

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    anchors: Anchors | None = None
    try:
        anchors = Anchors(args.anchors, args.anchor_python)
        anchors.setup(Results())
    except Unavailable as exc:
        log(f"etcd is not measured: {exc}")
    points, results = run_curves(
        duration_s=args.duration, warmup_s=args.warmup, anchors=anchors, history_s=args.history,
        rss_keys=args.rss_keys, log=log, only=only,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    plots = draw(points, args.out)
    command = "python -m tests.perf.curves " + " ".join(argv if argv is not None else sys.argv[1:])
    report = render(points, results, command.strip(), plots)
    (args.out / "curves.md").write_text(report)
    (args.out / "curves.json").write_text(json.dumps([asdict(p) for p in points], indent=1) + "\n")
    print(report)
    return 0 if points else 1


if __name__ == "__main__":
    sys.exit(main())
