"""Length-prefixed frames: a 4-byte big-endian length, then exactly that many payload bytes.

Sans-I/O, so the daemon, raftctl and the tests share one decoder, and any hostile byte
sequence can be replayed deterministically without a socket. The announced length is
checked as soon as its four bytes are in, before any of the body is buffered: a peer that
announces 4 GiB costs us four bytes, not four gigabytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial
from typing import NoReturn

DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024

_HEADER = struct.Struct(">I")
_HEADER_BYTES = _HEADER.size
_LARGEST_LENGTH = 2**32 - 1
# Consumed bytes are dropped from the front of the buffer only once they are this many and
# at least half of it, so each byte is moved at most once on average (no quadratic copying).
_COMPACT_AFTER = 64 * 1024


class WireError(Exception):
    """The peer broke the framing; the connection can only be dropped.

    The base of every error that bytes from the network can cause, so a connection handler
    needs one ``except`` and can let anything else (our own bugs) propagate.
    """


class FrameTooLarge(WireError):
    """A frame longer than the limit, refused before its body is read or written."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class TruncatedFrame(WireError):
    """The stream ended inside a frame, so the peer died or lied mid-message."""

    def __init__(self, received: int, expected: int | None) -> None:
        wanted = "a 4-byte header" if expected is None else f"{expected} bytes"
        super().__init__(f"stream ended {received} bytes into a frame of {wanted}")
        self.received = received
        # Header plus payload; None when the stream ended inside the header itself.
        self.expected = expected


def _check_limit(max_frame_bytes: int) -> None:
    if not 0 <= max_frame_bytes <= _LARGEST_LENGTH:
        raise ValueError(
            f"max_frame_bytes must be between 0 and {_LARGEST_LENGTH}, not {max_frame_bytes}"
        )


def encode_frame(payload: bytes, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """``payload`` with its length prefix.

    Refuses what the peer's decoder would refuse, so an oversized message fails here, at its
    cause, rather than as a dropped connection on the other side.
    """
    _check_limit(max_frame_bytes)
    if len(payload) > max_frame_bytes:
        raise FrameTooLarge(len(payload), max_frame_bytes)
    return b"".join((_HEADER.pack(len(payload)), payload))


class FrameDecoder:
    """Turns a byte stream, in chunks of any size, back into the frames it carries.

    Between calls the buffer holds only the whole frames not yet taken with ``next_frame``
    and at most one partial frame, shorter than ``max_frame_bytes`` + 4: every header is
    checked as soon as it is complete, including those behind frames not yet taken.

    Any error poisons the decoder: every later call raises the same kind of error, and no
    more frames come out, not even those that arrived before the bad bytes. The connection
    is going to be dropped, and stopping at once means nothing acts on a stream already
    known to be corrupt.
    """

    __slots__ = ("_buffer", "_checked", "_closed", "_limit", "_poison", "_start")

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        _check_limit(max_frame_bytes)
        self._limit = max_frame_bytes
        self._buffer = bytearray()
        # The next frame to hand out starts at ``_start``; the bytes in
        # ``[_start, _checked)`` are whole frames, each within the limit.
        self._start = 0
        self._checked = 0
        # Builds a fresh copy of the error that poisoned the decoder: re-raising a single
        # instance would grow its traceback on every call.
        self._poison: Callable[[], WireError] | None = None
        self._closed = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet handed out, for flow control and for the tests."""
        return len(self._buffer) - self._start

    def receive_data(self, data: bytes | bytearray) -> None:
        """Appends ``data`` (an empty chunk is a no-op, not end of stream: see ``close``)."""
        self._raise_if_poisoned()
        if self._closed:
            raise RuntimeError("receive_data() after close()")
        self._buffer += data
        self._scan()

    def next_frame(self) -> bytes | None:
        """The next whole payload, or None until more data arrives."""
        self._raise_if_poisoned()
        if self._start == self._checked:
            return None
        (length,) = _HEADER.unpack_from(self._buffer, self._start)
        begin = self._start + _HEADER_BYTES
        end = begin + length
        # One copy, straight into the result; slicing the bytearray would copy twice.
        with memoryview(self._buffer) as view:
            payload = bytes(view[begin:end])
        self._start = end
        self._compact()
        return payload

    def close(self) -> None:
        """Marks the end of the stream, which must fall on a frame boundary.

        Whole frames still buffered stay available to ``next_frame`` after a clean close.
        """
        self._raise_if_poisoned()
        self._closed = True
        partial_bytes = len(self._buffer) - self._checked
        if partial_bytes == 0:
            return
        expected: int | None = None
        if partial_bytes >= _HEADER_BYTES:
            (length,) = _HEADER.unpack_from(self._buffer, self._checked)
            expected = _HEADER_BYTES + length
        self._fail(partial(TruncatedFrame, partial_bytes, expected))

    def _scan(self) -> None:
        """Moves ``_checked`` over the whole frames now buffered, vetting each header.

        Each header is read once when its frame completes, plus once per chunk while its
        body is still arriving, so the cost is linear in the data received.
        """
        buffer = self._buffer
        end = len(buffer)
        pos = self._checked
        while end - pos >= _HEADER_BYTES:
            (length,) = _HEADER.unpack_from(buffer, pos)
            if length > self._limit:
                self._fail(partial(FrameTooLarge, length, self._limit))
            if end - pos - _HEADER_BYTES < length:
                break
            pos += _HEADER_BYTES + length
        self._checked = pos

    def _compact(self) -> None:
        if self._start == len(self._buffer):
            self._buffer.clear()
            self._start = self._checked = 0
        elif self._start >= _COMPACT_AFTER and 2 * self._start >= len(self._buffer):
            del self._buffer[: self._start]
            self._checked -= self._start
            self._start = 0

    def _fail(self, make_error: Callable[[], WireError]) -> NoReturn:
        self._poison = make_error
        # Nothing buffered will ever be used; give the memory back now.
        self._buffer = bytearray()
        self._start = self._checked = 0
        raise make_error()

    def _raise_if_poisoned(self) -> None:
        if self._poison is not None:
            raise self._poison()
