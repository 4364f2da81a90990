"""The raftd client library: one object that turns "talk to a cluster" into "call a method".

A cluster is a moving target (leaders change, members crash, connections drop), and every
caller (raftctl, the benchmark, the fault-injection harness) needs the same answers to the
same questions, so they live here once:

* Where to send it. The last known leader first; a ``not_leader`` reply names the leader's
  address and the client follows it (even to an address it was not configured with); on
  ``no_leader``, a refused connection or a dead member it moves on to the next endpoint
  with a growing back-off.
* When to give up. One deadline (``timeout_s``) covers the whole operation, redirects and
  retries included, so a caller's latency bound is the number it passed in.
* What is too large to send. Keys and values over the cluster's limits (``MAX_KEY_BYTES``,
  ``MAX_VALUE_BYTES``) are refused here, with the member's own ``too_large`` code and
  wording, so the caller learns the limit without a round trip and nothing is sent.
* What a failure means. A write whose request may have reached a server is only ever
  retried with the same session id and sequence number (the server's session table makes
  the retry exactly-once); if the deadline passes without a definite answer the caller gets
  ``UnknownOutcome`` and must not assume either way. A request that provably never left
  this process, or was definitely refused, gives a ``DefiniteError``.

Connections are persistent (one per endpoint, opened on first use) and pipelined: any number
of tasks may share a ``Client``; each request carries its own request id, and one reader
task per connection hands each reply to the task waiting for it, in whatever order the
server answers.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
import socket
import ssl
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar

import trio
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from observability.propagation import traceparent_of
from wire.api import (
    CLIENT_REGISTRY,
    CasRequest,
    ClientRequest,
    DeleteRangeRequest,
    DeleteRequest,
    ErrorCode,
    ErrorReply,
    GetReply,
    GetRequest,
    KeyValue,
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
    StatusReply,
    StatusRequest,
    WatchEvent,
    WatchReply,
    WatchRequest,
    WriteReply,
    oversized_field,
)
from wire.codec import Header
from wire.frame import WireError
from wire.stream import FramedStream
from wire.tls import TlsFailure, TlsStream, handshake, is_handshake_refusal, wrap
from wire.tls import explain as explain_tls

__all__ = [
    "CODE_BUSY",
    "CODE_CONNECTION_LOST",
    "CODE_UNREACHABLE",
    "DEFAULT_TIMEOUT_S",
    "Attempt",
    "CallStats",
    "Client",
    "ClientError",
    "DefiniteError",
    "MemberStatus",
    "Unavailable",
    "UnknownOutcome",
    "next_start",
    "parse_endpoint",
]

DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_ATTEMPT_TIMEOUT_S: Final = 1.0
DEFAULT_BACKOFF_INITIAL_S: Final = 0.05
DEFAULT_BACKOFF_MAX_S: Final = 0.5
DEFAULT_WRITE_SESSIONS: Final = 64

# Client-side codes, next to the server's ErrorCode values.
CODE_UNREACHABLE: Final = "unreachable"  # nothing could be sent anywhere
# A watch whose member said nothing for this long (it reports progress every 2 s) moves on.
WATCH_SILENCE_S: Final = 5.0
CODE_CONNECTION_LOST: Final = "connection_lost"  # sent, then the connection died
CODE_TLS: Final = "tls"  # definite: the TLS handshake failed with every member asked
CODE_BUSY: Final = "client_busy"  # every write session stayed busy until the deadline

Reply = TypeVar(
    "Reply",
    GetReply,
    RangeReply,
    WriteReply,
    LeaseReply,
    StatusReply,
    MoveLeaderReply,
    MemberListReply,
    MemberChangeReply,
)


# ------------------------------------------------------------------ endpoints


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) to a host and port; ``ValueError`` otherwise.

    Checked up front so that a typo is a configuration error at start-up and not, five
    seconds later, an "unreachable cluster".
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"endpoint {text!r} has no port: expected HOST:PORT, e.g. 127.0.0.1:7001")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() for c in host) or "[" in host or "]" in host:
        raise ValueError(f"endpoint {text!r} has no valid host: expected HOST:PORT")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"endpoint {text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


async def open_stream(endpoint: str, tls: ssl.SSLContext | None) -> FramedStream:
    """A framed connection to ``endpoint``; with ``tls``, after a handshake in which the
    member's certificate was checked against its host. ``OSError`` when it cannot be
    reached; ``TlsFailure`` saying why when the two sides disagree about TLS; a connection
    lost during the handshake (a member restarting) is ``trio.BrokenResourceError``, as it
    would be without TLS."""
    host, port = parse_endpoint(endpoint)
    tcp = await trio.open_tcp_stream(host, port)
    if tls is None:
        return FramedStream(tcp, CLIENT_REGISTRY)
    link = wrap(tcp, tls, server_hostname=host)
    try:
        await handshake(link)
    except TlsFailure as exc:
        tcp.socket.close()
        if exc.configuration:
            raise
        raise trio.BrokenResourceError(f"TLS: {exc}") from exc
    except BaseException:
        tcp.socket.close()
        raise
    return FramedStream(link, CLIENT_REGISTRY)


def socket_of(stream: FramedStream) -> trio.SocketStream | None:
    """The TCP stream under a framed one, TLS or not."""
    inner = stream.stream
    if isinstance(inner, TlsStream):
        inner = inner.transport_stream
    return inner if isinstance(inner, trio.SocketStream) else None


# --------------------------------------------------------------------- errors


@dataclass(slots=True)
class Attempt:
    """One try at one endpoint, kept so a trace or an error message can tell the story."""

    endpoint: str
    request_id: int | None = None  # None: no connection, nothing was sent
    outcome: str = "pending"


@dataclass(slots=True)
class CallStats:
    """What one operation took. Pass one in to read it after a success; errors carry theirs.

    ``client_id`` and ``seq`` identify a write's session slot, which is what a history
    checker needs to match a retried write with its original.
    """

    operation: str = ""
    client_id: str | None = None
    seq: int | None = None
    history: list[Attempt] = field(default_factory=list)
    redirects: int = 0
    elapsed_s: float = 0.0
    endpoint: str | None = None  # who gave the final answer

    @property
    def attempts(self) -> int:
        return len(self.history)


class ClientError(Exception):
    """A failed operation. ``definite`` is the one bit that matters for a write: True means
    it certainly did not take effect (or the server certainly refused it); False means it
    may or may not have."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        definite: bool,
        endpoint: str | None = None,
        stats: CallStats | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.definite = definite
        self.endpoint = endpoint
        self.stats = stats if stats is not None else CallStats()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class DefiniteError(ClientError):
    """The server refused (``bad_request``, ``session``, ``too_stale``, ...), or the request
    provably never took effect."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        endpoint: str | None = None,
        stats: CallStats | None = None,
    ) -> None:
        super().__init__(code, message, definite=True, endpoint=endpoint, stats=stats)


class Unavailable(DefiniteError):
    """The cluster could not serve the request before the deadline, and nothing took effect:
    every endpoint was unreachable or had no leader, and no request reached a server in a
    way that could still be applied. Retrying later is safe.

    A subclass of ``DefiniteError`` because that is what it is for a history checker, but
    callers that report to people usually treat it like ``UnknownOutcome`` ("try again"),
    not like a refusal.
    """


class UnknownOutcome(ClientError):
    """No definite answer before the deadline after the request may have reached a server:
    a write may or may not have happened, and may still happen later."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        endpoint: str | None = None,
        stats: CallStats | None = None,
    ) -> None:
        super().__init__(code, message, definite=False, endpoint=endpoint, stats=stats)


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member's answer to ``status_all``: exactly one of ``reply`` and ``error`` is set,
    so one unreachable member does not hide the others."""

    endpoint: str
    reply: StatusReply | None = None
    error: ClientError | None = None

    @property
    def ok(self) -> bool:
        return self.reply is not None


# ----------------------------------------------------------------- internals


class _ConnectFailed(Exception):
    """No connection: the request certainly did not leave this process. ``tls``: the
    member was reached, but the TLS handshake failed (a configuration problem, which
    retrying will not fix)."""

    def __init__(self, reason: str, *, tls: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tls = tls


class _ConnectionLost(Exception):
    """The connection died with our request on it (or broke while it was being written)."""

    def __init__(self, reason: str, *, sent: bool, tls: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent
        self.tls = tls


class _AttemptTimedOut(Exception):
    """No reply (or no connection) within the attempt's timeout."""


class _Waiter:
    __slots__ = ("event", "expect", "lost", "reply", "timed_out", "written")

    def __init__(self, expect: tuple[type, ...]) -> None:
        self.event = trio.Event()
        self.expect = expect
        self.reply: Any = None
        self.lost: str | None = None
        self.timed_out = False  # no reply by the attempt's deadline (``Client._keep_time``)
        # Handed to the kernel (or being): from then on the server may have it.
        self.written = False


class _Connection:
    """One TCP connection, the requests waiting on it by request id, and the frames queued
    for its writer task.

    Requests from every task go out through one writer, which sends whatever queued up
    during its previous write in one system call: with many tasks sharing a connection, a
    send per request (and a lock handed from task to task) was the largest cost on both
    ends of the connection."""

    def __init__(self, endpoint: str, stream: FramedStream) -> None:
        self.endpoint = endpoint
        self.stream = stream
        self.pending: dict[int, _Waiter] = {}
        self.lost: str | None = None
        # The member refused the TLS handshake (TLS 1.3 says so only at the first read):
        # it read none of the requests, whatever was written.
        self.tls_refused = False
        self.outgoing: list[tuple[_Waiter, bytes]] = []
        self.wakeup = trio.Event()

    def queue(self, waiter: _Waiter, frame: bytes) -> None:
        self.outgoing.append((waiter, frame))
        self.wakeup.set()

    def fail(self, reason: str) -> None:
        """Wakes every waiter with the reason, once; later callers keep the first reason."""
        if self.lost is not None:
            return
        self.lost = reason
        for waiter in self.pending.values():
            waiter.lost = reason
            waiter.written = waiter.written and not self.tls_refused
            waiter.event.set()
        self.pending.clear()
        self.outgoing.clear()
        self.wakeup.set()


@dataclass(slots=True)
class _Session:
    client_id: str
    next_seq: int = 1


@dataclass(slots=True)
class _Operation:
    request: ClientRequest
    expect: type
    leader_only: bool
    stats: CallStats
    # Some attempt sent the request and ended without a definite answer, so the request may
    # still take effect: sticky, since later "not leader" answers say nothing about it.
    possibly_delivered: bool = False
    indefinite_code: str = ErrorCode.TIMEOUT
    saw_no_leader: bool = False
    # Endpoint -> its distinct failure reasons, in order: "no leader known, connection
    # refused" tells the story of a member that went down mid-operation.
    failures: dict[str, list[str]] = field(default_factory=dict)

    def failed(self, endpoint: str, reason: str) -> None:
        reasons = self.failures.setdefault(endpoint, [])
        if reason not in reasons:
            reasons.append(reason)

    def ambiguous(self, code: str) -> None:
        self.possibly_delivered = True
        self.indefinite_code = code


class _Backoff:
    """Doubling waits between retries, each drawn between half and all of its step.

    Without the jitter every client that lost its leader at the same instant retried in
    lockstep, and each retry wave arrived at the new leader at once."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        self._step = initial_s
        self._max = max_s
        self._rng = rng

    def next_delay(self) -> float:
        delay = self._step * (0.5 + 0.5 * self._rng.random())
        self._step = min(self._step * 2, self._max)
        return delay

    async def sleep(self) -> None:
        await trio.sleep(self.next_delay())

    async def sleep_until_next(self, deadline: float) -> None:
        """The next wait, cut short by ``deadline``."""
        await trio.sleep_until(min(trio.current_time() + self.next_delay(), deadline))


def _describe_os_error(exc: OSError) -> str:
    """The root cause in a few words: trio wraps per-address failures in a group."""
    leaves: list[BaseException] = [exc]
    if isinstance(exc.__cause__, BaseExceptionGroup):
        leaves = list(_leaves(exc.__cause__)) or leaves
    first = leaves[0]
    if isinstance(first, ConnectionRefusedError):
        return "connection refused"
    if isinstance(first, socket.gaierror):
        return f"cannot resolve the host ({first.strerror})"
    if isinstance(first, TimeoutError):
        return "connect timed out"
    if isinstance(first, OSError) and first.strerror:
        return first.strerror[:1].lower() + first.strerror[1:]
    return str(first)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return _describe_os_error(exc)
    return str(exc) or type(exc).__name__


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


def _summarize(failures: dict[str, list[str]]) -> str:
    """``a, b: connection refused; c: no reply`` (endpoints grouped by reason, in order)."""
    by_reason: dict[str, list[str]] = {}
    for endpoint, reasons in failures.items():
        by_reason.setdefault(", ".join(reasons), []).append(endpoint)
    return "; ".join(f"{', '.join(eps)}: {reason}" for reason, eps in by_reason.items())


def next_start(reply: RangeReply) -> str:
    """Where the range after ``reply`` starts: just past its last key."""
    return reply.items[-1].key + "\0" if reply.items else ""


def _check_staleness(max_staleness_s: float | None) -> None:
    if max_staleness_s is not None and not (
        max_staleness_s >= 0 and math.isfinite(max_staleness_s)
    ):
        raise ValueError("max_staleness_s must be a non-negative number of seconds")


def _check_sizes(request: ClientRequest, stats: CallStats) -> None:
    """Raise the member's own refusal of a key or value over its limit, before sending.

    The member checks the same limits (a client of another version may not), in the same
    words, ending "nothing was sent" instead of "nothing was proposed"."""
    oversized = oversized_field(request)
    if oversized is not None:
        raise DefiniteError(ErrorCode.TOO_LARGE, f"{oversized}; nothing was sent", stats=stats)


_NO_LEADER: Final = "no leader known"

# Indefinite server answers: the request may still take effect; retry with the same seq.
_RETRY_SAME_ENDPOINT: Final = frozenset({ErrorCode.TIMEOUT, ErrorCode.LEADERSHIP_LOST})


# --------------------------------------------------------------------- client


@contextmanager
def _operation_span(tracer: trace.Tracer, operation: str, stats: CallStats) -> Iterator[Span]:
    """One span per call; its children are the attempts, so redirects and retries show up
    as siblings in the waterfall, each with its endpoint and outcome."""
    with tracer.start_as_current_span(f"client.{operation}") as span:
        try:
            yield span
        finally:
            if span.is_recording():
                span.set_attribute("raftd.attempts", stats.attempts)
                span.set_attribute("raftd.redirects", stats.redirects)
                if stats.client_id:
                    span.set_attribute("raftd.session_seq", stats.seq)


class Client:
    """A session with a raftd cluster; use as ``async with Client([...]) as client:``.

    Writes are numbered per session (``client_id``, sequence numbers from 1). The server
    remembers only each session's latest sequence number, so a session must never have two
    writes in flight: a later one overtaking an earlier one would make the earlier one
    "stale", and its retries unanswerable. Concurrent writes from several tasks therefore
    each take a session of their own from a small pool (``client_id`` itself, then
    ``client_id-1``, ``client_id-2``, ...); sequential use only ever touches ``client_id``.
    At most ``write_sessions`` writes are in flight at once; further writes wait, inside
    their own deadline.

    ``attempt_timeout_s`` bounds the wait for one member's reply before trying the next, so
    a hung (not crashed) leader does not use up the whole deadline; a write abandoned this
    way is retried with the same sequence number, like any other indefinite outcome.
    """

    def __init__(
        self,
        endpoints: list[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client_id: str | None = None,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        write_sessions: int = DEFAULT_WRITE_SESSIONS,
        tracer: trace.Tracer | None = None,
        rng: random.Random | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: connect with TLS, verifying each member's certificate against the host
        of its address (``wire.tls.client_context`` builds one)."""
        if isinstance(endpoints, str):
            raise TypeError("endpoints must be a list of HOST:PORT strings, not one string")
        self._endpoints = list(dict.fromkeys(endpoints))
        if not self._endpoints:
            raise ValueError("at least one endpoint is needed")
        for endpoint in self._endpoints:
            parse_endpoint(endpoint)
        for name, value in (
            ("timeout_s", timeout_s),
            ("attempt_timeout_s", attempt_timeout_s),
            ("backoff_max_s", backoff_max_s),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if not (0 < backoff_initial_s <= backoff_max_s):
            # Zero would turn a cluster without a leader into a busy loop.
            raise ValueError("backoff_initial_s must be more than 0 and at most backoff_max_s")
        if write_sessions < 1:
            raise ValueError("write_sessions must be at least 1")
        if client_id == "":
            raise ValueError("client_id must not be empty (the empty id means no session)")
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self._tls = tls
        # Spans of each call and attempt; the request's trace context goes in the frame
        # header, so the member's server span joins the caller's trace.
        self._tracer = tracer or trace.get_tracer("raftd.client")
        # A NoOpTracer (raftctl bench's default) makes spans that record nothing, but
        # creating, entering and ending two of them per request still cost about a tenth of
        # the client's CPU per request: with one, the span code is skipped entirely. (Any
        # other tracer may start recording later, when a provider is installed.)
        self._tracing = not isinstance(self._tracer, trace.NoOpTracer)
        self.client_id = client_id if client_id is not None else uuid.uuid4().hex
        self._backoff = (backoff_initial_s, backoff_max_s)
        # Each client its own draws (seeded by the OS unless a test passes one), so that
        # clients that failed together do not retry together.
        self._rng = rng if rng is not None else random.Random()
        self._leader: str | None = None
        self._connections: dict[str, _Connection] = {}
        # Attempts waiting for a reply, by deadline (an attempt's own, or its call's if that
        # comes first): one task times them all (``_keep_time``) instead of a cancel scope
        # per request and another per call.
        self._due: list[tuple[float, int, _Waiter]] = []
        self._due_sooner = trio.Event()
        self._connect_locks: dict[str, trio.Lock] = {}
        self._next_request_id = 1
        self._idle_sessions: list[_Session] = []
        self._sessions_created = 0
        self._session_slots = trio.Semaphore(write_sessions)
        self._nursery_manager: Any = None
        self._nursery: trio.Nursery | None = None
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Client:
        if self._nursery is not None or self._closed:
            raise RuntimeError("a Client can be entered only once")
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._nursery.start_soon(self._keep_time)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        assert self._nursery is not None
        for conn in list(self._connections.values()):
            conn.fail("the client was closed")
        self._connections.clear()
        self._nursery.cancel_scope.cancel()
        # The body's exception is not handed to the nursery: it would come out wrapped in an
        # ExceptionGroup, and callers should see their own DefiniteError as it was raised.
        # Only a crash in a reader task (a bug) surfaces from here.
        await self._nursery_manager.__aexit__(None, None, None)

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    @property
    def leader_endpoint(self) -> str | None:
        """The last known leader's client address (None until one answers or is named)."""
        return self._leader

    # --------------------------------------------------------------- operations

    async def get(
        self, key: str, *, max_staleness_s: float | None = None, stats: CallStats | None = None
    ) -> GetReply:
        """Linearizable (from the leader) unless ``max_staleness_s`` is given: then any
        member may answer from its own state, starting with the first endpoint, so list the
        nearest member first."""
        _check_staleness(max_staleness_s)
        request = GetRequest(key, max_staleness_s)
        leader_only = max_staleness_s is None
        return await self._call("get", request, GetReply, leader_only=leader_only, stats=stats)

    async def range(
        self,
        start: str,
        end: str | None,
        *,
        limit: int = 0,
        max_staleness_s: float | None = None,
        stats: CallStats | None = None,
    ) -> RangeReply:
        """Keys in ``[start, end)`` in order (``end`` None: to the last key), at most
        ``limit`` (0: as many as one reply holds). A reply with ``more`` continues with
        ``range(next_start(reply), end)``; each page is read at its own revision."""
        _check_staleness(max_staleness_s)
        if limit < 0:
            raise ValueError("limit must not be negative")
        request = RangeRequest(start, end, limit, max_staleness_s)
        leader_only = max_staleness_s is None
        return await self._call("range", request, RangeReply, leader_only=leader_only, stats=stats)

    async def range_all(
        self,
        start: str,
        end: str | None,
        *,
        limit: int = 0,
        max_staleness_s: float | None = None,
    ) -> RangeReply:
        """Every key of ``[start, end)`` (at most ``limit``; 0: all), page after page, as
        one reply: every page's items, the last page's revision (each page is read at its
        own), and ``more`` when ``limit`` stopped it short."""
        items: list[KeyValue] = []
        while True:
            want = limit - len(items) if limit else 0
            page = await self.range(start, end, limit=want, max_staleness_s=max_staleness_s)
            items.extend(page.items)
            if not page.more or (limit and len(items) >= limit):
                return dataclasses.replace(page, items=tuple(items))
            start = next_start(page)

    async def set(
        self, key: str, value: str, *, lease: int = 0, stats: CallStats | None = None
    ) -> WriteReply:
        """``lease`` (0: none) ties the key to a lease: it is deleted when the lease ends."""
        return await self._write(
            "set", lambda cid, seq: SetRequest(key, value, cid, seq, lease=lease), stats=stats
        )

    async def cas(
        self,
        key: str,
        expected: str | None,
        value: str,
        *,
        mod_revision: int | None = None,
        lease: int = 0,
        stats: CallStats | None = None,
    ) -> WriteReply:
        """Swap to ``value`` if ``key`` holds ``expected`` (None: if it is absent), or,
        with ``mod_revision``, if it was last modified at that revision (0: is absent). A
        failed comparison is an answer, not an error: ``ok`` is False and ``value`` is
        current."""
        return await self._write(
            "cas",
            lambda cid, seq: CasRequest(
                key, expected, value, cid, seq, mod_revision=mod_revision, lease=lease
            ),
            stats=stats,
        )

    async def delete(self, key: str, *, stats: CallStats | None = None) -> WriteReply:
        """``ok`` tells whether the key existed."""
        return await self._write(
            "delete", lambda cid, seq: DeleteRequest(key, cid, seq), stats=stats
        )

    async def delete_range(
        self, start: str, end: str | None, *, stats: CallStats | None = None
    ) -> WriteReply:
        """Every key in ``[start, end)``; ``count`` says how many there were."""
        return await self._write(
            "delete_range", lambda cid, seq: DeleteRangeRequest(start, end, cid, seq), stats=stats
        )

    async def lease_grant(self, ttl_s: int, *, stats: CallStats | None = None) -> LeaseReply:
        """A new lease, alive for ``ttl_s`` unless kept alive; its id is in the reply."""
        return await self._write(
            "lease_grant",
            lambda cid, seq: LeaseGrantRequest(ttl_s, cid, seq),
            expect=LeaseReply,
            stats=stats,
        )

    async def lease_revoke(self, lease: int, *, stats: CallStats | None = None) -> WriteReply:
        """End a lease now and delete its keys (``ok``: it existed)."""
        return await self._write(
            "lease_revoke", lambda cid, seq: LeaseRevokeRequest(lease, cid, seq), stats=stats
        )

    async def lease_keepalive(self, lease: int, *, stats: CallStats | None = None) -> LeaseReply:
        """Renew a lease for another TTL; a definite ``not_found`` once it has expired."""
        request = LeaseKeepAliveRequest(lease)
        return await self._call(
            "lease_keepalive", request, LeaseReply, leader_only=True, stats=stats
        )

    async def watch(
        self, start: str, end: str | None, *, start_revision: int = 0
    ) -> AsyncGenerator[WatchEvent, None]:
        """Every change to keys in ``[start, end)`` from ``start_revision`` on (0: from
        now), in revision order, until the caller stops iterating.

        A watch outlives its member: when the connection is lost, the member goes quiet
        (it reports progress every couple of seconds, so silence means it is gone) or it
        ends the watch (it read too slowly, installed a snapshot), the watch resumes on the
        next member from where it was, and since revisions are the same everywhere nothing
        is lost or repeated; a revision whose changes were cut between two replies resumes
        at that revision, skipping what was already delivered. ``DefiniteError``
        (``compacted``) when no member still has the changes asked for."""
        if start_revision < 0:
            raise ValueError("start_revision must not be negative")
        self._check_open()
        # Where the next request starts, and how many changes at that revision the caller
        # has had already (a revision's changes can span two replies).
        resume, seen_at_resume = start_revision, 0
        backoff = _Backoff(*self._backoff, self._rng)
        compacted: set[str] = set()
        for endpoint in itertools.cycle(self._endpoints):
            try:
                with trio.fail_after(self.timeout_s):
                    stream = await open_stream(endpoint, self._tls)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, TlsFailure):
                await backoff.sleep()
                continue
            repeats, answered = seen_at_resume, False
            try:
                await stream.send(Header("WatchRequest", 1), WatchRequest(start, end, resume))
                while True:
                    with trio.fail_after(WATCH_SILENCE_S):
                        received = await stream.receive()
                    reply = None if received is None else received[1]
                    if isinstance(reply, ErrorReply) and reply.code == ErrorCode.COMPACTED:
                        compacted.add(endpoint)
                        if len(compacted) >= len(self._endpoints):
                            raise DefiniteError(reply.code, reply.message, endpoint=endpoint)
                    if not isinstance(reply, WatchReply):
                        break  # ended (why is in the ErrorReply) or lost: resume elsewhere
                    if compacted:  # this member had the changes: start counting afresh
                        compacted.clear()
                    if not answered:  # a member that answers resets the back-off
                        answered, backoff = True, _Backoff(*self._backoff, self._rng)
                    if resume == 0:  # "from now" is pinned to this member's now
                        resume = reply.revision + 1
                    for event in reply.events:
                        if event.revision < resume:
                            continue
                        if event.revision == resume and repeats:
                            repeats -= 1
                            continue
                        yield event
                        if event.revision == resume:
                            seen_at_resume += 1
                        else:
                            resume, seen_at_resume = event.revision, 1
            except (WireError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the connection is gone: resume elsewhere
            except trio.TooSlowError:
                pass  # the member went silent (gone, cut off): resume elsewhere
            finally:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
            await backoff.sleep()
        raise AssertionError("unreachable: itertools.cycle never ends")

    async def move_leader(self, target: str, *, stats: CallStats | None = None) -> MoveLeaderReply:
        """Ask the leader to hand its leadership to the member named ``target``; returns
        once ``target`` leads (a definite error if the transfer failed: the leader is then
        unchanged)."""
        request = MoveLeaderRequest(target)
        return await self._call(
            "move_leader", request, MoveLeaderReply, leader_only=True, stats=stats
        )

    async def member_list(self, *, stats: CallStats | None = None) -> MemberListReply:
        """The members as the leader sees them: roles, addresses, how far behind each is."""
        request = MemberListRequest()
        return await self._call(
            "member_list", request, MemberListReply, leader_only=True, stats=stats
        )

    async def change_members(
        self, request: MemberChangeRequest, *, stats: CallStats | None = None
    ) -> MemberChangeReply:
        """Add, promote or remove one member; returns once the change is committed."""
        return await self._call(
            "member_change", request, MemberChangeReply, leader_only=True, stats=stats
        )

    async def status(self, endpoint: str, *, stats: CallStats | None = None) -> StatusReply:
        """One member's own view; no redirects, since the point is to ask that member."""
        parse_endpoint(endpoint)
        self._check_open()
        stats = stats if stats is not None else CallStats()
        stats.operation = "status"
        op = _Operation(StatusRequest(), StatusReply, leader_only=False, stats=stats)
        start = trio.current_time()
        try:
            with trio.fail_after(self.timeout_s):
                reply = await self._status_attempts(endpoint, op)
        except trio.TooSlowError:
            current = stats.history[-1]
            what = "connect timed out" if current.request_id is None else "no reply"
            current.outcome = f"{what} (deadline)"
            message = f"{endpoint}: {what} within {self.timeout_s:g} s"
            if current.request_id is None:
                raise Unavailable(
                    CODE_UNREACHABLE, message, endpoint=endpoint, stats=stats
                ) from None
            raise UnknownOutcome(
                ErrorCode.TIMEOUT, message, endpoint=endpoint, stats=stats
            ) from None
        finally:
            stats.elapsed_s = trio.current_time() - start
        if reply.role == "leader":
            self._leader = endpoint
        return reply

    async def status_all(self) -> list[MemberStatus]:
        """Every configured member, asked concurrently, in the configured order."""
        results: dict[str, MemberStatus] = {}

        async def ask(endpoint: str) -> None:
            try:
                results[endpoint] = MemberStatus(endpoint, reply=await self.status(endpoint))
            except ClientError as exc:
                results[endpoint] = MemberStatus(endpoint, error=exc)

        async with trio.open_nursery() as nursery:
            for endpoint in self._endpoints:
                nursery.start_soon(ask, endpoint)
        return [results[endpoint] for endpoint in self._endpoints]

    # ---------------------------------------------------------- the retry loop

    async def _write(
        self,
        operation: str,
        build: Callable[[str, int], ClientRequest],
        *,
        expect: type[Reply] = WriteReply,  # type: ignore[assignment]
        stats: CallStats | None,
    ) -> Reply:
        self._check_open()
        stats = stats if stats is not None else CallStats()
        stats.operation = operation
        start = trio.current_time()
        with self._operation_span(operation, stats):
            return await self._write_attempts(build, expect, stats, start)

    async def _write_attempts(
        self,
        build: Callable[[str, int], ClientRequest],
        expect: type[Reply],
        stats: CallStats,
        start: float,
    ) -> Reply:
        # Waiting for a free session counts against the deadline too: the caller's bound
        # is on the whole call, not on the part spent talking to the cluster.
        deadline = start + self.timeout_s
        try:
            session = await self._take_session(deadline)
            if session is None:
                raise Unavailable(
                    CODE_BUSY,
                    f"all write sessions of this client stayed busy for {self.timeout_s:g} s;"
                    " nothing was sent",
                    stats=stats,
                )
            try:
                seq = session.next_seq
                session.next_seq += 1  # used up even if this write fails: never reused
                stats.client_id, stats.seq = session.client_id, seq
                request = build(session.client_id, seq)
                # Refused here, before anything is sent; the seq is used up, as by any
                # write that fails.
                _check_sizes(request, stats)
                op = _Operation(request, expect, leader_only=True, stats=stats)
                reply: Reply = await self._attempts(op, deadline)
                return reply
            finally:
                self._idle_sessions.append(session)
                self._session_slots.release()
        finally:
            stats.elapsed_s = trio.current_time() - start

    async def _call(
        self,
        operation: str,
        request: ClientRequest,
        expect: type[Reply],
        *,
        leader_only: bool,
        stats: CallStats | None,
    ) -> Reply:
        self._check_open()
        stats = stats if stats is not None else CallStats()
        stats.operation = operation
        _check_sizes(request, stats)
        op = _Operation(request, expect, leader_only=leader_only, stats=stats)
        start = trio.current_time()
        with self._operation_span(operation, stats):
            try:
                reply: Reply = await self._attempts(op, start + self.timeout_s)
                return reply
            finally:
                stats.elapsed_s = trio.current_time() - start

    async def _attempts(self, op: _Operation, deadline: float) -> Any:
        """Try endpoints until one answers definitely or ``deadline`` (the call's) passes.

        The call's deadline is kept without a cancel scope of its own (one per call was a
        sixth of the client's CPU per request): each attempt's wait for its reply or
        connection ends by the sooner of its own timeout and the call's, and so does each
        back-off."""
        stats = op.stats
        backoff = _Backoff(*self._backoff, self._rng)
        target = self._endpoints[0]
        if op.leader_only and self._leader is not None:
            target = self._leader
        cursor = self._endpoints.index(target) if target in self._endpoints else 0
        # Members that redirected us since the last back-off: being sent back to one of them
        # means the cluster is mid-election, and bouncing between them at full speed helps
        # no one.
        bounced: set[str] = set()
        tls_refused: set[str] = set()

        def advance() -> str:
            nonlocal cursor
            if target in self._endpoints:
                cursor = self._endpoints.index(target)
            cursor = (cursor + 1) % len(self._endpoints)
            return self._endpoints[cursor]

        while True:
            attempt = Attempt(target)
            span = self._attempt_span(op, target)
            try:
                with trace.use_span(span, end_on_exit=False) if self._tracing else nullcontext():
                    stats.history.append(attempt)
                    reply: Any = None
                    timed_out = False
                    try:
                        reply = await self._exchange(
                            target, op.request, op.expect, attempt, op,
                            min(trio.current_time() + self.attempt_timeout_s, deadline),
                        )  # fmt: skip
                    except _AttemptTimedOut:
                        if trio.current_time() >= deadline:
                            raise self._deadline_error(op) from None
                        timed_out = True
                    except _ConnectFailed as exc:
                        attempt.outcome = f"connect failed: {exc.reason}"
                        op.failed(target, exc.reason)
                        if exc.tls:
                            tls_refused.add(target)
                    except _ConnectionLost as exc:
                        attempt.outcome = f"connection lost: {exc.reason}"
                        lost = exc.reason if exc.tls else f"connection lost ({exc.reason})"
                        op.failed(target, lost)
                        if exc.sent:
                            op.ambiguous(CODE_CONNECTION_LOST)
                        if exc.tls:
                            tls_refused.add(target)
                    if timed_out:
                        what = "no reply" if attempt.request_id is not None else "connect timed out"
                        attempt.outcome = f"{what} within {self.attempt_timeout_s:g} s"
                        op.failed(target, what)
                        if attempt.request_id is not None:
                            op.ambiguous(ErrorCode.TIMEOUT)

                    if reply is None:  # connection trouble or a silent member: try someone else
                        if tls_refused >= set(self._endpoints) and not op.possibly_delivered:
                            # Every member refused TLS: a configuration mistake, which
                            # waiting out the deadline would only hide.
                            raise DefiniteError(
                                CODE_TLS,
                                f"TLS failed with every member ({_summarize(op.failures)})",
                                stats=stats,
                            ) from None
                        self._forget_leader(target)
                        target = advance()
                        await self._back_off(backoff, op, deadline)
                        continue

                    if not isinstance(reply, ErrorReply):
                        attempt.outcome = "ok"
                        stats.endpoint = target
                        if op.leader_only:
                            self._leader = target
                        return reply

                    attempt.outcome = reply.code
                    if reply.code == ErrorCode.NOT_LEADER and reply.leader_addr:
                        stats.redirects += 1
                        bounced.add(target)
                        leader_addr = reply.leader_addr
                        try:
                            parse_endpoint(leader_addr)
                        except ValueError:
                            op.failed(target, f"named an unusable leader address {leader_addr!r}")
                            target = advance()
                            await self._back_off(backoff, op, deadline)
                            continue
                        self._leader = leader_addr
                        if leader_addr in bounced:
                            bounced.clear()
                            await self._back_off(backoff, op, deadline)
                        target = leader_addr
                        continue
                    if reply.code in (ErrorCode.NOT_LEADER, ErrorCode.NO_LEADER):
                        op.saw_no_leader = True
                        op.failed(target, _NO_LEADER)
                        self._forget_leader(target)
                        target = advance()
                        await self._back_off(backoff, op, deadline)
                        continue
                    if reply.definite and reply.code != ErrorCode.UNAVAILABLE:
                        raise DefiniteError(
                            reply.code, reply.message, endpoint=target, stats=stats
                        ) from None
                    # Unavailable (this member cannot serve it, someone else may) or indefinite (it
                    # may still take effect): retry, with the same seq.
                    if not reply.definite:
                        op.ambiguous(reply.code)
                    op.failed(target, f"{reply.code}: {reply.message}")
                    if reply.code not in _RETRY_SAME_ENDPOINT:
                        self._forget_leader(target)
                        target = advance()
                    await self._back_off(backoff, op, deadline)
            finally:
                span.set_attribute("raftd.attempt_outcome", attempt.outcome or "cancelled")
                span.end()

    async def _back_off(self, backoff: _Backoff, op: _Operation, deadline: float) -> None:
        await backoff.sleep_until_next(deadline)
        if trio.current_time() >= deadline:
            raise self._deadline_error(op)

    async def _status_attempts(self, endpoint: str, op: _Operation) -> StatusReply:
        """At most two attempts: the second only when a pooled connection turned out to be
        dead (the member restarted since we last spoke), which says nothing about the
        member now."""
        for retry in (False, True):
            attempt = Attempt(endpoint)
            op.stats.history.append(attempt)
            reused = endpoint in self._connections
            try:
                reply = await self._exchange(
                    endpoint, op.request, StatusReply, attempt, op, math.inf
                )
            except _ConnectFailed as exc:
                attempt.outcome = f"connect failed: {exc.reason}"
                if exc.tls:
                    raise DefiniteError(
                        CODE_TLS, f"{endpoint}: {exc.reason}", endpoint=endpoint, stats=op.stats
                    ) from None
                raise Unavailable(
                    CODE_UNREACHABLE,
                    f"cannot reach {endpoint}: {exc.reason}",
                    endpoint=endpoint,
                    stats=op.stats,
                ) from None
            except _ConnectionLost as exc:
                attempt.outcome = f"connection lost: {exc.reason}"
                if exc.tls:
                    raise DefiniteError(
                        CODE_TLS, f"{endpoint}: {exc.reason}", endpoint=endpoint, stats=op.stats
                    ) from None
                if reused and not retry:
                    continue
                raise UnknownOutcome(
                    CODE_CONNECTION_LOST,
                    f"{endpoint}: connection lost ({exc.reason})",
                    endpoint=endpoint,
                    stats=op.stats,
                ) from None
            attempt.outcome = reply.code if isinstance(reply, ErrorReply) else "ok"
            if isinstance(reply, ErrorReply):
                cls = DefiniteError if reply.definite else UnknownOutcome
                raise cls(reply.code, reply.message, endpoint=endpoint, stats=op.stats)
            op.stats.endpoint = endpoint
            assert isinstance(reply, StatusReply)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _operation_span(
        self, operation: str, stats: CallStats
    ) -> AbstractContextManager[Span | None]:
        return _operation_span(self._tracer, operation, stats) if self._tracing else nullcontext()

    def _attempt_span(self, op: _Operation, target: str) -> Span:
        if not self._tracing:
            return trace.INVALID_SPAN
        return self._tracer.start_span(
            f"{type(op.request).__name__} {target}",
            kind=SpanKind.CLIENT,
            attributes={"raftd.endpoint": target, "raftd.attempt": len(op.stats.history) + 1},
        )

    def _forget_leader(self, endpoint: str) -> None:
        if self._leader == endpoint:
            self._leader = None

    def _deadline_error(self, op: _Operation) -> ClientError:
        """What running out of time means, given everything that happened on the way."""
        current = op.stats.history[-1] if op.stats.history else None
        if current is not None and current.outcome == "pending":
            if current.request_id is None:
                current.outcome = "connect timed out (deadline)"
                # A connect cut short by the deadline says something only about an endpoint
                # we know nothing else about (one that refused a moment ago still refuses).
                if current.endpoint not in op.failures:
                    op.failed(current.endpoint, "connect timed out")
            else:
                current.outcome = "no reply (deadline)"
                op.failed(current.endpoint, "no reply")
                op.ambiguous(ErrorCode.TIMEOUT)
        return self._final_error(op)

    def _final_error(self, op: _Operation) -> ClientError:
        summary = _summarize(op.failures)
        if op.possibly_delivered:
            return UnknownOutcome(
                op.indefinite_code,
                f"no definite answer within {self.timeout_s:g} s ({summary})",
                stats=op.stats,
            )
        reasons = {", ".join(endpoint_reasons) for endpoint_reasons in op.failures.values()}
        if reasons == {_NO_LEADER}:
            return Unavailable(
                ErrorCode.NO_LEADER,
                f"the cluster has no leader (asked {', '.join(op.failures)})",
                stats=op.stats,
            )
        code = ErrorCode.NO_LEADER if op.saw_no_leader else CODE_UNREACHABLE
        if len(reasons) == 1:
            message = f"cannot reach the cluster at {', '.join(op.failures)}: {reasons.pop()}"
        else:
            message = f"cannot reach the cluster ({summary})"
        return Unavailable(code, message, stats=op.stats)

    # ------------------------------------------------------------- connections

    async def _exchange(
        self,
        endpoint: str,
        request: ClientRequest,
        expect: type,
        attempt: Attempt,
        op: _Operation,
        deadline: float,
    ) -> Any:
        """One request, one reply (a success reply of ``expect``'s type or an ErrorReply);
        ``_AttemptTimedOut`` when none came by ``deadline``."""
        conn = self._connections.get(endpoint)
        if conn is None or conn.lost is not None:
            conn = None
            with trio.move_on_at(deadline):
                conn = await self._connection(endpoint)
            if conn is None:  # still connecting at the deadline
                raise _AttemptTimedOut
        request_id = self._next_request_id
        self._next_request_id += 1
        try:
            # Without a tracer of its own the client starts no spans, and an application's
            # span is not ours to continue.
            parent = traceparent_of(trace.get_current_span()) if self._tracing else None
            header = Header(type(request).__name__, request_id, parent)
            frame = conn.stream.encode(header, request)
        except (WireError, ValueError) as exc:  # too large, or text UTF-8 cannot encode
            raise DefiniteError(
                ErrorCode.BAD_REQUEST, f"cannot encode the request: {exc}", stats=op.stats
            ) from None
        waiter = _Waiter((expect, ErrorReply))
        conn.pending[request_id] = waiter
        attempt.request_id = request_id
        try:
            conn.queue(waiter, frame)
            if deadline != math.inf:
                due = self._due
                if not due or deadline < due[0][0]:
                    self._due_sooner.set()
                heapq.heappush(due, (deadline, request_id, waiter))
            await waiter.event.wait()
        finally:
            conn.pending.pop(request_id, None)
        if waiter.timed_out and waiter.reply is None and waiter.lost is None:
            raise _AttemptTimedOut
        if waiter.lost is not None:
            # A frame the writer never took cannot have reached the server.
            raise _ConnectionLost(waiter.lost, sent=waiter.written, tls=conn.tls_refused)
        return waiter.reply

    async def _keep_time(self) -> None:
        """Ends every attempt that got no reply by its deadline, in deadline order."""
        due = self._due
        while True:
            if not due:
                self._due_sooner = trio.Event()
                await self._due_sooner.wait()
                continue
            deadline, _, waiter = due[0]
            if waiter.event.is_set():
                heapq.heappop(due)  # answered (or its connection lost) in time
                continue
            if trio.current_time() < deadline:
                # Woken early when an attempt with a sooner deadline arrives.
                self._due_sooner = trio.Event()
                with trio.move_on_at(deadline):
                    await self._due_sooner.wait()
                continue
            heapq.heappop(due)
            waiter.timed_out = True
            waiter.event.set()

    async def _connection(self, endpoint: str) -> _Connection:
        conn = self._connections.get(endpoint)
        if conn is not None and conn.lost is None:
            return conn
        lock = self._connect_locks.setdefault(endpoint, trio.Lock())
        async with lock:
            # Another task may have connected while we waited for the lock.
            conn = self._connections.get(endpoint)
            if conn is not None and conn.lost is None:
                return conn
            self._check_open()
            try:
                stream = await open_stream(endpoint, self._tls)
            except OSError as exc:
                raise _ConnectFailed(_describe_os_error(exc)) from None
            except trio.BrokenResourceError as exc:  # lost during the TLS handshake
                raise _ConnectFailed(str(exc)) from None
            except TlsFailure as exc:  # a refusal, which retrying will not fix
                raise _ConnectFailed(f"TLS: {exc}", tls=True) from None
            conn = _Connection(endpoint, stream)
            self._connections[endpoint] = conn
            assert self._nursery is not None
            self._nursery.start_soon(self._read_replies, conn)
            self._nursery.start_soon(self._write_requests, conn)
            return conn

    async def _write_requests(self, conn: _Connection) -> None:
        while conn.lost is None:
            await conn.wakeup.wait()
            conn.wakeup = trio.Event()
            batch, conn.outgoing = conn.outgoing, []
            if not batch or conn.lost is not None:
                continue
            for waiter, _ in batch:
                waiter.written = True
            try:
                await conn.stream.send_encoded([frame for _, frame in batch])
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._discard(conn, f"send failed: {_describe(exc)}")
                return

    async def _read_replies(self, conn: _Connection) -> None:
        reason = "the server closed the connection"
        try:
            while True:
                received = await conn.stream.receive()
                if received is None:
                    break
                header, message = received
                if header.request_id == 0 and isinstance(message, ErrorReply):
                    # About the connection, not a request (too many connections, a
                    # plaintext client on a TLS port): the member read none of ours.
                    reason = message.message
                    conn.tls_refused = message.code == ErrorCode.TLS_REQUIRED
                    if message.code == ErrorCode.UNAVAILABLE or conn.tls_refused:
                        for pending in conn.pending.values():
                            pending.written = False
                    break
                waiter = conn.pending.get(header.request_id)
                if waiter is None:
                    continue  # a late reply to a request whose caller gave up
                if not isinstance(message, waiter.expect):
                    # Still pending, so _discard below wakes it with the reason.
                    reason = f"{type(message).__name__} is not a reply to that request"
                    break
                del conn.pending[header.request_id]
                waiter.reply = message
                waiter.event.set()
        except WireError as exc:
            reason = f"garbled reply ({exc})"
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            reason = _describe(exc)
            if is_handshake_refusal(exc):
                conn.tls_refused = True
                reason = f"TLS: {explain_tls(exc)}"
        finally:
            self._discard(conn, reason)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(conn.stream.stream)

    def _discard(self, conn: _Connection, reason: str) -> None:
        """Takes a connection out of use at once, so no new request lands on it and every
        request waiting on it is retried elsewhere."""
        conn.fail(reason)
        if self._connections.get(conn.endpoint) is conn:
            del self._connections[conn.endpoint]
        # Closing the socket here, without a checkpoint, stops any sender waiting for the
        # stream's lock from writing a whole frame after a half one.
        tcp = socket_of(conn.stream)
        if tcp is not None:
            tcp.socket.close()

    async def _take_session(self, deadline: float) -> _Session | None:
        """A write session of its own for the caller, who hands it back to
        ``_idle_sessions`` and releases its slot; None if none came free by ``deadline``.
        A free one is taken without a scheduling point: many writers woken by one read of
        replies then each send their next request in the same turn."""
        try:
            self._session_slots.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_at(deadline) as waited:
                await self._session_slots.acquire()
            if waited.cancelled_caught:
                return None
        if self._idle_sessions:
            return self._idle_sessions.pop()
        n = self._sessions_created
        self._sessions_created += 1
        return _Session(self.client_id if n == 0 else f"{self.client_id}-{n}")

    def _check_open(self) -> None:
        if self._nursery is None or self._closed:
            raise RuntimeError("use the Client inside 'async with Client(...) as client:'")
