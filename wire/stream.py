"""The one piece of trio in wire/: frames over a trio stream, typed by a Registry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio

from wire.codec import Header, Registry, decode_payload, encode_payload
from wire.frame import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, encode_frame

RECEIVE_CHUNK_BYTES = 64 * 1024


class FramedStream:
    """Reads and writes whole messages. Hostile bytes surface as WireError from
    ``receive``; the caller logs the reason and closes the connection."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        registry: Registry,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.stream = stream
        self._registry = registry
        self._decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
        self._max_frame_bytes = max_frame_bytes
        self._send_lock = trio.Lock()

    async def receive(self) -> tuple[Header, Any] | None:
        """The next message, or None when the peer closed cleanly between frames."""
        while True:
            payload = self._decoder.next_frame()
            if payload is not None:
                header, body = decode_payload(payload)
                return header, self._registry.from_body(header.kind, body)
            data = await self.stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not data:
                self._decoder.close()  # raises TruncatedFrame if a frame was cut short
                return None
            self._decoder.receive_data(data)

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
