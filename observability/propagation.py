"""Trace context in and out of our frame headers, by hand (W3C Trace Context).

OpenTelemetry's propagators work on string carriers such as HTTP headers; our frames carry
a parsed ``TraceParent`` instead, so these helpers convert between it and OpenTelemetry's
span contexts. They are the only way trace context enters or leaves a process here.
"""

from __future__ import annotations

import random

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, TraceFlags

from wire.tracecontext import TraceParent, format_traceparent


def traceparent_of(span: Span) -> TraceParent | None:
    """The context to put in a frame header for ``span``; None when it is not sampled, so
    an unsampled request costs no header bytes and no work downstream."""
    context = span.get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return TraceParent(
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        int(context.trace_flags),
    )


def entry_context(span: Span) -> str:
    """What to store in a log entry: the traceparent if sampled, else nothing."""
    parent = traceparent_of(span)
    return format_traceparent(parent) if parent is not None else ""


def span_context_of(parent: TraceParent, *, remote: bool = True) -> SpanContext:
    return SpanContext(
        int(parent.trace_id, 16),
        int(parent.parent_id, 16),
        is_remote=remote,
        trace_flags=TraceFlags(parent.flags & 0xFF),
    )


def unsampled_span(parent: TraceParent | None) -> Span:
    """What the SDK makes of a span its sampler drops: no recording, the parent's trace id
    (or a new one) so logs can still name the trace, a new span id, not sampled. Built here
    when the sampler has declined without the SDK (``RaftdSampler.declines_client_edge``)."""
    trace_id = int(parent.trace_id, 16) if parent is not None else 0
    while not trace_id:
        trace_id = random.getrandbits(128)
    span_id = 0
    while not span_id:
        span_id = random.getrandbits(64)
    return trace.NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False))


def context_of(parent: TraceParent | None, *, remote: bool = True) -> Context:
    """A context whose current span is ``parent`` (an empty context when None): background
    work and requests without trace context start from nothing, never from whatever span
    happened to be current when a task was spawned."""
    if parent is None:
        return Context()
    return trace.set_span_in_context(
        trace.NonRecordingSpan(span_context_of(parent, remote=remote)), Context()
    )
