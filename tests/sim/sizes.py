"""Value sizes the simulator proposes, and the check that every message can be framed.

The simulator used to propose a few bytes per command and never ask whether a message
fit the transport: AppendEntries capped only by entry count then built frames over the
peer frame limit as soon as values were large and a follower lagged, which killed real
members while every simulated run stayed green. Now each seed draws a size profile up
to the largest entry the client port admits, and every message is held against the real
codec's frame limit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import count

from raftd.core import AppendEntries, Message
from raftd.core.types import InstallSnapshot
from tests.sim.checker import Violation
from wire.api import MAX_KEY_BYTES, MAX_VALUE_BYTES, PEER_REGISTRY
from wire.codec import Header, decode_payload, encode_payload
from wire.frame import DEFAULT_MAX_FRAME_BYTES

# The largest command the client port lets into the log: a cas carries a key, an expected
# value and a new value, plus the encoding's few bytes and a session id.
MAX_COMMAND_BYTES = MAX_KEY_BYTES + 2 * MAX_VALUE_BYTES + 512
# Sound upper bounds of the CBOR encoding: a whole message apart from its entries' bytes
# (header with a traceparent and every integer field at nine bytes), and one entry apart
# from its data and context (list head, three integers, two byte/text heads).
_MESSAGE_BOUND = 512
_ENTRY_BOUND = 64
# Every this many messages one is encoded and decoded for real, so the bound above and the
# registry stay honest without paying the codec on every message.
ROUND_TRIP_EVERY = 64


@dataclass(frozen=True, slots=True)
class ValueSizes:
    """How much padding each proposal carries: mostly none, in some seeds up to the max."""

    name: str
    large_share: float  # of proposals, padded to a size drawn up to ``largest``
    largest: int

    @staticmethod
    def draw(seed: int) -> ValueSizes:
        # Its own generator: adding sizes must not change the faults a seed draws.
        rng = random.Random(seed * 2_654_435_761 + 97)
        roll = rng.random()
        if roll < 0.6:
            return ValueSizes("tiny", 0.0, 0)
        if roll < 0.85:
            return ValueSizes("medium", 0.5, 64 * 1024)
        return ValueSizes("large", 0.15, MAX_COMMAND_BYTES)

    def padding(self, rng: random.Random) -> int:
        if self.large_share == 0 or rng.random() >= self.large_share:
            return 0
        return rng.randint(0, self.largest)


class FrameCheck:
    """Raises ``Violation`` for a message the peer transport could not frame or the codec
    does not carry unchanged."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._counter = count(1)
        self.encoded = 0

    def check(self, msg: Message) -> None:
        if isinstance(msg, InstallSnapshot):
            return  # the transport moves a snapshot in chunks, each within the frame limit
        bound = _MESSAGE_BOUND
        if isinstance(msg, AppendEntries):
            for entry in msg.entries:
                bound += _ENTRY_BOUND + len(entry.data) + len(entry.context)
        if bound <= self.max_frame_bytes and next(self._counter) % ROUND_TRIP_EVERY:
            return
        self.encoded += 1
        header = Header(type(msg).__name__)
        payload = encode_payload(header, PEER_REGISTRY.to_body(msg))
        if len(payload) > self.max_frame_bytes:
            raise Violation(
                f"{type(msg).__name__} n{msg.src}->n{msg.dst} is {len(payload)} bytes encoded, "
                f"over the {self.max_frame_bytes}-byte frame limit: the transport cannot send it"
            )
        decoded = PEER_REGISTRY.from_body(header.kind, decode_payload(payload)[1])
        if decoded != msg:
            raise Violation(f"{type(msg).__name__} does not survive the codec: {msg!r}")
