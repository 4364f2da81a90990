"""The replicated key-value state machine that gives meaning to the core's opaque log entries.

Every node applies the same committed entries in the same order, so everything here must be
a pure function of that sequence: no clock, no randomness, no I/O, and no behaviour that
depends on memory or on dict iteration order. Divergence would not crash anything; it would
silently give different answers from different nodes, which is why ``state_hash`` exists.

Client sessions (Raft dissertation, section 6.3) make writes exactly-once: a client numbers
its writes, and a retry of a write that was already committed returns the recorded result
instead of applying it a second time, even if the first reply was lost.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final, assert_never

import cbor2

from raftd import kvsnapshot

__all__ = [
    "ERROR_STALE_SEQUENCE",
    "ERROR_UNDECODABLE",
    "MAX_SEQ",
    "Cas",
    "Command",
    "CommandDecodeError",
    "Delete",
    "KVStore",
    "Request",
    "Result",
    "Set",
    "decode_request",
    "encode_request",
]

ERROR_UNDECODABLE: Final = "undecodable command"
ERROR_STALE_SEQUENCE: Final = "stale sequence number"

# Sequence numbers fit CBOR's largest plain integer head, so every valid request has exactly
# one encoding and no bignum tag ever reaches the log.
MAX_SEQ: Final = 2**64 - 1

# Op codes are the wire format: never renumber, only add.
_OP_SET: Final = 0
_OP_CAS: Final = 1
_OP_DELETE: Final = 2


class CommandDecodeError(ValueError):
    """Bytes that are not a request; callers need one exception type whatever cbor2 raised."""


@dataclass(frozen=True, slots=True)
class Set:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Cas:
    """Compare-and-set. ``expected=None`` means "only if absent", so create-once needs no lock."""

    key: str
    expected: str | None
    value: str


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


Command = Set | Cas | Delete


@dataclass(frozen=True, slots=True)
class Request:
    """One numbered write of a client session; ``("", 0)`` is the session-less form.

    The pairing is enforced (a session id needs ``seq >= 1``, no id needs ``seq == 0``) so a
    request is never half in a session: a stray ``seq`` without an id would otherwise be
    silently ignored, and an id with ``seq == 0`` would be a session whose first retry is
    indistinguishable from "no session".
    """

    client_id: str
    seq: int
    command: Command

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= MAX_SEQ:
            raise ValueError(f"seq {self.seq} outside 0..2**64-1")
        if (self.client_id == "") != (self.seq == 0):
            raise ValueError(
                'client_id "" goes with seq 0 (no session), any other client_id with seq >= 1'
            )


@dataclass(frozen=True, slots=True)
class Result:
    """What a write did, as the client will see it, and as a session caches it for retries.

    ``error`` is set only when the request was not applied at all (undecodable or stale), so
    a client can tell "applied, condition failed" (``ok=False``, no error) from "refused".
    """

    ok: bool
    value: str | None
    found: bool
    error: str | None = None


_UNDECODABLE: Final = Result(ok=False, value=None, found=False, error=ERROR_UNDECODABLE)
_STALE: Final = Result(ok=False, value=None, found=False, error=ERROR_STALE_SEQUENCE)


def encode_request(req: Request) -> bytes:
    """Encode as a short CBOR array whose length depends on the op, to keep log entries small.

    Layouts: ``[client_id, seq, 0, key, value]`` for Set, ``[client_id, seq, 1, key, value,
    expected-or-null]`` for Cas, ``[client_id, seq, 2, key]`` for Delete. CBOR null keeps
    "absent" apart from the empty string without a separate flag. Strings that UTF-8 cannot
    encode (lone surrogates) raise ``UnicodeEncodeError``, a ``ValueError``, here on the
    client side rather than as an undecodable entry in the log.
    """
    match req.command:
        case Set(key, value):
            item: list[object] = [req.client_id, req.seq, _OP_SET, key, value]
        case Cas(key, expected, value):
            item = [req.client_id, req.seq, _OP_CAS, key, value, expected]
        case Delete(key):
            item = [req.client_id, req.seq, _OP_DELETE, key]
        case _:
            assert_never(req.command)
    return cbor2.dumps(item, canonical=True)


def decode_request(data: bytes) -> Request:
    """Decode what ``encode_request`` produced; anything else raises ``CommandDecodeError``.

    Only the exact deterministic encoding (RFC 8949 section 4.2) is accepted: checking that
    the request re-encodes to the same bytes rejects trailing garbage, padded integer heads
    and tags in one comparison, so a command has a single valid byte form. cbor2 can raise
    many exception types and return tags, sets or floats for hostile input, hence the broad
    catch around it and the exact type checks after it (``type(x) is int`` keeps bools out).
    """
    try:
        item: Any = cbor2.loads(data, max_depth=1, allow_indefinite=False)
    except Exception as exc:
        raise CommandDecodeError(f"not CBOR: {exc}") from exc
    if type(item) is not list or not 4 <= len(item) <= 6:
        raise CommandDecodeError("expected a CBOR array of 4 to 6 items")
    client_id, seq, op, key = item[0], item[1], item[2], item[3]
    if (
        type(client_id) is not str
        or type(seq) is not int
        or type(op) is not int
        or type(key) is not str
    ):
        raise CommandDecodeError("client_id and key must be text, seq and op integers")
    command: Command
    if op == _OP_SET and len(item) == 5:
        value = item[4]
        if type(value) is not str:
            raise CommandDecodeError("set value must be text")
        command = Set(key, value)
    elif op == _OP_CAS and len(item) == 6:
        value, expected = item[4], item[5]
        if type(value) is not str or (expected is not None and type(expected) is not str):
            raise CommandDecodeError("cas value must be text, expected text or null")
        command = Cas(key, expected, value)
    elif op == _OP_DELETE and len(item) == 4:
        command = Delete(key)
    else:
        raise CommandDecodeError(f"unknown op {op!r} for an array of {len(item)} items")
    # The validated item is exactly what encode_request would build, so dumping it directly
    # checks the encoding without constructing the request twice.
    if cbor2.dumps(item, canonical=True) != data:
        raise CommandDecodeError("not in deterministic CBOR encoding")
    try:
        return Request(client_id, seq, command)
    except ValueError as exc:
        raise CommandDecodeError(str(exc)) from exc


@dataclass(slots=True)
class _Session:
    seq: int
    result: Result
    last_index: int


@dataclass(frozen=True, slots=True)
class HashableState:
    data: dict[str, str]
    sessions: dict[object, list[object]]


def digest(state: HashableState) -> str:
    """The digest ``KVStore.state_hash`` reports; safe to run off the driver's loop on a
    copy taken by ``hashable_state``."""
    payload = cbor2.dumps([state.data, state.sessions], canonical=True)
    return hashlib.sha256(payload).hexdigest()


class KVStore:
    """The state machine: string keys to string values, plus the client session table.

    ``apply`` takes strictly increasing log indexes; gaps are allowed, because the runtime
    need not hand over entries that carry no command (the leader's term-start no-op).

    The session table is bounded by ``max_sessions``: when a new client would exceed it, the
    session least recently used (by the log index of its last request) is evicted. That keeps
    memory bounded without a clock, and every node evicts the same session because only the
    applied log decides. The trade-off, accepted for simplicity: sessions are created
    implicitly, so an evicted client is indistinguishable from a new one. If it then retries
    its last write, the write is applied again, and an older seq is applied rather than
    refused as stale; exactly-once degrades to at-least-once for that client. It can only
    happen to a client that stayed silent while ``max_sessions`` other clients wrote, so the
    bound should sit far above the number of concurrently active clients. ``max_sessions`` is
    part of the replicated behaviour, so all nodes must use the same value; snapshots carry it.
    """

    __slots__ = ("_data", "_last_applied_index", "_max_sessions", "_sessions")

    def __init__(self, max_sessions: int = 10_000) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self._max_sessions = max_sessions
        self._data: dict[str, str] = {}
        # Kept in least- to most-recently-used order: indexes only grow, so moving a session
        # to the end on use keeps it sorted by last_index and eviction is popitem(last=False).
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._last_applied_index = 0

    @property
    def last_applied_index(self) -> int:
        return self._last_applied_index

    @property
    def max_sessions(self) -> int:
        return self._max_sessions

    @property
    def sessions(self) -> int:
        """The number of live sessions, to watch the table approach ``max_sessions``."""
        return len(self._sessions)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> str | None:
        return self._data.get(key)

    def apply(self, index: int, data: bytes, decoded: Request | None = None) -> Result:
        """Apply one committed entry; raise ``ValueError`` only for a non-increasing index.

        ``decoded`` is the request ``data`` was encoded from, when the caller has it (the
        leader that proposed it): decoding and re-encoding to check the canonical form
        was the largest part of applying a command.

        An out-of-order index means the caller broke the apply-in-log-order invariant, which
        no result can paper over, so it raises without touching state. Undecodable bytes are
        the opposite case: they are committed, every node sees the same bytes and makes the
        same no-op of them, so they consume the index and return an error result instead.
        """
        if index <= self._last_applied_index:
            raise ValueError(
                f"apply index {index} is not after last applied index {self._last_applied_index}"
            )
        self._last_applied_index = index
        if decoded is not None:
            request = decoded
        else:
            try:
                request = decode_request(data)
            except CommandDecodeError:
                return _UNDECODABLE
        client_id = request.client_id
        if not client_id:
            return self._execute(request.command)
        session = self._sessions.get(client_id)
        if session is None:
            result = self._execute(request.command)
            self._sessions[client_id] = _Session(request.seq, result, index)
            if len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
            return result
        # Any request, even a retry or a stale one, shows the client is alive.
        self._sessions.move_to_end(client_id)
        session.last_index = index
        if request.seq == session.seq:
            return session.result
        if request.seq < session.seq:
            return _STALE
        result = self._execute(request.command)
        session.seq = request.seq
        session.result = result
        return result

    def _execute(self, command: Command) -> Result:
        data = self._data
        match command:
            case Set(key, value):
                data[key] = value
                return Result(ok=True, value=value, found=True)
            case Cas(key, expected, value):
                current = data.get(key)
                # Values are never None, so None == None is exactly "expected absent, is absent".
                if current == expected:
                    data[key] = value
                    return Result(ok=True, value=value, found=True)
                return Result(ok=False, value=current, found=current is not None)
            case Delete(key):
                existed = data.pop(key, None) is not None
                return Result(ok=existed, value=None, found=False)
            case _:
                assert_never(command)

    def _session_rows(self) -> list[list[object]]:
        return [
            [cid, s.seq, s.last_index, s.result.ok, s.result.value, s.result.found, s.result.error]
            for cid, s in self._sessions.items()
        ]

    def state_hash(self) -> str:
        """A digest of data and sessions, so tests can check that nodes did not diverge.

        Canonical CBOR sorts map keys, which makes the digest independent of insertion order.
        Sessions are included with their last-used index because they decide future results
        (retries, staleness, eviction); ``last_applied_index`` and ``max_sessions`` are left
        out, being positions and configuration rather than state the log produced.
        """
        return digest(self.hashable_state())

    def hashable_state(self) -> HashableState:
        """A copy of what ``state_hash`` covers, cheap to take (no encoding, no sorting),
        so the driver can hand the expensive digest to a worker and keep its loop moving."""
        return HashableState(dict(self._data), {row[0]: row[1:] for row in self._session_rows()})

    def capture(self) -> kvsnapshot.Capture:
        """A copy of everything a snapshot holds, cheap enough for the consensus loop
        (a dict copy); encode it with ``kvsnapshot.encode`` off the loop."""
        return kvsnapshot.Capture(
            self._last_applied_index, self._max_sessions, dict(self._data), self._session_rows()
        )

    def snapshot(self) -> bytes:
        """Everything ``restore`` needs to continue exactly where this store is: data in
        insertion order and sessions in least-recently-used order, so restoring keeps both
        (and with them eviction and future snapshots) as they were."""
        return kvsnapshot.encode(self.capture())

    @classmethod
    def restore(cls, data: bytes) -> KVStore:
        """Rebuild a store from ``snapshot`` output; raise ``ValueError`` (a
        ``SnapshotFormatError``) if it is damaged or malformed: a corrupt snapshot must fail
        here rather than leave a store that diverges later."""
        decoded = kvsnapshot.decode(data)
        store = cls(decoded.max_sessions)
        store._data = decoded.data
        store._last_applied_index = decoded.last_applied_index
        previous_index = 0
        for row in decoded.session_rows:
            session_id, session = _parse_session_row(row)
            if not previous_index < session.last_index <= decoded.last_applied_index:
                raise kvsnapshot.SnapshotFormatError(
                    "snapshot sessions out of order or used after last_applied"
                )
            if session_id in store._sessions:
                raise kvsnapshot.SnapshotFormatError(f"snapshot repeats session {session_id!r}")
            previous_index = session.last_index
            store._sessions[session_id] = session
        return store


def _parse_session_row(row: Any) -> tuple[str, _Session]:
    if type(row) is not list or len(row) != 7:
        raise kvsnapshot.SnapshotFormatError("snapshot session must be a 7-item array")
    cid, seq, last_index, ok, value, found, error = row
    if (
        type(cid) is not str
        or not cid
        or type(seq) is not int
        or not 1 <= seq <= MAX_SEQ
        or type(last_index) is not int
        or type(ok) is not bool
        or (value is not None and type(value) is not str)
        or type(found) is not bool
        or (error is not None and type(error) is not str)
    ):
        raise kvsnapshot.SnapshotFormatError(f"malformed snapshot session {row!r}")
    return cid, _Session(seq, Result(ok=ok, value=value, found=found, error=error), last_index)
