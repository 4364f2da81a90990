"""TurnWrites: what the consensus loop's task queues during its turn, the loop writes
itself at its flush (one write per connection, no sender task woken); everyone else's
writes, and whatever a socket does not take at once, still go through the sender task."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from tests.wire.test_raw_socket import tcp_pair
from wire.api import CLIENT_REGISTRY, GetReply
from wire.codec import Header
from wire.stream import BatchedSender, FramedStream, TurnWrites


class CountingStream(FramedStream):
    """Counts the writes the sender task makes (``send_encoded``)."""

    task_writes = 0

    async def send_encoded(self, frames: object) -> None:
        self.task_writes += 1
        await super().send_encoded(frames)  # type: ignore[arg-type]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[CountingStream, FramedStream]]:
    left, right = await tcp_pair()
    framed = CountingStream(left, CLIENT_REGISTRY), FramedStream(right, CLIENT_REGISTRY)
    yield framed
    for stream in framed:
        await stream.aclose()


def turn_and_sender(stream: FramedStream) -> tuple[TurnWrites, list[int], BatchedSender]:
    """A turn, the counts of replies reported written, and a sender using both."""
    turn = TurnWrites()
    sent: list[int] = []
    return turn, sent, BatchedSender(stream, sent.append, turn)


def reply_frame(stream: FramedStream, request_id: int, size: int = 10) -> bytes:
    return stream.encode(Header("GetReply", request_id), GetReply(True, "v" * size, "n1"))


async def test_only_the_task_whose_turn_is_open_defers() -> None:
    turn = TurnWrites()
    done: list[str] = []
    assert not turn.defer(0, lambda: done.append("no turn"))
    turn.open()
    assert turn.defer(1, lambda: done.append("first"))
    async with trio.open_nursery() as nursery:

        async def other_task() -> None:
            assert not turn.defer(2, lambda: done.append("another task"))

        nursery.start_soon(other_task)
    assert turn.defer(3, lambda: done.append("second"))
    assert turn.defer(3, lambda: done.append("second, again"))  # once per key
    turn.flush()
    assert done == ["first", "second"]
    assert turn.defer(4, lambda: done.append("at close"))
    turn.close()
    assert done == ["first", "second", "at close"]
    assert not turn.defer(5, lambda: done.append("after close"))


async def test_replies_queued_in_a_turn_leave_in_one_write_by_the_loop(
    pair: tuple[CountingStream, FramedStream],
) -> None:
    left, right = pair
    turn, sent, sender = turn_and_sender(left)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run)
        turn.open()
        for request_id in (1, 2, 3):
            sender.expect()
            sender.queue(reply_frame(left, request_id))
        assert sent == []  # nothing written before the flush
        turn.close()
        assert sent == [3]  # written by the flush itself, all three completed at once
        for request_id in (1, 2, 3):
            item = await right.receive()
            assert item is not None and item[0].request_id == request_id
        sender.close()
    assert left.task_writes == 0


async def test_replies_queued_outside_a_turn_go_through_the_sender_task(
    pair: tuple[CountingStream, FramedStream],
) -> None:
    left, right = pair
    _, sent, sender = turn_and_sender(left)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run)
        sender.expect()
        sender.queue(reply_frame(left, 1))
        assert (await right.receive()) is not None
        sender.close()
    assert left.task_writes == 1
    assert sent == [1]


async def test_what_the_socket_does_not_take_goes_next_through_the_task(
    pair: tuple[CountingStream, FramedStream],
) -> None:
    """A reply far larger than the socket buffers: the loop writes what fits, the task the
    rest, before the reply queued after it; each is counted once, when complete."""
    left, right = pair
    turn, sent, sender = turn_and_sender(left)
    big = reply_frame(left, 1, size=(8 << 20) - 100)
    received: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            turn.open()
            sender.expect()
            sender.queue(big)
            turn.close()
            assert sent == []  # only part of it went
            sender.expect()
            sender.queue(reply_frame(left, 2))
            for _ in range(2):
                item = await right.receive()
                assert item is not None
                received.append(item[0].request_id)
            sender.close()
    assert received == [1, 2]
    assert sum(sent) == 2
    assert left.task_writes >= 1


async def test_a_closing_sender_returns_after_the_loop_wrote_the_last_reply(
    pair: tuple[CountingStream, FramedStream],
) -> None:
    left, _ = pair
    turn = TurnWrites()
    sender = BatchedSender(left, lambda n: None, turn)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            sender.expect()
            sender.close()  # the client half-closed; one answer still to come
            await trio.testing.wait_all_tasks_blocked()
            turn.open()
            sender.queue(reply_frame(left, 1))
            turn.close()
    assert left.task_writes == 0
