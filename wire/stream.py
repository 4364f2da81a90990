"""The one piece of trio in wire/: frames over a trio stream, typed by a Registry."""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import trio

from wire.codec import Header, Registry, decode_payload, encode_payload
from wire.frame import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, WireError, encode_frame

RECEIVE_CHUNK_BYTES = 64 * 1024
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


@runtime_checkable
class WritesNow(Protocol):
    """A transport that can write without waiting (``RawSocket``, ``wire.tls.TlsStream``)."""

    def write_now(self, data: bytes) -> int: ...


class RawSocket:
    """A plain TCP stream's reads and writes, made on its descriptor directly.

    trio's ``SocketStream`` wraps every read and write in conflict detectors, error
    translators and a context manager per system call, and parks the task once more after
    each; with three to eight socket operations per request on every member, that
    machinery cost more than the system calls (docs/performance.md). Here a read or write
    is tried at once, the task waits (``wait_readable`` / ``wait_writable``) only when the
    socket has nothing to give or no room, and each call still yields once, so a busy
    connection never starves the other tasks. Errors are trio's: ``ClosedResourceError``
    for a socket closed under us, ``BrokenResourceError`` for the rest.
    """

    __slots__ = ("_drained", "socket")

    def __init__(self, socket: trio.socket.SocketType) -> None:
        self.socket = socket
        # The last read took less than it could: the socket was empty then, and the next
        # read would most likely only say so. Waiting first saves that system call on
        # every message of a quiet connection.
        self._drained = False

    def _descriptor(self) -> int:
        fd = self.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("this socket was already closed")
        return fd

    async def receive_some(self, max_bytes: int) -> bytes:
        waited = self._drained
        if waited:
            self._descriptor()  # closed already: say so rather than wait
            await trio.lowlevel.wait_readable(self.socket)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                data = os.read(self._descriptor(), max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.socket)
                waited = True
                continue
            except OSError as exc:
                raise _stream_error(exc) from exc
            self._drained = 0 < len(data) < max_bytes
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        waited = False
        while view:
            try:
                sent = os.write(self._descriptor(), view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.socket)
                waited = True
                continue
            except OSError as exc:
                raise _stream_error(exc) from exc
            view = view[sent:]
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def write_now(self, data: bytes) -> int:
        """As much of ``data`` as the socket takes at once, without waiting or yielding:
        the bytes written, 0 on any error (the caller's next ordinary send reports it)."""
        fd = self.socket.fileno()
        if fd < 0:
            return 0
        try:
            return os.write(fd, data)
        except OSError:
            return 0


def raw_socket_of(stream: trio.abc.Stream) -> RawSocket | None:
    """``stream``'s descriptor as a ``RawSocket`` when it is plain TCP on POSIX, else None."""
    if isinstance(stream, trio.SocketStream) and os.name == "posix":
        return RawSocket(stream.socket)
    return None


def _stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class FrameTimeout(WireError):
    """A frame was begun and not finished in time: a stalled or deliberately slow sender.

    Without it, a connection that sends half a frame and waits would hold its buffer and
    its connection slot forever, and enough of them would lock everyone else out."""

    def __init__(self, buffered: int, timeout_s: float) -> None:
        super().__init__(
            f"a frame begun ({buffered} bytes in) was not completed within {timeout_s:g} s"
        )
        self.buffered = buffered
        self.timeout_s = timeout_s


class FramedStream:
    """Reads and writes whole messages. Hostile bytes surface as WireError from
    ``receive``; the caller logs the reason and closes the connection."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        registry: Registry,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        frame_timeout_s: float | None = None,
    ) -> None:
        """``frame_timeout_s`` bounds how long ``receive`` waits for the rest of a frame
        once its first bytes are in (None: forever). Waiting *between* frames is never
        bounded: an idle client connection is legitimate, a half-sent frame is not."""
        self.stream = stream
        # Plain TCP goes through its descriptor; anything else (TLS) through the stream.
        self._io: RawSocket | trio.abc.Stream = raw_socket_of(stream) or stream
        self._writes_now = self._io if isinstance(self._io, WritesNow) else None
        self._registry = registry
        self._decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
        self._max_frame_bytes = max_frame_bytes
        self._frame_timeout_s = frame_timeout_s
        self._send_lock = trio.Lock()

    async def receive(self) -> tuple[Header, Any] | None:
        """The next message, or None when the peer closed cleanly between frames."""
        frame_deadline = math.inf  # set once the first bytes of a frame are in
        while True:
            payload = self._decoder.next_frame()
            if payload is not None:
                header, body = decode_payload(payload)
                return header, self._registry.from_body(header.kind, body)
            if (
                frame_deadline == math.inf
                and self._frame_timeout_s is not None
                and self._decoder.buffered_bytes
            ):
                # One deadline for the whole frame: a byte now and then does not extend it.
                frame_deadline = trio.current_time() + self._frame_timeout_s
            data = await self._receive_chunk(frame_deadline)
            if not data:
                self._decoder.close()  # raises TruncatedFrame if a frame was cut short
                return None
            self._decoder.receive_data(data)

    async def _receive_chunk(self, deadline: float) -> bytes | bytearray:
        if deadline == math.inf:  # no cancel scope on the common path
            return await self._io.receive_some(RECEIVE_CHUNK_BYTES)
        with trio.move_on_at(deadline):
            return await self._io.receive_some(RECEIVE_CHUNK_BYTES)
        raise FrameTimeout(self._decoder.buffered_bytes, self._frame_timeout_s or 0.0)

    def encode(self, header: Header, message: Any) -> bytes:
        payload = encode_payload(header, self._registry.to_body(message))
        return encode_frame(payload, max_frame_bytes=self._max_frame_bytes)

    async def send(self, header: Header, message: Any) -> None:
        await self.send_encoded((self.encode(header, message),))

    async def send_encoded(self, frames: Iterable[bytes]) -> None:
        """Write several frames in one system call; concurrent senders never interleave."""
        data = b"".join(frames)
        async with self._send_lock:
            await self._io.send_all(data)

    def write_now(self, data: bytes) -> int:
        """Write what the socket takes at once, without a scheduling point; the bytes
        written. 0 when that cannot be done here (a transport that cannot, a TLS handshake
        not done, another task's write under way, a full socket, an error): the caller
        sends whatever is left the ordinary way, next and before anything else, and that
        send reports any error. Over TLS all of ``data`` is taken or none; records left
        over show in ``unsent``."""
        if self._writes_now is None or self._send_lock.locked():
            return 0
        return self._writes_now.write_now(data)

    @property
    def unsent(self) -> bool:
        """TLS records ``write_now`` left for the next send (which the caller must make)."""
        return bool(getattr(self.stream, "unsent", False))

    async def aclose(self) -> None:
        await self.stream.aclose()


class TurnWrites:
    """Writes queued during a turn of the consensus loop, made by the loop itself.

    A sender task per connection wakes up to write what a turn queued, after the rest of
    the turn, with a task switch on the way: the AppendEntries of a write left the leader
    well after the turn built them, and a follower's answer waited for its apply
    (docs/performance.md). While the loop's task has a turn open, what it queues is
    ``defer``red here and written when the loop ``flush``es: each connection's frames in
    one write, from the loop's own thread, without a scheduling point. Other tasks wake
    their sender as before, and whatever a socket does not take at once is left to its
    sender task.
    """

    def __init__(self) -> None:
        self._owner: trio.lowlevel.Task | None = None
        self._deferred: dict[object, Callable[[], None]] = {}

    def open(self) -> None:
        """The calling task starts a turn."""
        self._owner = trio.lowlevel.current_task()

    def defer(self, key: object, write: Callable[[], None]) -> bool:
        """Have ``write`` called at the next ``flush``, once per ``key`` (a connection's
        sender) however often it is deferred. True when a write for ``key`` is due; False
        when the caller is not the task whose turn is open and none is (the caller then
        wakes its sender task)."""
        if key in self._deferred:
            return True
        if self._owner is None or trio.lowlevel.current_task() is not self._owner:
            return False
        self._deferred[key] = write
        return True

    def flush(self) -> None:
        while self._deferred:
            deferred, self._deferred = self._deferred, {}
            for write in deferred.values():
                write()

    def close(self) -> None:
        """End the turn: what it deferred is written now."""
        try:
            self.flush()
        finally:
            self._owner = None


class BatchedSender:
    """Frames queued by many tasks leave in one write per wake-up of the sending task.

    A member answering 64 pipelined requests on one connection would otherwise make 64
    ``send`` system calls, and on loopback each one also runs the receiver's half of TCP:
    it was the largest single cost of a busy leader. Whatever queued up while the previous
    write was under way goes out together in the next.

    Each request announces its reply with ``expect`` and then delivers it with ``queue``
    (or gives up with ``queue_nothing``); after ``close``, ``run`` returns once every
    expected reply has been written, so a client that half-closes after its last request
    still gets every answer. ``queue`` never blocks; the caller bounds what is in flight
    (``on_sent`` reports the frames written, or dropped, so it can hand back its slots).
    After a failed write the sender is broken: it drops what it holds and whatever comes
    later, still reporting each through ``on_sent``.
    """

    def __init__(
        self,
        stream: FramedStream,
        on_sent: Callable[[int], None],
        turn: TurnWrites | None = None,
    ) -> None:
        """``turn``: replies queued while it is open are written when the loop flushes
        it, by the loop, when this sender is not writing already."""
        self._stream = stream
        self._on_sent = on_sent
        self._turn = turn
        self._frames: list[bytes] = []
        self._weights: list[int] = []  # replies each frame completes (1, or 0 for a part)
        self._expected = 0
        self._wakeup = trio.Event()
        self._writing = False  # the task is in a write
        self._closing = False
        self.broken = False
        # Bytes queued and not yet handed to the socket: what a client that stopped
        # reading a stream of parts (a watch) has made us hold.
        self.backlog_bytes = 0

    def expect(self) -> None:
        self._expected += 1

    def queue(self, frame: bytes) -> None:
        self._expected -= 1
        if self.broken:
            self._on_sent(1)
            return
        self._frames.append(frame)
        self._weights.append(1)
        self.backlog_bytes += len(frame)
        self._wake()

    def queue_part(self, frame: bytes) -> None:
        """A piece of a reply still under way (a watch's events): written in order after
        what is queued, completing nothing; ``queue`` the last piece."""
        if self.broken:
            return
        self._frames.append(frame)
        self._weights.append(0)
        self.backlog_bytes += len(frame)
        self._wake()

    def queue_many(self, frames: list[bytes]) -> None:
        """One expected reply made of several frames (a backup in parts), written in order."""
        self._expected -= 1
        if self.broken:
            self._on_sent(1)
            return
        # Only the last frame completes the reply: the caller's accounting counts replies.
        self._frames.extend(frames[:-1])
        self._weights.extend([0] * (len(frames) - 1))
        self._frames.append(frames[-1])
        self._weights.append(1)
        self._wake()

    def queue_nothing(self) -> None:
        """The expected reply could not be made: give its slot back."""
        self._expected -= 1
        self._on_sent(1)
        self._wakeup.set()

    def _wake(self) -> None:
        turn = self._turn
        if self._writing or turn is None or not turn.defer(self, self._write_now):
            self._wakeup.set()

    def _write_now(self) -> None:
        """The turn's flush: everything queued, in one write, by the loop."""
        if self._writing or not self._frames:
            self._wakeup.set()  # the task writes them (or, closing, sees there is nothing)
            return
        data = b"".join(self._frames)
        written = self._stream.write_now(data)
        if written == len(data):
            replies = sum(self._weights)
            self._frames, self._weights = [], []
            self.backlog_bytes = 0
            self._on_sent(replies)
            if self._closing or self._stream.unsent:
                self._wakeup.set()  # (TLS records left over go with the task's next send)
            return
        # The rest goes first, as one frame that completes every reply it carries.
        self._frames, self._weights = [data[written:]], [sum(self._weights)]
        self.backlog_bytes = len(data) - written
        self._wakeup.set()

    def close(self) -> None:
        """Let ``run`` return once every expected reply is written."""
        self._closing = True
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            frames, self._frames = self._frames, []
            weights, self._weights = self._weights, []
            self.backlog_bytes = 0
            if frames or self._stream.unsent:
                self._writing = True
                try:
                    await self._stream.send_encoded(frames)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self.broken = True
                    dropped = sum(weights) + sum(self._weights)
                    self._frames, self._weights = [], []
                    self._on_sent(dropped)
                    return
                finally:
                    self._writing = False
                self._on_sent(sum(weights))
            if self._closing and not self._frames and self._expected <= 0:
                return
