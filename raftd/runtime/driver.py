"""The driver: the one task that owns the Raft core, the log storage and the state machine.

Everything else talks to it through one bounded channel (``Driver.submit``), so consensus
state needs no locks. Each loop turn takes whatever input has queued up, feeds it to the
core, then handles the core's Ready in the contract's order: make the hard state and entries
durable (one fsync in a worker thread for the whole batch: group commit), send the
messages, apply committed entries, answer the clients whose requests completed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio

from raftd import kv
from raftd.config import NodeConfig
from raftd.core import (
    AppendEntries,
    Config,
    EntryKind,
    Heartbeat,
    Message,
    NotLeaderError,
    RaftNode,
    Ready,
    Role,
)
from raftd.core import events as ev
from raftd.storage import Storage, stage_ready
from wire.api import ClientReply, ErrorCode, ErrorReply, GetReply, StatusReply, WriteReply

log = structlog.get_logger("raftd.driver")

INBOX_CAPACITY = 4096
MAX_INPUTS_PER_TURN = 512


class ReplyBox:
    """Where the driver leaves a client's answer; the client task waits on it."""

    __slots__ = ("_event", "reply")

    def __init__(self) -> None:
        self._event = trio.Event()
        self.reply: ClientReply | None = None

    def set(self, reply: ClientReply) -> None:
        if self.reply is None:
            self.reply = reply
            self._event.set()

    async def wait(self) -> ClientReply:
        await self._event.wait()
        assert self.reply is not None
        return self.reply


@dataclass(frozen=True, slots=True)
class Write:
    request: kv.Request
    box: ReplyBox = field(default_factory=ReplyBox)


@dataclass(frozen=True, slots=True)
class Read:
    key: str
    box: ReplyBox = field(default_factory=ReplyBox)


@dataclass(frozen=True, slots=True)
class StaleRead:
    key: str
    max_staleness_s: float
    box: ReplyBox = field(default_factory=ReplyBox)


@dataclass(frozen=True, slots=True)
class Status:
    box: ReplyBox = field(default_factory=ReplyBox)


ClientOp = Write | Read | StaleRead | Status


class Driver:
    def __init__(
        self,
        config: NodeConfig,
        storage: Storage,
        send: Callable[[Message], None],
        *,
        client_addrs: dict[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self._send = send
        self.names = config.names
        self.client_addrs = client_addrs if client_addrs is not None else {}
        self.client_addrs[config.name] = str(config.client_addr)
        core_config = Config(
            node_id=config.node_id,
            voters=tuple(sorted(self.names)),
            election_timeout_ticks=config.election_timeout_ticks,
            heartbeat_interval_ticks=config.heartbeat_interval_ticks,
        )
        self.node = RaftNode(core_config, rng or random.Random(), storage.load())
        self.kv = kv.KVStore()
        self.applied_index = self.node.last_applied
        self.inbox_send, self._inbox = trio.open_memory_channel[Message | ClientOp](INBOX_CAPACITY)
        self._writes: dict[int, tuple[int, ReplyBox]] = {}  # index -> (term, box)
        self._reads: dict[bytes, Read] = {}
        self._reads_ready: list[tuple[int, Read]] = []  # (index to apply first, read)
        self._next_read = 0
        self._last_leader_contact = -1.0
        self._last_heard: dict[int, float] = {}
        self.dropped_inbound = 0

    # ----------------------------------------------------------- the API

    def deliver(self, msg: Message) -> None:
        """A peer message arrived. Never blocks the network reader: if the driver is
        behind, the message is dropped (Raft retransmits) and counted."""
        try:
            self.inbox_send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped_inbound += 1

    async def submit(self, op: ClientOp) -> ClientReply:
        """Queue a client operation and wait for its answer (callers bound the wait)."""
        await self.inbox_send.send(op)
        return await op.box.wait()

    def leader_name(self) -> str | None:
        leader = self.node.leader_id
        return None if leader is None else self.names[leader]

    # ---------------------------------------------------------- the loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        tick = self.config.tick_seconds
        log.info(
            "raft node starting",
            term=self.node.current_term,
            voted_for=self._name(self.node.voted_for),
            last_index=self.node.log.last_index,
        )
        task_status.started()
        next_tick = trio.current_time() + tick
        while True:
            with trio.move_on_at(next_tick):
                self._handle(await self._inbox.receive())
                for _ in range(MAX_INPUTS_PER_TURN):
                    try:
                        item = self._inbox.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._handle(item)
            now = trio.current_time()
            if now >= next_tick:
                self.node.tick()
                next_tick = max(next_tick + tick, now)
            await self._process_ready()

    def _handle(self, item: Message | ClientOp) -> None:
        match item:
            case Write():
                self._propose(item)
            case Read():
                self._read_index(item)
            case StaleRead():
                item.box.set(self._stale_read(item))
            case Status():
                item.box.set(self._status())
            case _:
                self._step(item)

    def _step(self, msg: Message) -> None:
        now = trio.current_time()
        self._last_heard[msg.src] = now
        self.node.step(msg)
        if (
            isinstance(msg, AppendEntries | Heartbeat)
            and msg.term == self.node.current_term
            and self.node.leader_id == msg.src
        ):
            self._last_leader_contact = now

    # ------------------------------------------------------- client ops

    def _not_leader(self) -> ErrorReply:
        leader = self.leader_name()
        if leader is None:
            return ErrorReply(
                ErrorCode.NO_LEADER, "no leader is known right now; retry shortly", True
            )
        return ErrorReply(
            ErrorCode.NOT_LEADER,
            f"{self.config.name} is not the leader; {leader} is",
            True,
            leader,
            self.client_addrs.get(leader),
        )

    def _propose(self, write: Write) -> None:
        try:
            index, term = self.node.propose(kv.encode_request(write.request))
        except NotLeaderError:
            write.box.set(self._not_leader())
            return
        self._writes[index] = (term, write.box)

    def _read_index(self, read: Read) -> None:
        self._next_read += 1
        context = self._next_read.to_bytes(8, "big")
        try:
            self.node.read_index(context)
        except NotLeaderError:
            read.box.set(self._not_leader())
            return
        self._reads[context] = read

    def _stale_read(self, read: StaleRead) -> ClientReply:
        age = self._state_age()
        if age is None or age > read.max_staleness_s:
            known = "no contact with a leader" if age is None else f"last contact {age:.3f} s ago"
            return ErrorReply(
                ErrorCode.TOO_STALE,
                f"{self.config.name} cannot serve a read at most {read.max_staleness_s} s "
                f"stale ({known})",
                True,
                self.leader_name(),
                self.client_addrs.get(self.leader_name() or ""),
            )
        value = self.kv.get(read.key)
        return GetReply(value is not None, value, self.config.name, True, round(age, 6))

    def _state_age(self) -> float | None:
        """How old this node's view of the cluster may be, in seconds (None: unknown).

        A follower's is the time since its leader last reached it; a leader's, the time
        since a majority (itself included) last answered it."""
        now = trio.current_time()
        if self.node.role is Role.LEADER:
            heard = sorted((self._last_heard.get(p, -1e9) for p in self.names), reverse=True)
            # The leader itself counts as heard now; the quorum-th freshest peer decides.
            freshest = [now, *heard[: self.node.quorum - 1]]
            return max(0.0, now - min(freshest))
        if self.node.leader_id is None or self._last_leader_contact < 0:
            return None
        return max(0.0, now - self._last_leader_contact)

    def _status(self) -> StatusReply:
        leader = self.leader_name()
        return StatusReply(
            node=self.config.name,
            role=self.node.role.value,
            term=self.node.current_term,
            leader=leader,
            commit_index=self.node.commit_index,
            last_applied=self.applied_index,
            last_index=self.node.log.last_index,
            client_addr=str(self.config.client_addr),
            leader_addr=self.client_addrs.get(leader) if leader else None,
        )

    # ------------------------------------------------------------ Ready

    async def _process_ready(self) -> None:
        while self.node.has_ready():
            ready = self.node.ready()
            if ready.hard_state is not None or ready.entries:
                stage_ready(self.storage, ready)
                # Not cancellable: an fsync half-done must still finish before we go on.
                await trio.to_thread.run_sync(self.storage.sync)
            for msg in ready.messages:
                self._send(msg)
            self._apply(ready)
            self._serve_reads(ready)
            self._observe(ready.events)
            self.node.advance(ready)

    def _apply(self, ready: Ready) -> None:
        for entry in ready.committed:
            self.applied_index = entry.index
            if entry.kind is not EntryKind.NORMAL:
                continue
            result = self.kv.apply(entry.index, entry.data)
            waiting = self._writes.pop(entry.index, None)
            if waiting is None:
                continue
            term, box = waiting
            if term == entry.term:
                box.set(_write_reply(result, entry.index))
            else:
                box.set(_leadership_lost("another leader's entry took its place"))

    def _serve_reads(self, ready: Ready) -> None:
        for state in ready.read_states:
            read = self._reads.pop(state.context, None)
            if read is not None:
                self._reads_ready.append((state.index, read))
        still_waiting = []
        for index, read in self._reads_ready:
            if index <= self.applied_index:
                value = self.kv.get(read.key)
                read.box.set(GetReply(value is not None, value, self.config.name))
            else:
                still_waiting.append((index, read))
        self._reads_ready = still_waiting

    def _observe(self, events: tuple[ev.Event, ...]) -> None:
        for event in events:
            match event:
                case ev.BecameLeader():
                    log.info("became leader", term=event.term, votes=self._names(event.votes))
                case ev.SteppedDown():
                    log.info("stepped down", term=event.term, reason=event.reason)
                    self._fail_writes("this node stopped being the leader")
                case ev.BecameFollower(leader_id=leader) if leader is not None:
                    log.info("following", term=event.term, leader=self._name(leader))
                case ev.ElectionStarted():
                    log.info("election started", term=event.term, pre_vote=event.pre_vote)
                case ev.ReadsAborted():
                    for context in event.contexts:
                        read = self._reads.pop(context, None)
                        if read is not None:
                            read.box.set(_leadership_lost("the read was not served"))
                case ev.LogTruncated():
                    log.warning("log truncated", from_index=event.from_index, term=event.term)
                case _:
                    pass

    def _fail_writes(self, why: str) -> None:
        for _, box in self._writes.values():
            box.set(_leadership_lost(why))
        self._writes.clear()

    def _name(self, node_id: int | None) -> str | None:
        return None if node_id is None else self.names.get(node_id, str(node_id))

    def _names(self, node_ids: tuple[int, ...]) -> list[str | None]:
        return [self._name(i) for i in node_ids]

    def fail_everything(self, why: str) -> None:
        """Shutting down: every waiting client gets an answer instead of a hang."""
        self._fail_writes(why)
        reads = [*self._reads.values(), *(read for _, read in self._reads_ready)]
        for read in reads:
            read.box.set(_leadership_lost(why))
        self._reads.clear()
        self._reads_ready.clear()


def _write_reply(result: kv.Result, index: int) -> ClientReply:
    if result.error is not None:
        return ErrorReply(ErrorCode.SESSION, result.error, True)
    return WriteReply(result.ok, result.value, result.found, index)


def _leadership_lost(why: str) -> ErrorReply:
    return ErrorReply(
        ErrorCode.LEADERSHIP_LOST,
        f"leadership changed before the answer was known ({why}); the write may or may not "
        "have happened",
        False,
    )
