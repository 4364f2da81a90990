"""The driver's turns: logical time kept when they are slow, and what goes first in one.

The loop counted at most one tick per turn, so turns slower than a tick stretched every
election timeout and heartbeat interval by the same factor."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from raftd import kv
from raftd.config import NodeConfig, parse_address
from raftd.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    Message,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from raftd.runtime.driver import Driver, Inbound, ReplyBox, Write
from raftd.storage import MemoryStorage
from wire.api import ErrorCode, ErrorReply, WriteReply

TICK_S = 0.05
SLOW_TURN_S = 0.15


async def test_every_tick_that_passed_is_counted_even_when_turns_are_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = {n: parse_address(f"127.0.0.1:{p}") for n, p in (("a", 1), ("b", 2), ("c", 3))}
    config = NodeConfig("a", members, parse_address("127.0.0.1:4"), tmp_path, tick_seconds=TICK_S)
    driver = Driver(config, MemoryStorage(), lambda msg, parent, span, lag: None)
    ticks = 0
    real_tick = driver.node.tick

    def slow_tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks % 3 == 0:
            time.sleep(SLOW_TURN_S)  # a turn that blocks, as a slow apply or GC pause would
        real_tick()

    monkeypatch.setattr(driver.node, "tick", slow_tick)
    started = trio.current_time()
    with trio.move_on_after(2.0):
        await driver.run()
    elapsed = trio.current_time() - started
    # Every tick of the elapsed time is counted (less those owed when it is cancelled); the old
    # loop managed about one per slow turn, a third as many.
    assert ticks >= elapsed / TICK_S - 5, (ticks, elapsed)


async def test_a_follower_answers_an_append_before_applying_what_it_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader waits for the answer, not for the follower's state machine: applying
    the committed entries first put a whole batch's apply into every round trip."""
    members = {n: parse_address(f"127.0.0.1:{p}") for n, p in (("a", 1), ("b", 2), ("c", 3))}
    config = NodeConfig("b", members, parse_address("127.0.0.1:4"), tmp_path, tick_seconds=TICK_S)
    order: list[str] = []

    def send(msg: Message, parent: object, span: object, lag: object) -> None:
        order.append(type(msg).__name__)

    driver = Driver(config, MemoryStorage(), send)
    real_apply = driver._apply

    def apply(ready: Ready) -> None:
        order.extend(f"apply {entry.index}" for entry in ready.committed)
        real_apply(ready)

    monkeypatch.setattr(driver, "_apply", apply)
    leader = config.node_ids["a"]
    data = kv.encode_request(kv.Request("", 0, kv.Set("k", "v")))
    entries = tuple(Entry(index=i, term=1, kind=EntryKind.NORMAL, data=data) for i in (1, 2))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        driver.deliver(AppendEntries(1, leader, driver.node.id, 0, 0, entries, 2))
        with trio.fail_after(5):
            while "apply 2" not in order:
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert order.index("AppendEntriesResponse") < order.index("apply 1"), order


async def test_a_follower_steps_syncs_and_answers_an_append_without_yielding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no background sync running there is nothing to wait for: a scheduling point on
    the way (an Event already set still yields) put a round of every other task between
    each follower's receipt of an append and its fsync."""
    members = {n: parse_address(f"127.0.0.1:{p}") for n, p in (("a", 1), ("b", 2), ("c", 3))}
    config = NodeConfig("b", members, parse_address("127.0.0.1:4"), tmp_path, tick_seconds=TICK_S)
    rounds = 0
    seen: dict[str, int] = {}

    def send(msg: Message, parent: object, span: object, lag: object) -> None:
        seen.setdefault(type(msg).__name__, rounds)

    driver = Driver(config, MemoryStorage(), send)
    real_step = driver._step

    def step(inbound: Inbound) -> None:
        seen.setdefault("stepped", rounds)
        real_step(inbound)

    monkeypatch.setattr(driver, "_step", step)

    async def count_rounds() -> None:
        nonlocal rounds
        while True:
            await trio.lowlevel.checkpoint()
            rounds += 1

    leader = config.node_ids["a"]
    data = kv.encode_request(kv.Request("", 0, kv.Set("k", "v")))
    entry = Entry(index=1, term=1, kind=EntryKind.NORMAL, data=data)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        nursery.start_soon(count_rounds)
        driver.deliver(AppendEntries(1, leader, driver.node.id, 0, 0, (entry,), 0))
        with trio.fail_after(5):
            while "AppendEntriesResponse" not in seen:
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert seen["AppendEntriesResponse"] == seen["stepped"], seen


async def test_an_unanswered_request_times_out_and_an_answered_one_keeps_its_reply(
    tmp_path: Path,
) -> None:
    members = {n: parse_address(f"127.0.0.1:{p}") for n, p in (("a", 1), ("b", 2), ("c", 3))}
    config = NodeConfig("a", members, parse_address("127.0.0.1:4"), tmp_path)
    driver = Driver(config, MemoryStorage(), lambda msg, parent, span, lag: None)
    waiting, answered = ReplyBox(), ReplyBox()
    answered.set(WriteReply(True, "v", True, 1))
    now = trio.current_time()
    driver._deadlines.extend([(now - 1, waiting), (now - 1, answered), (now + 60, ReplyBox())])
    driver._expire(now)
    assert isinstance(waiting.reply, ErrorReply) and waiting.reply.code == ErrorCode.TIMEOUT
    assert answered.reply == WriteReply(True, "v", True, 1)
    assert len(driver._deadlines) == 1


class SlowDisk(MemoryStorage):
    def sync(self) -> None:
        time.sleep(TICK_S / 2)
        super().sync()


@pytest.mark.parametrize("slow_disk", [False, True])
async def test_a_leader_syncs_a_lone_write_in_its_loop_and_the_next_one_beside_it(
    tmp_path: Path, slow_disk: bool
) -> None:
    """With nothing else uncommitted the fsync runs in the loop (two thread hand-offs
    saved); once a write is in flight the next one's fsync goes beside the loop, which
    keeps proposing and counting answers meanwhile. On a slow disk every fsync goes
    beside it, so heartbeats never wait for one."""
    members = {n: parse_address(f"127.0.0.1:{p}") for n, p in (("a", 1), ("b", 2), ("c", 3))}
    config = NodeConfig("a", members, parse_address("127.0.0.1:4"), tmp_path, tick_seconds=TICK_S)
    voter = config.node_ids["b"]
    acked = 0  # b votes for a and acknowledges appends up to the first write; c is silent

    def send(msg: Message, parent: object, span: object, lag: object) -> None:
        nonlocal acked
        answer: Message | None = None
        if isinstance(msg, RequestVote):
            answer = RequestVoteResponse(msg.term, voter, msg.src, True, msg.pre_vote, msg.campaign)
        elif isinstance(msg, AppendEntries) and msg.entries and msg.entries[-1].index < first:
            acked = msg.entries[-1].index
            answer = AppendEntriesResponse(msg.term, voter, msg.src, True, acked)
        elif isinstance(msg, Heartbeat):
            answer = HeartbeatResponse(msg.term, voter, msg.src, msg.read_round, acked)
        if answer is not None and msg.dst == voter:
            driver.deliver(answer)

    driver = Driver(config, SlowDisk() if slow_disk else MemoryStorage(), send)
    in_loop: list[int] = []
    beside: list[int] = []
    real_persist, real_staged = driver._persist, driver._background_sync.staged

    async def persist(ready: Ready) -> None:
        in_loop.extend(entry.index for entry in ready.entries)
        await real_persist(ready)

    def staged(entries: tuple[Entry, ...]) -> None:
        beside.extend(entry.index for entry in entries)
        real_staged(entries)

    driver._persist = persist  # type: ignore[method-assign]
    driver._background_sync.staged = staged  # type: ignore[method-assign]

    def write(n: int) -> Write:
        return Write(kv.Request("", 0, kv.Set(f"k{n}", "v")))

    first = driver.node.log.last_index + 2  # after the new leader's own entry
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        with trio.fail_after(10):
            while driver.node.role is not Role.LEADER or driver.node.commit_index < first - 1:
                await trio.sleep(0.01)  # elected, and its first entry committed
            driver.inbox_send.send_nowait(write(1))  # nobody answers: stays uncommitted
            while first not in in_loop + beside:
                await trio.sleep(0.01)
            driver.inbox_send.send_nowait(write(2))
            while first + 1 not in in_loop + beside:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert (first in in_loop, first in beside) == (not slow_disk, slow_disk)
    assert first + 1 in beside and first + 1 not in in_loop
