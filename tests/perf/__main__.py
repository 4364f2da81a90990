"""``python -m tests.perf``: raftd beside etcd and PySyncObj, written up under bench-results/."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from tests.perf.compare import ANCHOR_PYTHON_ENV, ANCHORS_ENV, WORKLOADS, compare
from tests.perf.report import draw, render_markdown


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf",
        description="Run raftd, etcd and PySyncObj on the same work, interleaved, and write "
        "bench-results/report.md (ratios against the performance targets) and throughput.png. "
        "etcd and PySyncObj need the anchor scripts (kept outside this repository) and the "
        "Python their setup made; without them raftd is measured alone.",
    )
    parser.add_argument("--reps", type=int, default=1, help="repetitions (default 1)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured s (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up s (default 2)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--anchors",
        type=Path,
        default=_env_path(ANCHORS_ENV),
        help=f"directory of the anchor scripts (default: ${ANCHORS_ENV})",
    )
    parser.add_argument(
        "--anchor-python",
        type=Path,
        default=_env_path(ANCHOR_PYTHON_ENV),
        help=f"the Python their setup.sh made, for their clients (default: ${ANCHOR_PYTHON_ENV})",
    )
    parser.add_argument(
        "--systems",
        default="raftd,etcd,PySyncObj",
        help="comma-separated subset of raftd,etcd,PySyncObj",
    )
    parser.add_argument(
        "--workloads",
        help="only the workloads whose name contains one of these comma-separated words "
        "(e.g. 'writes' or '1 client'); default all",
    )
    args = parser.parse_args(argv)
    if args.reps < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--reps must be at least 1, --duration positive, --warmup not negative")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - {"raftd", "etcd", "PySyncObj"}
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    words = [w.strip() for w in (args.workloads or "").split(",") if w.strip()]
    chosen = [w for w in WORKLOADS if not words or any(word in w.name for word in words)]
    if not chosen:
        parser.error(f"no workload matches {args.workloads!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = compare(
        reps=args.reps,
        duration_s=args.duration,
        warmup_s=args.warmup,
        anchors_dir=args.anchors,
        anchor_python=args.anchor_python,
        systems=systems,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        workloads=chosen,
    )
    plot = args.out / "throughput.png"
    drawn = draw(results, plot)
    command = "python -m tests.perf " + " ".join(argv if argv is not None else sys.argv[1:])
    report = render_markdown(
        results, command=command.strip(), plot_name=plot.name if drawn else None
    )
    (args.out / "report.md").write_text(report)
    (args.out / "results.json").write_text(
        json.dumps([asdict(m) for m in results.measurements], indent=1) + "\n"
    )
    print(report)
    return 0 if results.measurements else 1


if __name__ == "__main__":
    sys.exit(main())
