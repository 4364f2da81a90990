"""FramedStream over a real TCP connection, where it reads and writes the descriptor itself
(``RawSocket``): the same frames, the same back-pressure and the same trio errors as
through ``trio.SocketStream``."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
import trio

import wire.stream
from raftd.core import AppendEntries, Entry, EntryKind
from wire.api import PEER_REGISTRY
from wire.codec import Header
from wire.stream import FramedStream, RawSocket


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        dialled = await trio.open_tcp_stream("127.0.0.1", port)
    await listener.aclose()
    return dialled, accepted[0]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[FramedStream, FramedStream]]:
    left, right = await tcp_pair()
    framed = FramedStream(left, PEER_REGISTRY), FramedStream(right, PEER_REGISTRY)
    yield framed
    for stream in framed:
        await stream.aclose()


def socket_of(stream: FramedStream) -> trio.socket.SocketType:
    assert isinstance(stream.stream, trio.SocketStream)
    return stream.stream.socket


async def close_with_a_reset(stream: FramedStream) -> None:
    """SO_LINGER 0: the close sends a reset rather than a FIN."""
    socket_of(stream).setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


def append(n_entries: int, size: int) -> AppendEntries:
    entries = tuple(
        Entry(index=i, term=1, kind=EntryKind.NORMAL, data=bytes([i % 251]) * size)
        for i in range(1, n_entries + 1)
    )
    return AppendEntries(1, 1, 2, 0, 0, entries, 0)


async def test_plain_tcp_goes_through_the_descriptor(
    pair: tuple[FramedStream, FramedStream],
) -> None:
    left, _ = pair
    assert isinstance(left._io, RawSocket)


async def test_frames_cross_a_real_connection_both_ways(
    pair: tuple[FramedStream, FramedStream],
) -> None:
    left, right = pair
    message = append(3, 10)
    await left.send(Header("AppendEntries"), message)
    assert await right.receive() == (Header("AppendEntries"), message)
    await right.send(Header("AppendEntries", 7), message)
    assert await left.receive() == (Header("AppendEntries", 7), message)


async def test_a_write_larger_than_the_socket_buffers_waits_for_the_reader(
    pair: tuple[FramedStream, FramedStream],
) -> None:
    """Far more than the kernel takes at once: the writer must wait for room (the
    partial-write path) while the reader drains, and every byte arrives in order."""
    left, right = pair
    messages = [append(4, 1 << 20) for _ in range(6)]  # 24 MiB in all
    received: list[object] = []
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            for _ in messages:
                item = await right.receive()
                assert item is not None
                received.append(item[1])

        nursery.start_soon(read)
        await left.send_encoded(left.encode(Header("AppendEntries"), m) for m in messages)
    assert received == messages


async def test_the_peer_closing_is_eof_between_frames(
    pair: tuple[FramedStream, FramedStream],
) -> None:
    left, right = pair
    await left.send(Header("AppendEntries"), append(1, 1))
    await left.aclose()
    assert await right.receive() is not None
    assert await right.receive() is None


async def test_writing_to_a_reset_connection_is_broken_resource(
    pair: tuple[FramedStream, FramedStream],
) -> None:
    left, right = pair
    await close_with_a_reset(right)
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(50):  # the first write may land before the reset is seen
            await left.send(Header("AppendEntries"), append(1, 1000))
            await trio.sleep(0.01)


async def test_reading_a_reset_connection_is_broken_resource(
    pair: tuple[FramedStream, FramedStream],
) -> None:
    left, right = pair
    await close_with_a_reset(right)
    with pytest.raises(trio.BrokenResourceError):
        await left.receive()


@pytest.mark.parametrize("drained", [False, True])
async def test_a_socket_closed_under_a_waiting_reader_is_closed_resource(
    pair: tuple[FramedStream, FramedStream], drained: bool
) -> None:
    """``drained``: after a short read, whose next read waits before trying."""
    left, right = pair
    if drained:
        await right.send(Header("AppendEntries"), append(1, 1))
        assert await left.receive() is not None
    raised: list[BaseException] = []

    async def read() -> None:
        try:
            await left.receive()
        except trio.ClosedResourceError as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        socket_of(left).close()
    assert len(raised) == 1
    with pytest.raises(trio.ClosedResourceError):
        await left.receive()


async def test_after_a_short_read_the_next_read_waits_for_data_first(
    pair: tuple[FramedStream, FramedStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that took less than it could emptied the socket: trying the next one at once
    would only fail, one system call per message on a quiet connection."""
    left, right = pair
    reads = 0

    def read(fd: int, n: int) -> bytes:
        nonlocal reads
        reads += 1
        return os.read(fd, n)

    monkeypatch.setattr(wire.stream, "os", SimpleNamespace(read=read, write=os.write, name=os.name))
    await left.send(Header("AppendEntries"), append(1, 1))
    assert await right.receive() is not None
    reads = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(right.receive)
        await trio.testing.wait_all_tasks_blocked()
        assert reads == 0
        await left.send(Header("AppendEntries"), append(1, 1))
    assert reads == 1


async def test_using_a_closed_socket_is_closed_resource(
    pair: tuple[FramedStream, FramedStream],
) -> None:
    left, _ = pair
    socket_of(left).close()
    with pytest.raises(trio.ClosedResourceError):
        await left.send(Header("AppendEntries"), append(1, 1))
    with pytest.raises(trio.ClosedResourceError):
        await left.receive()


async def test_a_read_and_a_write_are_each_a_checkpoint(
    pair: tuple[FramedStream, FramedStream],
) -> None:
    """Data already waiting must not let a loop of reads or writes run without yielding:
    a busy connection would starve every other task of the member."""
    left, right = pair
    await left.send(Header("AppendEntries"), append(1, 1))
    await trio.testing.wait_all_tasks_blocked()
    with trio.testing.assert_checkpoints():
        await right.receive()
    with trio.testing.assert_checkpoints():
        await left.send(Header("AppendEntries"), append(1, 1))
