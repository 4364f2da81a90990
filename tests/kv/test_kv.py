"""The key-value state machine: operations, exactly-once sessions, encoding, snapshots.

Replicas only stay equal if ``apply`` is a pure function of the log, so besides example tests
for each rule there is a model test: a deliberately naive reference (``Model``) and two real
stores, one of them restored from a snapshot halfway, must give the same result for every
entry of a random log full of retries, stale writes, evictions and garbage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd import kvsnapshot
from raftd.kv import (
    ERROR_LEASE_NOT_FOUND,
    ERROR_STALE_SEQUENCE,
    ERROR_UNDECODABLE,
    MAX_LEASE_TTL_S,
    MAX_SEQ,
    Cas,
    CasRevision,
    Command,
    CommandDecodeError,
    Delete,
    DeleteRange,
    HashableState,
    KVStore,
    LeaseGrant,
    LeaseRevoke,
    Request,
    Result,
    Set,
    Stored,
    decode_request,
    digest,
    encode_request,
    prefix_end,
)

# The same examples on every run (seeded from the test itself), and no example database.
deterministic = settings(derandomize=True, database=None, max_examples=300, deadline=None)


def enc(command: Command, client_id: str = "", seq: int = 0) -> bytes:
    return encode_request(Request(client_id, seq, command))


def feed(store: KVStore, *entries: bytes) -> list[Result]:
    """Applies entries at the next indexes, as the runtime does for consecutive commits."""
    start = store.last_applied_index + 1
    return [store.apply(index, data) for index, data in enumerate(entries, start)]


def apply1(store: KVStore, command: Command, client_id: str = "", seq: int = 0) -> Result:
    return feed(store, enc(command, client_id, seq))[0]


# ----------------------------------------------------------------- operations


def test_empty_store() -> None:
    store = KVStore()
    assert (len(store), store.sessions, store.last_applied_index) == (0, 0, 0)
    assert store.get("k") is None


def test_set_stores_and_reports_the_new_value() -> None:
    store = KVStore()
    assert apply1(store, Set("k", "v1")) == Result(ok=True, value="v1", found=True)
    assert apply1(store, Set("k", "v2")) == Result(ok=True, value="v2", found=True)
    assert store.get("k") == "v2"
    assert len(store) == 1


def test_cas_with_matching_expected_swaps() -> None:
    store = KVStore()
    apply1(store, Set("k", "old"))
    assert apply1(store, Cas("k", "old", "new")) == Result(ok=True, value="new", found=True)
    assert store.get("k") == "new"


def test_cas_with_wrong_expected_reports_the_current_value() -> None:
    store = KVStore()
    apply1(store, Set("k", "current"))
    assert apply1(store, Cas("k", "other", "new")) == Result(ok=False, value="current", found=True)
    assert store.get("k") == "current"


def test_cas_with_expected_value_on_missing_key_fails() -> None:
    store = KVStore()
    assert apply1(store, Cas("k", "x", "new")) == Result(ok=False, value=None, found=False)
    assert store.get("k") is None


def test_cas_expected_absent_swaps_when_key_missing() -> None:
    store = KVStore()
    assert apply1(store, Cas("k", None, "first")) == Result(ok=True, value="first", found=True)
    assert store.get("k") == "first"


def test_cas_expected_absent_refused_when_key_present() -> None:
    store = KVStore()
    apply1(store, Set("k", "there"))
    assert apply1(store, Cas("k", None, "new")) == Result(ok=False, value="there", found=True)
    assert store.get("k") == "there"


def test_empty_string_is_a_value_not_absence() -> None:
    """``None`` and ``""`` must stay apart on the wire and in the store, or create-once breaks."""
    store = KVStore()
    assert apply1(store, Cas("k", "", "x")) == Result(ok=False, value=None, found=False)
    apply1(store, Set("k", ""))
    assert apply1(store, Cas("k", None, "x")) == Result(ok=False, value="", found=True)
    assert apply1(store, Cas("k", "", "x")) == Result(ok=True, value="x", found=True)


def test_delete_existing_key() -> None:
    store = KVStore()
    apply1(store, Set("k", "v"))
    assert apply1(store, Delete("k")) == Result(ok=True, value=None, found=False)
    assert store.get("k") is None
    assert len(store) == 0


def test_delete_missing_key() -> None:
    store = KVStore()
    assert apply1(store, Delete("k")) == Result(ok=False, value=None, found=False)


# ----------------------------------------------------------------- apply order


def test_apply_with_non_increasing_index_raises_and_changes_nothing() -> None:
    store = KVStore()
    store.apply(5, enc(Set("k", "v")))
    before = store.state_hash()
    for index in (5, 4, 0, -1):
        with pytest.raises(ValueError, match="not after"):
            store.apply(index, enc(Set("k", "other")))
    assert store.get("k") == "v"
    assert store.last_applied_index == 5
    assert store.state_hash() == before


def test_apply_allows_gaps_between_indexes() -> None:
    """The runtime may skip entries without commands (term-start no-ops)."""
    store = KVStore()
    store.apply(1, enc(Set("a", "1")))
    store.apply(7, enc(Set("b", "2")))
    assert store.last_applied_index == 7
    assert (store.get("a"), store.get("b")) == ("1", "2")


# ----------------------------------------------------------------- undecodable entries


@pytest.mark.parametrize("data", [b"", b"\xff", b"garbage", cbor2.dumps([1, 2, 3])])
def test_undecodable_command_is_a_deterministic_no_op(data: bytes) -> None:
    stores = [KVStore(), KVStore()]
    for store in stores:
        apply1(store, Set("k", "v"), "alice", 1)
        before = store.state_hash()
        assert feed(store, data) == [
            Result(ok=False, value=None, found=False, error=ERROR_UNDECODABLE)
        ]
        assert store.last_applied_index == 2, "the entry still consumes its index"
        assert store.state_hash() == before
    assert stores[0].state_hash() == stores[1].state_hash()


# ----------------------------------------------------------------- sessions


def test_retried_write_returns_cached_result_without_reapplying() -> None:
    """The first reply was lost; the retry must report it, not what a re-run would do now."""
    store = KVStore()
    first = apply1(store, Cas("k", None, "alice's"), "alice", 1)
    assert first == Result(ok=True, value="alice's", found=True)
    apply1(store, Set("k", "bob's"), "bob", 1)
    assert apply1(store, Cas("k", None, "alice's"), "alice", 1) == first
    assert store.get("k") == "bob's"


def test_retried_delete_is_not_applied_twice() -> None:
    store = KVStore()
    apply1(store, Set("k", "v"))
    first = apply1(store, Delete("k"), "alice", 1)
    apply1(store, Set("k", "again"))
    assert apply1(store, Delete("k"), "alice", 1) == first == Result(True, None, False)
    assert store.get("k") == "again"


def test_stale_sequence_number_is_refused_without_applying() -> None:
    store = KVStore()
    apply1(store, Set("k", "one"), "alice", 1)
    apply1(store, Set("k", "two"), "alice", 2)
    assert apply1(store, Set("k", "one"), "alice", 1) == Result(
        ok=False, value=None, found=False, error=ERROR_STALE_SEQUENCE
    )
    assert store.get("k") == "two"
    # The refusal does not move the session: its last write is still the cached one.
    assert apply1(store, Set("k", "two"), "alice", 2) == Result(True, "two", True)


def test_higher_sequence_number_applies_even_after_a_gap() -> None:
    store = KVStore()
    apply1(store, Set("k", "one"), "alice", 1)
    assert apply1(store, Set("k", "five"), "alice", 5) == Result(True, "five", True)
    assert apply1(store, Set("k", "three"), "alice", 3).error == ERROR_STALE_SEQUENCE
    assert store.get("k") == "five"


def test_clients_have_independent_sequence_numbers() -> None:
    store = KVStore()
    assert apply1(store, Set("a", "1"), "alice", 7) == Result(True, "1", True)
    assert apply1(store, Set("b", "1"), "bob", 1) == Result(True, "1", True)
    assert apply1(store, Set("b", "2"), "bob", 2) == Result(True, "2", True)
    assert apply1(store, Set("a", "2"), "alice", 8) == Result(True, "2", True)
    assert store.sessions == 2


def test_sessionless_requests_are_never_deduplicated() -> None:
    store = KVStore()
    apply1(store, Set("k", "v"))
    assert apply1(store, Delete("k")) == Result(True, None, False)
    assert apply1(store, Delete("k")) == Result(False, None, False)
    assert store.sessions == 0


def lru_history(max_sessions: int = 2) -> KVStore:
    """alice, bob, then alice again: bob is the least recently used when carol arrives."""
    store = KVStore(max_sessions=max_sessions)
    apply1(store, Set("a", "1"), "alice", 1)
    apply1(store, Delete("b"), "bob", 1)
    apply1(store, Set("a", "2"), "alice", 2)
    apply1(store, Set("c", "1"), "carol", 1)
    return store


def test_lru_session_is_evicted_when_the_table_is_full() -> None:
    store = lru_history()
    assert store.sessions == 2
    apply1(store, Set("b", "restored"))
    # alice kept her session: the retry is answered from the cache, not re-applied.
    assert apply1(store, Set("a", "2"), "alice", 2) == Result(True, "2", True)
    assert apply1(store, Set("a", "1"), "alice", 1).error == ERROR_STALE_SEQUENCE
    # bob was evicted: his retry is applied afresh (the documented trade-off).
    assert apply1(store, Delete("b"), "bob", 1) == Result(True, None, False)
    assert store.get("b") is None


def test_retries_count_as_use_for_eviction() -> None:
    store = KVStore(max_sessions=2)
    apply1(store, Set("a", "1"), "alice", 1)
    apply1(store, Set("b", "1"), "bob", 1)
    apply1(store, Set("a", "1"), "alice", 1)  # a retry: alice is now the most recent
    apply1(store, Set("c", "1"), "carol", 1)  # evicts bob
    apply1(store, Set("b", "changed"))
    assert apply1(store, Set("a", "other"), "alice", 1) == Result(True, "1", True)
    assert apply1(store, Set("b", "1"), "bob", 1) == Result(True, "1", True)
    assert store.get("b") == "1", "bob's session was gone, so his retry applied again"


def test_lru_eviction_is_deterministic() -> None:
    stores = [lru_history(), lru_history()]
    assert stores[0].state_hash() == stores[1].state_hash()
    assert stores[0].snapshot() == stores[1].snapshot()
    assert lru_history(max_sessions=3).state_hash() != stores[0].state_hash()


def test_max_sessions_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        KVStore(max_sessions=0)


# ----------------------------------------------------------------- requests and encoding

leases = st.just(0) | st.integers(1, MAX_SEQ)
commands = st.one_of(
    st.builds(Set, st.text(), st.text(), leases),
    st.builds(Cas, st.text(), st.none() | st.text(), st.text(), leases),
    st.builds(CasRevision, st.text(), st.integers(0, MAX_SEQ), st.text(), leases),
    st.builds(Delete, st.text()),
    st.builds(DeleteRange, st.text(), st.none() | st.text()),
    st.builds(LeaseGrant, st.integers(1, MAX_LEASE_TTL_S)),
    st.builds(LeaseRevoke, st.integers(1, MAX_SEQ)),
)
sessions = st.just(("", 0)) | st.tuples(st.text(min_size=1), st.integers(1, MAX_SEQ))
requests = st.builds(
    lambda session, command: Request(session[0], session[1], command), sessions, commands
)


@deterministic
@given(requests)
def test_encode_decode_round_trip(req: Request) -> None:
    assert decode_request(encode_request(req)) == req


@pytest.mark.parametrize(
    ("client_id", "seq"), [("", 1), ("alice", 0), ("alice", -1), ("alice", MAX_SEQ + 1)]
)
def test_request_rejects_inconsistent_session_fields(client_id: str, seq: int) -> None:
    with pytest.raises(ValueError):
        Request(client_id, seq, Delete("k"))


def test_encode_rejects_strings_utf8_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode_request(Request("", 0, Set("\ud800", "v")))


def test_encoding_is_compact() -> None:
    assert len(enc(Set("k", "v"), "c1", 1)) <= 10


def decodes_cleanly_or_not_at_all(data: bytes) -> None:
    """Either the one exception type, or a request whose canonical bytes are exactly ``data``."""
    try:
        req = decode_request(data)
    except CommandDecodeError:
        return
    assert encode_request(req) == data


@deterministic
@given(st.binary(max_size=64))
def test_decode_arbitrary_bytes_raises_only_command_decode_error(data: bytes) -> None:
    decodes_cleanly_or_not_at_all(data)


cbor_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.integers(0, 3),
)
cbor_values = st.recursive(
    cbor_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=8,
)


@deterministic
@given(st.lists(cbor_values, min_size=3, max_size=7))
def test_decode_well_formed_cbor_of_the_wrong_shape_raises_only_command_decode_error(
    item: list[object],
) -> None:
    """Random bytes rarely get past the CBOR parser; these reach the type checks behind it."""
    decodes_cleanly_or_not_at_all(cbor2.dumps(item))


@deterministic
@given(requests, st.integers(0, 200), st.integers(0, 255), st.sampled_from(["flip", "cut", "add"]))
def test_decode_corrupted_encodings_raises_only_command_decode_error(
    req: Request, position: int, byte: int, how: str
) -> None:
    data = bytearray(encode_request(req))
    position %= len(data)
    if how == "flip":
        data[position] ^= byte or 1
    elif how == "cut":
        del data[position:]
    else:
        data.insert(position, byte)
    decodes_cleanly_or_not_at_all(bytes(data))


VALID = enc(Set("k", "v"), "c", 1)
# VALID by hand: array(5), "c", 1, 0 (set), "k", "v". Each byte-level near miss below edits it.
VALID_HEX = "85 6163 01 00 616b 6176"


def near_miss(old: str, new: str) -> bytes:
    assert old in VALID_HEX
    return bytes.fromhex(VALID_HEX.replace(old, new))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(VALID + b"\x00", id="trailing-byte"),
        pytest.param(cbor2.dumps(["c", True, 0, "k", "v"]), id="bool-seq"),
        pytest.param(cbor2.dumps(["c", 1, False, "k", "v"]), id="bool-op"),
        pytest.param(cbor2.dumps(["c", 1.0, 0, "k", "v"]), id="float-seq"),
        pytest.param(cbor2.dumps(["c", -1, 0, "k", "v"]), id="negative-seq"),
        pytest.param(cbor2.dumps(["c", MAX_SEQ + 1, 0, "k", "v"]), id="bignum-seq"),
        pytest.param(cbor2.dumps(["", 1, 0, "k", "v"]), id="seq-without-client"),
        pytest.param(cbor2.dumps(["c", 0, 0, "k", "v"]), id="client-without-seq"),
        pytest.param(cbor2.dumps(["c", 1, 3, "k"]), id="unknown-op"),
        pytest.param(cbor2.dumps(["c", 1, 0, "k"]), id="set-without-value"),
        pytest.param(cbor2.dumps(["c", 1, 1, "k", "v"]), id="cas-without-expected"),
        pytest.param(cbor2.dumps(["c", 1, 2, "k", "v"]), id="delete-with-value"),
        pytest.param(cbor2.dumps(["c", 1, 0, b"k", "v"]), id="bytes-key"),
        pytest.param(cbor2.dumps(["c", 1, 0, "k", None]), id="null-set-value"),
        pytest.param(cbor2.dumps(["c", 1, 1, "k", "v", 5]), id="int-expected"),
        pytest.param(cbor2.dumps(("c", 1, 0, ["k"], "v")), id="nested-array"),
        pytest.param(cbor2.dumps({"c": 1}), id="map"),
        pytest.param(cbor2.dumps(cbor2.CBORTag(258, ["c", 1, 2, "k"])), id="tagged-array"),
        pytest.param(near_miss("6163 01", "6163 1801"), id="padded-int-head"),
        pytest.param(near_miss("616b", "7f616bff"), id="indefinite-string"),
        pytest.param(near_miss("6176", "62c328"), id="invalid-utf8"),
        pytest.param(near_miss("6176", "6176 ff").replace(b"\x85", b"\x9f"), id="indefinite-array"),
    ],
)
def test_decode_rejects_near_misses(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        decode_request(data)


def test_near_miss_base_is_the_valid_encoding() -> None:
    """Otherwise a typo in the hand-written hex would pass as a rejected near miss."""
    assert bytes.fromhex(VALID_HEX) == VALID
    assert decode_request(VALID) == Request("c", 1, Set("k", "v"))


# ----------------------------------------------------------------- state hash


def test_same_commands_give_equal_state_hash() -> None:
    entries = [
        enc(Set("a", "1"), "alice", 1),
        enc(Cas("a", "1", "2"), "bob", 1),
        enc(Delete("zz")),
        b"\xff",
    ]
    first, second = KVStore(), KVStore()
    assert feed(first, *entries) == feed(second, *entries)
    assert first.state_hash() == second.state_hash()
    assert len(first.state_hash()) == 64
    int(first.state_hash(), 16)


def test_different_data_gives_different_state_hash() -> None:
    first, second = KVStore(), KVStore()
    apply1(first, Set("k", "v"))
    apply1(second, Set("k", "w"))
    assert first.state_hash() != second.state_hash()
    assert KVStore().state_hash() != first.state_hash()


def test_state_hash_covers_the_session_table() -> None:
    """Same data, different sessions: they would answer the next retry differently."""
    with_session, without = KVStore(), KVStore()
    apply1(with_session, Set("k", "v"), "alice", 1)
    apply1(without, Set("k", "v"))
    assert with_session.get("k") == without.get("k")
    assert with_session.state_hash() != without.state_hash()


def test_state_hash_does_not_depend_on_insertion_order() -> None:
    # The same keys with the same revisions, inserted in another order (a store restored
    # from a snapshot and one that applied the log need not agree on dict order).
    store = KVStore()
    feed(store, enc(Set("a", "1")), enc(Set("b", "2")))
    state = store.hashable_state()
    reordered = dict(reversed(state.data.items()))
    assert list(reordered) != list(state.data)
    assert digest(HashableState(reordered, state.sessions, state.leases)) == store.state_hash()


# ----------------------------------------------------------------- snapshots


def assert_same_store(restored: KVStore, original: KVStore) -> None:
    assert restored.state_hash() == original.state_hash()
    assert restored.last_applied_index == original.last_applied_index
    assert restored.max_sessions == original.max_sessions
    assert (len(restored), restored.sessions) == (len(original), original.sessions)
    assert restored.snapshot() == original.snapshot()


def test_snapshot_restore_round_trip() -> None:
    store = lru_history(max_sessions=2)
    apply1(store, Set("", "empty key"))
    restored = KVStore.restore(store.snapshot())
    assert_same_store(restored, store)
    assert restored.get("a") == "2"
    assert restored.get("") == "empty key"
    # The restored store continues identically: cached retry, stale refusal, same eviction.
    tail = [
        enc(Set("a", "x"), "alice", 2),
        enc(Set("a", "x"), "alice", 1),
        enc(Set("d", "1"), "dave", 1),
        enc(Set("c", "9"), "carol", 1),
    ]
    assert feed(restored, *tail) == feed(store, *tail)
    assert_same_store(restored, store)


def test_restore_empty_store() -> None:
    assert_same_store(KVStore.restore(KVStore(max_sessions=3).snapshot()), KVStore(3))


def snapshot_of(
    version: int, last_applied: int, max_sessions: int, data: dict[str, object], rows: list[object]
) -> bytes:
    """A well-formed, correctly checksummed snapshot of whatever fields it is given."""
    body = cbor2.dumps([version, last_applied, max_sessions, len(data), rows])
    if data:
        body += cbor2.dumps([item for pair in data.items() for item in pair])
    return kvsnapshot.MAGIC + hashlib.sha256(body).digest() + body


ROW = ["alice", 1, 1, True, "v", True, None]
GOOD = KVStore(max_sessions=3).snapshot()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff", id="not-a-snapshot"),
        pytest.param(cbor2.dumps([1, 1, 10, {}, []]), id="format-1-bytes"),
        pytest.param(GOOD[:-1], id="truncated"),
        pytest.param(GOOD + b"\x00", id="trailing-byte"),
        pytest.param(GOOD[:-1] + bytes([GOOD[-1] ^ 1]), id="bit-flip"),
        pytest.param(snapshot_of(1, 1, 10, {}, []), id="version-1"),
        pytest.param(snapshot_of(3, 1, 10, {}, []), id="unknown-version"),
        pytest.param(snapshot_of(2, -1, 10, {}, []), id="negative-index"),
        pytest.param(snapshot_of(2, 1, 0, {}, []), id="no-sessions-allowed"),
        pytest.param(snapshot_of(2, 1, 10, {"k": 1}, []), id="non-text-value"),
        pytest.param(snapshot_of(2, 1, 10, {}, [ROW[:6]]), id="short-session"),
        pytest.param(snapshot_of(2, 0, 10, {}, [ROW]), id="session-after-last-applied"),
        pytest.param(snapshot_of(2, 5, 1, {}, [ROW, ["bob", *ROW[1:]]]), id="too-many"),
        pytest.param(snapshot_of(2, 5, 10, {}, [ROW, ROW]), id="out-of-order"),
        pytest.param(
            snapshot_of(2, 5, 10, {}, [ROW, ["alice", 1, 2, True, "v", True, None]]),
            id="repeated-session",
        ),
    ],
)
def test_restore_rejects_malformed_snapshots(data: bytes) -> None:
    with pytest.raises(kvsnapshot.SnapshotFormatError):
        KVStore.restore(data)


# ----------------------------------------------------------------- model test


@dataclass
class Model:
    """The rules written as plainly as possible, without any of the store's tricks: keys
    with their revisions and lease, leases with their TTL, sessions."""

    max_sessions: int
    # key -> (value, create revision, mod revision, lease)
    data: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)
    leases: dict[int, int] = field(default_factory=dict)  # id -> ttl
    # client_id -> (last seq, its result, log index of last use)
    sessions: dict[str, tuple[int, Result, int]] = field(default_factory=dict)

    def apply(self, index: int, req: Request | None) -> Result:
        if req is None:
            return Result(False, None, False, ERROR_UNDECODABLE)
        if req.client_id == "":
            return self.execute(req.command, index)
        if req.client_id not in self.sessions:
            result = self.execute(req.command, index)
            self.sessions[req.client_id] = (req.seq, result, index)
            if len(self.sessions) > self.max_sessions:
                oldest = min(self.sessions, key=lambda cid: self.sessions[cid][2])
                del self.sessions[oldest]
            return result
        seq, cached, _ = self.sessions[req.client_id]
        if req.seq == seq:
            result = cached
        elif req.seq < seq:
            self.sessions[req.client_id] = (seq, cached, index)
            return Result(False, None, False, ERROR_STALE_SEQUENCE)
        else:
            result = self.execute(req.command, index)
        self.sessions[req.client_id] = (req.seq, result, index)
        return result

    def put(self, key: str, value: str, lease: int, index: int) -> Result:
        if lease and lease not in self.leases:
            return Result(False, None, False, ERROR_LEASE_NOT_FOUND)
        created = self.data[key][1] if key in self.data else index
        self.data[key] = (value, created, index, lease)
        return Result(True, value, True, revision=index)

    def delete(self, keys: list[str]) -> int:
        for key in keys:
            del self.data[key]
        return len(keys)

    def execute(self, command: Command, index: int) -> Result:
        current = self.data.get(getattr(command, "key", ""))
        if isinstance(command, Set):
            return self.put(command.key, command.value, command.lease, index)
        if isinstance(command, Cas | CasRevision):
            if isinstance(command, Cas):
                matches = (current and current[0]) == command.expected
            else:
                matches = (current[2] if current else 0) == command.mod_revision
            if matches:
                return self.put(command.key, command.value, command.lease, index)
            return Result(False, current and current[0], current is not None)
        if isinstance(command, Delete):
            return Result(self.delete([command.key] if current else []) == 1, None, False)
        if isinstance(command, DeleteRange):
            end = command.end
            doomed = [k for k in self.data if k >= command.start and (end is None or k < end)]
            count = self.delete(doomed)
            return Result(count > 0, None, False, count=count)
        if isinstance(command, LeaseGrant):
            self.leases[index] = command.ttl_s
            return Result(True, None, False)
        if command.lease not in self.leases:
            return Result(False, None, False)
        del self.leases[command.lease]
        count = self.delete([k for k, stored in self.data.items() if stored[3] == command.lease])
        return Result(True, None, False, count=count)


small_text = st.sampled_from(["", "x", "y", "xy"])
small_leases = st.sampled_from([0, 0, 1, 2, 3, 4, 5])  # ids are grant indexes
small_commands = st.one_of(
    st.builds(Set, small_text, small_text, small_leases),
    st.builds(Cas, small_text, st.none() | small_text, small_text, small_leases),
    st.builds(CasRevision, small_text, st.integers(0, 8), small_text, small_leases),
    st.builds(Delete, small_text),
    st.builds(DeleteRange, small_text, st.none() | small_text),
    st.builds(LeaseGrant, st.integers(1, 3)),
    st.builds(LeaseRevoke, small_leases.filter(bool)),
)
# Few clients and small seqs, so retries, stale writes and evictions are all common.
log_entries = st.one_of(
    st.builds(
        lambda client, seq, command: Request(client, seq if client else 0, command),
        st.sampled_from(["", "a", "b", "c", "d"]),
        st.integers(1, 4),
        small_commands,
    ),
    st.just(None),
)


@deterministic
@given(
    st.lists(st.tuples(st.integers(1, 3), log_entries), max_size=60),
    st.integers(1, 3),
    st.integers(0, 60),
)
def test_store_matches_model_and_survives_snapshot_midway(
    log: list[tuple[int, Request | None]], max_sessions: int, cut: int
) -> None:
    model = Model(max_sessions)
    store = KVStore(max_sessions)
    twin = KVStore(max_sessions)
    index = 0
    for position, (step, req) in enumerate(log):
        if position == cut:
            twin = KVStore.restore(twin.snapshot())
        index += step
        data = b"\x80" if req is None else encode_request(req)
        expected = model.apply(index, req)
        got, got_twin = store.apply(index, data), twin.apply(index, data)
        assert got == expected and got_twin == expected
        if expected.ok and expected.revision:  # a write's revision: its first application
            assert got.revision == got_twin.revision == expected.revision
        if position % 7 == 3:  # the sorted index, built midway, then kept up to date
            store.range("", None, 0)
    for either in (store, twin):
        items, more = either.range("", None, 0)
        assert [(key, tuple(stored)) for key, stored in items] == sorted(model.data.items())
        assert not more
        assert either.leases == model.leases
    assert (len(store), store.sessions) == (len(model.data), len(model.sessions))
    assert_same_store(twin, store)


def test_a_request_applied_from_its_decoded_form_gives_the_same_results() -> None:
    """The leader passes the request it proposed instead of decoding its own bytes."""
    requests = [
        Request("c", 1, Set("k", "v")),
        Request("c", 1, Set("k", "v")),  # a retry: the session answers
        Request("c", 2, Cas("k", "v", "w")),
        Request("d", 1, Delete("k")),
        Request("c", 1, Set("k", "late")),  # stale
    ]
    by_bytes, by_request = KVStore(), KVStore()
    for index, request in enumerate(requests, start=1):
        data = encode_request(request)
        assert by_bytes.apply(index, data) == by_request.apply(index, data, request)
    assert by_bytes.state_hash() == by_request.state_hash()


def test_a_snapshot_keeps_insertion_order_and_equal_stores_give_equal_bytes() -> None:
    store = KVStore()
    for key in ("zebra", "apple", "mango"):
        apply1(store, Set(key, key.upper()))
    apply1(store, Delete("apple"))
    apply1(store, Set("apple", "again"))  # now last in insertion order
    restored = KVStore.restore(store.snapshot())
    assert list(restored.capture().data) == ["zebra", "mango", "apple"]
    twin = KVStore()
    for key in ("zebra", "apple", "mango"):
        apply1(twin, Set(key, key.upper()))
    apply1(twin, Delete("apple"))
    apply1(twin, Set("apple", "again"))
    assert twin.snapshot() == store.snapshot() == restored.snapshot()


def test_many_keys_span_chunks_and_come_back_whole() -> None:
    store = KVStore()
    count = 3 * kvsnapshot.CHUNK_KEYS + 5
    for n in range(count):
        store.apply(n + 1, encode_request(Request("", 0, Set(f"k{n}", f"v{n}"))))
    restored = KVStore.restore(store.snapshot())
    assert len(restored) == count and restored.get(f"k{count - 1}") == f"v{count - 1}"
    assert restored.state_hash() == store.state_hash()


def test_large_values_are_encoded_in_chunks_of_about_a_megabyte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each chunk is one C call that holds the interpreter: 4,096 values of 256 kB in one
    starved the consensus loop for seconds (elections under large writes)."""
    store = KVStore()
    value = "v" * 256 * 1024
    for n in range(40):
        store.apply(n + 1, encode_request(Request("", 0, Set(f"k{n}", value))))
    sizes: list[int] = []
    dumps = cbor2.dumps

    def recording(obj: object, canonical: bool = False) -> bytes:
        out = dumps(obj, canonical=canonical)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(cbor2, "dumps", recording)
    data = store.snapshot()
    monkeypatch.undo()
    assert len(sizes) > 8
    assert max(sizes) <= kvsnapshot.CHUNK_BYTES + len(value) + 4096
    assert KVStore.restore(data).state_hash() == store.state_hash()


def test_a_version_1_snapshot_is_refused_by_name() -> None:
    with pytest.raises(kvsnapshot.SnapshotFormatError, match="version 1"):
        KVStore.restore(snapshot_of(1, 1, 10, {}, []))


# ----------------------------------------------------------------- revisions, ranges, leases


def test_revisions_are_the_indexes_that_created_and_last_modified_a_key() -> None:
    store = KVStore()
    feed(store, enc(Set("k", "a")), enc(Set("other", "x")), enc(Set("k", "b")))
    assert store.stored("k") == Stored("b", 1, 3, 0)
    apply1(store, Delete("k"))
    apply1(store, Set("k", "c"))  # created again: a new create revision
    assert store.stored("k") == Stored("c", 5, 5, 0)
    assert store.last_applied_index == 5


def test_cas_on_a_revision_swaps_only_if_the_key_was_not_modified_since() -> None:
    store = KVStore()
    assert apply1(store, CasRevision("k", 0, "first")).ok  # 0: only if absent
    assert not apply1(store, CasRevision("k", 0, "again")).ok
    apply1(store, Set("k", "first"))  # the same text, rewritten at index 3
    refused = apply1(store, CasRevision("k", 1, "second"))
    assert refused == Result(ok=False, value="first", found=True)
    assert apply1(store, CasRevision("k", 3, "second")) == Result(
        ok=True, value="second", found=True
    )
    assert store.stored("k") == Stored("second", 1, 5, 0)


def test_a_range_is_in_key_order_with_a_limit_that_says_more_follow() -> None:
    store = KVStore()
    for key in ("b", "a/2", "c", "a/1", "a/10", "a"):
        apply1(store, Set(key, key.upper()))
    items, more = store.range("a/", prefix_end("a/"), 2)
    assert [key for key, _ in items] == ["a/1", "a/10"] and more
    items, more = store.range("a/10\x00", prefix_end("a/"), 2)  # the continuation
    assert [key for key, _ in items] == ["a/2"] and not more
    apply1(store, Delete("a/10"))
    apply1(store, Set("a/0", "new"))  # the index follows writes once built
    assert [key for key, _ in store.range("", None, 0)[0]] == ["a", "a/0", "a/1", "a/2", "b", "c"]
    assert store.range("b", "c", 0)[0] == [("b", Stored("B", 1, 1, 0))]


def test_delete_range_deletes_a_prefix_and_counts() -> None:
    store = KVStore()
    for key in ("app/1", "app/2", "apple", "b"):
        apply1(store, Set(key, "v"))
    result = apply1(store, DeleteRange("app/", prefix_end("app/")))
    assert result == Result(ok=True, value=None, found=False, count=2)
    assert sorted(store.capture().data) == ["apple", "b"]
    assert apply1(store, DeleteRange("x", None)) == Result(False, None, False, count=0)


@pytest.mark.parametrize(
    ("prefix", "end"),
    [("a", "b"), ("a/", "a0"), ("", None), ("a\U0010ffff", "b"), ("\U0010ffff", None)],
)
def test_prefix_end_is_the_first_key_after_the_prefix(prefix: str, end: str | None) -> None:
    assert prefix_end(prefix) == end


def test_a_retried_write_reports_the_revision_it_took_effect_at() -> None:
    """A retry lands at a later index (a new leader proposed it again); the session answers
    it, and the revision is the first attempt's: the one the key has."""
    store = KVStore()
    first = apply1(store, Set("k", "v"), "c", 1)
    apply1(store, Set("other", "x"))
    retried = apply1(store, Set("k", "v"), "c", 1)
    assert first.revision == retried.revision == store.stored("k").mod_revision == 1  # type: ignore[union-attr]
    restored = KVStore.restore(store.snapshot())  # the session keeps it
    assert restored.apply(4, enc(Set("k", "v"), "c", 1)).revision == 1


def test_a_lease_owns_its_keys_until_revoked() -> None:
    store = KVStore()
    first = store.last_applied_index + 1
    apply1(store, LeaseGrant(10))
    second = first + 1
    apply1(store, LeaseGrant(20))
    assert store.leases == {first: 10, second: 20}
    for key in ("a", "b", "c", "d"):
        assert apply1(store, Set(key, "v", lease=first)).ok
    apply1(store, Set("c", "moved", lease=second))  # attached elsewhere
    apply1(store, Set("d", "kept"))  # a write without a lease detaches it
    assert store.lease_keys(first) == ["a", "b"]
    assert apply1(store, LeaseRevoke(first)) == Result(True, None, False, count=2)
    assert sorted(store.capture().data) == ["c", "d"]
    assert store.leases == {second: 20}
    assert apply1(store, LeaseRevoke(first)) == Result(False, None, False)
    refused = apply1(store, Set("e", "v", lease=first))
    assert refused.error == ERROR_LEASE_NOT_FOUND and store.get("e") is None
    assert apply1(store, Cas("e", None, "v", lease=second)).ok
    restored = KVStore.restore(store.snapshot())
    assert restored.lease_keys(second) == ["c", "e"]
    assert_same_store(restored, store)


def test_a_version_2_snapshot_is_read_with_its_index_as_every_revision() -> None:
    body = cbor2.dumps([2, 7, 100, 2, [["cid", 1, 5, True, "v", True, None]]], canonical=True)
    body += cbor2.dumps(["a", "1", "b", "2"])
    old = kvsnapshot.MAGIC + hashlib.sha256(body).digest() + body
    store = KVStore.restore(old)
    assert store.stored("a") == Stored("1", 7, 7, 0)
    assert (store.sessions, store.leases, store.last_applied_index) == (1, {}, 7)


@pytest.mark.parametrize(
    ("leases", "chunk", "why"),
    [
        ([[3, 10]], ["a", "1", 2, 2, 4], "unknown lease"),
        ([], ["a", "1", 3, 2, 0], "bad revisions"),
        ([], ["a", "1", 0, 0, 0], "bad revisions"),
        ([[9, 10]], [], "repeated or unborn"),
        ([[3, 0]], [], "malformed snapshot lease"),
        ([], ["a", "1", 1, True, 0], "must be integers"),
    ],
)
def test_a_snapshot_with_inconsistent_revisions_or_leases_is_refused(
    leases: list[list[int]], chunk: list[object], why: str
) -> None:
    body = cbor2.dumps([3, 5, 100, len(chunk) // 5, [], leases], canonical=True)
    if chunk:
        body += cbor2.dumps(chunk)
    data = kvsnapshot.MAGIC + hashlib.sha256(body).digest() + body
    with pytest.raises(kvsnapshot.SnapshotFormatError, match=why):
        KVStore.restore(data)
