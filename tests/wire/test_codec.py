"""The payload codec: every registered kind round trips, and hostile payloads are CodecErrors.

Message strategies are derived from the dataclasses' own type hints, so a field added to a
message is exercised without touching this file, and a new kind without a class listed here
fails ``test_every_registered_kind_is_covered`` instead of going untested.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import types
import typing
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from wire.api import (
    CLIENT_REGISTRY,
    PEER_REGISTRY,
    CasRequest,
    DeleteRangeRequest,
    DeleteRequest,
    ErrorCode,
    ErrorReply,
    GetReply,
    GetRequest,
    Hello,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseReply,
    LeaseRevokeRequest,
    MemberChangeReply,
    MemberChangeRequest,
    MemberListReply,
    MemberListRequest,
    MoveLeaderReply,
    MoveLeaderRequest,
    RangeReply,
    RangeRequest,
    SetRequest,
    SnapshotChunk,
    SnapshotPart,
    SnapshotRequest,
    StateHashRequest,
    StatusReply,
    StatusRequest,
    WatchReply,
    WatchRequest,
    WriteReply,
)
from wire.codec import (
    PROTOCOL_VERSION,
    CodecError,
    Header,
    Registry,
    UnsupportedVersion,
    decode_payload,
    encode_payload,
)
from wire.codec import _build as codec_build
from wire.frame import WireError, encode_frame
from wire.tracecontext import TraceParent, parse_tracestate

# The same examples on every run (seeded from the test itself), and no example database.
deterministic = settings(derandomize=True, database=None, deadline=None)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID_TP = f"00-{TRACE_ID}-{PARENT_ID}-01"
TP = TraceParent(TRACE_ID, PARENT_ID, 1)

MAX_U63 = 2**63 - 1

# Every class that may appear as a top-level kind, by registry. ``Entry`` travels only
# inside AppendEntries: a bare Entry frame is an unknown kind.
PEER_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Hello,
        RequestVote,
        RequestVoteResponse,
        AppendEntries,
        AppendEntriesResponse,
        Heartbeat,
        HeartbeatResponse,
        SnapshotChunk,
        TimeoutNow,
    )
}
CLIENT_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        GetRequest,
        RangeRequest,
        SetRequest,
        CasRequest,
        DeleteRequest,
        DeleteRangeRequest,
        LeaseGrantRequest,
        LeaseRevokeRequest,
        LeaseKeepAliveRequest,
        WatchRequest,
        StatusRequest,
        StateHashRequest,
        SnapshotRequest,
        MoveLeaderRequest,
        MemberListRequest,
        MemberChangeRequest,
        GetReply,
        RangeReply,
        WriteReply,
        LeaseReply,
        WatchReply,
        StatusReply,
        MoveLeaderReply,
        MemberListReply,
        MemberChangeReply,
        ErrorReply,
        SnapshotPart,
    )
}
REGISTRIES: dict[str, tuple[Registry, dict[str, type]]] = {
    "peer": (PEER_REGISTRY, PEER_CLASSES),
    "client": (CLIENT_REGISTRY, CLIENT_CLASSES),
}
ALL_KINDS = [(name, kind) for name, (_, classes) in REGISTRIES.items() for kind in classes]


# ------------------------------------------------------------------ strategies


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    """Values of one field type, within what a real node sends (ints are non-negative)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return st.none() | strategy_for(inner)
    if origin is tuple:
        item, _ellipsis = typing.get_args(hint)
        return st.lists(strategy_for(item), max_size=4).map(tuple)
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        return st.sampled_from(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return message_strategy(hint)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        int: st.integers(min_value=0, max_value=MAX_U63),
        # NaN is excluded only because NaN != NaN would fail the equality check.
        float: st.floats(allow_nan=False),
        str: st.text(),
        bytes: st.binary(),
        bool: st.booleans(),
    }
    return simple[hint]


def message_strategy(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


hex_ids = {
    length: st.text(alphabet="0123456789abcdef", min_size=length, max_size=length).filter(
        lambda s: s.strip("0") != ""
    )
    for length in (16, 32)
}
traceparents = st.builds(
    TraceParent,
    trace_id=hex_ids[32],
    parent_id=hex_ids[16],
    flags=st.integers(min_value=0, max_value=0xFF),
)


def round_trip(registry: Registry, header: Header, message: Any) -> tuple[Header, Any]:
    payload = encode_payload(header, registry.to_body(message))
    decoded_header, body = decode_payload(payload)
    return decoded_header, registry.from_body(decoded_header.kind, body)


def payload(head: Any, body: Any) -> bytes:
    return cbor2.dumps([head, body])


def head(kind: str, **extra: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "k": kind, **extra}


def decode_fully(registry: Registry, data: bytes) -> Any:
    header, body = decode_payload(data)
    return registry.from_body(header.kind, body)


# ------------------------------------------------------------------ round trips


def test_every_registered_kind_is_covered() -> None:
    for registry, classes in REGISTRIES.values():
        assert set(registry.kinds()) == set(classes), "a new kind needs a class listed here"
    assert "Entry" not in PEER_REGISTRY.kinds()


@pytest.mark.parametrize(("registry_name", "kind"), ALL_KINDS)
@deterministic
@given(data=st.data())
def test_every_kind_round_trips(registry_name: str, kind: str, data: st.DataObject) -> None:
    registry, classes = REGISTRIES[registry_name]
    message = data.draw(message_strategy(classes[kind]), label="message")
    assert registry.kind_of(message) == kind
    header, decoded = round_trip(registry, Header(kind), message)
    assert header == Header(kind)
    assert type(decoded) is type(message)
    assert decoded == message


# Values a hostile body may hold in any field: each of CBOR's plain types, and lists of them.
_any_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@pytest.mark.parametrize(("registry_name", "kind"), ALL_KINDS)
@deterministic
@given(data=st.data())
def test_the_compiled_decoder_agrees_with_the_field_checkers(
    registry_name: str, kind: str, data: st.DataObject
) -> None:
    """Each kind's compiled decoder is a fast path for ``_build``: on a valid body with one
    field replaced by anything at all, both build the same value or raise the same error."""
    registry, classes = REGISTRIES[registry_name]
    cls, checkers = registry._by_kind[kind]
    body = registry.to_body(data.draw(message_strategy(classes[kind]), label="message"))
    if body:
        position = data.draw(st.integers(0, len(body) - 1), label="field")
        body[position] = data.draw(_any_value, label="value")

    def outcome(build: Any) -> Any:
        try:
            return build()
        except CodecError as exc:
            return ("error", str(exc))

    fast = outcome(lambda: registry.from_body(kind, body))
    slow = outcome(lambda: codec_build(kind, cls, checkers, body))
    assert fast == slow
    assert type(fast) is type(slow)


@pytest.mark.parametrize(("registry_name", "kind"), ALL_KINDS)
def test_every_kind_has_a_compiled_decoder(registry_name: str, kind: str) -> None:
    """A field type without a fast form sends its whole message through the generic
    builder (a generator per message): GetReply and GetRequest did, for their floats."""
    registry, _ = REGISTRIES[registry_name]
    assert registry._builders[kind].__code__.co_filename == f"<{kind} decoder>"


@deterministic
@given(
    message=message_strategy(AppendEntries),
    request_id=st.integers(min_value=0, max_value=MAX_U63),
    traceparent=st.none() | traceparents,
    tracestate=st.none() | st.text() | st.sampled_from(["rojo=00f067aa0ba902b7", "a=1,b@c=2"]),
)
def test_header_fields_survive(
    message: AppendEntries,
    request_id: int,
    traceparent: TraceParent | None,
    tracestate: str | None,
) -> None:
    sent = Header("AppendEntries", request_id, traceparent, tracestate)
    header, decoded = round_trip(PEER_REGISTRY, sent, message)
    assert decoded == message
    assert header.kind == "AppendEntries"
    assert header.request_id == request_id
    assert header.traceparent == traceparent
    assert header.version == PROTOCOL_VERSION
    # An empty tracestate is not sent; without a traceparent, or when it is not a valid
    # list-member list, it is dropped on arrival.
    valid = tracestate is not None and parse_tracestate(tracestate) is not None
    kept = traceparent is not None and bool(tracestate) and valid
    assert header.tracestate == (tracestate if kept else None)


def test_append_entries_with_noop_and_normal_entries() -> None:
    message = AppendEntries(
        term=3,
        src=1,
        dst=2,
        prev_log_index=4,
        prev_log_term=2,
        entries=(
            Entry(5, 3, b"", EntryKind.NOOP),
            Entry(6, 3, b"set x 1"),
            Entry(7, 3, bytes(range(256)), EntryKind.NORMAL),
        ),
        leader_commit=4,
    )
    _, decoded = round_trip(PEER_REGISTRY, Header("AppendEntries", 9, TP, "a=b"), message)
    assert decoded == message
    assert isinstance(decoded.entries, tuple)
    assert [type(e.kind) for e in decoded.entries] == [EntryKind] * 3
    assert decoded.entries[0].kind is EntryKind.NOOP


def test_extreme_values_round_trip() -> None:
    messages: list[tuple[Registry, Any]] = [
        (PEER_REGISTRY, RequestVote(MAX_U63, MAX_U63, 0, MAX_U63, MAX_U63, pre_vote=True)),
        (
            PEER_REGISTRY,
            AppendEntries(
                MAX_U63, 1, 2, 0, 0, (Entry(MAX_U63, MAX_U63, b"\x00" * 1000, EntryKind.NOOP),), 0
            ),
        ),
        (PEER_REGISTRY, Hello("", "", "")),
        (PEER_REGISTRY, Hello("\u00e9\U0001f600", "n" * 10_000, "[::1]:7000")),
        (CLIENT_REGISTRY, StatusRequest()),
        (CLIENT_REGISTRY, GetRequest("k", float("inf"), forward=True)),
        (CLIENT_REGISTRY, GetReply(True, "", "n1", stale=True, max_age_s=0.0)),
        (CLIENT_REGISTRY, CasRequest("k", None, "v", "c", 0)),
        (CLIENT_REGISTRY, ErrorReply(ErrorCode.NOT_LEADER, "", True, "n2", "h:1")),
    ]
    for registry, message in messages:
        kind = registry.kind_of(message)
        header, decoded = round_trip(registry, Header(kind, MAX_U63), message)
        assert (header.request_id, decoded) == (MAX_U63, message)


def test_float_fields_accept_integers_and_return_floats() -> None:
    # Documented leniency: CBOR encoders may shrink 2.0 to the integer 2.
    decoded = CLIENT_REGISTRY.from_body("GetRequest", ["k", 2, False])
    assert decoded == GetRequest("k", 2.0)
    assert type(decoded.max_staleness_s) is float


def test_negative_integers_are_not_refused_by_the_codec() -> None:
    # Documented: the codec checks types, not ranges. Range checks belong to the Raft core.
    decoded = PEER_REGISTRY.from_body("Heartbeat", [-1, -2, -3, -4, -5, -6])
    assert decoded == Heartbeat(-1, -2, -3, -4, -5, -6)
    header, _ = decode_payload(payload(head("Heartbeat", id=-7), []))
    assert header.request_id == -7


def test_a_heartbeat_sized_append_entries_frame_is_small() -> None:
    message = AppendEntries(
        term=2**31,
        src=1,
        dst=2,
        prev_log_index=10**9,
        prev_log_term=2**31,
        entries=(),
        leader_commit=10**9,
    )
    body = PEER_REGISTRY.to_body(message)
    frame = encode_frame(encode_payload(Header("AppendEntries", 2**31), body))
    assert len(frame) < 64


def test_kind_of_an_unregistered_object_is_a_type_error() -> None:
    for registry, value in [
        (PEER_REGISTRY, object()),
        (PEER_REGISTRY, 3),
        (PEER_REGISTRY, GetRequest("k")),  # registered, but with the other registry
        (CLIENT_REGISTRY, Hello("c", "n", "a")),
        (CLIENT_REGISTRY, Header("GetRequest")),
    ]:
        with pytest.raises(TypeError):
            registry.kind_of(value)


# ------------------------------------------------------------------ trace context


def test_a_newer_traceparent_version_is_sent_as_00() -> None:
    header, _ = round_trip(
        CLIENT_REGISTRY,
        Header("StatusRequest", traceparent=TraceParent(TRACE_ID, PARENT_ID, 0x03, 7)),
        StatusRequest(),
    )
    assert header.traceparent == TraceParent(TRACE_ID, PARENT_ID, 0x03, 0)


def test_a_future_version_traceparent_from_a_peer_is_kept() -> None:
    future = f"cc-{TRACE_ID}-{PARENT_ID}-01-whatever-comes-next"
    header, _ = decode_payload(payload(head("StatusRequest", tp=future, ts="a=b"), []))
    assert header.traceparent == TraceParent(TRACE_ID, PARENT_ID, 1, 0xCC)
    assert header.tracestate == "a=b"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        VALID_TP.upper(),
        VALID_TP[:-1],
        VALID_TP + "-extra",  # version 00 has nothing after the flags
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-0g",
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        "\x00" * 55,
        "\U0001f600" * 55,
        b"00-not-a-str",
        1,
        None,
        [VALID_TP],
        {"tp": VALID_TP},
    ],
)
def test_an_invalid_traceparent_is_dropped_with_its_tracestate(bad: object) -> None:
    header, body = decode_payload(payload(head("StatusRequest", id=5, tp=bad, ts="a=b"), []))
    assert header == Header("StatusRequest", 5, None, None)
    assert CLIENT_REGISTRY.from_body(header.kind, body) == StatusRequest()
    # Flagged, so the receiver can count it; a null is as good as no context at all.
    assert header.dropped_traceparent is (bad is not None)


def test_a_valid_or_absent_traceparent_is_not_flagged_as_dropped() -> None:
    for extra in ({"tp": VALID_TP}, {}):
        header, _ = decode_payload(payload(head("StatusRequest", **extra), []))
        assert header.dropped_traceparent is False


def test_tracestate_without_traceparent_is_dropped() -> None:
    header, _ = decode_payload(payload(head("StatusRequest", ts="a=b"), []))
    assert (header.traceparent, header.tracestate) == (None, None)
    # Our own encoder sends it regardless; the receiving side is what drops it.
    header, _ = round_trip(
        CLIENT_REGISTRY, Header("StatusRequest", tracestate="a=b"), StatusRequest()
    )
    assert (header.traceparent, header.tracestate) == (None, None)


@pytest.mark.parametrize("bad", [1, b"a=b", ["a=b"], None, True])
def test_a_tracestate_that_is_not_a_string_is_dropped(bad: object) -> None:
    header, _ = decode_payload(payload(head("StatusRequest", tp=VALID_TP, ts=bad), []))
    assert header.traceparent == TP
    assert header.tracestate is None


def test_a_whitespace_padded_traceparent_is_accepted() -> None:
    header, _ = decode_payload(payload(head("StatusRequest", tp=f" \t{VALID_TP}\t "), []))
    assert header.traceparent == TP


# ------------------------------------------------------------------ version


@pytest.mark.parametrize("version", [0, 2, 255, -1, None, "1", b"\x01", [1], 2**64])
def test_other_versions_are_unsupported(version: object) -> None:
    with pytest.raises(UnsupportedVersion) as refused:
        decode_payload(payload({"v": version, "k": "StatusRequest"}, []))
    assert refused.value.version == version
    assert isinstance(refused.value, CodecError)
    assert isinstance(refused.value, WireError)


def test_a_missing_version_is_unsupported() -> None:
    with pytest.raises(UnsupportedVersion) as refused:
        decode_payload(payload({"k": "StatusRequest"}, []))
    assert refused.value.version is None


def test_our_own_version_2_header_is_refused() -> None:
    data = encode_payload(Header("StatusRequest", version=2), [])
    with pytest.raises(UnsupportedVersion):
        decode_payload(data)


@pytest.mark.parametrize("version", [True, 1.0])
def test_a_version_that_only_equals_1_is_unsupported(version: object) -> None:
    # True and 1.0 compare equal to 1; like every other integer field, the version refuses
    # bools and floats.
    with pytest.raises(UnsupportedVersion):
        decode_payload(payload({"v": version, "k": "StatusRequest"}, []))


# ------------------------------------------------------------------ malformed payloads


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",  # a lone "break"
        b"\x1c",  # reserved additional information
        b"\x82\xa0",  # array of two, one item missing
        b"\x82\xa1\x61v",  # map cut short
        b"\x62\xc3\x28",  # invalid UTF-8 in a text string
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",  # an array of 2**64-1 items announced
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # a byte string of 2**64-1 bytes announced
        b"\x81" * 100_000 + b"\x00",  # nested beyond any sane depth
    ],
)
def test_not_cbor(data: bytes) -> None:
    with pytest.raises(CodecError, match="not CBOR"):
        decode_payload(data)


@pytest.mark.parametrize(
    "value",
    [
        None,
        1,
        "x",
        b"x",
        {},
        {"v": 1, "k": "StatusRequest"},
        [],
        [head("StatusRequest")],
        [head("StatusRequest"), [], []],
    ],
)
def test_not_a_two_item_list(value: object) -> None:
    with pytest.raises(CodecError, match=r"\[header, body\]"):
        decode_payload(cbor2.dumps(value))


@pytest.mark.parametrize("header", [None, 1, "h", b"h", [], [1, "StatusRequest"], True])
def test_header_not_a_map(header: object) -> None:
    with pytest.raises(CodecError, match=r"\[header, body\]"):
        decode_payload(payload(header, []))


@pytest.mark.parametrize("kind", [None, 1, b"StatusRequest", ["StatusRequest"], True, 1.5])
def test_kind_not_a_string(kind: object) -> None:
    with pytest.raises(CodecError, match="header kind"):
        decode_payload(payload({"v": 1, "k": kind}, []))


def test_kind_missing() -> None:
    with pytest.raises(CodecError, match="header kind"):
        decode_payload(payload({"v": 1}, []))


@pytest.mark.parametrize("request_id", [None, "1", b"\x01", True, False, 1.0, [1]])
def test_request_id_not_an_integer(request_id: object) -> None:
    with pytest.raises(CodecError, match="integer"):
        decode_payload(payload(head("StatusRequest", id=request_id), []))


def test_request_id_defaults_to_0() -> None:
    header, _ = decode_payload(payload(head("StatusRequest"), []))
    assert header.request_id == 0


def test_the_peer_timing_and_trace_room_fields_survive() -> None:
    sent = Header("Heartbeat", age_us=12, lag_us=3, sent_us=1_700_000_000_000_000, trace_room=5)
    header, _ = decode_payload(encode_payload(sent, []))
    assert header == sent


@pytest.mark.parametrize("bad", [-1, "5", 1.5, 1 << 63, [5]])
def test_a_bad_trace_room_is_a_codec_error(bad: object) -> None:
    with pytest.raises(CodecError, match="'r'"):
        decode_payload(payload(head("Heartbeat", r=bad), []))


def test_unknown_header_keys_are_ignored() -> None:
    header, _ = decode_payload(payload(head("StatusRequest", x=1, **{"2": [None]}), []))
    assert header == Header("StatusRequest")


@pytest.mark.parametrize("kind", ["Nope", "", "statusrequest", "Header", "Registry", "Message"])
def test_unknown_kind(kind: str) -> None:
    header, body = decode_payload(payload(head(kind), []))
    for registry in (PEER_REGISTRY, CLIENT_REGISTRY):
        with pytest.raises(CodecError, match="unknown message kind"):
            registry.from_body(header.kind, body)


def test_a_kind_from_the_other_registry_is_unknown() -> None:
    with pytest.raises(CodecError, match="unknown message kind"):
        CLIENT_REGISTRY.from_body("Hello", ["c", "n", "a"])
    with pytest.raises(CodecError, match="unknown message kind"):
        PEER_REGISTRY.from_body("StatusRequest", [])


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("Heartbeat", [1, 2, 3, 4, 5]),  # commit_index has a default, but must still be sent
        ("Heartbeat", [1, 2, 3, 4, 5, 6, 7]),
        ("Heartbeat", []),
        ("StatusRequest", [None]),
        ("Hello", ["c", "n"]),
        ("Hello", {"cluster_id": "c", "node_name": "n", "client_addr": "a"}),
        ("Hello", ("c", "n", "a", "x")),
        ("Hello", None),
        ("Hello", "cna"),
    ],
)
def test_wrong_field_count_or_shape(kind: str, body: object) -> None:
    registry = PEER_REGISTRY if kind in PEER_CLASSES else CLIENT_REGISTRY
    with pytest.raises(CodecError, match="fields"):
        decode_fully(registry, payload(head(kind), body))


def test_a_bare_entry_is_not_a_message() -> None:
    """Entries travel only inside AppendEntries; a peer cannot send one on its own."""
    with pytest.raises(CodecError, match="unknown message kind"):
        decode_fully(PEER_REGISTRY, payload(head("Entry"), [1, 2, b"", 0]))


GOOD_ENTRY = [1, 1, b"x", 0, ""]
GOOD_APPEND = [1, 1, 2, 0, 0, [GOOD_ENTRY], 0]


def with_field(body: list[Any], index: int, value: object) -> list[Any]:
    return [value if i == index else item for i, item in enumerate(body)]


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        # bool where an int is expected (bool is an int subclass in Python, not in CBOR)
        ("Heartbeat", [True, 1, 2, 3, 4]),
        ("RequestVote", [1, 2, 3, 4, False, False]),
        # float, text, bytes or null where an int is expected
        ("Heartbeat", [1.0, 1, 2, 3, 4]),
        ("Heartbeat", [1, 2, 3, 4, 0.5]),
        ("Heartbeat", ["1", 1, 2, 3, 4]),
        ("Heartbeat", [b"\x01", 1, 2, 3, 4]),
        ("Heartbeat", [None, 1, 2, 3, 4]),
        # int where a bool is expected
        ("RequestVoteResponse", [1, 2, 3, 1, False]),
        ("RequestVote", [1, 2, 3, 4, 5, 0]),
        # str and bytes are not interchangeable
        ("Hello", [b"c", "n", "a"]),
        ("Hello", ["c", "n", 1]),
        ("Hello", ["c", None, "a"]),
        # a list is not a message
        ("Hello", [["c"], "n", "a"]),
        # AppendEntries and its nested entries
        ("AppendEntries", with_field(GOOD_APPEND, 5, None)),
        ("AppendEntries", with_field(GOOD_APPEND, 5, GOOD_ENTRY)),  # one entry, not a list
        ("AppendEntries", with_field(GOOD_APPEND, 5, b"")),
        ("AppendEntries", with_field(GOOD_APPEND, 5, {"0": GOOD_ENTRY})),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [GOOD_ENTRY, None])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [GOOD_ENTRY, GOOD_ENTRY[:3]])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [[*GOOD_ENTRY, 0]])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 2, "x")])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 2, None)])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 0, True)])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 1, 1.0)])),
        # EntryKind out of range, or not an integer at all
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 3, 3)])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 3, -1)])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 3, 2**64)])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 3, True)])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 3, 1.0)])),
        ("AppendEntries", with_field(GOOD_APPEND, 5, [with_field(GOOD_ENTRY, 3, "NOOP")])),
    ],
)
def test_wrong_peer_field_types(kind: str, body: list[Any]) -> None:
    with pytest.raises(CodecError, match=kind):
        decode_fully(PEER_REGISTRY, payload(head(kind), body))


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        # optional fields take null or their type, nothing else
        ("GetRequest", ["k", "1.5", False]),
        ("GetRequest", ["k", True, False]),
        ("GetRequest", ["k", b"", False]),
        ("GetRequest", ["k", None, None]),
        ("GetRequest", [None, None, False]),
        ("CasRequest", ["k", b"old", "v", "c", 1, False, None, 0]),
        ("CasRequest", ["k", 0, "v", "c", 1, False, None, 0]),
        ("CasRequest", ["k", None, "v", "c", 1, False, True, 0]),
        ("SetRequest", ["k", "v", "c", 1.0, False, 0]),
        ("SetRequest", ["k", "v", "c", True, False, 0]),
        ("SetRequest", ["k", "v", "c", 1, 1, 0]),
        ("SetRequest", ["k", "v", "c", 1, False, None]),
        ("WriteReply", [True, None, True, None, 0]),
        ("RangeRequest", ["a", 1, 0, None, False]),
        ("RangeReply", [[["k", "v", 1, 1, None]], False, 1, "n", False, None]),
        ("LeaseGrantRequest", [1.5, "c", 1, False]),
        ("StatusReply", ["n", "leader", 1, 7, 1, 1, 1, "a", None]),
        ("ErrorReply", ["not_leader", "m", 1, None, None]),
        ("ErrorReply", [1, "m", True, None, None]),
    ],
)
def test_wrong_client_field_types(kind: str, body: list[Any]) -> None:
    with pytest.raises(CodecError, match=kind):
        decode_fully(CLIENT_REGISTRY, payload(head(kind), body))


def test_cbor_tags_are_not_field_values() -> None:
    # cbor2 turns some tags into Python values (datetime, Decimal, Fraction, UUID, sets...);
    # none of them passes a field check.
    tagged = [
        cbor2.CBORTag(1, 1_700_000_000),  # epoch datetime
        cbor2.CBORTag(4, [-1, 15]),  # decimal fraction 1.5
        cbor2.CBORTag(30, [3, 2]),  # rational 3/2
        cbor2.CBORTag(258, [1, 2]),  # set
        cbor2.CBORTag(9999, 1),  # unknown tag
        cbor2.undefined,
    ]
    for value in tagged:
        data = cbor2.dumps([head("GetRequest"), ["k", value, False]])
        with pytest.raises(CodecError):
            decode_fully(CLIENT_REGISTRY, data)
        data = cbor2.dumps([head("Heartbeat"), [value, 1, 2, 3, 4]])
        with pytest.raises(CodecError):
            decode_fully(PEER_REGISTRY, data)


def test_trailing_bytes_after_the_payload_are_refused() -> None:
    # A CBOR decoder stops after the first item; bytes after it (here a second whole message)
    # must be refused, not silently ignored.
    valid = encode_payload(Header("Heartbeat"), PEER_REGISTRY.to_body(Heartbeat(1, 2, 3, 4)))
    for tail in (b"\x00", b"\xff\xff", valid):
        with pytest.raises(CodecError):
            decode_payload(valid + tail)


# Integers beyond what any field can hold still arrive as CBOR bignums (tag 2): a hostile
# peer can put them anywhere, and they must become CodecErrors like any other bad value.
HUGE = 10**5000  # more digits than Python will repr() (sys.get_int_max_str_digits() = 4300)


@pytest.mark.parametrize(
    ("registry", "kind", "body"),
    [
        (PEER_REGISTRY, "Hello", [HUGE, "n", "a"]),  # str expected
        (PEER_REGISTRY, "RequestVote", [1, 2, 3, 4, 5, HUGE]),  # bool expected
        (PEER_REGISTRY, "AppendEntries", [1, 1, 2, 0, 0, [[1, 1, HUGE, 0]], 0]),  # bytes
        (PEER_REGISTRY, "AppendEntries", [1, 1, 2, 0, 0, [[1, 1, b"", HUGE]], 0]),  # kind
        (CLIENT_REGISTRY, "CasRequest", ["k", HUGE, "v", "c", 1, False]),  # str | None
    ],
    ids=["str", "bool", "bytes", "EntryKind", "optional-str"],
)
def test_a_huge_integer_in_a_non_integer_field_is_a_codec_error(
    registry: Registry, kind: str, body: list[Any]
) -> None:
    # repr() of an int of more than 4300 digits raises ValueError; describing the bad value
    # in the error message must not.
    with pytest.raises(CodecError):
        decode_fully(registry, payload(head(kind), body))


def test_a_huge_integer_kind_is_a_codec_error() -> None:
    # The same, for the header's kind.
    with pytest.raises(CodecError):
        decode_payload(payload({"v": 1, "k": HUGE}, []))


def test_a_huge_integer_version_is_unsupported() -> None:
    # The same, for the version.
    with pytest.raises(UnsupportedVersion):
        decode_payload(payload({"v": HUGE, "k": "StatusRequest"}, []))


@pytest.mark.parametrize(
    "value", [10**400, -(10**400), 2**1024], ids=["1e400", "-1e400", "2**1024"]
)
def test_an_integer_too_large_for_a_float_field_is_a_codec_error(value: int) -> None:
    # An int beyond the float range (about 1.8e308) in a float field must be a CodecError,
    # not the OverflowError of float().
    for kind, body in [
        ("GetRequest", ["k", value, False]),
        ("GetReply", [True, "v", "n", True, value, 0, 0, 0, 0]),
    ]:
        with pytest.raises(CodecError):
            decode_fully(CLIENT_REGISTRY, payload(head(kind), body))


def test_large_but_reprable_integers_are_fine() -> None:
    # Below the repr() limit, a bignum in a wrong place is an ordinary CodecError, and in an
    # int field it is accepted (the codec checks types, not ranges).
    with pytest.raises(CodecError, match="Hello"):
        decode_fully(PEER_REGISTRY, payload(head("Hello"), [2**200, "n", "a"]))
    assert PEER_REGISTRY.from_body("Heartbeat", [2**200, 1, 2, 3, 4, 5]).term == 2**200


# ------------------------------------------------------------------ hostile input, fuzzed


any_message: st.SearchStrategy[Any] = st.one_of(
    [message_strategy(c) for classes in (PEER_CLASSES, CLIENT_CLASSES) for c in classes.values()]
)


def decode_everywhere(data: bytes) -> None:
    """Decodes ``data`` as both registries would; anything but a CodecError fails the test."""
    try:
        header, body = decode_payload(data)
    except CodecError:
        return
    for registry in (PEER_REGISTRY, CLIENT_REGISTRY):
        with contextlib.suppress(CodecError):
            registry.from_body(header.kind, body)


@deterministic
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_codec_errors(data: bytes) -> None:
    decode_everywhere(data)


@deterministic
@given(
    message=any_message,
    data=st.data(),
)
def test_corrupted_valid_payloads_only_raise_codec_errors(
    message: Any, data: st.DataObject
) -> None:
    registry = PEER_REGISTRY if type(message).__name__ in PEER_CLASSES else CLIENT_REGISTRY
    valid = bytearray(
        encode_payload(Header(registry.kind_of(message), 1, TP, "a=b"), registry.to_body(message))
    )
    position = data.draw(st.integers(min_value=0, max_value=len(valid) - 1), label="position")
    byte = data.draw(st.integers(min_value=0, max_value=255), label="byte")
    valid[position] = byte
    decode_everywhere(bytes(valid))
    cut = data.draw(st.integers(min_value=0, max_value=len(valid)), label="cut")
    decode_everywhere(bytes(valid[:cut]))


cbor_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.sampled_from([0, 1, 2, 255, 2**63 - 1, 2**64 - 1, -(2**64)]),
)
cbor_values: st.SearchStrategy[Any] = st.recursive(
    cbor_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.text(max_size=3) | st.integers(-3, 3), children, max_size=4),
    ),
    max_leaves=20,
)
kind_names = st.sampled_from(sorted({*PEER_CLASSES, *CLIENT_CLASSES}))


@deterministic
@given(value=cbor_values)
def test_arbitrary_cbor_values_only_raise_codec_errors(value: Any) -> None:
    decode_everywhere(cbor2.dumps(value))


@deterministic
@given(
    header=st.fixed_dictionaries(
        {"k": kind_names | cbor_values},
        optional={
            "v": st.just(PROTOCOL_VERSION) | cbor_values,
            "id": st.integers(min_value=0, max_value=MAX_U63) | cbor_values,
            "tp": st.just(VALID_TP) | cbor_values,
            "ts": st.just("a=b") | cbor_values,
        },
    ),
    body=st.lists(cbor_values, max_size=10) | cbor_values,
)
def test_near_valid_payloads_only_raise_codec_errors(header: dict[str, Any], body: Any) -> None:
    # Mostly the right version and a real kind, so the field checks are where inputs fail.
    decode_everywhere(payload({"v": PROTOCOL_VERSION, **header}, body))


@deterministic
@given(
    fields=st.lists(cbor_values, min_size=7, max_size=7),
    entries=st.lists(st.lists(cbor_values, min_size=4, max_size=4) | cbor_values, max_size=4),
)
def test_near_valid_append_entries_only_raise_codec_errors(
    fields: list[Any], entries: list[Any]
) -> None:
    fields[5] = entries
    decode_everywhere(payload(head("AppendEntries"), fields))


@deterministic
@given(
    message=any_message,
    data=st.data(),
)
def test_valid_bodies_with_one_field_replaced_only_raise_codec_errors(
    message: Any, data: st.DataObject
) -> None:
    registry = PEER_REGISTRY if type(message).__name__ in PEER_CLASSES else CLIENT_REGISTRY
    body = registry.to_body(message)
    if not body:
        return
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="index")
    target = body
    # Half the time, go one level down into a nested list (AppendEntries.entries, an Entry).
    if isinstance(body[index], list) and body[index] and data.draw(st.booleans(), label="deep"):
        target = body[index]
        index = data.draw(st.integers(min_value=0, max_value=len(target) - 1), label="inner")
    target[index] = data.draw(cbor_values, label="replacement")
    decode_everywhere(payload(head(registry.kind_of(message)), body))
