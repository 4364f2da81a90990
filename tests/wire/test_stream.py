"""FramedStream: whole messages over a trio stream, however the bytes are cut or interleaved.

Two test doubles stand in for a socket where the memory streams cannot show a property:
``ScriptedStream`` hands out exactly the chunks it is given, one per ``receive_some``, so
chunk boundaries are chosen by the test; ``TrickleStream`` writes what it is sent a few bytes
at a time with a checkpoint in between, as a socket under back-pressure would, so concurrent
senders would interleave on it unless FramedStream serialises them.
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import pairwise
from typing import Any

import cbor2
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.core import AppendEntries, Entry, EntryKind, Heartbeat, RequestVote
from wire.api import (
    CLIENT_REGISTRY,
    PEER_REGISTRY,
    GetReply,
    GetRequest,
    Hello,
    SetRequest,
    StatusRequest,
)
from wire.codec import (
    CodecError,
    Header,
    Registry,
    UnsupportedVersion,
    encode_payload,
)
from wire.frame import FrameTooLarge, TruncatedFrame, WireError, encode_frame
from wire.stream import FramedStream, FrameTimeout
from wire.tracecontext import TraceParent

# The same examples on every run (seeded from the test itself), and no example database.
deterministic = settings(derandomize=True, database=None, deadline=None, max_examples=100)

TP = TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1)


class ScriptedStream(trio.abc.Stream):
    """Receives the given chunks, one per ``receive_some``, then EOF; records what is sent."""

    def __init__(self, chunks: Iterable[bytes] = ()) -> None:
        # An empty chunk from receive_some means EOF, so none is scripted.
        self._chunks = deque(bytes(chunk) for chunk in chunks if chunk)
        self.receives = 0
        self.sent: list[bytes] = []
        self.closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self._chunks:
            return b""
        chunk = self._chunks.popleft()
        if max_bytes is not None and len(chunk) > max_bytes:
            self._chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.receives += 1
        return chunk

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class TrickleStream(trio.abc.Stream):
    """A send side that writes ``piece`` bytes at a time, yielding to other tasks between.

    There is deliberately no conflict detection: two overlapping ``send_all`` calls mix
    their bytes on ``wire``, which is what a socket written from two tasks would do.
    """

    def __init__(self, piece: int = 3) -> None:
        self.piece = piece
        self.wire = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        for start in range(0, len(data), self.piece):
            self.wire += data[start : start + self.piece]
            await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise AssertionError("TrickleStream is send-only")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def peer_messages() -> list[Any]:
    return [
        Hello("cluster-1", "n1", "127.0.0.1:7001"),
        RequestVote(5, 1, 2, 10, 4, pre_vote=True),
        AppendEntries(
            5,
            1,
            2,
            10,
            4,
            (Entry(11, 5, b"", EntryKind.NOOP), Entry(12, 5, b"set k v")),
            10,
        ),
        AppendEntries(5, 1, 2, 12, 5, (), 12),
        Heartbeat(5, 1, 2, 12, read_round=3),
        AppendEntries(5, 1, 3, 0, 0, tuple(Entry(i, 5, bytes(300)) for i in range(1, 400)), 0),
    ]


def header_for(registry: Registry, message: Any, request_id: int) -> Header:
    traced = request_id % 2 == 1
    return Header(
        registry.kind_of(message),
        request_id,
        TP if traced else None,
        f"vendor=r{request_id}" if traced else None,
    )


def encode_all(registry: Registry, messages: list[Any]) -> bytes:
    stream = FramedStream(ScriptedStream(), registry)
    return b"".join(
        stream.encode(header_for(registry, message, i), message)
        for i, message in enumerate(messages)
    )


async def receive_all(stream: FramedStream) -> list[tuple[Header, Any]]:
    received: list[tuple[Header, Any]] = []
    while (item := await stream.receive()) is not None:
        received.append(item)
    return received


def expected(registry: Registry, messages: list[Any]) -> list[tuple[Header, Any]]:
    return [(header_for(registry, m, i), m) for i, m in enumerate(messages)]


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    return [data[start:end] for start, end in pairwise(points)]


# ------------------------------------------------------------------ round trips


async def test_messages_round_trip_both_ways_over_a_memory_stream() -> None:
    left_raw, right_raw = trio.testing.memory_stream_pair()
    left = FramedStream(left_raw, PEER_REGISTRY)
    right = FramedStream(right_raw, PEER_REGISTRY)
    messages = peer_messages()
    for i, message in enumerate(messages):
        await left.send(header_for(PEER_REGISTRY, message, i), message)
    for want in expected(PEER_REGISTRY, messages):
        assert await right.receive() == want
    # and back, interleaving sends and receives
    for i, message in enumerate(messages):
        await right.send(header_for(PEER_REGISTRY, message, i), message)
        assert await left.receive() == (header_for(PEER_REGISTRY, message, i), message)


async def test_client_messages_round_trip() -> None:
    client_raw, server_raw = trio.testing.memory_stream_pair()
    client = FramedStream(client_raw, CLIENT_REGISTRY)
    server = FramedStream(server_raw, CLIENT_REGISTRY)
    requests: list[Any] = [
        GetRequest("k", 0.5),
        SetRequest("k", "v" * 1000, "client-1", 7, forward=True),
        StatusRequest(),
    ]
    for i, request in enumerate(requests):
        await client.send(header_for(CLIENT_REGISTRY, request, i), request)
        item = await server.receive()
        assert item == (header_for(CLIENT_REGISTRY, request, i), request)
        assert item is not None
        header, _ = item
        reply = GetReply(True, "v", "n1")
        await server.send(Header("GetReply", header.request_id, header.traceparent), reply)
        assert await client.receive() == (Header("GetReply", i, header.traceparent), reply)


async def test_close_after_frames_gives_every_frame_then_none() -> None:
    left_raw, right_raw = trio.testing.memory_stream_pair()
    left = FramedStream(left_raw, PEER_REGISTRY)
    right = FramedStream(right_raw, PEER_REGISTRY)
    messages = peer_messages()
    for i, message in enumerate(messages):
        await left.send(header_for(PEER_REGISTRY, message, i), message)
    await left.aclose()
    assert await receive_all(right) == expected(PEER_REGISTRY, messages)
    # EOF is sticky: asking again is not an error
    assert await right.receive() is None
    assert await right.receive() is None


async def test_eof_before_any_frame_is_none() -> None:
    left_raw, right_raw = trio.testing.memory_stream_pair()
    await left_raw.aclose()
    assert await FramedStream(right_raw, PEER_REGISTRY).receive() is None
    assert await FramedStream(ScriptedStream(), CLIENT_REGISTRY).receive() is None


async def test_aclose_closes_the_underlying_stream() -> None:
    raw = ScriptedStream()
    await FramedStream(raw, PEER_REGISTRY).aclose()
    assert raw.closed


# ------------------------------------------------------------------ chunking


@deterministic
@given(
    messages=st.lists(
        st.sampled_from(peer_messages()[:-1])
        | st.builds(
            AppendEntries,
            term=st.integers(0, 2**63 - 1),
            src=st.integers(0, 9),
            dst=st.integers(0, 9),
            prev_log_index=st.integers(0, 2**63 - 1),
            prev_log_term=st.integers(0, 2**63 - 1),
            entries=st.lists(
                st.builds(
                    Entry,
                    index=st.integers(0, 2**63 - 1),
                    term=st.integers(0, 2**63 - 1),
                    data=st.binary(max_size=100),
                    kind=st.sampled_from(EntryKind),
                ),
                max_size=3,
            ).map(tuple),
            leader_commit=st.integers(0, 2**63 - 1),
        ),
        min_size=1,
        max_size=6,
    ),
    data=st.data(),
)
async def test_arbitrary_chunk_boundaries_are_invisible(
    messages: list[Any], data: st.DataObject
) -> None:
    wire = encode_all(PEER_REGISTRY, messages)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=40), label="cuts")
    raw = ScriptedStream(split(wire, cuts))
    assert await receive_all(FramedStream(raw, PEER_REGISTRY)) == expected(PEER_REGISTRY, messages)


async def test_one_byte_per_receive() -> None:
    messages = peer_messages()[:-1]
    wire = encode_all(PEER_REGISTRY, messages)
    raw = ScriptedStream([wire[i : i + 1] for i in range(len(wire))])
    assert await receive_all(FramedStream(raw, PEER_REGISTRY)) == expected(PEER_REGISTRY, messages)
    assert raw.receives == len(wire)


async def test_one_byte_at_a_time_over_a_memory_stream() -> None:
    # The writer waits until the reader is blocked again before each byte, so every
    # receive_some returns exactly one byte.
    messages = peer_messages()[:-1]
    wire = encode_all(PEER_REGISTRY, messages)
    left_raw, right_raw = trio.testing.memory_stream_pair()
    right = FramedStream(right_raw, PEER_REGISTRY)
    received: list[tuple[Header, Any]] = []

    async def reader() -> None:
        received.extend(await receive_all(right))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for i in range(len(wire)):
            await trio.testing.wait_all_tasks_blocked()
            await left_raw.send_all(wire[i : i + 1])
        await trio.testing.wait_all_tasks_blocked()
        await left_raw.aclose()
    assert received == expected(PEER_REGISTRY, messages)


async def test_many_frames_in_one_chunk() -> None:
    messages = [Heartbeat(1, 1, 2, i) for i in range(1000)]
    raw = ScriptedStream([encode_all(PEER_REGISTRY, messages)])
    assert await receive_all(FramedStream(raw, PEER_REGISTRY)) == expected(PEER_REGISTRY, messages)


async def test_a_frame_larger_than_one_receive() -> None:
    # The last peer message is ~130 KB, more than the 64 KiB FramedStream asks for at once.
    big = peer_messages()[-1]
    wire = encode_all(PEER_REGISTRY, [big, big])
    assert len(wire) > 2 * 64 * 1024
    raw = ScriptedStream([wire])
    assert await receive_all(FramedStream(raw, PEER_REGISTRY)) == expected(
        PEER_REGISTRY, [big, big]
    )
    assert raw.receives > 2


# ------------------------------------------------------------------ truncation and garbage


async def test_eof_inside_a_frame_is_truncated_frame() -> None:
    first, second = Hello("c", "n", "a"), Heartbeat(1, 2, 3, 4)
    first_frame = encode_all(PEER_REGISTRY, [first])
    frame = FramedStream(ScriptedStream(), PEER_REGISTRY).encode(Header("Heartbeat"), second)
    for cut in range(1, len(frame)):
        stream = FramedStream(ScriptedStream([first_frame, frame[:cut]]), PEER_REGISTRY)
        assert await stream.receive() == (header_for(PEER_REGISTRY, first, 0), first)
        with pytest.raises(TruncatedFrame) as truncated:
            await stream.receive()
        assert isinstance(truncated.value, WireError)
        assert truncated.value.received == cut
        assert truncated.value.expected == (None if cut < 4 else len(frame))


async def test_eof_inside_a_frame_over_a_memory_stream() -> None:
    left_raw, right_raw = trio.testing.memory_stream_pair()
    frame = encode_all(PEER_REGISTRY, [Hello("c", "n", "a")])
    await left_raw.send_all(frame[:-1])
    await left_raw.aclose()
    with pytest.raises(TruncatedFrame):
        await FramedStream(right_raw, PEER_REGISTRY).receive()


def frame_of(head: Any, body: Any) -> bytes:
    return encode_frame(cbor2.dumps([head, body]))


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", FrameTooLarge),  # "GET " is a length of ~1.1 GB
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", FrameTooLarge),  # a TLS ClientHello
        (b"\xff" * 64, FrameTooLarge),
        (b"\x00\x00", TruncatedFrame),
        (b"\x00\x00\x00\x05abc", TruncatedFrame),
        (encode_frame(b""), CodecError),
        (encode_frame(b"\xff\xfe\xfd"), CodecError),
        (encode_frame(b"hello world"), CodecError),
        (frame_of({"v": 1, "k": "Heartbeat"}, [1, 2, 3]), CodecError),
        (frame_of({"v": 1, "k": "GetRequest"}, ["k", None, False]), CodecError),  # client kind
        (frame_of({"v": 1, "k": "Nope"}, []), CodecError),
        (frame_of({"v": 2, "k": "Hello"}, ["c", "n", "a"]), UnsupportedVersion),
        (frame_of(["v", 1], []), CodecError),
    ],
)
async def test_garbage_is_a_wire_error(wire: bytes, error: type[WireError]) -> None:
    stream = FramedStream(ScriptedStream([wire]), PEER_REGISTRY)
    with pytest.raises(error):
        await stream.receive()


async def test_garbage_after_good_frames() -> None:
    messages = peer_messages()[:3]
    raw = ScriptedStream([encode_all(PEER_REGISTRY, messages) + encode_frame(b"\x00junk")])
    stream = FramedStream(raw, PEER_REGISTRY)
    for want in expected(PEER_REGISTRY, messages):
        assert await stream.receive() == want
    with pytest.raises(CodecError):
        await stream.receive()


@pytest.mark.parametrize(
    ("registry", "wire"),
    [
        # An int over 4300 digits (its repr() raises ValueError).
        (PEER_REGISTRY, frame_of({"v": 1, "k": "Hello"}, [10**5000, "n", "a"])),
        # An int too large for a float field (float() raises OverflowError).
        (CLIENT_REGISTRY, frame_of({"v": 1, "k": "GetRequest"}, ["k", 10**400, False])),
    ],
    ids=["bignum-as-str", "bignum-as-float"],
)
async def test_a_hostile_bignum_surfaces_as_a_wire_error(registry: Registry, wire: bytes) -> None:
    # A connection handler catches WireError only; anything else takes the task down.
    with pytest.raises(WireError):
        await FramedStream(ScriptedStream([wire]), registry).receive()


@deterministic
@given(wire=st.binary(max_size=300), data=st.data())
async def test_arbitrary_bytes_only_raise_wire_errors(wire: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=5), label="cuts")
    stream = FramedStream(ScriptedStream(split(wire, cuts)), PEER_REGISTRY, max_frame_bytes=64)
    try:
        messages = await receive_all(stream)
    except WireError:
        return
    assert all(isinstance(header, Header) for header, _ in messages)


@deterministic
@given(lengths=st.lists(st.integers(0, 20), max_size=20), body=st.binary(max_size=200))
async def test_frames_of_arbitrary_payloads_only_raise_wire_errors(
    lengths: list[int], body: bytes
) -> None:
    # Well-framed garbage: the framing is right, so every payload reaches the codec.
    wire = b"".join(encode_frame(body[:n]) for n in lengths)
    stream = FramedStream(ScriptedStream([wire]), PEER_REGISTRY)
    with contextlib.suppress(WireError):
        await receive_all(stream)


# ------------------------------------------------------------------ limits


async def test_an_oversized_length_is_refused_before_the_body_arrives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Only the header is ever sent and the stream stays open: waiting for the body would
    # block forever, which the (virtual) deadline turns into a failure.
    left_raw, right_raw = trio.testing.memory_stream_pair()
    right = FramedStream(right_raw, PEER_REGISTRY, max_frame_bytes=16)
    await left_raw.send_all(struct.pack(">I", 17))
    with trio.fail_after(10), pytest.raises(FrameTooLarge) as refused:
        await right.receive()
    assert (refused.value.length, refused.value.limit) == (17, 16)
    # The stream is dead from now on, even if good frames follow.
    await left_raw.send_all(encode_frame(b"x"))
    with trio.fail_after(10), pytest.raises(FrameTooLarge):
        await right.receive()


async def test_a_4_gib_announcement_with_the_default_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left_raw, right_raw = trio.testing.memory_stream_pair()
    await left_raw.send_all(b"\xff\xff\xff\xff")
    with trio.fail_after(10), pytest.raises(FrameTooLarge):
        await FramedStream(right_raw, PEER_REGISTRY).receive()


async def test_frames_up_to_the_limit_pass_and_larger_are_not_sent() -> None:
    message = Hello("cluster", "node", "addr")
    payload = encode_payload(Header("Hello"), PEER_REGISTRY.to_body(message))
    limit = len(payload)

    raw = ScriptedStream()
    sender = FramedStream(raw, PEER_REGISTRY, max_frame_bytes=limit)
    await sender.send(Header("Hello"), message)
    receiver = FramedStream(ScriptedStream(raw.sent), PEER_REGISTRY, max_frame_bytes=limit)
    assert await receiver.receive() == (Header("Hello"), message)

    small = FramedStream(raw, PEER_REGISTRY, max_frame_bytes=limit - 1)
    with pytest.raises(FrameTooLarge):
        await small.send(Header("Hello"), message)
    assert len(raw.sent) == 1  # nothing more was written
    with pytest.raises(FrameTooLarge):
        await FramedStream(
            ScriptedStream(raw.sent), PEER_REGISTRY, max_frame_bytes=limit - 1
        ).receive()


# ------------------------------------------------------------------ concurrent senders


def numbered(i: int) -> AppendEntries:
    """A message that identifies its sender and spans many TrickleStream pieces."""
    entries = tuple(Entry(j, i, bytes([i % 256]) * (i * 7 % 50)) for j in range(i % 5))
    return AppendEntries(i, i, i + 1, i, i, entries, i)


async def test_a_trickling_stream_would_interleave_unserialised_writers() -> None:
    # The premise of the next test: two raw send_all calls on a TrickleStream do mix.
    raw = TrickleStream(piece=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(raw.send_all, b"a" * 10)
        nursery.start_soon(raw.send_all, b"b" * 10)
    assert sorted(raw.wire) == sorted(b"a" * 10 + b"b" * 10)
    assert bytes(raw.wire) not in (b"a" * 10 + b"b" * 10, b"b" * 10 + b"a" * 10)


async def test_concurrent_senders_never_interleave_frames() -> None:
    raw = TrickleStream(piece=3)
    stream = FramedStream(raw, PEER_REGISTRY)
    count = 60

    async def send(i: int) -> None:
        message = numbered(i)
        if i % 3 == 0:
            await stream.send_encoded(
                [
                    stream.encode(Header("AppendEntries", i), message),
                    stream.encode(Header("Heartbeat", i), Heartbeat(i, i, i, i)),
                ]
            )
        else:
            await stream.send(Header("AppendEntries", i, TP, "a=b"), message)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(send, i)

    received = await receive_all(FramedStream(ScriptedStream([bytes(raw.wire)]), PEER_REGISTRY))
    assert len(received) == count + count // 3
    by_id: dict[int, list[Any]] = {}
    for header, message in received:
        by_id.setdefault(header.request_id, []).append(message)
    for i in range(count):
        if i % 3 == 0:
            # a batch arrives whole and in order
            assert by_id[i] == [numbered(i), Heartbeat(i, i, i, i)]
        else:
            assert by_id[i] == [numbered(i)]


async def test_concurrent_senders_over_a_memory_stream() -> None:
    left_raw, right_raw = trio.testing.memory_stream_pair()
    left = FramedStream(left_raw, PEER_REGISTRY)
    right = FramedStream(right_raw, PEER_REGISTRY)
    count = 100
    received: list[tuple[Header, Any]] = []

    async def reader() -> None:
        received.extend(await receive_all(right))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        async with trio.open_nursery() as senders:
            for i in range(count):
                senders.start_soon(left.send, Header("AppendEntries", i), numbered(i))
        await left.aclose()

    assert sorted(received, key=lambda item: item[0].request_id) == [
        (Header("AppendEntries", i), numbered(i)) for i in range(count)
    ]


# ------------------------------------------------------------------ send_encoded


async def test_send_encoded_writes_several_frames_in_one_call() -> None:
    raw = ScriptedStream()
    stream = FramedStream(raw, PEER_REGISTRY)
    messages = peer_messages()
    frames = [stream.encode(header_for(PEER_REGISTRY, m, i), m) for i, m in enumerate(messages)]
    await stream.send_encoded(frames)
    assert raw.sent == [b"".join(frames)]
    received = await receive_all(FramedStream(ScriptedStream(raw.sent), PEER_REGISTRY))
    assert received == expected(PEER_REGISTRY, messages)


async def test_send_encoded_takes_any_iterable() -> None:
    left_raw, right_raw = trio.testing.memory_stream_pair()
    left = FramedStream(left_raw, CLIENT_REGISTRY)
    right = FramedStream(right_raw, CLIENT_REGISTRY)

    def frames() -> Iterator[bytes]:
        for i in range(5):
            yield left.encode(Header("GetRequest", i), GetRequest(f"k{i}"))

    await left.send_encoded(frames())
    await left.send_encoded([])  # nothing to send is fine
    await left.aclose()
    assert await receive_all(right) == [
        (Header("GetRequest", i), GetRequest(f"k{i}")) for i in range(5)
    ]


# ------------------------------------------------------------------ stalled senders


async def test_half_a_frame_then_silence_times_out(autojump_clock: trio.abc.Clock) -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    stream = FramedStream(receiver, CLIENT_REGISTRY, frame_timeout_s=5.0)
    await sender.send_all(struct.pack(">I", 100) + b"only part")
    started = trio.current_time()
    with pytest.raises(FrameTimeout, match="13 bytes in"):
        await stream.receive()
    assert trio.current_time() - started == pytest.approx(5.0)


async def test_a_trickle_does_not_extend_the_frame_deadline(autojump_clock: trio.abc.Clock) -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    stream = FramedStream(receiver, CLIENT_REGISTRY, frame_timeout_s=1.0)

    async def trickle() -> None:
        await sender.send_all(struct.pack(">I", 50))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for _ in range(50):
                await trio.sleep(0.4)
                await sender.send_all(b"x")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        with pytest.raises(FrameTimeout):
            await stream.receive()
        assert trio.current_time() == pytest.approx(1.0, abs=0.5)
        nursery.cancel_scope.cancel()


async def test_idling_between_frames_is_never_timed_out(autojump_clock: trio.abc.Clock) -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    stream = FramedStream(receiver, CLIENT_REGISTRY, frame_timeout_s=1.0)
    writer = FramedStream(sender, CLIENT_REGISTRY)
    for i in range(3):
        await trio.sleep(1000)
        await writer.send(Header("StatusRequest", i), StatusRequest())
        assert await stream.receive() == (Header("StatusRequest", i), StatusRequest())


async def test_without_a_frame_timeout_half_a_frame_waits(autojump_clock: trio.abc.Clock) -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    stream = FramedStream(receiver, CLIENT_REGISTRY)
    await sender.send_all(struct.pack(">I", 100) + b"only part")
    with trio.move_on_after(10_000) as waited:
        await stream.receive()
    assert waited.cancelled_caught
