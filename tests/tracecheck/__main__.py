"""python -m tests.tracecheck DIR... [--cap N] [--min-whole PERCENT]

Audits the spans members exported (every traces.jsonl under each DIR, rotated copies
included): per member, the most distinct traces in any 60 s window against the cap; then
how many kept traces are whole. Exit 0 when every member kept within the cap (and, with
--min-whole, enough traces are whole), 1 otherwise, 3 when a file is not OTLP spans.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from observability.filexport import read_spans
from observability.sampling import PER_MINUTE_ENV
from tests.tracecheck.audit import audit

EXIT_UNREADABLE = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.tracecheck",
        description="Check each member's exported traces against the per-minute cap (any "
        "sliding 60 s window) and report the share of kept traces that are whole.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="cluster or member directories")
    parser.add_argument(
        "--cap",
        type=int,
        default=int(float(os.environ.get(PER_MINUTE_ENV) or 20)),
        help=f"traces per minute per member (default: ${PER_MINUTE_ENV}, else 20)",
    )
    parser.add_argument(
        "--min-whole",
        type=float,
        metavar="PERCENT",
        help="also fail when fewer than this share of kept traces are whole",
    )
    args = parser.parse_args(argv)
    spans = []
    try:
        for directory in args.dirs:
            if not directory.exists():
                parser.error(f"{directory} does not exist")
            spans += list(read_spans(directory))
    except ValueError as error:
        print(f"unreadable: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    result = audit(spans, args.cap)
    print("\n".join(result.lines()))
    failed = bool(result.over_cap)
    if args.min_whole is not None and 100 * result.whole_share < args.min_whole:
        print(f"fewer than {args.min_whole}% of kept traces are whole")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
