"""The frame layer: round trips, every way a stream can be chunked, and hostile bytes.

The property tests compare the decoder with a reference reading of the whole stream at
once (``reference_decode``), so chunk boundaries, which the decoder must hide, are the only
thing that varies between the two.
"""

from __future__ import annotations

import struct
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.frame import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    FrameTooLarge,
    TruncatedFrame,
    WireError,
    encode_frame,
)

# The same examples on every run (seeded from the test itself), and no example database.
deterministic = settings(derandomize=True, database=None, max_examples=300, deadline=None)


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def drain(decoder: FrameDecoder) -> list[bytes]:
    frames: list[bytes] = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, repeats give empty chunks)."""
    points = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    return [data[start:end] for start, end in pairwise(points)]


def decode_chunks(
    chunks: list[bytes], max_frame_bytes: int
) -> tuple[list[bytes], WireError | None]:
    """Feeds ``chunks`` as a connection handler would: drain after each, close at the end."""
    decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
    frames: list[bytes] = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            frames.extend(drain(decoder))
        decoder.close()
    except WireError as error:
        return frames, error
    return frames, None


def reference_decode(
    stream: bytes, max_frame_bytes: int
) -> tuple[list[bytes], type[WireError] | None]:
    """The frames in ``stream`` read in one go, and the error that ends it, if any."""
    frames: list[bytes] = []
    pos = 0
    while pos < len(stream):
        if len(stream) - pos < 4:
            return frames, TruncatedFrame
        (length,) = struct.unpack_from(">I", stream, pos)
        if length > max_frame_bytes:
            return frames, FrameTooLarge
        if len(stream) - pos - 4 < length:
            return frames, TruncatedFrame
        frames.append(stream[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return frames, None


# ------------------------------------------------------------------ examples


def test_encoding_is_a_big_endian_length_then_the_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"x" * 258) == b"\x00\x00\x01\x02" + b"x" * 258


@pytest.mark.parametrize("payload", [b"", b"\x00", b"hello", bytes(range(256)) * 40])
def test_round_trip(payload: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(payload))
    assert decoder.next_frame() == payload
    assert decoder.next_frame() is None
    assert decoder.buffered_bytes == 0
    decoder.close()


def test_zero_length_frames_are_frames() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"") * 3)
    assert drain(decoder) == [b"", b"", b""]


def test_nothing_comes_out_until_a_frame_is_complete() -> None:
    decoder = FrameDecoder()
    data = encode_frame(b"abcdef")
    for byte in data[:-1]:
        decoder.receive_data(bytes([byte]))
        assert decoder.next_frame() is None
    assert decoder.buffered_bytes == len(data) - 1
    decoder.receive_data(data[-1:])
    assert decoder.next_frame() == b"abcdef"


def test_many_tiny_frames_in_one_chunk() -> None:
    payloads = [bytes([i % 256]) * (i % 3) for i in range(20_000)]
    decoder = FrameDecoder()
    decoder.receive_data(b"".join(encode_frame(p) for p in payloads))
    assert drain(decoder) == payloads
    assert decoder.buffered_bytes == 0
    decoder.close()


def test_frames_survive_compaction_of_the_buffer() -> None:
    # More than the compaction threshold of whole frames, then half a frame: draining the
    # whole frames moves the half frame to the front of the buffer.
    payloads = [bytes([i % 256]) * 100 for i in range(1_000)]
    last = encode_frame(b"last" * 1_000)
    decoder = FrameDecoder()
    decoder.receive_data(b"".join(encode_frame(p) for p in payloads) + last[:2_000])
    assert drain(decoder) == payloads
    assert decoder.buffered_bytes == 2_000
    decoder.receive_data(last[2_000:])
    assert drain(decoder) == [b"last" * 1_000]
    assert decoder.buffered_bytes == 0


def test_whole_frames_stay_available_after_a_clean_close() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"a") + encode_frame(b"b"))
    decoder.close()
    decoder.close()  # closing twice is harmless
    assert drain(decoder) == [b"a", b"b"]


def test_data_after_close_is_a_caller_bug() -> None:
    decoder = FrameDecoder()
    decoder.close()
    with pytest.raises(RuntimeError):
        decoder.receive_data(b"\x00")


# ------------------------------------------------------------------ limits


def test_too_large_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    for byte in header(1025)[:3]:
        decoder.receive_data(bytes([byte]))
    assert decoder.buffered_bytes == 3
    with pytest.raises(FrameTooLarge) as refused:
        decoder.receive_data(header(1025)[3:])
    assert (refused.value.length, refused.value.limit) == (1025, 1024)
    assert decoder.buffered_bytes == 0  # the buffer is released, not kept for a dead stream


def test_a_4_gib_announcement_costs_four_bytes() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLarge) as refused:
        decoder.receive_data(header(2**32 - 1))
    assert (refused.value.length, refused.value.limit) == (2**32 - 1, DEFAULT_MAX_FRAME_BYTES)


def test_too_large_behind_undrained_frames_is_refused_on_arrival() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    decoder.receive_data(encode_frame(b"ok"))
    with pytest.raises(FrameTooLarge):
        decoder.receive_data(encode_frame(b"fine") + header(11))


@pytest.mark.parametrize("limit", [0, 1, 1000])
def test_exactly_the_limit_is_accepted_and_one_more_refused(limit: int) -> None:
    payload = b"x" * limit
    decoder = FrameDecoder(max_frame_bytes=limit)
    decoder.receive_data(encode_frame(payload, max_frame_bytes=limit))
    assert decoder.next_frame() == payload

    with pytest.raises(FrameTooLarge):
        encode_frame(payload + b"x", max_frame_bytes=limit)
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame_bytes=limit).receive_data(header(limit + 1))


def test_default_limit_boundary() -> None:
    payload = b"\xab" * DEFAULT_MAX_FRAME_BYTES
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(payload))
    assert decoder.next_frame() == payload

    with pytest.raises(FrameTooLarge) as refused:
        encode_frame(payload + b"\xab")
    assert (refused.value.length, refused.value.limit) == (
        DEFAULT_MAX_FRAME_BYTES + 1,
        DEFAULT_MAX_FRAME_BYTES,
    )
    with pytest.raises(FrameTooLarge):
        FrameDecoder().receive_data(header(DEFAULT_MAX_FRAME_BYTES + 1))


@pytest.mark.parametrize("limit", [-1, 2**32])
def test_impossible_limits_are_refused(limit: int) -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_bytes=limit)
    with pytest.raises(ValueError):
        encode_frame(b"", max_frame_bytes=limit)


# ------------------------------------------------------------------ truncation and poisoning


def test_stream_ending_inside_the_header_is_truncated() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"whole") + b"\x00\x00")
    with pytest.raises(TruncatedFrame) as truncated:
        decoder.close()
    assert (truncated.value.received, truncated.value.expected) == (2, None)


def test_stream_ending_inside_the_body_is_truncated() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"abcdef")[:7])
    assert decoder.next_frame() is None
    with pytest.raises(TruncatedFrame) as truncated:
        decoder.close()
    assert (truncated.value.received, truncated.value.expected) == (7, 10)


def test_too_large_poisons_the_decoder() -> None:
    decoder = FrameDecoder(max_frame_bytes=4)
    with pytest.raises(FrameTooLarge):
        decoder.receive_data(encode_frame(b"ok") + header(5))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()  # not even the frame that came before the bad header
    with pytest.raises(FrameTooLarge):
        decoder.receive_data(encode_frame(b"ok"))
    with pytest.raises(FrameTooLarge):
        decoder.receive_data(b"")
    with pytest.raises(FrameTooLarge) as again:
        decoder.close()
    assert (again.value.length, again.value.limit) == (5, 4)


def test_truncation_poisons_the_decoder() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"whole") + b"\x00")
    with pytest.raises(TruncatedFrame):
        decoder.close()
    with pytest.raises(TruncatedFrame):
        decoder.next_frame()
    with pytest.raises(TruncatedFrame):
        decoder.close()
    with pytest.raises(TruncatedFrame):
        decoder.receive_data(b"\x00\x00\x00")


def test_each_raise_is_a_fresh_error() -> None:
    # One instance raised again and again would pile up tracebacks on a long-lived object.
    decoder = FrameDecoder(max_frame_bytes=0)
    errors: list[WireError] = []
    for _ in range(2):
        try:
            decoder.receive_data(header(1))
        except WireError as error:
            errors.append(error)
    assert len(errors) == 2
    assert errors[0] is not errors[1]


# ------------------------------------------------------------------ properties

payload_lists = st.lists(st.binary(max_size=40), max_size=12)
cut_lists = st.lists(st.integers(min_value=0, max_value=600), max_size=20)


@deterministic
@given(payload_lists, cut_lists)
def test_any_chunking_yields_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    assert decode_chunks(split(stream, cuts), DEFAULT_MAX_FRAME_BYTES) == (payloads, None)


@deterministic
@given(payload_lists, cut_lists)
def test_any_chunking_yields_the_same_frames_when_drained_late(
    payloads: list[bytes], cuts: list[int]
) -> None:
    decoder = FrameDecoder()
    for chunk in split(b"".join(encode_frame(p) for p in payloads), cuts):
        decoder.receive_data(chunk)
    decoder.close()
    assert drain(decoder) == payloads
    assert decoder.buffered_bytes == 0


@deterministic
@given(payload_lists, cut_lists)
def test_buffer_never_holds_more_than_one_partial_frame(
    payloads: list[bytes], cuts: list[int]
) -> None:
    decoder = FrameDecoder(max_frame_bytes=40)
    for chunk in split(b"".join(encode_frame(p) for p in payloads), cuts):
        decoder.receive_data(chunk)
        drain(decoder)
        assert decoder.buffered_bytes < 40 + 4


def check_against_reference(chunks: list[bytes], max_frame_bytes: int) -> None:
    # Only a WireError is caught in decode_chunks: anything else fails the test.
    frames, error = decode_chunks(chunks, max_frame_bytes)
    expected_frames, expected_error = reference_decode(b"".join(chunks), max_frame_bytes)
    if expected_error is None:
        assert (frames, error) == (expected_frames, None)
    else:
        # Frames in the same chunk as the bad bytes may be withheld; none is invented.
        assert type(error) is expected_error
        assert frames == expected_frames[: len(frames)]


@deterministic
@given(st.binary(max_size=300), cut_lists, st.integers(min_value=0, max_value=300))
def test_hostile_bytes_raise_only_wire_errors(
    stream: bytes, cuts: list[int], max_frame_bytes: int
) -> None:
    check_against_reference(split(stream, cuts), max_frame_bytes)


@st.composite
def mostly_framed_streams(draw: st.DrawFn) -> bytes:
    """Valid frames with garbage and cut-off frames mixed in, so errors come late."""
    segment = st.one_of(
        st.builds(encode_frame, st.binary(max_size=30)),
        st.builds(encode_frame, st.binary(max_size=30)),
        st.binary(min_size=1, max_size=6),
        st.builds(lambda data, keep: encode_frame(data)[:keep], st.binary(), st.integers(0, 9)),
    )
    return b"".join(draw(st.lists(segment, max_size=10)))


@deterministic
@given(mostly_framed_streams(), cut_lists, st.integers(min_value=0, max_value=40))
def test_damaged_streams_raise_only_wire_errors(
    stream: bytes, cuts: list[int], max_frame_bytes: int
) -> None:
    check_against_reference(split(stream, cuts), max_frame_bytes)
