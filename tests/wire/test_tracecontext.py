"""W3C Trace Context headers: the spec's examples, then OpenTelemetry as a second opinion.

The cross-checks run our parser and OpenTelemetry's propagator over the same input, so a
misreading of the spec would have to be shared by both to go unnoticed. Where the two
disagree and the spec is on our side, the corner is excluded from the comparison and
pinned by a test of its own (see "Where OpenTelemetry is more lenient").
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from wire.tracecontext import (
    TraceParent,
    format_traceparent,
    format_tracestate,
    parse_traceparent,
    parse_tracestate,
)

# The same examples on every run (seeded from the test itself), and no example database.
deterministic = settings(derandomize=True, database=None, max_examples=300, deadline=None)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"
FUTURE = f"cc-{TRACE_ID}-{PARENT_ID}-01"

PROPAGATOR = TraceContextTextMapPropagator()


# ------------------------------------------------------------------ traceparent: examples


def test_spec_example_parses() -> None:
    assert parse_traceparent(VALID) == TraceParent(TRACE_ID, PARENT_ID, 0x01, 0)


def test_not_sampled_parses() -> None:
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-00") == TraceParent(
        TRACE_ID, PARENT_ID, 0x00
    )


@pytest.mark.parametrize("flags", [0x09, 0x02, 0x80, 0xFF])
def test_all_flag_bits_are_kept(flags: int) -> None:
    parsed = parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-{flags:02x}")
    assert parsed is not None
    assert parsed.flags == flags


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(f"ff-{TRACE_ID}-{PARENT_ID}-01", id="version ff"),
        pytest.param(f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", id="uppercase trace id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID.upper()}-01", id="uppercase parent id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-0A", id="uppercase flags"),
        pytest.param(f"0A-{TRACE_ID}-{PARENT_ID}-01", id="uppercase version"),
        pytest.param(f"00-{'0' * 32}-{PARENT_ID}-01", id="zero trace id"),
        pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", id="zero parent id"),
        pytest.param(f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", id="short trace id"),
        pytest.param(f"00-{TRACE_ID}0-{PARENT_ID}-01", id="long trace id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01", id="short parent id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}0-01", id="long parent id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-1", id="short flags"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-011", id="long flags"),
        pytest.param(f"0-{TRACE_ID}-{PARENT_ID}-01", id="short version"),
        pytest.param(f"000-{TRACE_ID}-{PARENT_ID}-01", id="long version"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01-", id="version 00 with a trailing dash"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01-extra", id="version 00 with extra field"),
        pytest.param(f"00_{TRACE_ID}_{PARENT_ID}_01", id="wrong separators"),
        pytest.param(f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01", id="non-hex trace id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID[:-1]}g-01", id="non-hex parent id"),
        pytest.param(f"zz-{TRACE_ID}-{PARENT_ID}-01", id="non-hex version"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-0x", id="non-hex flags"),
        pytest.param("", id="empty"),
        pytest.param(" \t ", id="whitespace only"),
        pytest.param(f"cc-{TRACE_ID}-{PARENT_ID}-1", id="future version too short"),
        pytest.param(
            f"cc-{TRACE_ID}-{PARENT_ID}-01.what-the-future-will-be-like",
            id="future version without a dash after flags",
        ),
        pytest.param(f"cc-{'0' * 32}-{PARENT_ID}-01-x", id="future version zero trace id"),
        pytest.param(f"cc-{TRACE_ID.upper()}-{PARENT_ID}-01-x", id="future version uppercase"),
        # int(x, 16) accepts each of these; the spec's HEXDIGLC does not.
        pytest.param(f"00-{TRACE_ID[:-2]}_6-{PARENT_ID}-01", id="underscore in trace id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-+1", id="sign in flags"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}- 1", id="space in flags"),
        pytest.param(f"00-{TRACE_ID[:-1]}\u0664-{PARENT_ID}-01", id="non-ASCII digit"),
        # Only space and tab are optional whitespace.
        pytest.param(f"\n{VALID}", id="leading newline"),
        pytest.param(f"{VALID}\r\n", id="trailing CRLF"),
        pytest.param(f"\u00a0{VALID}", id="leading no-break space"),
    ],
)
def test_invalid_traceparent(header: str) -> None:
    assert parse_traceparent(header) is None


def test_future_version_with_extra_fields() -> None:
    header = f"{FUTURE}-what-the-future-will-be-like"
    assert parse_traceparent(header) == TraceParent(TRACE_ID, PARENT_ID, 0x01, 0xCC)


@pytest.mark.parametrize(
    "header", [FUTURE, f"{FUTURE}-", f"{FUTURE}-x.y=z", f"fe-{TRACE_ID}-{PARENT_ID}-09-x"]
)
def test_future_versions_are_read_through_their_00_prefix(header: str) -> None:
    parsed = parse_traceparent(header)
    assert parsed is not None
    assert (parsed.trace_id, parsed.parent_id) == (TRACE_ID, PARENT_ID)
    assert parsed.version == int(header[:2], 16)


@pytest.mark.parametrize(
    "header",
    [f" {VALID}", f"{VALID} ", f"\t {VALID} \t", f"  {FUTURE}-more\t", f"\t{FUTURE}  "],
)
def test_optional_whitespace_around_the_value(header: str) -> None:
    parsed = parse_traceparent(header)
    assert parsed is not None
    assert parsed.trace_id == TRACE_ID


def test_format_spec_example() -> None:
    assert format_traceparent(TraceParent(TRACE_ID, PARENT_ID, 0x01)) == VALID


def test_format_always_writes_version_00() -> None:
    tp = TraceParent(TRACE_ID, PARENT_ID, 0x09, version=0xCC)
    assert format_traceparent(tp) == f"00-{TRACE_ID}-{PARENT_ID}-09"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param((TRACE_ID.upper(), PARENT_ID, 1, 0), id="uppercase trace id"),
        pytest.param(("0" * 32, PARENT_ID, 1, 0), id="zero trace id"),
        pytest.param((TRACE_ID[:-1], PARENT_ID, 1, 0), id="short trace id"),
        pytest.param((TRACE_ID, "0" * 16, 1, 0), id="zero parent id"),
        pytest.param((TRACE_ID, PARENT_ID + "0", 1, 0), id="long parent id"),
        pytest.param((TRACE_ID, PARENT_ID, 256, 0), id="flags too large"),
        pytest.param((TRACE_ID, PARENT_ID, -1, 0), id="negative flags"),
        pytest.param((TRACE_ID, PARENT_ID, 1, 0xFF), id="version ff"),
    ],
)
def test_traceparent_refuses_what_could_not_be_sent(fields: tuple[str, str, int, int]) -> None:
    with pytest.raises(ValueError):
        TraceParent(*fields)


# ------------------------------------------------------------------ traceparent: properties

trace_ids = st.integers(min_value=1, max_value=2**128 - 1)
span_ids = st.integers(min_value=1, max_value=2**64 - 1)
flag_bytes = st.integers(min_value=0, max_value=0xFF)
versions = st.integers(min_value=0, max_value=0xFE)


@deterministic
@given(trace_ids, span_ids, flag_bytes, versions)
def test_format_then_parse_round_trips(
    trace_id: int, span_id: int, flags: int, version: int
) -> None:
    tp = TraceParent(f"{trace_id:032x}", f"{span_id:016x}", flags, version)
    # Formatting writes version 00 whatever was read; everything else survives.
    assert parse_traceparent(format_traceparent(tp)) == dataclasses.replace(tp, version=0)


def otel_extract(header: str) -> SpanContext | None:
    context = PROPAGATOR.extract({"traceparent": header})
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def otel_inject(trace_id: int, span_id: int, flags: int) -> str:
    span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags))
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(NonRecordingSpan(span_context)))
    return carrier["traceparent"]


@deterministic
@given(trace_ids, span_ids, flag_bytes)
def test_otel_reads_what_we_write(trace_id: int, span_id: int, flags: int) -> None:
    header = format_traceparent(TraceParent(f"{trace_id:032x}", f"{span_id:016x}", flags))
    extracted = otel_extract(header)
    assert extracted is not None
    assert (extracted.trace_id, extracted.span_id, extracted.trace_flags) == (
        trace_id,
        span_id,
        flags,
    )


@deterministic
@given(trace_ids, span_ids, flag_bytes)
def test_we_read_what_otel_writes(trace_id: int, span_id: int, flags: int) -> None:
    assert parse_traceparent(otel_inject(trace_id, span_id, flags)) == TraceParent(
        f"{trace_id:032x}", f"{span_id:016x}", flags
    )


# Where OpenTelemetry is more lenient (opentelemetry-api 1.45), and the comparisons below
# leave out:
#
# - a line feed: OTel matches with ``^...$``, and ``$`` also matches just before a final
#   "\n", so OTel accepts "00-...-01\n"; LF is not optional whitespace, and we refuse it. In a
#   future version's extra fields, OTel's ``.*`` stops at a "\n" and it refuses the header,
#   while the spec says to ignore what follows the flags' dash, and we accept it;
# - more than 512 characters: OTel refuses such a header outright, while the spec sets no
#   limit on a future version's extra fields, and we accept it.
#
# Neither can come from a well-behaved peer, so both are pinned below and left out of the
# comparisons rather than copied into our parser.
OTEL_MAX_TRACEPARENT = 512


def comparable(header: str) -> bool:
    return "\n" not in header and len(header) <= OTEL_MAX_TRACEPARENT


def test_corner_trailing_newline_is_refused() -> None:
    assert parse_traceparent(f"{VALID}\n") is None


def test_corner_newline_in_future_fields_is_ignored() -> None:
    assert parse_traceparent(f"{FUTURE}-x\ny") == TraceParent(TRACE_ID, PARENT_ID, 1, 0xCC)


def test_corner_long_future_header_is_accepted() -> None:
    header = f"{FUTURE}-{'x' * OTEL_MAX_TRACEPARENT}"
    assert parse_traceparent(header) == TraceParent(TRACE_ID, PARENT_ID, 1, 0xCC)


def assert_agrees_with_otel(header: str) -> None:
    ours = parse_traceparent(header)
    theirs = otel_extract(header)
    if ours is None:
        assert theirs is None, f"OTel accepts {header!r}, we refuse it"
    else:
        assert theirs is not None, f"we accept {header!r}, OTel refuses it"
        assert (int(ours.trace_id, 16), int(ours.parent_id, 16), ours.flags) == (
            theirs.trace_id,
            theirs.span_id,
            theirs.trace_flags,
        )


NEAR_HEX = "0123456789abcdefABCDEFgx-_.+ \t\r"


@st.composite
def traceparent_like(draw: st.DrawFn) -> str:
    """Valid headers with a few characters replaced, inserted or deleted.

    Mutating valid headers, rather than drawing text, keeps many examples within a character
    of the boundary, which is where a parser's mistakes hide.
    """
    version = draw(st.sampled_from(["00", "00", "01", "cc", "fe", "ff"]))
    trace_id = draw(st.integers(min_value=0, max_value=2**128 - 1))
    span_id = draw(st.integers(min_value=0, max_value=2**64 - 1))
    header = f"{version}-{trace_id:032x}-{span_id:016x}-{draw(flag_bytes):02x}"
    header += draw(
        st.sampled_from(["", "", "-", "-what-the-future-will-be-like", ".what", " -x", "\r"])
    )
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        pos = draw(st.integers(min_value=0, max_value=len(header)))
        char = draw(st.sampled_from(NEAR_HEX))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        if edit == "replace":
            header = header[:pos] + char + header[pos + 1 :]
        elif edit == "insert":
            header = header[:pos] + char + header[pos:]
        else:
            header = header[:pos] + header[pos + 1 :]
    ows = st.text(alphabet=" \t", max_size=2)
    return draw(ows) + header + draw(ows)


@deterministic
@given(traceparent_like())
def test_agrees_with_otel_near_valid_headers(header: str) -> None:
    assert comparable(header)
    assert_agrees_with_otel(header)


@deterministic
@given(st.text(alphabet=st.characters(exclude_characters="\n"), max_size=80))
def test_agrees_with_otel_on_arbitrary_text(header: str) -> None:
    assert_agrees_with_otel(header)


@deterministic
@given(trace_ids, span_ids, flag_bytes, st.sampled_from(["00", "01", "cc", "fe"]))
def test_agrees_with_otel_on_valid_headers_in_any_version(
    trace_id: int, span_id: int, flags: int, version: str
) -> None:
    header = f"{version}-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert parse_traceparent(header) is not None
    assert_agrees_with_otel(header)


# ------------------------------------------------------------------ tracestate: examples


def test_tracestate_spec_example() -> None:
    assert parse_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") == [
        ("rojo", "00f067aa0ba902b7"),
        ("congo", "t61rcWkgMzE"),
    ]


@pytest.mark.parametrize(
    ("header", "members"),
    [
        pytest.param("", [], id="empty header"),
        pytest.param(" \t", [], id="whitespace only"),
        pytest.param(",, ,\t,", [], id="only empty members"),
        pytest.param(" rojo=1 ,\tcongo=2\t", [("rojo", "1"), ("congo", "2")], id="OWS"),
        pytest.param("rojo=1,,congo=2,", [("rojo", "1"), ("congo", "2")], id="empty members"),
        # A value may start with a space; only the trailing one is ruled out (and is OWS).
        pytest.param("rojo= a b ", [("rojo", " a b")], id="spaces inside the value"),
    ],
)
def test_tracestate_whitespace_and_empty_members(
    header: str, members: list[tuple[str, str]]
) -> None:
    assert parse_tracestate(header) == members


VALID_KEYS = [
    "a",
    "a" * 256,
    "a0_-*/",
    "rojo",
    "tenant@system",
    "0tenant@system",
    "t" * 241 + "@" + "s" * 14,
    "foo@bar-baz_9*/",
]
INVALID_KEYS = [
    "",
    "A",
    "Rojo",
    "0abc",
    "_abc",
    "a" * 257,
    "a.b",
    "a b",
    "r\u00f6jo",
    "t" * 242 + "@s",
    "t@" + "s" * 15,
    "@system",
    "tenant@",
    "tenant@0system",
    "_tenant@system",
    "a@b@c",
    "Tenant@system",
]
VALID_VALUES = ["v", "x" * 256, " leading", "a b", "!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~", "t61rcWkg"]
INVALID_VALUES = ["", "x" * 257, "trailing ", " ", "a=b", "a,b", "tab\there", "\x7f", "caf\u00e9"]


@pytest.mark.parametrize("key", VALID_KEYS)
def test_valid_key(key: str) -> None:
    assert parse_tracestate(f"{key}=v") == [(key, "v")]
    assert format_tracestate([(key, "v")]) == f"{key}=v"


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_key(key: str) -> None:
    assert parse_tracestate(f"{key}=v") is None
    assert parse_tracestate(f"rojo=1,{key}=v,congo=2") is None
    with pytest.raises(ValueError):
        format_tracestate([(key, "v")])


@pytest.mark.parametrize("value", VALID_VALUES)
def test_valid_value(value: str) -> None:
    assert parse_tracestate(f"k={value}") == [("k", value)]
    assert format_tracestate([("k", value)]) == f"k={value}"


@pytest.mark.parametrize("value", INVALID_VALUES)
def test_invalid_value(value: str) -> None:
    with pytest.raises(ValueError):
        format_tracestate([("k", value)])
    # In a header a trailing space is optional whitespace around the member, not part of it.
    if not value.endswith(" ") and "," not in value:
        assert parse_tracestate(f"k={value}") is None


@pytest.mark.parametrize("member", ["rojo", "rojo=", "=1", "rojo =1", "rojo\t=1"])
def test_malformed_member_discards_the_header(member: str) -> None:
    assert parse_tracestate(f"congo=2,{member}") is None


def members(count: int) -> list[tuple[str, str]]:
    return [(f"k{i}", f"v{i}") for i in range(count)]


def test_32_members_are_accepted() -> None:
    assert parse_tracestate(format_tracestate(members(32))) == members(32)


def test_33_members_discard_the_header() -> None:
    header = ",".join(f"{key}={val}" for key, val in members(33))
    assert parse_tracestate(header) is None
    with pytest.raises(ValueError):
        format_tracestate(members(33))


def test_empty_members_do_not_count_towards_the_limit() -> None:
    header = ",".join(f"{key}={val}," for key, val in members(32))
    assert parse_tracestate(header) == members(32)


def test_duplicate_keys_discard_the_header() -> None:
    assert parse_tracestate("rojo=1,congo=2,rojo=3") is None
    with pytest.raises(ValueError):
        format_tracestate([("rojo", "1"), ("rojo", "1")])


def test_format_empty() -> None:
    assert format_tracestate([]) == ""


# ------------------------------------------------------------------ tracestate: properties

KEY_TAIL = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
simple_keys = st.builds(
    str.__add__,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    st.text(alphabet=KEY_TAIL, max_size=255),
)
tenant_keys = st.builds(
    "{}{}@{}{}".format,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"),
    st.text(alphabet=KEY_TAIL, max_size=240),
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    st.text(alphabet=KEY_TAIL, max_size=13),
)
value_chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=",=")
values = st.text(alphabet=value_chars, min_size=1, max_size=256).filter(
    lambda value: not value.endswith(" ")
)
member_lists = st.lists(
    st.tuples(simple_keys | tenant_keys, values),
    max_size=32,
    unique_by=lambda member: member[0],
)


@deterministic
@given(member_lists)
def test_tracestate_round_trips(members: list[tuple[str, str]]) -> None:
    assert parse_tracestate(format_tracestate(members)) == members


def otel_tracestate(header: str) -> list[tuple[str, str]]:
    # ``from_header`` rather than the propagator's ``extract``: the latter also drops
    # headers over 8192 characters, a limit the spec does not set.
    return list(TraceState.from_header([header]).items())


@deterministic
@given(member_lists)
def test_otel_tracestate_agrees_on_valid_headers(members: list[tuple[str, str]]) -> None:
    assert otel_tracestate(format_tracestate(members)) == members


@st.composite
def tracestate_like(draw: st.DrawFn) -> str:
    """Headers assembled from members that are right, nearly right, or empty."""
    near_keys = st.text(alphabet="abz09_-*/@A. ", min_size=0, max_size=6)
    near_values = st.text(alphabet="abZ9 =,\t\x7f~", min_size=0, max_size=6)
    member = st.one_of(
        st.builds("{}={}".format, simple_keys | tenant_keys, values),
        st.builds("{}={}".format, near_keys, near_values),
        st.text(alphabet=" \t", max_size=2),
        st.sampled_from(["k=1", "k=2", "rojo=x"]),  # makes duplicates likely
    )
    ows = st.text(alphabet=" \t", max_size=2)
    parts = draw(st.lists(member, max_size=36))
    return ",".join(draw(ows) + part + draw(ows) for part in parts)


@deterministic
@given(tracestate_like())
def test_otel_tracestate_agrees_on_near_valid_headers(header: str) -> None:
    ours = parse_tracestate(header)
    # OTel answers "nothing" both for an invalid header and for an empty one.
    assert otel_tracestate(header) == (ours or [])


@deterministic
@given(st.text(max_size=80))
def test_otel_tracestate_agrees_on_arbitrary_text(header: str) -> None:
    assert otel_tracestate(header) == (parse_tracestate(header) or [])
