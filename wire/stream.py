"""The one piece of trio in wire/: frames over a trio stream, typed by a Registry."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import trio

from wire.codec import Header, Registry, decode_payload, encode_payload
from wire.frame import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, WireError, encode_frame

RECEIVE_CHUNK_BYTES = 64 * 1024


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
            return await self.stream.receive_some(RECEIVE_CHUNK_BYTES)
        with trio.move_on_at(deadline):
            return await self.stream.receive_some(RECEIVE_CHUNK_BYTES)
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
            await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()
