"""A scriptable stand-in for a raftd member's client port, for testing the client side alone.

Each test decides, request by request, what a member does: answer, redirect, drop the
connection, send garbage, or never answer. Every request is recorded with the connection
it came on, so tests can assert what the client sent (same session and sequence number on
a retry, one connection for many pipelined requests). ``wait_until`` lets a test wait for a
condition instead of sleeping.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from wire.api import (
    CLIENT_REGISTRY,
    CasRequest,
    ClientReply,
    ClientRequest,
    DeleteRequest,
    ErrorCode,
    ErrorReply,
    GetReply,
    GetRequest,
    SetRequest,
    StatusReply,
    StatusRequest,
    WriteReply,
)
from wire.codec import Header
from wire.frame import WireError
from wire.stream import FramedStream


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without answering."""


@dataclass(frozen=True, slots=True)
class Garbage:
    """Write these bytes instead of a reply (the connection stays open)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ReplyThenClose:
    """Answer, then close the connection: a member that restarts between requests."""

    reply: ClientReply


@dataclass(frozen=True, slots=True)
class Misaddressed:
    """Answer under another request id (one the client never used, or one it gave up on)."""

    reply: ClientReply
    request_id: int


@dataclass(frozen=True, slots=True)
class ThenStop:
    """Respond, then stop listening and close every connection: from then on the member
    refuses connections, so what a client sees next no longer depends on timing."""

    response: ClientReply | Drop


Response = ClientReply | Drop | Garbage | ReplyThenClose | Misaddressed | ThenStop


@dataclass(frozen=True, slots=True)
class Received:
    header: Header
    request: ClientRequest
    connection: int  # 1 for the first connection this node accepted, and so on


Handler = Callable[[Received], Awaitable[Response]]


class FakeNode:
    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self.handler = handler
        self.endpoint = ""
        self.received: list[Received] = []
        self.replied: list[int] = []  # request ids, in the order the replies were written
        self.connections = 0
        self._changed = trio.Event()
        self._scope = trio.CancelScope()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.endpoint = f"127.0.0.1:{port}"
        task_status.started()
        with self._scope:
            await trio.serve_listeners(self._serve_connection, listeners)
        for listener in listeners:
            await trio.aclose_forcefully(listener)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            changed = self._changed
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def requests(self, kind: type | None = None) -> list[ClientRequest]:
        return [r.request for r in self.received if kind is None or isinstance(r.request, kind)]

    async def _serve_connection(self, tcp: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        stream = FramedStream(tcp, CLIENT_REGISTRY)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    while True:
                        item = await stream.receive()
                        if item is None:
                            break
                        header, request = item
                        received = Received(header, request, number)
                        self.received.append(received)
                        self._notify()
                        nursery.start_soon(self._respond, stream, received, nursery.cancel_scope)
                except (WireError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(tcp)
            self._notify()

    async def _respond(
        self, stream: FramedStream, received: Received, connection_scope: trio.CancelScope
    ) -> None:
        response = await self.handler(received)
        stop = isinstance(response, ThenStop)
        if isinstance(response, ThenStop):
            response = response.response
        request_id = received.header.request_id
        try:
            if isinstance(response, Drop):
                await trio.aclose_forcefully(stream.stream)
                connection_scope.cancel()
                return
            if isinstance(response, Garbage):
                await stream.stream.send_all(response.data)
                return
            if isinstance(response, Misaddressed):
                request_id = response.request_id
            reply = response if isinstance(response, ClientReply) else response.reply
            await stream.send(Header(type(reply).__name__, request_id), reply)
            self.replied.append(request_id)
            self._notify()
            if isinstance(response, ReplyThenClose):
                await trio.aclose_forcefully(stream.stream)
                connection_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            if stop:
                self._scope.cancel()


async def start(nursery: trio.Nursery, name: str, handler: Handler) -> FakeNode:
    node = FakeNode(name, handler)
    await nursery.start(node.serve)
    return node


@dataclass
class ClosedPort:
    """An endpoint that refuses connections: a bound socket that never listens, held for
    the test so no one else can take the port meanwhile."""

    sock: socket.socket = field(default_factory=socket.socket)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------ ready-made members


@dataclass
class FakeKV:
    """A leader's behaviour, minus Raft: a dict, an index, and a session table that answers a
    retried (client_id, seq) with the recorded reply, as the real state machine does."""

    name: str
    endpoint: str = ""
    data: dict[str, str] = field(default_factory=dict)
    index: int = 0
    sessions: dict[str, tuple[int, WriteReply]] = field(default_factory=dict)
    applied: list[SetRequest | CasRequest | DeleteRequest] = field(default_factory=list)

    async def handle(self, received: Received) -> ClientReply:
        request = received.request
        match request:
            case StatusRequest():
                return self.status("leader", self.name, self.endpoint)
            case GetRequest(key=key):
                value = self.data.get(key)
                return GetReply(value is not None, value, self.name)
            case SetRequest() | CasRequest() | DeleteRequest():
                return self.write(request)
            case _:
                return ErrorReply(ErrorCode.BAD_REQUEST, "unexpected", True)

    def write(self, request: SetRequest | CasRequest | DeleteRequest) -> ClientReply:
        session = self.sessions.get(request.client_id)
        if session is not None:
            seq, reply = session
            if request.seq == seq:
                return reply
            if request.seq < seq:
                return ErrorReply(ErrorCode.SESSION, "stale sequence number", True)
        self.index += 1
        self.applied.append(request)
        current = self.data.get(request.key)
        match request:
            case SetRequest(key=key, value=value):
                self.data[key] = value
                reply = WriteReply(True, value, True, self.index)
            case CasRequest(key=key, expected=expected, value=value):
                if current == expected:
                    self.data[key] = value
                    reply = WriteReply(True, value, True, self.index)
                else:
                    reply = WriteReply(False, current, current is not None, self.index)
            case DeleteRequest(key=key):
                existed = self.data.pop(key, None) is not None
                reply = WriteReply(existed, None, False, self.index)
        self.sessions[request.client_id] = (request.seq, reply)
        return reply

    def status(self, role: str, leader: str | None, leader_addr: str | None) -> StatusReply:
        return StatusReply(
            node=self.name,
            role=role,
            term=3,
            leader=leader,
            commit_index=self.index,
            last_applied=self.index,
            last_index=self.index,
            client_addr=self.endpoint,
            leader_addr=leader_addr,
        )


def not_leader(leader: str, leader_addr: str) -> ErrorReply:
    return ErrorReply(ErrorCode.NOT_LEADER, f"{leader} is the leader", True, leader, leader_addr)


def no_leader() -> ErrorReply:
    return ErrorReply(ErrorCode.NO_LEADER, "no leader is known right now; retry shortly", True)
