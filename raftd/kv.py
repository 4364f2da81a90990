"""The replicated key-value state machine that gives meaning to the core's opaque log entries.

Every node applies the same committed entries in the same order, so everything here must be
a pure function of that sequence: no clock, no randomness, no I/O, and no behaviour that
depends on memory or on dict iteration order. Divergence would not crash anything; it would
silently give different answers from different nodes, which is why ``state_hash`` exists.

Client sessions (Raft dissertation, section 6.3) make writes exactly-once: a client numbers
its writes, and a retry of a write that was already committed returns the recorded result
instead of applying it a second time, even if the first reply was lost.

Revisions are log indexes: the entry that writes a key gives it its mod revision (and its
create revision when the key was absent), so a revision means the same on every member and
needs nothing replicated beside the log. Leases are ids (their grant's index) with a TTL in
seconds; the store only records them and the keys attached to them: when one expires is the
leader's decision (``raftd.runtime.leases``), taken through a LeaseRevoke in the log, so the
store itself never reads a clock.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final, assert_never

import cbor2
from sortedcontainers import SortedList

from raftd import kvsnapshot
from raftd.kvsnapshot import Stored

__all__ = [
    "ERROR_LEASE_NOT_FOUND",
    "ERROR_STALE_SEQUENCE",
    "ERROR_UNDECODABLE",
    "MAX_LEASE_TTL_S",
    "MAX_SEQ",
    "Cas",
    "CasRevision",
    "Command",
    "CommandDecodeError",
    "Delete",
    "DeleteRange",
    "KVStore",
    "LeaseGrant",
    "LeaseRevoke",
    "Request",
    "Result",
    "Set",
    "Stored",
    "decode_request",
    "encode_request",
    "prefix_end",
]

ERROR_UNDECODABLE: Final = "undecodable command"
ERROR_STALE_SEQUENCE: Final = "stale sequence number"
ERROR_LEASE_NOT_FOUND: Final = "lease not found"

# Sequence numbers fit CBOR's largest plain integer head, so every valid request has exactly
# one encoding and no bignum tag ever reaches the log.
MAX_SEQ: Final = 2**64 - 1
# A year: long enough for any holder, short enough that a forgotten lease goes away.
MAX_LEASE_TTL_S: Final = 365 * 24 * 3600

# Op codes are the wire format: never renumber, only add.
_OP_SET: Final = 0
_OP_CAS: Final = 1
_OP_DELETE: Final = 2
_OP_CAS_REVISION: Final = 3
_OP_DELETE_RANGE: Final = 4
_OP_LEASE_GRANT: Final = 5
_OP_LEASE_REVOKE: Final = 6


class CommandDecodeError(ValueError):
    """Bytes that are not a request; callers need one exception type whatever cbor2 raised."""


@dataclass(frozen=True, slots=True)
class Set:
    """``lease`` (0: none) attaches the key to a lease: it is deleted when the lease ends."""

    key: str
    value: str
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Cas:
    """Compare-and-set. ``expected=None`` means "only if absent", so create-once needs no lock."""

    key: str
    expected: str | None
    value: str
    lease: int = 0


@dataclass(frozen=True, slots=True)
class CasRevision:
    """Compare-and-set on the key's mod revision (0: only if absent), etcd's compare on
    ``mod_revision``: it tells a value rewritten to the same text from one never touched."""

    key: str
    mod_revision: int
    value: str
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Every key in ``[start, end)`` (``end`` None: every key from ``start`` on)."""

    start: str
    end: str | None


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A new lease; its id is the index of the entry that grants it."""

    ttl_s: int


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """End a lease and delete its keys: a holder giving it up, or the leader deciding it
    expired."""

    lease: int


Command = Set | Cas | CasRevision | Delete | DeleteRange | LeaseGrant | LeaseRevoke


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
    count: int = 0  # keys a DeleteRange or LeaseRevoke deleted
    # The index of the entry that carried out the request: its revision (a lease's id).
    # A retry answered from the session keeps the first one's, not the retry's index.
    # Left out of equality, so results compare by what they say about the key.
    revision: int = field(default=0, compare=False)


@dataclass(slots=True)
class _Lease:
    ttl_s: int
    keys: set[str]


_UNDECODABLE: Final = Result(ok=False, value=None, found=False, error=ERROR_UNDECODABLE)
_STALE: Final = Result(ok=False, value=None, found=False, error=ERROR_STALE_SEQUENCE)
_NO_LEASE: Final = Result(ok=False, value=None, found=False, error=ERROR_LEASE_NOT_FOUND)


def prefix_end(prefix: str) -> str | None:
    """The first key after every key that starts with ``prefix`` (None: no such bound,
    the prefix is empty or all of its characters are the largest code point)."""
    stripped = prefix.rstrip(chr(0x10FFFF))
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


def encode_request(req: Request) -> bytes:
    """Encode as a short CBOR array whose length depends on the op, to keep log entries small.

    Layouts: ``[client_id, seq, 0, key, value]`` for Set, ``[client_id, seq, 1, key, value,
    expected-or-null]`` for Cas, ``[client_id, seq, 3, key, value, mod_revision]`` for
    CasRevision, each followed by the lease when there is one; ``[client_id, seq, 2, key]``
    for Delete, ``[..., 4, start, end-or-null]`` for DeleteRange, ``[..., 5, ttl_s]`` for
    LeaseGrant, ``[..., 6, lease]`` for LeaseRevoke. CBOR null keeps "absent" apart from
    the empty string without a separate flag. Strings that UTF-8 cannot encode (lone
    surrogates) raise ``UnicodeEncodeError``, a ``ValueError``, here on the client side
    rather than as an undecodable entry in the log.
    """
    head: list[object] = [req.client_id, req.seq]
    match req.command:
        case Set(key, value, lease):
            item = [*head, _OP_SET, key, value]
        case Cas(key, expected, value, lease):
            item = [*head, _OP_CAS, key, value, expected]
        case CasRevision(key, mod_revision, value, lease):
            item = [*head, _OP_CAS_REVISION, key, value, mod_revision]
        case Delete(key):
            item, lease = [*head, _OP_DELETE, key], 0
        case DeleteRange(start, end):
            item, lease = [*head, _OP_DELETE_RANGE, start, end], 0
        case LeaseGrant(ttl_s):
            item, lease = [*head, _OP_LEASE_GRANT, ttl_s], 0
        case LeaseRevoke(revoked):
            item, lease = [*head, _OP_LEASE_REVOKE, revoked], 0
        case _:
            assert_never(req.command)
    if lease:
        item.append(lease)
    return cbor2.dumps(item, canonical=True)


def _lease_of(item: list[Any], plain_length: int) -> int:
    """The optional trailing lease: absent, or a positive id (0 is never written)."""
    if len(item) == plain_length:
        return 0
    lease = item[plain_length]
    if type(lease) is not int or not 1 <= lease <= MAX_SEQ:
        raise CommandDecodeError("a lease must be a positive integer id")
    return lease


def _command_of(op: object, item: list[Any]) -> Command:
    """The command in a decoded array, with every field's type checked (``type(x) is int``
    keeps bools out)."""
    size = len(item)
    if op == _OP_SET and size in (5, 6):
        key, value = item[3], item[4]
        if type(key) is not str or type(value) is not str:
            raise CommandDecodeError("set key and value must be text")
        return Set(key, value, _lease_of(item, 5))
    if op == _OP_CAS and size in (6, 7):
        key, value, expected = item[3], item[4], item[5]
        if (
            type(key) is not str
            or type(value) is not str
            or (expected is not None and type(expected) is not str)
        ):
            raise CommandDecodeError("cas key and value must be text, expected text or null")
        return Cas(key, expected, value, _lease_of(item, 6))
    if op == _OP_CAS_REVISION and size in (6, 7):
        key, value, revision = item[3], item[4], item[5]
        if type(key) is not str or type(value) is not str:
            raise CommandDecodeError("cas key and value must be text")
        if type(revision) is not int or not 0 <= revision <= MAX_SEQ:
            raise CommandDecodeError("a mod revision must be a non-negative integer")
        return CasRevision(key, revision, value, _lease_of(item, 6))
    if op == _OP_DELETE and size == 4:
        if type(item[3]) is not str:
            raise CommandDecodeError("delete key must be text")
        return Delete(item[3])
    if op == _OP_DELETE_RANGE and size == 5:
        start, end = item[3], item[4]
        if type(start) is not str or (end is not None and type(end) is not str):
            raise CommandDecodeError("a range's start must be text, its end text or null")
        return DeleteRange(start, end)
    if op == _OP_LEASE_GRANT and size == 4:
        ttl = item[3]
        if type(ttl) is not int or not 1 <= ttl <= MAX_LEASE_TTL_S:
            raise CommandDecodeError(f"a lease TTL must be 1..{MAX_LEASE_TTL_S} seconds")
        return LeaseGrant(ttl)
    if op == _OP_LEASE_REVOKE and size == 4:
        lease = item[3]
        if type(lease) is not int or not 1 <= lease <= MAX_SEQ:
            raise CommandDecodeError("a lease must be a positive integer id")
        return LeaseRevoke(lease)
    raise CommandDecodeError(f"unknown op {op!r} for an array of {size} items")


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
    if type(item) is not list or not 4 <= len(item) <= 7:
        raise CommandDecodeError("expected a CBOR array of 4 to 7 items")
    client_id, seq, op = item[0], item[1], item[2]
    if type(client_id) is not str or type(seq) is not int or type(op) is not int:
        raise CommandDecodeError("client_id must be text, seq and op integers")
    command = _command_of(op, item)
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
    data: dict[str, Stored]
    sessions: dict[object, list[object]]
    leases: list[list[int]]


def digest(state: HashableState) -> str:
    """The digest ``KVStore.state_hash`` reports; safe to run off the driver's loop on a
    copy taken by ``hashable_state``."""
    payload = cbor2.dumps([state.data, state.sessions, state.leases], canonical=True)
    return hashlib.sha256(payload).hexdigest()


class KVStore:
    """The state machine: string keys to string values with their revisions, leases, and
    the client session table.

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

    Keys in order (ranges) come from a sorted index built the first time a range is asked
    for and kept up to date after: a store nobody ranges over never pays for it, and it is
    local, not replicated state, so building it late changes no answer.
    """

    __slots__ = (
        "_data",
        "_last_applied_index",
        "_leases",
        "_max_sessions",
        "_sessions",
        "_sorted",
        "changes",
    )

    def __init__(self, max_sessions: int = 10_000) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self._max_sessions = max_sessions
        self._data: dict[str, Stored] = {}
        # Kept in least- to most-recently-used order: indexes only grow, so moving a session
        # to the end on use keeps it sorted by last_index and eviction is popitem(last=False).
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._leases: dict[int, _Lease] = {}  # in grant order
        self._sorted: SortedList | None = None
        self._last_applied_index = 0
        # Set to a list by whoever wants each change (watches): (key, stored or None for a
        # delete), in apply order; the owner drains it. None (the default) records nothing.
        self.changes: list[tuple[str, Stored | None]] | None = None

    @property
    def last_applied_index(self) -> int:
        """The store's revision: every read answered from it is as of this index."""
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
        stored = self._data.get(key)
        return None if stored is None else stored.value

    def stored(self, key: str) -> Stored | None:
        return self._data.get(key)

    def range(
        self, start: str, end: str | None, limit: int
    ) -> tuple[list[tuple[str, Stored]], bool]:
        """Up to ``limit`` keys of ``[start, end)`` in order (``limit`` 0: all), and whether
        more follow."""
        index = self._index()
        found = index.irange(start, end, inclusive=(True, False))
        keys = list(itertools.islice(found, limit + 1 if limit else None))
        more = bool(limit) and len(keys) > limit
        if more:
            del keys[limit:]
        data = self._data
        return [(key, data[key]) for key in keys], more

    @property
    def leases(self) -> dict[int, int]:
        """Every live lease's TTL in seconds, by id, in grant order."""
        return {lease: held.ttl_s for lease, held in self._leases.items()}

    def lease_ttl(self, lease: int) -> int | None:
        held = self._leases.get(lease)
        return None if held is None else held.ttl_s

    def lease_keys(self, lease: int) -> list[str] | None:
        held = self._leases.get(lease)
        return None if held is None else sorted(held.keys)

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
            return self._execute(request.command, index)
        session = self._sessions.get(client_id)
        if session is None:
            result = self._execute(request.command, index)
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
        result = self._execute(request.command, index)
        session.seq = request.seq
        session.result = result
        return result

    def _execute(self, command: Command, index: int) -> Result:
        data = self._data
        match command:
            case Set(key, value, lease):
                return self._put(key, value, lease, index, data.get(key))
            case Cas(key, expected, value, lease):
                stored = data.get(key)
                current = None if stored is None else stored.value
                # Values are never None, so None == None is exactly "expected absent, is absent".
                if current == expected:
                    return self._put(key, value, lease, index, stored)
                return Result(ok=False, value=current, found=current is not None, revision=index)
            case CasRevision(key, mod_revision, value, lease):
                stored = data.get(key)
                if (0 if stored is None else stored.mod_revision) == mod_revision:
                    return self._put(key, value, lease, index, stored)
                current = None if stored is None else stored.value
                return Result(ok=False, value=current, found=current is not None, revision=index)
            case Delete(key):
                existed = self._remove(key)
                return Result(ok=existed, value=None, found=False, revision=index)
            case DeleteRange(start, end):
                doomed = list(self._index().irange(start, end, inclusive=(True, False)))
                for key in doomed:
                    self._remove(key)
                return Result(
                    ok=bool(doomed), value=None, found=False, count=len(doomed), revision=index
                )
            case LeaseGrant(ttl_s):
                self._leases[index] = _Lease(ttl_s, set())
                return Result(ok=True, value=None, found=False, revision=index)
            case LeaseRevoke(lease):
                held = self._leases.pop(lease, None)
                if held is None:
                    return Result(ok=False, value=None, found=False, revision=index)
                doomed = sorted(held.keys)  # one order on every member, for watchers
                for key in doomed:
                    self._remove(key)
                return Result(ok=True, value=None, found=False, count=len(doomed), revision=index)
            case _:
                assert_never(command)

    def _put(self, key: str, value: str, lease: int, index: int, stored: Stored | None) -> Result:
        if lease and lease not in self._leases:
            return _NO_LEASE
        if stored is None:
            if self._sorted is not None:
                self._sorted.add(key)
            created = index
        else:
            created = stored.create_revision
            if stored.lease and stored.lease != lease:
                self._detach(key, stored.lease)
        if lease and (stored is None or stored.lease != lease):
            self._leases[lease].keys.add(key)
        stored = self._data[key] = Stored(value, created, index, lease)
        if self.changes is not None:
            self.changes.append((key, stored))
        return Result(ok=True, value=value, found=True, revision=index)

    def _remove(self, key: str) -> bool:
        stored = self._data.pop(key, None)
        if stored is None:
            return False
        if self._sorted is not None:
            self._sorted.remove(key)
        if stored.lease:
            self._detach(key, stored.lease)
        if self.changes is not None:
            self.changes.append((key, None))
        return True

    def _detach(self, key: str, lease: int) -> None:
        held = self._leases.get(lease)
        if held is not None:
            held.keys.discard(key)

    def _index(self) -> SortedList:
        if self._sorted is None:
            self._sorted = SortedList(self._data)
        return self._sorted

    def _session_rows(self) -> list[list[object]]:
        return [
            [
                cid,
                s.seq,
                s.last_index,
                s.result.ok,
                s.result.value,
                s.result.found,
                s.result.error,
                s.result.count,
                s.result.revision,
            ]
            for cid, s in self._sessions.items()
        ]

    def _lease_rows(self) -> list[list[int]]:
        return [[lease, held.ttl_s] for lease, held in self._leases.items()]

    def state_hash(self) -> str:
        """A digest of data, leases and sessions, so tests can check that nodes did not
        diverge.

        Canonical CBOR sorts map keys, which makes the digest independent of insertion order.
        Sessions are included with their last-used index because they decide future results
        (retries, staleness, eviction); ``last_applied_index`` and ``max_sessions`` are left
        out, being positions and configuration rather than state the log produced.
        """
        return digest(self.hashable_state())

    def hashable_state(self) -> HashableState:
        """A copy of what ``state_hash`` covers, cheap to take (no encoding, no sorting),
        so the driver can hand the expensive digest to a worker and keep its loop moving."""
        return HashableState(
            dict(self._data),
            {row[0]: row[1:] for row in self._session_rows()},
            self._lease_rows(),
        )

    def capture(self) -> kvsnapshot.Capture:
        """A copy of everything a snapshot holds, cheap enough for the consensus loop
        (a dict copy); encode it with ``kvsnapshot.encode`` off the loop."""
        return kvsnapshot.Capture(
            self._last_applied_index,
            self._max_sessions,
            dict(self._data),
            self._session_rows(),
            self._lease_rows(),
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
        last = decoded.last_applied_index
        store._last_applied_index = last
        for lease, ttl_s in decoded.leases:
            if lease in store._leases or lease > last:
                raise kvsnapshot.SnapshotFormatError(f"snapshot lease {lease} repeated or unborn")
            store._leases[lease] = _Lease(ttl_s, set())
        for key, stored in decoded.data.items():
            if not 0 < stored.create_revision <= stored.mod_revision <= last:
                raise kvsnapshot.SnapshotFormatError(f"snapshot key {key!r} has bad revisions")
            if stored.lease:
                held = store._leases.get(stored.lease)
                if held is None:
                    raise kvsnapshot.SnapshotFormatError(
                        f"snapshot key {key!r} is attached to an unknown lease"
                    )
                held.keys.add(key)
        store._data = decoded.data
        previous_index = 0
        for row in decoded.session_rows:
            session_id, session = _parse_session_row(row)
            if not previous_index < session.last_index <= last:
                raise kvsnapshot.SnapshotFormatError(
                    "snapshot sessions out of order or used after last_applied"
                )
            if session_id in store._sessions:
                raise kvsnapshot.SnapshotFormatError(f"snapshot repeats session {session_id!r}")
            previous_index = session.last_index
            store._sessions[session_id] = session
        return store


def _parse_session_row(row: Any) -> tuple[str, _Session]:
    """A session row: 9 items (7 in version 2 snapshots, before ``count`` and
    ``revision``; a version 2 result's revision is taken to be its last use)."""
    if type(row) is not list or len(row) not in (7, 9):
        raise kvsnapshot.SnapshotFormatError("snapshot session must be an array of 7 or 9 items")
    cid, seq, last_index, ok, value, found, error = row[:7]
    count, revision = (row[7], row[8]) if len(row) == 9 else (0, last_index)
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
        or type(count) is not int
        or count < 0
        or type(revision) is not int
        or revision < 0
    ):
        raise kvsnapshot.SnapshotFormatError(f"malformed snapshot session {row!r}")
    result = Result(ok=ok, value=value, found=found, error=error, count=count, revision=revision)
    return cid, _Session(seq, result, last_index)
