"""W3C Trace Context Level 1 headers (``traceparent`` and ``tracestate``), parsed by hand.

By hand rather than through OpenTelemetry's propagator: a header from a peer is untrusted
input, and every rule the spec sets for it is visible and tested here, in a module that
needs no SDK globals (context, propagator registry) to run. The tests use OpenTelemetry
only as a second opinion.

Parsers answer ``None`` for anything the spec says to discard, because the only sane
reaction to a bad header is to start a fresh trace; formatters raise ``ValueError``,
because emitting a header our own parser would refuse is a bug on our side.

Character classes are spelled out as sets instead of leaning on ``int(x, 16)`` or
``str.isdigit``, which also accept ``_``, ``+``, surrounding whitespace and non-ASCII digits.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

# Optional whitespace (RFC 9110 OWS): space and horizontal tab, nothing else.
_OWS = " \t"

_HEX = frozenset("0123456789abcdef")
_TRACE_ID_LEN = 32
_PARENT_ID_LEN = 16
_INVALID_VERSION = 0xFF
# "vv-" + trace id + "-" + parent id + "-" + "ff": the whole of a version 00 header, and the
# prefix every later version must start with.
_TRACEPARENT_LEN = 2 + 1 + _TRACE_ID_LEN + 1 + _PARENT_ID_LEN + 1 + 2

_LCALPHA = frozenset(string.ascii_lowercase)
_DIGIT = frozenset(string.digits)
_KEY_CHARS = _LCALPHA | _DIGIT | frozenset("_-*/")
_SIMPLE_KEY_MAX = 256
_TENANT_MAX = 241
_SYSTEM_MAX = 14
# Printable ASCII minus the two characters that delimit members and keys.
_VALUE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {",", "="}
_VALUE_MAX = 256
_MAX_MEMBERS = 32


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX.issuperset(text)


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed ``traceparent``; construction validates, so a held value is always sendable.

    ``flags`` keeps all eight bits, not only ``sampled``: bits this version does not define
    still belong to the trace and are passed on unchanged.
    """

    trace_id: str
    parent_id: str
    flags: int
    version: int = 0

    def __post_init__(self) -> None:
        if not _is_hex(self.trace_id, _TRACE_ID_LEN) or not self.trace_id.strip("0"):
            raise ValueError(f"invalid trace id {self.trace_id!r}")
        if not _is_hex(self.parent_id, _PARENT_ID_LEN) or not self.parent_id.strip("0"):
            raise ValueError(f"invalid parent id {self.parent_id!r}")
        if not 0 <= self.flags <= 0xFF:
            raise ValueError(f"trace flags {self.flags} do not fit in one byte")
        if not 0 <= self.version < _INVALID_VERSION:
            raise ValueError(f"invalid traceparent version {self.version}")


def parse_traceparent(value: str) -> TraceParent | None:
    """The ``TraceParent`` in a header value, or None when the spec says to restart the trace.

    A version above 00 is read by its 00 prefix, as the spec asks, so that a peer running a
    newer version still joins our traces; what follows that prefix is not ours to judge.
    """
    text = value.strip(_OWS)
    if len(text) < _TRACEPARENT_LEN:
        return None
    version_hex, trace_id, parent_id, flags_hex = (
        text[0:2],
        text[3:35],
        text[36:52],
        text[53:55],
    )
    if text[2] != "-" or text[35] != "-" or text[52] != "-":
        return None
    if not (
        _is_hex(version_hex, 2)
        and _is_hex(trace_id, _TRACE_ID_LEN)
        and _is_hex(parent_id, _PARENT_ID_LEN)
        and _is_hex(flags_hex, 2)
    ):
        return None
    version = int(version_hex, 16)
    if version == _INVALID_VERSION:
        return None
    rest = text[_TRACEPARENT_LEN:]
    if rest and (version == 0 or rest[0] != "-"):
        return None
    if not trace_id.strip("0") or not parent_id.strip("0"):
        return None
    return TraceParent(trace_id, parent_id, int(flags_hex, 16), version)


def format_traceparent(tp: TraceParent) -> str:
    """The version 00 header for ``tp``.

    Always 00, even for a parent received in a later version: 00 is the only layout we
    know how to write, and every later version must be readable through it.
    """
    return f"00-{tp.trace_id}-{tp.parent_id}-{tp.flags:02x}"


def _is_key_part(text: str, first: frozenset[str], max_len: int) -> bool:
    return 0 < len(text) <= max_len and text[0] in first and _KEY_CHARS.issuperset(text)


def _is_valid_key(key: str) -> bool:
    tenant, at, system = key.partition("@")
    if not at:
        return _is_key_part(key, _LCALPHA, _SIMPLE_KEY_MAX)
    # A second "@" lands in ``system`` and fails its character check.
    return _is_key_part(tenant, _LCALPHA | _DIGIT, _TENANT_MAX) and _is_key_part(
        system, _LCALPHA, _SYSTEM_MAX
    )


def _is_valid_value(value: str) -> bool:
    return 0 < len(value) <= _VALUE_MAX and value[-1] != " " and _VALUE_CHARS.issuperset(value)


def parse_tracestate(value: str) -> list[tuple[str, str]] | None:
    """The members of a ``tracestate`` header in order, or None to discard the header.

    One bad member discards the whole header (which the spec allows): a partly understood
    vendor state passed on could be worse than none. Empty members are skipped, and do not
    count towards the limit of 32, because they appear innocently when several
    ``tracestate`` fields are joined with commas; they carry nothing to propagate.
    """
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in value.split(","):
        member = raw.strip(_OWS)
        if not member:
            continue
        key, eq, val = member.partition("=")
        if not eq or not _is_valid_key(key) or not _is_valid_value(val) or key in seen:
            return None
        seen.add(key)
        members.append((key, val))
        if len(members) > _MAX_MEMBERS:
            return None
    return members


def format_tracestate(members: Sequence[tuple[str, str]]) -> str:
    """The ``tracestate`` header for ``members``, which must be what the parser accepts."""
    if len(members) > _MAX_MEMBERS:
        raise ValueError(f"{len(members)} tracestate members, at most {_MAX_MEMBERS} allowed")
    seen: set[str] = set()
    for key, val in members:
        if not _is_valid_key(key):
            raise ValueError(f"invalid tracestate key {key!r}")
        if not _is_valid_value(val):
            raise ValueError(f"invalid tracestate value {val!r} for key {key!r}")
        if key in seen:
            raise ValueError(f"duplicate tracestate key {key!r}")
        seen.add(key)
    return ",".join(f"{key}={val}" for key, val in members)
