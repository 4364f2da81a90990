"""Argument types shared by raftctl's commands: errors that say what was expected."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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
