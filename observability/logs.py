"""structlog configuration shared by raftd and raftctl.

Console lines for people (``raftd cluster`` merges several members' lines and prefixes
each with its member's name); JSON lines for machines. Everything goes to stderr so that
stdout stays free for command output.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(
    *, fmt: str = "console", level: str = "info", stream: TextIO | None = None
) -> None:
    if fmt not in ("console", "json"):
        raise ValueError(f"log format must be console or json, not {fmt!r}")
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
