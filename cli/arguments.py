"""Argument types and checks shared by raftctl's commands: errors that say what was
expected."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from raftd.kv import prefix_end


def count(what: str, *, minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be a whole number, not {text!r}"
            ) from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"{what} must be {bound}, not {text!r}")
        return value

    return parse


def check_key_forms(args: argparse.Namespace) -> None:
    """Exactly one of KEY, --prefix and (for get) --from; the range flags only together;
    errors through the command's parser, so they carry its usage line."""
    parser = args.command_parser
    start = getattr(args, "start", None)
    given = [args.key is not None, args.prefix is not None, start is not None]
    if sum(given) != 1:
        forms = "KEY, --prefix or --from" if args.command == "get" else "KEY or --prefix"
        parser.error(f"give exactly one of {forms}")
    if args.command == "get":
        if args.end is not None and start is None:
            parser.error("--to goes with --from")
        if args.key is not None and (args.limit is not None or args.after is not None):
            parser.error("--limit and --after are for ranges (--prefix, --from)")


def key_range(key: str | None, prefix: str | None) -> tuple[str, str | None]:
    """The ``[start, end)`` of one key, or of every key that starts with ``prefix``."""
    if prefix is not None:
        return prefix, prefix_end(prefix)
    assert key is not None
    return key, key + "\0"
