"""structlog configuration shared by raftd and raftctl.

JSON lines when stderr is not a terminal (files, pipes, log shippers) and a readable
console format when it is; ``raftd cluster`` asks its members for the console format since
it merges their lines for a person. Every line carries the member's name, role and term
(kept current by the driver through ``node_fields``), and every line written while a span
is current carries that span's trace_id and span_id, so a log line leads to its trace.
Everything goes to stderr, so stdout stays free for command output.

Libraries log through the standard library's ``logging`` (the OpenTelemetry SDK and its
exporters warn there when a collector is unreachable); those records are rendered by the
same processors, so every line a member prints has one format and carries its name,
role and term, with the library's logger name in ``logger``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

_OURS = "_raftd_handler"

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
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_node_fields,
        _add_trace_ids,
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)  # configured again (tests do): one handler, not two
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(numeric_level)
