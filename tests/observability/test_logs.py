"""Log lines: JSON off a terminal, node fields on every line, trace ids inside a span."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from observability.logs import configure_logging, node_fields


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def clean_fields() -> None:
    node_fields.clear()


def test_json_lines_off_a_terminal_with_node_role_and_term() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    node_fields.update(node="n2", role="follower", term=3)
    structlog.get_logger("t").info("following", leader="n1")
    line = json.loads(out.getvalue())
    assert line["event"] == "following" and line["leader"] == "n1"
    assert (line["node"], line["role"], line["term"]) == ("n2", "follower", 3)
    assert "trace_id" not in line  # no span is current


def test_a_line_written_inside_a_span_carries_its_trace_and_span_ids() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        structlog.get_logger("t").warning("slow fsync")
    line = json.loads(out.getvalue())
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")


def test_a_terminal_gets_the_console_format_and_levels_filter() -> None:
    out = Terminal()
    configure_logging(stream=out, level="warning")
    structlog.get_logger("t").info("hidden")
    structlog.get_logger("t").warning("shown", term=2)
    text = out.getvalue()
    assert "hidden" not in text and "shown" in text and not text.startswith("{")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging(fmt="xml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging(level="loud")


def test_a_library_logging_through_the_standard_library_gets_the_same_format() -> None:
    out = io.StringIO()
    configure_logging(stream=out, level="warning")
    node_fields.update(node="n1", role="leader", term=4)
    library = logging.getLogger("opentelemetry.sdk.trace.export")
    library.warning("Exception while exporting Span batch: %s", "refused")
    library.info("not shown below the level")
    configure_logging(stream=out, level="warning")  # again: still one line per record
    library.error("and once more")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "Exception while exporting Span batch: refused",
        "and once more",
    ]
    first = lines[0]
    assert first["level"] == "warning"
    assert first["logger"] == "opentelemetry.sdk.trace.export"
    assert (first["node"], first["role"], first["term"]) == ("n1", "leader", 4)
    assert "timestamp" in first
