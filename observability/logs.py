"""structlog configuration shared by raftd and raftctl.

JSON lines when stderr is not a terminal (files, pipes, log shippers) and a readable
console format when it is; ``raftd cluster`` asks its members for the console format since
it merges their lines for a person. Every line carries the member's name, role and term
(kept current by the driver through ``node_fields``), and every line written while a span
is current carries that span's trace_id and span_id, so a log line leads to its trace.
Everything goes to stderr, so stdout stays free for command output.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

# Fields added to every line: the driver updates role and term as they change.
node_fields: dict[str, Any] = {}


def _add_node_fields(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in node_fields.items():
        event.setdefault(key, value)
    return event


def _add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def configure_logging(
    *, fmt: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """``fmt`` is console, json, or auto (console on a terminal, JSON elsewhere)."""
    if fmt not in ("auto", "console", "json"):
        raise ValueError(f"log format must be auto, console or json, not {fmt!r}")
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_node_fields,
            _add_trace_ids,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
