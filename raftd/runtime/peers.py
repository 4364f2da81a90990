"""Raft messages between members, over persistent TCP connections.

Each member dials every other member once and keeps that connection for its outgoing
messages; replies come back over the other member's own connection, because Raft's
messages are one-way. Every connection starts with a Hello (cluster id, member name, client
address); a stranger or a member of another cluster is logged and dropped.

Sending never blocks the driver: each peer has a bounded outbox, and a message that does
not fit, or that is queued while the peer is unreachable, is dropped and counted. Raft
retransmits whatever matters.
"""

from __future__ import annotations

import errno
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
import trio
from opentelemetry.trace import Span

from observability.metrics import RaftMetrics
from raftd.config import NodeConfig
from raftd.core import (
    AppendEntries,
    EntryKind,
    InstallSnapshot,
    MembershipError,
    Message,
)
from raftd.runtime.chaos import Chaos, DelayLine
from raftd.runtime.gate import ConnectionGate, QuietLog, remote_of
from raftd.runtime.listen import open_listeners
from raftd.runtime.roster import Roster, check_configuration
from raftd.runtime.tls import Credentials, Refused, accept, answer_tls_in_plaintext, dial
from raftd.runtime.transfer import Reassembly, chunks, digest_of
from wire.api import PEER_REGISTRY, Hello, SnapshotChunk
from wire.codec import Header
from wire.frame import FrameTooLarge, WireError
from wire.stream import FramedStream, FrameTimeout, TurnWrites
from wire.tls import (
    TlsFailure,
    TlsStream,
    certificate_names,
    frame_length_is_tls,
    peer_certificate,
)
from wire.tracecontext import TraceParent

log = structlog.get_logger("raftd.peers")

OUTBOX_CAPACITY = 4096
MAX_MESSAGES_PER_WRITE = 256
HELLO_TIMEOUT_S = 5.0
# Inbound peer connections: each peer keeps one, a restarting peer briefly two; the rest
# of the headroom is for strangers, who are refused at their Hello anyway.
PEER_CONNECTIONS_PER_MEMBER = 4
MIN_MEMBERS_FOR_GATE = 5
UNBOUND = 0  # no member has id 0  # room for members added later without a restart
RECEIVE_PROBE_BYTES = 4096
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 1.0
STABLE_CONNECTION_S = 1.0  # a connection that lasted this long was not a flap


class TraceRoom(Protocol):
    """The member's trace budget, as far as peers are concerned (``RaftdSampler``): every
    frame tells the peer how much room this member has, and every frame received says the
    same of its sender."""

    def room(self) -> int: ...

    def peer_reported(self, peer: int, room: int, age_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message on its way out, with the trace it belongs to (if any)."""

    msg: Message
    parent: TraceParent | None
    span: Span | None
    queued_ns: int
    # In trio's clock: when the message was built, and (a leader's messages) how stale the
    # leader's state was then. The frame carries the time since ``built`` as an age, so the
    # receiver dates it correctly however long it sat in an outbox or a chaos delay.
    built: float = 0.0
    lag: float | None = None


class Outbox:
    """One peer's messages on their way out: bounded, and never blocking the driver.

    The peer's sender task drains it into the connection; during a turn of the loop
    (``TurnWrites``) the loop writes it itself when the sender is idle, and leaves the
    sender whatever the socket did not take (``pending``), to go first."""

    def __init__(self, capacity: int = OUTBOX_CAPACITY) -> None:
        self.capacity = capacity
        self.items: deque[Outgoing] = deque()
        self._wakeup = trio.Event()
        self.parked = False  # the sender task waits for something to send
        self.stream: FramedStream | None = None  # the connection the sender pumps into
        self.pending: tuple[bytes, list[Outgoing]] | None = None

    def put(self, item: Outgoing) -> bool:
        if len(self.items) >= self.capacity:
            return False
        self.items.append(item)
        return True

    def wake(self) -> None:
        self._wakeup.set()

    async def wait(self) -> None:
        """Until there is something to send; a checkpoint either way."""
        if self.items or self.pending is not None:
            await trio.lowlevel.checkpoint()
            return
        while not self.items and self.pending is None:
            self.parked = True
            try:
                await self._wakeup.wait()
            finally:
                self.parked = False
            self._wakeup = trio.Event()

    def take(self, limit: int, *, stop_at: type | None = None) -> list[Outgoing]:
        """Up to ``limit`` messages, in order; with ``stop_at``, none from the first of that
        kind on."""
        items = self.items
        batch: list[Outgoing] = []
        while items and len(batch) < limit:
            if stop_at is not None and isinstance(items[0].msg, stop_at):
                break
            batch.append(items.popleft())
        return batch

    def take_pending(self) -> tuple[bytes, list[Outgoing]] | None:
        pending, self.pending = self.pending, None
        return pending


class PeerTransport:
    def __init__(
        self,
        config: NodeConfig,
        deliver: Callable[[Message, TraceParent | None, float, float | None], None],
        client_addrs: dict[str, str],
        *,
        chaos: Chaos | None = None,
        metrics: RaftMetrics | None = None,
        trace_room: TraceRoom | None = None,
        roster: Roster | None = None,
        credentials: Credentials | None = None,
        turn: TurnWrites | None = None,
    ) -> None:
        """``turn``: the loop's writes (``TurnWrites``), for sending from its own turn."""
        self.config = config
        self._turn = turn
        self._credentials = credentials
        self._trace_room = trace_room
        self._deliver = deliver
        self.client_addrs = client_addrs
        self.chaos = chaos
        self.metrics = metrics if metrics is not None else RaftMetrics()
        # Members come and go with the configuration: one outbox and sender per other
        # member, started and stopped as the roster changes.
        self.roster = roster if roster is not None else Roster(config)
        self._ids = self.roster.ids
        self._outboxes: dict[int, Outbox] = {}
        self._senders: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._delay_line: DelayLine[Outgoing] = DelayLine(self._enqueue)
        self._quiet = QuietLog(log)
        self.gate = ConnectionGate(
            "peer",
            PEER_CONNECTIONS_PER_MEMBER * max(len(self._ids), MIN_MEMBERS_FOR_GATE),
            self.metrics,
            self._quiet,
        )

    def send(
        self,
        msg: Message,
        parent: TraceParent | None = None,
        span: Span | None = None,
        lag: float | None = None,
    ) -> None:
        """Queue a message for its peer; chaos, when configured, strikes here."""
        item = Outgoing(msg, parent, span, time.time_ns(), trio.current_time(), lag)
        if self.chaos is not None:
            verdict = self.chaos.decide(msg)
            if verdict.drop:
                self.metrics.chaos_injected("drop")
                self.metrics.message_dropped(type(msg).__name__, "chaos")
                if span is not None:
                    span.set_attribute("chaos.dropped", True)
                    span.add_event("chaos.dropped")
                return
            if verdict.delay_s > 0:
                self.metrics.chaos_injected("delay")
                if span is not None:
                    span.set_attribute("chaos.delay_ms", verdict.delay_s * 1000)
                    span.add_event("chaos.delayed", {"chaos.delay_ms": verdict.delay_s * 1000})
                self._delay_line.put(item, verdict.delay_s)
                return
        self._enqueue(item)

    def _enqueue(self, item: Outgoing) -> None:
        outbox = self._outboxes.get(item.msg.dst)
        if outbox is None:
            return
        if not outbox.put(item):
            self.metrics.message_dropped(type(item.msg).__name__, "outbox_full")
            return
        turn = self._turn
        if (
            turn is None
            or outbox.stream is None
            or not turn.defer(outbox, lambda: self._write_now(outbox))
        ):
            outbox.wake()

    def _write_now(self, outbox: Outbox) -> None:
        """The loop's flush: an idle sender's messages, in one write, without waking it.
        A snapshot and what follows it are left to the sender (a transfer is its job)."""
        stream = outbox.stream
        if stream is None or not outbox.parked or outbox.pending is not None:
            outbox.wake()
            return
        batch = outbox.take(MAX_MESSAGES_PER_WRITE, stop_at=InstallSnapshot)
        if outbox.items:
            outbox.wake()
        if not batch:
            return
        data = b"".join(self._encode(stream, batch))
        written = stream.write_now(data)
        if written == len(data):
            self._written(batch)
            if stream.unsent:  # TLS records the socket did not take: the sender sends them
                outbox.pending = (b"", [])
                outbox.wake()
            return
        outbox.pending = (data[written:], batch)
        outbox.wake()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        address = self.config.peer_addr
        async with trio.open_nursery() as nursery:
            listeners = await open_listeners(address, "peers")
            nursery.start_soon(trio.serve_listeners, self._serve_inbound, listeners)
            await nursery.start(self._delay_line.run)
            self._nursery = nursery
            self._follow_roster()
            self.roster.subscribe(self._follow_roster)
            log.info("listening for peers", address=str(address))
            task_status.started()

    # ---------------------------------------------------------- outgoing

    def _follow_roster(self) -> None:
        """Start a sender for every member without one, stop those of members gone."""
        nursery = self._nursery
        if nursery is None:
            return
        wanted = {i: m.name for i, m in self.roster.known.items() if m.name != self.config.name}
        for node_id in [i for i in self._senders if i not in wanted]:
            # Cancelled, not closed: a sender mid-batch would take a closed outbox for an
            # error; cancellation ends it at its next checkpoint, its queue with it.
            self._senders.pop(node_id).cancel()
            del self._outboxes[node_id]
        for node_id, name in wanted.items():
            if node_id in self._senders:
                continue
            outbox = Outbox()
            self._outboxes[node_id] = outbox
            scope = trio.CancelScope()
            self._senders[node_id] = scope
            nursery.start_soon(self._sender_in, scope, node_id, name, outbox)

    async def _sender_in(
        self, scope: trio.CancelScope, node_id: int, name: str, outbox: Outbox
    ) -> None:
        with scope:
            await self._sender(node_id, name, outbox)

    async def _sender(self, node_id: int, name: str, outbox: Outbox) -> None:
        """Keep one connection to ``name`` open and pump its outbox into it.

        A link that fails at once again and again (a dead peer behind a proxy or a load
        balancer accepts, then resets) backs off like an unreachable one, and its
        transitions are logged once at INFO and then at DEBUG, so a flapping link cannot
        flood the log with a line every few milliseconds."""
        delay = RECONNECT_MIN_S
        quiet = False
        while True:
            # By id, not name: a member replaced under its old name has a new id, and
            # messages still meant for the old one must not reach the new one.
            member = self.roster.known.get(node_id)
            if member is None:
                return  # no longer a member: the roster stops this sender too
            address = member.peer
            try:
                tcp = await trio.open_tcp_stream(address.host, address.port)
            except OSError as exc:
                if not quiet:
                    log.info("peer unreachable", peer=name, error=_reason(exc))
                    quiet = True
                delay = await self._back_off(outbox, delay)
                continue
            try:
                link = await self._secure(tcp, name)
            except TlsFailure as exc:
                with trio.CancelScope(shield=True):
                    await tcp.aclose()
                if exc.configuration:
                    # A refusal someone must fix: said now and then for as long as it lasts.
                    self._quiet.warning(
                        "peer failed the TLS handshake",
                        key=f"tls:{name}",
                        peer=name,
                        error=str(exc),
                    )
                elif not quiet:  # gone mid-handshake: a peer restarting, like an unreachable one
                    log.info("peer failed the TLS handshake", peer=name, error=str(exc))
                quiet = True
                delay = await self._back_off(outbox, delay)
                continue
            stream = FramedStream(link, PEER_REGISTRY)
            opened = trio.current_time()
            try:
                config = self.config
                hello = Hello(config.cluster_id, config.name, str(config.advertised_client_addr))
                await stream.send(Header("Hello"), hello)
                (log.debug if quiet else log.info)(
                    "connected to peer", peer=name, address=str(address)
                )
                await self._pump_while_open(stream, outbox, name)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                lasted = trio.current_time() - opened
                stable = lasted >= STABLE_CONNECTION_S
                (log.info if stable or not quiet else log.debug)(
                    "lost connection to peer",
                    peer=name,
                    error=_reason(exc),
                    lasted_s=round(lasted, 3),
                )
                if stable:
                    delay, quiet = RECONNECT_MIN_S, False
                else:
                    quiet = True
                    delay = await self._back_off(outbox, delay)
            finally:
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _secure(self, tcp: trio.SocketStream, name: str) -> trio.abc.Stream:
        """With peer TLS: the stream after a handshake in which the other side proved to be
        ``name`` (its certificate names it), else ``TlsFailure``."""
        context = None if self._credentials is None else self._credentials.current.peer_client
        if context is None:
            return tcp
        link = await dial(tcp, context, server_hostname=name, timeout_s=HELLO_TIMEOUT_S)
        assert isinstance(link, TlsStream)
        names = certificate_names(peer_certificate(link))
        if name not in names:
            raise TlsFailure(
                f"its certificate is issued for {', '.join(sorted(names)) or 'no name'}, "
                f"not for {name}"
            )
        return link

    async def _back_off(self, outbox: Outbox, delay: float) -> float:
        self._discard(outbox)
        await trio.sleep(delay)
        self._discard(outbox)
        return min(delay * 2, RECONNECT_MAX_S)

    async def _pump_while_open(self, stream: FramedStream, outbox: Outbox, peer: str) -> None:
        """Pump until the link breaks; raises the reason.

        A peer never writes on a connection we dialled, so a read on it returns only when
        the other side went away. Watching for that matters after a peer restarts: its old
        connection looks open until we write, and that first write (often the answer to
        its pre-vote, right after a leader died) would be lost, costing a whole election
        timeout. Reconnecting at the first sign of EOF sends it on a live connection."""
        failure: list[BaseException] = []
        transfers: list[_Transfer] = []
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                try:
                    data = await stream.stream.receive_some(RECEIVE_PROBE_BYTES)
                    why = "unexpected bytes on a one-way link" if data else "closed by the peer"
                    failure.append(trio.BrokenResourceError(why))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    failure.append(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            try:
                await self._pump(stream, outbox, transfers)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                failure.append(exc)
                nursery.cancel_scope.cancel()
        for transfer in transfers:
            self.metrics.snapshot_transfer_cut("sender")
            log.warning(
                "snapshot transfer cut short: the connection was lost; it will be sent again",
                peer=peer,
                written_bytes=transfer.written_bytes,
                snapshot_bytes=transfer.size,
            )
        raise failure[0]

    async def _pump(
        self, stream: FramedStream, outbox: Outbox, transfers: list[_Transfer] | None = None
    ) -> None:
        """Send the outbox into ``stream``; ``transfers`` holds the snapshot transfer in
        progress, if any, still there when the link breaks."""
        transfers = [] if transfers is None else transfers
        outbox.stream = stream
        try:
            await self._pump_into(stream, outbox, transfers)
        finally:
            outbox.stream = None
            pending = outbox.take_pending()  # a frame cut short: meaningless on a new link
            for item in pending[1] if pending is not None else ():
                self.metrics.message_dropped(type(item.msg).__name__, "send_failed")
            for transfer in transfers:
                transfer.end("the connection was lost; the leader will send it again")

    async def _pump_into(
        self, stream: FramedStream, outbox: Outbox, transfers: list[_Transfer]
    ) -> None:
        transfer: _Transfer | None = None
        while True:
            # While a snapshot is on its way, one chunk goes per write and whatever else is
            # queued for this peer goes with it, so its heartbeats never wait for the rest.
            if transfer is None:
                await outbox.wait()
            # What the loop's own write left over goes first.
            pending = outbox.take_pending()
            frames, batch = ([pending[0]], pending[1]) if pending is not None else ([], [])
            fresh = outbox.take(MAX_MESSAGES_PER_WRITE)
            for item in [i for i in fresh if isinstance(i.msg, InstallSnapshot)]:
                fresh.remove(item)
                if transfer is not None:
                    self.metrics.message_dropped("InstallSnapshot", "superseded")
                    transfer.end("superseded by a newer snapshot")
                transfer = await _Transfer.start(item)
                transfers[:] = [transfer]
            frames += self._encode(stream, fresh)
            batch += fresh
            if transfer is not None:
                frames.append(transfer.next_frame(stream))
            try:
                await stream.send_encoded(frames)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                for item in batch:  # some may have arrived; none can be known to have
                    self.metrics.message_dropped(type(item.msg).__name__, "send_failed")
                raise
            if transfer is not None and transfer.done:
                self.metrics.snapshot("sent", transfer.seconds, transfer.size)
                transfer.end(None)
                transfer = None
                transfers.clear()
            self._written(batch)

    def _written(self, batch: list[Outgoing]) -> None:
        now = time.time_ns()
        for item in batch:
            # The span may have ended meanwhile (a voter's vote span ends with its Ready,
            # before the outbox is written): an ended span takes no more events.
            if item.span is not None and item.span.is_recording():
                wait_ms = (now - item.queued_ns) / 1e6
                item.span.add_event("written to the peer", {"raftd.outbox_wait_ms": wait_ms})

    def _encode(self, stream: FramedStream, batch: list[Outgoing]) -> list[bytes]:
        """Frame each message; one that cannot be framed is dropped, never fatal.

        An AppendEntries over the frame limit once escaped this task and took the whole
        member down, and the next leader then did the same. Raft tolerates a lost message
        (the leader retries, and the core bounds appends by bytes), so a bug that still
        builds an unsendable one costs that message and a loud log line, not the cluster."""
        frames: list[bytes] = []
        now = trio.current_time()
        sent_us = time.time_ns() // 1000
        room = None if self._trace_room is None else self._trace_room.room()
        for item in batch:
            kind = type(item.msg).__name__
            header = Header(
                kind,
                traceparent=item.parent,
                age_us=_micros(now - item.built),
                lag_us=None if item.lag is None else _micros(item.lag),
                sent_us=sent_us,
                trace_room=room,
            )
            try:
                frames.append(stream.encode(header, item.msg))
            except (WireError, ValueError, TypeError) as exc:
                self.metrics.message_dropped(kind, "unencodable")
                log.error("dropped a message that cannot be framed", kind=kind, error=str(exc))
                if item.span is not None and item.span.is_recording():
                    item.span.add_event("dropped: cannot be framed", {"error": str(exc)})
        return frames

    def _discard(self, outbox: Outbox) -> None:
        """While a peer is unreachable its messages go stale; drop them rather than replay
        a backlog of old heartbeats when it comes back."""
        while outbox.items:
            item = outbox.items.popleft()
            self.metrics.message_dropped(type(item.msg).__name__, "disconnected")
            if item.span is not None and item.span.is_recording():
                item.span.add_event("dropped: the peer is unreachable")

    # ---------------------------------------------------------- incoming

    async def _serve_inbound(self, tcp: trio.SocketStream) -> None:
        remote = remote_of(tcp)
        try:
            if not self.gate.try_enter(remote):
                return
            try:
                await self._serve_admitted(tcp, remote)
            finally:
                self.gate.leave()
        finally:
            with trio.CancelScope(shield=True):
                await tcp.aclose()

    async def _serve_admitted(self, tcp: trio.SocketStream, remote: str) -> None:
        context = None if self._credentials is None else self._credentials.current.peer_server
        try:
            link, certificate = await accept(tcp, context, timeout_s=HELLO_TIMEOUT_S)
        except Refused as exc:
            self._refuse(remote, exc.reason, str(exc))
            return
        except (trio.BrokenResourceError, OSError):
            return
        names = None if context is None else certificate_names(certificate)
        stream = FramedStream(link, PEER_REGISTRY, frame_timeout_s=self.config.frame_timeout_s)
        await self._receive_from_peer(stream, remote, names)

    async def _receive_from_peer(
        self, stream: FramedStream, remote: str, names: frozenset[str] | None = None
    ) -> None:
        """``names``: what the caller's certificate names it (None without TLS)."""
        reassembly = Reassembly()
        first_chunk_at = 0.0
        try:
            hello = await self._accept_hello(stream, remote, names)
            if hello is None:
                return
            name, peer_id = hello
            while True:
                received = await stream.receive()
                if received is None:
                    break
                header, msg = received
                if peer_id == UNBOUND and not isinstance(msg, Hello):
                    # A member of --cluster this member has no id for yet (it joined, and
                    # its log does not name the members yet): its first message says.
                    peer_id = msg.src
                    self.roster.provisional(peer_id, name)
                if isinstance(msg, Hello) or msg.src != peer_id or msg.dst != self.config.node_id:
                    self._refuse(remote, "misaddressed", f"misaddressed {type(msg).__name__}")
                    break
                if header.dropped_traceparent:
                    self.metrics.bad_traceparent("peer")
                    self._quiet.warning(
                        "peer sent an invalid traceparent: dropped it, delivered the message",
                        remote=remote,
                    )
                waited = _waited(header)
                if header.trace_room is not None and self._trace_room is not None:
                    self._trace_room.peer_reported(peer_id, header.trace_room, waited)
                built_at = trio.current_time() - waited
                if isinstance(msg, AppendEntries):
                    _check_configurations(msg)
                if isinstance(msg, SnapshotChunk):
                    if msg.offset == 0:
                        first_chunk_at = trio.current_time()
                    completed = reassembly.add(msg)
                    if completed is None:
                        continue
                    msg = await trio.to_thread.run_sync(completed.verify)
                    took = trio.current_time() - first_chunk_at
                    self.metrics.snapshot("received", took, len(msg.snapshot.data))
                leader_fresh = None if header.lag_us is None else built_at - header.lag_us / 1e6
                self._deliver(msg, header.traceparent, built_at, leader_fresh)
        except FrameTimeout as exc:
            self._refuse(remote, "frame_timeout", f"frame not completed in time: {exc}")
        except FrameTooLarge as exc:
            if frame_length_is_tls(exc.length):
                self._refuse(remote, "tls_mismatch", "a TLS caller on a port without TLS")
                await answer_tls_in_plaintext(stream.stream)
            else:
                self._refuse(remote, "bad_frame", f"bad frame: {exc}")
        except WireError as exc:
            self._refuse(remote, "bad_frame", f"bad frame: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        # Not reached when the member shuts down (cancelled): only a connection that ended.
        if reassembly.key is not None:
            self.metrics.snapshot_transfer_cut("receiver")
            log.warning(
                "snapshot transfer cut short: the connection ended; the leader sends it again",
                remote=remote,
                snapshot_index=reassembly.key[1],
                received_bytes=reassembly.received,
            )

    async def _accept_hello(
        self, stream: FramedStream, remote: str, names: frozenset[str] | None = None
    ) -> tuple[str, int] | None:
        """The caller's name and id (``UNBOUND``: a name of --cluster the configuration
        here does not know yet), or None when it was refused. With TLS, the name must be
        one its certificate was issued for: the CA vouches for names, not for members."""
        with trio.move_on_after(HELLO_TIMEOUT_S):
            received = await stream.receive()
            if received is None:
                return None
            _, hello = received
            if not isinstance(hello, Hello):
                self._refuse(remote, "handshake", f"expected Hello, got {type(hello).__name__}")
                return None
            if hello.cluster_id != self.config.cluster_id:
                self._refuse(
                    remote, "handshake", f"cluster id {hello.cluster_id!r} is not ours", "cluster"
                )
                return None
            peer_id = self._ids.get(hello.node_name)
            if peer_id is None and self.roster.unsettled and hello.node_name in self.config.members:
                peer_id = UNBOUND
            if peer_id is None or hello.node_name == self.config.name:
                self._refuse(
                    remote,
                    "handshake",
                    f"{hello.node_name!r} is not a peer of {self.config.name}",
                    "stranger",
                )
                return None
            if names is not None and hello.node_name not in names:
                self._refuse(
                    remote,
                    "identity",
                    f"says it is {hello.node_name!r}, but its certificate is issued for "
                    f"{', '.join(sorted(names)) or 'no name'}",
                )
                return None
            self.client_addrs[hello.node_name] = hello.client_addr
            return hello.node_name, peer_id
        self._refuse(remote, "handshake", "no Hello in time", "silent")
        return None

    def _refuse(self, remote: str, reason: str, why: str, detail: str = "") -> None:
        """``reason`` is the metric label; ``detail`` separates kinds of handshake trouble
        in the log, so a stranger does not hide the member of another cluster."""
        self.metrics.connection_closed("peer", reason)
        self._quiet.warning(
            "peer connection refused", key=f"{reason}:{detail}", remote=remote, reason=why
        )


def _check_configurations(msg: AppendEntries) -> None:
    """A configuration entry the core or the roster could not read is a bad frame here, at
    the edge: inside it would stop the member."""
    for entry in msg.entries:
        if entry.kind is EntryKind.CONFIG:
            try:
                check_configuration(entry.data)
            except MembershipError as exc:
                raise WireError(f"configuration entry {entry.index}: {exc}") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc))
    return str(exc) or type(exc).__name__


def _waited(header: Header) -> float:
    """Seconds since the sender built the message: its age when written, plus the time on
    the wire by the two wall clocks (never negative; a receiver whose clock runs behind the
    sender's undercounts by the difference, which the README states)."""
    wire_s = 0.0
    if header.sent_us is not None:
        wire_s = max(0.0, time.time_ns() / 1000 - header.sent_us) / 1e6
    return (header.age_us or 0) / 1e6 + wire_s


def _micros(seconds: float) -> int:
    return max(0, round(seconds * 1e6))


class _Transfer:
    """One snapshot on its way to a peer, chunk by chunk, with its span's chunk events."""

    def __init__(self, item: Outgoing, digest: bytes) -> None:
        self.item = item
        msg = item.msg
        assert isinstance(msg, InstallSnapshot)
        self.size = len(msg.snapshot.data)
        self._chunks = chunks(msg, digest)
        self._next = next(self._chunks, None)
        self._started = trio.current_time()
        self.sent = 0
        self.written_bytes = 0  # handed to the connection, not known to have arrived

    @classmethod
    async def start(cls, item: Outgoing) -> _Transfer:
        msg = item.msg
        assert isinstance(msg, InstallSnapshot)
        digest = await trio.to_thread.run_sync(digest_of, msg.snapshot.data)
        return cls(item, digest)

    @property
    def done(self) -> bool:
        return self._next is None

    @property
    def seconds(self) -> float:
        return trio.current_time() - self._started

    def next_frame(self, stream: FramedStream) -> bytes:
        chunk = self._next
        assert chunk is not None
        self._next = next(self._chunks, None)
        self.sent += 1
        self.written_bytes += len(chunk.data)
        span = self.item.span
        if span is not None and span.is_recording():
            span.add_event(
                "chunk sent", {"raftd.offset": chunk.offset, "raftd.bytes": len(chunk.data)}
            )
        header = Header("SnapshotChunk", traceparent=self.item.parent)
        return stream.encode(header, chunk)

    def end(self, why: str | None) -> None:
        span = self.item.span
        if span is None or not span.is_recording():
            return
        span.set_attribute("raftd.snapshot.bytes", self.size)
        span.set_attribute("raftd.snapshot.chunks", self.sent)
        if why is not None:
            span.add_event(f"abandoned: {why}")
        span.end()
