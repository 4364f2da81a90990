"""The framed protocol shared by raftd and raftctl, and the trace context it carries.

Everything here is sans-I/O: it turns bytes and header strings into values and back, and
leaves sockets to the callers, so that hostile input can be tested without a network.
"""

from wire.frame import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    FrameTooLarge,
    TruncatedFrame,
    WireError,
    encode_frame,
)
from wire.tracecontext import (
    TraceParent,
    format_traceparent,
    format_tracestate,
    parse_traceparent,
    parse_tracestate,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "FrameDecoder",
    "FrameTooLarge",
    "TraceParent",
    "TruncatedFrame",
    "WireError",
    "encode_frame",
    "format_traceparent",
    "format_tracestate",
    "parse_traceparent",
    "parse_tracestate",
]
