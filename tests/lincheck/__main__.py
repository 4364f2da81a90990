"""Command line: python -m tests.lincheck FILE [--timeout SECONDS]

The first line of output is the contract, read by scripts:
    linearizable                   exit 0
    not linearizable               exit 1  (then the key and operations involved)
    stale read beyond its bound    exit 1  (linearizable otherwise; see the staleness lines)
    unknown (checker timed out)    exit 2  (never a pass)
    malformed history: line N: ... exit 3  (also when FILE cannot be read)
Usage errors exit 64 (EX_USAGE), so that argparse's usual 2 cannot pass for a timeout.

Gets that carry ``max_staleness_ns`` are left out of the linearizability search and checked
by a second pass (staleness.py), which prints "staleness: N stale reads within their bound"
or the reads that returned a value older than their bound.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import NoReturn

from tests.lincheck.checker import check_history
from tests.lincheck.history import MalformedHistory, load_history
from tests.lincheck.staleness import check_staleness

EXIT_MALFORMED = 3
STALE_FIRST_LINE = "stale read beyond its bound"
EXIT_USAGE = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _seconds(text: str) -> float:
    value = float(text)
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _emit(lines: list[str]) -> None:
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        # The reader took what it wanted (`| head -1`) and left; the exit code still counts.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m tests.lincheck",
        description="Check that a client history (JSON lines, see shared/lincheck/README.md) "
        "is linearizable against a register per key. Gets recorded with max_staleness_ns "
        "(bounded-staleness reads, not linearizable by design) are left out of that search "
        "and checked by a second pass: each must have returned a value the register held at "
        "some instant within [call - bound, return]. Exit 0 when both passes hold; 1 when "
        "either fails (first line 'not linearizable', or 'stale read beyond its bound'); "
        "2 when the search timed out; 3 for a malformed history; 64 for usage errors.",
    )
    parser.add_argument("file", help="the history, or - for stdin")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="give up after this many seconds and answer unknown (default 60)",
    )
    args = parser.parse_args(argv)
    try:
        ops = load_history(args.file)
    except MalformedHistory as exc:
        _emit([f"malformed history: {exc}"])
        return EXIT_MALFORMED
    except OSError as exc:
        _emit([f"malformed history: cannot read {args.file}: {exc.strerror or exc}"])
        return EXIT_MALFORMED
    result = check_history(ops, timeout_s=args.timeout)
    stale = check_staleness(ops)
    lines = result.report()
    if not stale.ok and result.exit_code == 0:
        lines.insert(0, STALE_FIRST_LINE)
        _emit([*lines, *stale.report()])
        return 1
    _emit([*lines, *stale.report()])
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
