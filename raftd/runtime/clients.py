"""The client port: requests in, replies out, several in flight per connection.

Each request is answered on the connection it came from, tagged with its request id, so a
client may pipeline. A non-leader redirects (a definite NotLeader error naming the leader's
client address) unless the request asks to be forwarded, or the member runs with
``--forward``: then the request is relayed to the leader and the answer relayed back.
Bad bytes close only the connection that sent them.

Keys and values are bounded (``MAX_KEY_BYTES``, ``MAX_VALUE_BYTES``, in UTF-8 bytes) here,
before anything is proposed: a write is one log entry, an entry is never split across
AppendEntries messages, and a peer frame holds at most 8 MiB, so an unbounded value could
become an entry no follower can ever receive. A request frame over the client port's own
frame limit (the same 8 MiB) cannot be decoded at all; it is answered under request id 0,
like a refused connection, and the connection is closed.
"""

from __future__ import annotations

import contextlib
import dataclasses

import structlog
import trio
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from observability.metrics import RaftMetrics
from observability.propagation import context_of, traceparent_of, unsampled_span
from observability.sampling import EDGE_ATTRIBUTE, EDGE_CLIENT, RaftdSampler
from raftd import kv, kvsnapshot
from raftd.config import NodeConfig, parse_address
from raftd.core import SnapshotMeta
from raftd.runtime.driver import (
    ChangeMembers,
    Driver,
    KeepAlive,
    ListMembers,
    MoveLeader,
    Read,
    ReplyBox,
    StaleRead,
    Status,
    Write,
    timed_out,
)
from raftd.runtime.gate import ConnectionGate, QuietLog, remote_of
from raftd.runtime.listen import open_listeners
from raftd.runtime.tls import Credentials, Refused, accept, dial
from raftd.runtime.transfer import CHUNK_BYTES, digest_of
from raftd.runtime.watch import Change, Compacted, Watcher
from wire.api import (
    CLIENT_REGISTRY,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    CasRequest,
    ClientReply,
    DeleteRangeRequest,
    DeleteRequest,
    ErrorCode,
    ErrorReply,
    GetReply,
    GetRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseRevokeRequest,
    MemberChangeRequest,
    MemberListRequest,
    MoveLeaderRequest,
    RangeRequest,
    SetRequest,
    SnapshotPart,
    SnapshotRequest,
    StateHashRequest,
    StatusRequest,
    WatchEvent,
    WatchReply,
    WatchRequest,
    WriteReply,
    oversized_field,
)
from wire.codec import Header
from wire.frame import FrameTooLarge, WireError
from wire.stream import BatchedSender, FramedStream, FrameTimeout
from wire.tls import HANDSHAKE_TIMEOUT_S, TlsFailure, frame_length_is_tls
from wire.tracecontext import parse_traceparent

log = structlog.get_logger("raftd.clients")

# Requests the leader serves through the log (writes) or a read index (reads).
WriteRequest = (
    SetRequest
    | CasRequest
    | DeleteRequest
    | DeleteRangeRequest
    | LeaseGrantRequest
    | LeaseRevokeRequest
)
LeaderRequest = WriteRequest | GetRequest | RangeRequest | LeaseKeepAliveRequest

MAX_IN_FLIGHT_PER_CONNECTION = 128
# tracestate list-member marking a request a member forwarded to the leader. The client
# port is trusted like the peer port: a client could set it, and would only get its trace
# sampled by the forwarding rules (parent-based) instead of the edge budget.
PROXIED_TRACESTATE = "raftd=proxied"
FORWARD_CONNECT_TIMEOUT_S = 1.0
REFUSAL_SEND_TIMEOUT_S = 1.0
DRAIN_CHUNK_BYTES = 64 * 1024
# A watch sends at most this many changes a frame, and is dropped once this many bytes of
# its frames wait for a client that is not reading them.
WATCH_BATCH_CHANGES = 256
WATCH_PROGRESS_S = 2.0  # an idle watch hears from its member this often
WATCH_BACKLOG_BYTES = 8 * 1024 * 1024


class ClientServer:
    def __init__(
        self,
        config: NodeConfig,
        driver: Driver,
        *,
        tracer: trace.Tracer | None = None,
        metrics: RaftMetrics | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.config = config
        self._credentials = credentials
        self.driver = driver
        self.tracer = tracer or trace.get_tracer("raftd")
        sampler = getattr(self.tracer, "sampler", None)
        self._sampler = sampler if isinstance(sampler, RaftdSampler) else None
        self.metrics = metrics if metrics is not None else driver.metrics
        self._quiet = QuietLog(log)
        self.gate = ConnectionGate(
            "client", config.max_client_connections, self.metrics, self._quiet
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        address = self.config.client_addr
        listeners = await open_listeners(address, "clients")
        log.info("listening for clients", address=str(address))
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, tcp: trio.SocketStream) -> None:
        remote = remote_of(tcp)
        try:
            if not self.gate.try_enter(remote):
                await self._refuse(FramedStream(tcp, CLIENT_REGISTRY))
                return
            try:
                stream = await self._admit(tcp, remote)
                if stream is not None:
                    await self._serve_connection(stream, remote)
            finally:
                self.gate.leave()
        finally:
            with trio.CancelScope(shield=True):
                await tcp.aclose()

    async def _admit(self, tcp: trio.SocketStream, remote: str) -> FramedStream | None:
        """The connection's frames, after the TLS handshake when the port has TLS. A
        plaintext client on a TLS port is told so in plaintext, the one thing it can read,
        so raftctl can say "use --cacert" instead of "connection reset"."""
        context = None if self._credentials is None else self._credentials.current.client_server
        timeout = self.config.frame_timeout_s
        try:
            link, _ = await accept(tcp, context, timeout_s=timeout)
        except Refused as exc:
            self._closed(remote, exc.reason, str(exc))
            if exc.reason == "tls_mismatch":
                refusal = ErrorReply(
                    ErrorCode.TLS_REQUIRED,
                    "this member's client port requires TLS: connect with its CA "
                    "(raftctl --cacert FILE, and --cert/--key if it asks for a client "
                    "certificate)",
                    True,
                )
                await _say_before_closing(FramedStream(tcp, CLIENT_REGISTRY), refusal, drain=True)
            return None
        except (trio.BrokenResourceError, OSError):
            return None
        return FramedStream(link, CLIENT_REGISTRY, frame_timeout_s=timeout)

    async def _refuse(self, stream: FramedStream) -> None:
        """Say why before closing, so a client shows a reason rather than a reset. Request
        id 0 is never a request's: the reply is about the connection, and no request on
        it was read, so none was carried out."""
        refusal = ErrorReply(
            ErrorCode.UNAVAILABLE,
            f"too many client connections (limit {self.gate.limit}); try again later",
            True,
        )
        await _say_before_closing(stream, refusal, drain=False)

    async def _serve_connection(self, stream: FramedStream, remote: str) -> None:
        """Answer requests concurrently, replies batched into as few writes as possible.

        A slot per request is held from its arrival until its reply is written, so a client
        that sends without reading stalls itself, not the member's memory."""
        slots = trio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)

        def release(count: int) -> None:
            for _ in range(count):
                slots.release()

        sender = BatchedSender(stream, release, self.driver.turn_writes)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            async with trio.open_nursery() as answers:
                await self._read_requests(stream, answers, remote, sender, slots)
            sender.close()  # the answers still to come are sent, then it stops

    async def _read_requests(
        self,
        stream: FramedStream,
        nursery: trio.Nursery,
        remote: str,
        sender: BatchedSender,
        slots: trio.Semaphore,
    ) -> None:
        """Hand each request to the driver (or to an answering task); stop at EOF or at the
        first bad frame (the answers already under way still go out; watches end)."""
        closed = trio.Event()
        try:
            while True:
                received = await stream.receive()
                if received is None:
                    return
                header, request = received
                if header.dropped_traceparent:
                    self.metrics.bad_traceparent("client")
                    self._quiet.warning(
                        "client sent an invalid traceparent: dropped it, served the request",
                        remote=remote,
                    )
                # A free slot is taken without a scheduling point: the reader drains the
                # requests already buffered on the socket before the driver runs, so they
                # share one driver turn, one fsync and one AppendEntries.
                try:
                    slots.acquire_nowait()
                except trio.WouldBlock:
                    await slots.acquire()
                sender.expect()
                if isinstance(request, WatchRequest):
                    nursery.start_soon(self._watch, stream, header, request, sender, closed)
                elif not self._submit_directly(stream, header, request, sender, nursery):
                    nursery.start_soon(self._answer, stream, header, request, sender)
        except FrameTimeout as exc:
            self._closed(remote, "frame_timeout", f"frame not completed in time: {exc}")
        except FrameTooLarge as exc:
            if frame_length_is_tls(exc.length):
                # Its handshake. Any plaintext answer makes its TLS say "not TLS", which
                # is the truth; closing without one would look like a member restarting.
                self._closed(remote, "tls_mismatch", "a TLS client on a port without TLS")
                notice = _bad_request("this member's client port does not use TLS")
                await _say_before_closing(stream, notice, drain=True)
                return
            self._closed(remote, "bad_frame", f"bad frame: {exc}")
            await self._refuse_frame(stream, exc)
        except WireError as exc:
            self._closed(remote, "bad_frame", f"bad frame: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            closed.set()

    async def _watch(
        self,
        stream: FramedStream,
        header: Header,
        request: WatchRequest,
        sender: BatchedSender,
        closed: trio.Event,
    ) -> None:
        """Stream a watch's changes until the client goes, reads too slowly, or this member
        installs a snapshot; then end it with an ErrorReply that says why (the client
        resumes from the revision after the last it saw)."""
        started = trio.current_time()
        span = self._request_span(header, request, "watch")
        hub = self.driver.watches
        refused = refusal(request)
        if refused is None:
            try:
                watcher = hub.subscribe(request.start, request.end, request.start_revision)
            except Compacted as exc:
                refused = ErrorReply(ErrorCode.COMPACTED, str(exc), True)
            except OverflowError as exc:  # as many watchers as this member takes
                refused = ErrorReply(ErrorCode.UNAVAILABLE, str(exc), True)
        if refused is not None:
            self._finish(stream, header, "watch", span, started, refused, sender)
            return
        if span.is_recording():
            span.set_attribute("raftd.watch.start_revision", request.start_revision)
            span.set_attribute("raftd.revision", hub.revision)
        span.end()  # the request's span covers setting the watch up, not its lifetime
        self.metrics.client_request("watch", "ok", trio.current_time() - started)
        rid = header.request_id
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drop_when_closed, closed, watcher)
                sender.queue_part(
                    stream.encode(Header("WatchReply", rid), WatchReply((), hub.revision))
                )
                while watcher.dropped is None:
                    changes: list[Change] = []
                    # Quiet for a while: an empty reply says how far this member has got,
                    # and tells the client its member is still there.
                    with trio.move_on_after(WATCH_PROGRESS_S):
                        changes = await watcher.next_batch(WATCH_BATCH_CHANGES)
                    if watcher.dropped is not None:
                        break
                    self._deliver_spans(changes)
                    batch = WatchReply(tuple(map(_watch_event, changes)), hub.revision)
                    sender.queue_part(stream.encode(Header("WatchReply", rid), batch))
                    waiting = sender.backlog_bytes
                    if sender.broken:
                        watcher.drop("the connection was lost")
                    elif waiting > WATCH_BACKLOG_BYTES:
                        watcher.drop(f"the client read too slowly ({waiting} bytes waiting)")
                nursery.cancel_scope.cancel()
        finally:
            hub.unsubscribe(watcher)
        log.info("watch ended", why=watcher.dropped, start=request.start)
        ended = ErrorReply(
            ErrorCode.UNAVAILABLE,
            f"the watch ended: {watcher.dropped}; resume from the revision after the last seen",
            True,
        )
        sender.queue(stream.encode(Header("ErrorReply", rid), ended))

    def _deliver_spans(self, changes: list[Change]) -> None:
        """A traced write's change, delivered to a watcher here: a span in the write's trace,
        so the trace shows who was told and when."""
        for change in changes:
            parent = parse_traceparent(change.context) if change.context else None
            if parent is None:
                continue
            span = self.tracer.start_span(
                "watch.deliver",
                context=context_of(parent, remote=False),
                attributes={
                    "raftd.node": self.config.name,
                    "raft.index": change.revision,
                    "raftd.watch.key": change.key,
                },
            )
            span.end()

    async def _refuse_frame(self, stream: FramedStream, exc: FrameTooLarge) -> None:
        """Say why a frame too large to read ends the connection: otherwise a client that
        sent a huge value sees only a reset. Request id 0, as in ``_refuse``: the header was
        never read. The rest of the frame is read and dropped for a moment after the
        answer (a second at most), since closing with unread bytes would reset the
        connection and could discard the answer before the client reads it."""
        refusal = ErrorReply(
            ErrorCode.TOO_LARGE,
            f"{exc}; the connection is closed (keys are limited to {MAX_KEY_BYTES} bytes,"
            f" values to {MAX_VALUE_BYTES} bytes); nothing was proposed",
            True,
        )
        await _say_before_closing(stream, refusal, drain=True)

    def _closed(self, remote: str, reason: str, why: str) -> None:
        self.metrics.connection_closed("client", reason)
        self._quiet.warning(f"client connection closed: {reason}", remote=remote, reason=why)

    def _submit_directly(
        self,
        stream: FramedStream,
        header: Header,
        request: object,
        sender: BatchedSender,
        nursery: trio.Nursery,
    ) -> bool:
        """The common path, with no task per request: hand a leader operation to the driver
        with a box that writes the reply itself. False for anything else (status, stale
        reads, requests that may be forwarded), which ``_answer`` serves in a task."""
        if not isinstance(request, WriteRequest | GetRequest | RangeRequest):
            return False
        if request.forward or self.config.forward:
            return False
        if isinstance(request, GetRequest | RangeRequest) and (
            request.max_staleness_s is not None
            or "follower-local-reads" in self.config.test_mutations
        ):
            return False
        op_name = _operation_name(request)
        started = trio.current_time()
        span = self._request_span(header, request, op_name)
        recorded = span if span.is_recording() else None

        def on_reply(reply: ClientReply) -> None:
            self._finish(stream, header, op_name, span, started, reply, sender)

        refused = refusal(request)
        if refused is not None:
            on_reply(refused)
            return True
        op: Read | Write
        if isinstance(request, GetRequest):
            op = Read(request.key, recorded, ReplyBox(on_reply))
        elif isinstance(request, RangeRequest):
            op = Read("", recorded, ReplyBox(on_reply), query=request)
        else:
            write = _to_kv_request(request)
            if isinstance(write, ErrorReply):
                on_reply(write)
                return True
            op = Write(write, recorded, ReplyBox(on_reply))
        try:
            self.driver.inbox_send.send_nowait(op)
        except trio.WouldBlock:  # the driver is behind: wait for room in a task
            nursery.start_soon(self.driver.inbox_send.send, op)
        return True

    async def _answer(
        self, stream: FramedStream, header: Header, request: object, sender: BatchedSender
    ) -> None:
        if isinstance(request, SnapshotRequest):
            await self._backup(stream, header, sender)
            return
        op = _operation_name(request)
        started = trio.current_time()
        span = self._request_span(header, request, op)
        reply: ClientReply = ErrorReply(ErrorCode.UNAVAILABLE, "the member is stopping", False)
        try:
            reply = await self.handle(request, span)
        finally:
            self._finish(stream, header, op, span, started, reply, sender)

    async def _backup(self, stream: FramedStream, header: Header, sender: BatchedSender) -> None:
        """A backup: a linearizable read confirms this member leads and waits until it has
        applied every write acknowledged before the request; the state is captured in that
        same driver turn, then encoded off the loop and sent in parts."""
        started = trio.current_time()
        span = self._request_span(header, SnapshotRequest(), "snapshot")
        captured: list[tuple[SnapshotMeta, kvsnapshot.Capture]] = []

        def capture_now(reply: ClientReply) -> None:
            if isinstance(reply, GetReply):  # in the driver's turn, at the read's index
                captured.append(self.driver.backup_capture())

        reply = await self.driver.submit(Read("", None, ReplyBox(capture_now)))
        if not captured:
            self._finish(stream, header, "snapshot", span, started, reply, sender)
            return
        meta, capture = captured[0]
        try:
            data = await trio.to_thread.run_sync(kvsnapshot.encode, capture)
            digest = await trio.to_thread.run_sync(digest_of, data)
            frames = [
                stream.encode(
                    Header("SnapshotPart", header.request_id),
                    SnapshotPart(
                        self.config.cluster_id,
                        meta.index,
                        meta.term,
                        len(data),
                        offset,
                        digest,
                        data[offset : offset + CHUNK_BYTES],
                    ),
                )
                for offset in range(0, max(len(data), 1), CHUNK_BYTES)
            ]
        except Exception as exc:  # a bug here must cost the backup, not the member
            log.exception("could not send a backup")
            failure = ErrorReply(ErrorCode.UNAVAILABLE, f"the backup failed: {exc}", True)
            self._finish(stream, header, "snapshot", span, started, failure, sender)
            return
        if span.is_recording():
            span.set_attribute("raft.snapshot.index", meta.index)
            span.set_attribute("raftd.snapshot.bytes", len(data))
        span.end()
        self.metrics.client_request("snapshot", "ok", trio.current_time() - started)
        sender.queue_many(frames)

    def _request_span(self, header: Header, request: object, op: str) -> Span:
        """The request's server span (INVALID_SPAN for status polls).

        A client request is an edge of the cluster: the sampler decides here (within this
        member's budget) whether the client's trace is kept, whatever its flag says. Status
        polls (dashboards, scripts waiting for a leader) would eat that budget and show
        nothing of Raft: they get no span at all. A request a member forwards is not an
        edge: the forwarding member already decided, and the leader follows that decision
        like any other member would. The span is not made the current one: attaching a
        context per request costs more than passing the span where it is needed."""
        if op == "status":
            return trace.INVALID_SPAN
        proxied = header.tracestate is not None and PROXIED_TRACESTATE in header.tracestate
        parent = header.traceparent
        if (
            not proxied
            and self._sampler is not None
            and self._sampler.declines_client_edge(
                f"kv.{op}", None if parent is None else bool(parent.flags & 1)
            )
        ):
            return unsampled_span(parent)
        attributes = {"rpc.method": type(request).__name__, "raftd.node": self.config.name}
        if not proxied:
            attributes[EDGE_ATTRIBUTE] = EDGE_CLIENT
        return self.tracer.start_span(
            f"kv.{op}",
            context=context_of(header.traceparent),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )

    def _finish(
        self,
        stream: FramedStream,
        header: Header,
        op: str,
        span: Span,
        started: float,
        reply: ClientReply,
        sender: BatchedSender,
    ) -> None:
        """Count, annotate and queue the reply; may run inside the driver's turn, so a
        failure here is logged, never raised into the driver."""
        try:
            outcome = _outcome(reply)
            if span.is_recording():
                span.set_attribute("raftd.outcome", outcome)
                if isinstance(reply, ErrorReply):
                    span.set_attribute("raftd.error_code", reply.code)
                    span.set_attribute("raftd.definite", reply.definite)
                if sender.broken:
                    span.add_event("the client went away before the reply")
            self.metrics.client_request(op, outcome, trio.current_time() - started)
            frame = stream.encode(Header(type(reply).__name__, header.request_id), reply)
        except Exception:
            log.exception("could not answer a client request", op=op)
            sender.queue_nothing()
        else:
            sender.queue(frame)
        finally:
            span.end()

    async def handle(self, request: object, span: Span = trace.INVALID_SPAN) -> ClientReply:
        """One request to one reply, never an exception. ``span`` is the request's own
        (recording or not): what the driver and a forward hop attach their spans to."""
        refused = refusal(request)
        if refused is not None:  # before a stale read, a forward or a proposal
            return refused
        match request:
            case StatusRequest():
                return await self.driver.submit(Status())
            case StateHashRequest():
                return await self.driver.submit(Status(state_hash=True))
            case GetRequest(max_staleness_s=bound) if bound is not None:
                return await self.driver.submit(StaleRead(request.key, bound))
            case RangeRequest(max_staleness_s=bound) if bound is not None:
                return await self.driver.submit(StaleRead("", bound, query=request))
            case GetRequest() if "follower-local-reads" in self.config.test_mutations:
                return await self.driver.submit(StaleRead(request.key, float("inf")))
            case RangeRequest() if "follower-local-reads" in self.config.test_mutations:
                return await self.driver.submit(StaleRead("", float("inf"), query=request))
            case (
                GetRequest()
                | RangeRequest()
                | SetRequest()
                | CasRequest()
                | DeleteRequest()
                | DeleteRangeRequest()
                | LeaseGrantRequest()
                | LeaseRevokeRequest()
                | LeaseKeepAliveRequest()
            ):
                return await self._leader_operation(request, span)
            case MoveLeaderRequest():
                return await self.driver.submit(MoveLeader(request.target))
            case MemberListRequest():
                return await self.driver.submit(ListMembers())
            case MemberChangeRequest():
                recorded = span if span.is_recording() else None
                return await self.driver.submit(ChangeMembers(request, recorded))
            case _:
                return _bad_request(f"{type(request).__name__} is not a client request")

    async def _leader_operation(self, request: LeaderRequest, span: Span) -> ClientReply:
        recorded = span if span.is_recording() else None
        op: Read | Write | KeepAlive
        if isinstance(request, GetRequest):
            op = Read(request.key, recorded)
        elif isinstance(request, RangeRequest):
            op = Read("", recorded, query=request)
        elif isinstance(request, LeaseKeepAliveRequest):
            op = KeepAlive(request.lease)
        else:
            write = _to_kv_request(request)
            if isinstance(write, ErrorReply):
                return write
            op = Write(write, recorded)
        # The driver answers TIMEOUT itself once request_timeout_s has passed (one sweep
        # per tick instead of a cancel scope per request).
        reply = await self.driver.submit(op)
        if (
            isinstance(reply, ErrorReply)
            and reply.code == ErrorCode.NOT_LEADER
            and (request.forward or self.config.forward)
            and reply.leader_addr
        ):
            with trio.move_on_after(self.config.request_timeout_s):
                return await self._forward(request, reply.leader_addr, span)
            return timed_out(self.config.request_timeout_s)
        return reply

    async def _forward(
        self,
        request: LeaderRequest,
        leader_addr: str,
        parent: Span,
    ) -> ClientReply:
        """Relay to the leader (once: the leader never forwards again) and relay back."""
        address = parse_address(leader_addr)
        relayed = dataclasses.replace(request, forward=False)
        try:
            with self.tracer.start_as_current_span(
                "proxy to leader",
                context=trace.set_span_in_context(parent),
                kind=SpanKind.CLIENT,
                attributes={"raftd.leader_addr": leader_addr},
            ) as hop:
                with trio.fail_after(FORWARD_CONNECT_TIMEOUT_S):
                    tcp = await trio.open_tcp_stream(address.host, address.port)
                try:
                    context = None if self._credentials is None else self._credentials.current
                    link = await dial(
                        tcp,
                        None if context is None else context.proxy_client,
                        server_hostname=address.host,
                        timeout_s=HANDSHAKE_TIMEOUT_S,
                    )
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await tcp.aclose()
                    raise
                stream = FramedStream(link, CLIENT_REGISTRY)
                try:
                    hop_parent = traceparent_of(hop)
                    state = PROXIED_TRACESTATE if hop_parent is not None else None
                    header = Header(type(relayed).__name__, 1, hop_parent, state)
                    await stream.send(header, relayed)
                    received = await stream.receive()
                finally:
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, WireError, TlsFailure) as exc:
            # A failed handshake sent nothing: the write certainly did not happen.
            definite = isinstance(
                request, GetRequest | RangeRequest | LeaseKeepAliveRequest
            ) or isinstance(exc, TlsFailure)
            return ErrorReply(
                ErrorCode.UNAVAILABLE,
                f"forwarding to the leader at {leader_addr} failed: {exc}",
                definite,
            )
        if received is None:
            return ErrorReply(
                ErrorCode.UNAVAILABLE, "the leader closed the forwarded request", False
            )
        _, reply = received
        return reply  # type: ignore[no-any-return]


async def _drop_when_closed(closed: trio.Event, watcher: Watcher) -> None:
    await closed.wait()
    watcher.drop("the client closed the connection")


def _watch_event(change: Change) -> WatchEvent:
    stored = change.stored
    if stored is None:
        return WatchEvent(change.key, None, change.revision, 0, 0, 0)
    return WatchEvent(change.key, stored.value, change.revision, *stored[1:])


def _operation_name(request: object) -> str:
    match request:
        case GetRequest(max_staleness_s=bound):
            return "get" if bound is None else "stale_get"
        case RangeRequest(max_staleness_s=bound):
            return "range" if bound is None else "stale_range"
        case SetRequest():
            return "set"
        case CasRequest():
            return "cas"
        case DeleteRequest():
            return "delete"
        case DeleteRangeRequest():
            return "delete_range"
        case LeaseGrantRequest():
            return "lease_grant"
        case LeaseRevokeRequest():
            return "lease_revoke"
        case LeaseKeepAliveRequest():
            return "lease_keepalive"
        case WatchRequest():
            return "watch"
        case StatusRequest() | StateHashRequest():
            return "status"
        case SnapshotRequest():
            return "snapshot"
        case MoveLeaderRequest():
            return "move_leader"
        case MemberListRequest():
            return "member_list"
        case MemberChangeRequest():
            return "member_change"
        case _:
            return "invalid"


def _outcome(reply: ClientReply) -> str:
    """A bounded outcome label for metrics and spans."""
    match reply:
        case ErrorReply(code=ErrorCode.NOT_LEADER | ErrorCode.NO_LEADER):
            return "redirected"
        case ErrorReply(code=ErrorCode.TIMEOUT):
            return "timeout"
        case ErrorReply(code=ErrorCode.LEADERSHIP_LOST):
            return "leadership_lost"
        case ErrorReply(
            code=ErrorCode.TOO_STALE
            | ErrorCode.BAD_REQUEST
            | ErrorCode.TOO_LARGE
            | ErrorCode.SESSION
        ):
            return "refused"
        case ErrorReply():
            return "error"
        case GetReply(found=False):
            return "not_found"
        case WriteReply(ok=False):
            return "not_swapped"
        case _:
            return "ok"


def _to_kv_request(request: WriteRequest) -> kv.Request | ErrorReply:
    command: kv.Command
    match request:
        case SetRequest():
            command = kv.Set(request.key, request.value, request.lease)
        case CasRequest(mod_revision=None):
            command = kv.Cas(request.key, request.expected, request.value, request.lease)
        case CasRequest(mod_revision=int(revision)):
            command = kv.CasRevision(request.key, revision, request.value, request.lease)
        case DeleteRequest():
            command = kv.Delete(request.key)
        case DeleteRangeRequest():
            command = kv.DeleteRange(request.start, request.end)
        case LeaseGrantRequest(ttl_s=ttl_s):
            if not 1 <= ttl_s <= kv.MAX_LEASE_TTL_S:
                return _bad_request(f"a lease TTL must be 1..{kv.MAX_LEASE_TTL_S} seconds")
            command = kv.LeaseGrant(ttl_s)
        case LeaseRevokeRequest():
            command = kv.LeaseRevoke(request.lease)
    # Out of range, these would reach the log as an entry no member can decode.
    lease, revision = getattr(command, "lease", 0), getattr(command, "mod_revision", 0)
    if not 0 <= lease <= kv.MAX_SEQ or (isinstance(command, kv.LeaseRevoke) and not lease):
        return _bad_request(f"lease {lease} is not a lease id")
    if not 0 <= revision <= kv.MAX_SEQ:
        return _bad_request(f"revision {revision} is out of range")
    try:
        return kv.Request(request.client_id, request.seq, command)
    except ValueError as exc:
        return _bad_request(str(exc))


async def _say_before_closing(stream: FramedStream, refusal: ErrorReply, *, drain: bool) -> None:
    """Send a connection-level refusal (request id 0), bounded in time; with ``drain``, then
    read and drop what the client still sends, since closing with unread bytes resets the
    connection and can discard the answer before the client reads it. No EOF is sent:
    answers to earlier requests may still be on their way out."""
    with (
        trio.move_on_after(REFUSAL_SEND_TIMEOUT_S),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await stream.send(Header("ErrorReply", 0), refusal)
        while drain and await stream.stream.receive_some(DRAIN_CHUNK_BYTES):
            pass


def refusal(request: object) -> ErrorReply | None:
    """What a request is refused for before it goes anywhere (a stale read, a forward, the
    driver): a field over its size limit, or a number out of its range."""
    too_large = size_refusal(request)
    if too_large is not None:
        return too_large
    match request:
        case GetRequest(max_staleness_s=bound) | RangeRequest(max_staleness_s=bound) if (
            bound is not None and bound < 0
        ):
            return _bad_request("max_staleness_s must not be negative")
        case RangeRequest(limit=limit) if limit < 0:
            return _bad_request("limit must not be negative")
        case WatchRequest(start_revision=revision) if revision < 0:
            return _bad_request("start_revision must not be negative")
        case _:
            return None


def size_refusal(request: object) -> ErrorReply | None:
    """The definite refusal of a key or value over its limit (None when within bounds)."""
    oversized = oversized_field(request)
    if oversized is None:
        return None
    return ErrorReply(ErrorCode.TOO_LARGE, f"{oversized}; nothing was proposed", True)


def _bad_request(why: str) -> ErrorReply:
    return ErrorReply(ErrorCode.BAD_REQUEST, why, True)
