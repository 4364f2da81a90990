"""The messages raftd and raftctl exchange, and the two registries that decode them.

Client outcomes are either definite (the write certainly happened, or certainly did not) or
indefinite (a timeout or lost leadership: it may still happen). ``ErrorReply.definite``
carries that difference to raftctl, which exits 1 for definite failures and 3 for unknown
outcomes; a client may retry an indefinite write with the same session and sequence number,
and the session table turns the retry into exactly-once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from raftd.core.types import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from wire.codec import Registry

# ---------------------------------------------------------------- peers


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame on every peer connection: who is calling, from which cluster, and where
    its clients should go (followers learn the leader's client address from this)."""

    cluster_id: str
    node_name: str
    client_addr: str


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """One piece of a leader's InstallSnapshot: the transport sends a snapshot as chunks of
    at most ``raftd.runtime.transfer.CHUNK_BYTES`` so that heartbeats and appends to the same
    follower pass between them and no frame nears the frame limit. ``digest`` is the sha256
    of the whole data, checked before the follower's core ever sees the snapshot."""

    term: int
    src: int
    dst: int
    index: int
    snapshot_term: int
    voters: tuple[int, ...]
    total_bytes: int
    offset: int
    digest: bytes
    data: bytes
    config: bytes = b""  # the snapshot's configuration entry (SnapshotMeta.config)


PEER_REGISTRY = Registry()
PEER_REGISTRY.register(
    Hello,
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    SnapshotChunk,
    TimeoutNow,
)

# -------------------------------------------------------------- clients

# Sizes of keys and values, in UTF-8 bytes, refused at the client port (and by raftctl before
# sending). A write becomes one log entry, and an entry is never split across AppendEntries
# messages, so the largest request (a cas: key, expected and new value, about 2 MiB) must stay
# well inside the 8 MiB peer and client frame limit (wire.frame.DEFAULT_MAX_FRAME_BYTES).
MAX_KEY_BYTES = 4096
MAX_VALUE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GetRequest:
    """Linearizable unless ``max_staleness_s`` is set: then any node that heard from the
    leader within that many seconds may answer from its own state."""

    key: str
    max_staleness_s: float | None = None
    forward: bool = False


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """Keys in ``[start, end)`` in order (``end`` None: to the last key), at most ``limit``
    of them (0: all); linearizable unless ``max_staleness_s`` is set, as for GetRequest.
    A reply with ``more`` continues from its last key + "\\0"."""

    start: str
    end: str | None
    limit: int
    max_staleness_s: float | None = None
    forward: bool = False


@dataclass(frozen=True, slots=True)
class SetRequest:
    """``lease`` (0: none) ties the key to a lease: it is deleted when the lease ends."""

    key: str
    value: str
    client_id: str
    seq: int
    forward: bool = False
    lease: int = 0


@dataclass(frozen=True, slots=True)
class CasRequest:
    """Swap to ``value`` if the key holds ``expected`` (or, with ``expected`` None, is
    absent); with ``mod_revision`` set, if the key was last modified at that revision
    instead (0: if absent), and ``expected`` is not looked at."""

    key: str
    expected: str | None
    value: str
    client_id: str
    seq: int
    forward: bool = False
    mod_revision: int | None = None
    lease: int = 0


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    key: str
    client_id: str
    seq: int
    forward: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    """Delete every key in ``[start, end)`` (``end`` None: to the last key)."""

    start: str
    end: str | None
    client_id: str
    seq: int
    forward: bool = False


@dataclass(frozen=True, slots=True)
class LeaseGrantRequest:
    ttl_s: int
    client_id: str
    seq: int
    forward: bool = False


@dataclass(frozen=True, slots=True)
class LeaseRevokeRequest:
    lease: int
    client_id: str
    seq: int
    forward: bool = False


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveRequest:
    """Renew a lease for another TTL: served by the leader alone, which alone decides when
    a lease expires (``raftd.runtime.leases``)."""

    lease: int
    forward: bool = False


@dataclass(frozen=True, slots=True)
class WatchRequest:
    """Stream the changes to keys in ``[start, end)`` (``end`` None: to the last key) as
    they apply, from ``start_revision`` on (0: from now). Answered with ``WatchReply``
    frames under the request's id, the first one empty (the watch is in place, at
    ``revision``), until an ErrorReply ends it: ``compacted`` when this member no longer
    has the history asked for, ``unavailable`` when it dropped a watcher that read too
    slowly or is stopping (resume from the next revision, here or elsewhere)."""

    start: str
    end: str | None
    start_revision: int = 0


@dataclass(frozen=True, slots=True)
class StatusRequest:
    pass


@dataclass(frozen=True, slots=True)
class StateHashRequest:
    """Status plus a digest of the replicated state (data and sessions), so a checker can
    compare members after a fault run. Apart from StatusRequest because it costs a pass
    over the whole store."""


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """A consistent snapshot of the whole store, for a backup (``raftctl snapshot save``).
    The leader answers with ``SnapshotPart`` frames under the request's id, in order, until
    ``offset + len(data) == total_bytes``; anyone else with an ErrorReply (a redirect)."""


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    """One piece of a backup: the state machine's snapshot as of ``index`` (a state every
    write the leader had acknowledged is in), with what restoring it needs to know."""

    cluster_id: str
    index: int
    term: int
    total_bytes: int
    offset: int
    digest: bytes  # sha256 of the whole data
    data: bytes


@dataclass(frozen=True, slots=True)
class GetReply:
    """``revision`` is the store's revision the read was answered at (the index it had
    applied); the key's own revisions are 0 when it is absent."""

    found: bool
    value: str | None
    served_by: str
    stale: bool = False
    max_age_s: float | None = None  # stale reads: how old the state may be, at most
    revision: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A key put (``value`` its new value) or deleted (``value`` None) by the write at
    ``revision``; the revisions and lease are the key's after a put, 0 after a delete."""

    key: str
    value: str | None
    revision: int
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class WatchReply:
    """Events in revision order; ``revision`` is how far this member has applied."""

    events: tuple[WatchEvent, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class RangeReply:
    items: tuple[KeyValue, ...]
    more: bool
    revision: int
    served_by: str
    stale: bool = False
    max_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class WriteReply:
    """``ok``: set always, cas if it swapped, delete if the key existed, a range delete or
    revoke if it deleted anything (``count`` keys). ``value``/``found`` describe the key
    after the write; ``index`` is the write's revision."""

    ok: bool
    value: str | None
    found: bool
    index: int
    count: int = 0


@dataclass(frozen=True, slots=True)
class LeaseReply:
    """A lease granted (its id is the index of its grant) or renewed: it lasts ``ttl_s``
    from now unless renewed again."""

    lease: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class StatusReply:
    node: str
    role: str
    term: int
    leader: str | None
    commit_index: int
    last_applied: int
    last_index: int
    client_addr: str
    leader_addr: str | None
    state_hash: str | None = None


@dataclass(frozen=True, slots=True)
class MemberListRequest:
    """The cluster's members as the leader sees them (a follower redirects)."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member in a ``MemberListReply``. ``match_index`` is the last entry the leader
    knows it holds; ``lag`` how many entries it is behind the leader's log;
    ``last_contact_s`` seconds since the leader last heard from it (None: not since this
    leader took over). All three are the leader's own for itself (lag 0, contact 0)."""

    name: str
    id: int
    role: str  # "voter" or "learner"
    peer_addr: str
    client_addr: str | None
    match_index: int
    lag: int
    last_contact_s: float | None


@dataclass(frozen=True, slots=True)
class MemberListReply:
    leader: str
    term: int
    members: tuple[MemberInfo, ...]


@dataclass(frozen=True, slots=True)
class MemberChangeRequest:
    """``action`` is "add" (``peer_addr`` and ``client_addr`` required; as a learner if
    ``learner``), "promote" (a learner to voter) or "remove". Served by the leader, answered
    once the change is committed."""

    action: str
    name: str
    peer_addr: str | None = None
    client_addr: str | None = None
    learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberChangeReply:
    """The change is committed at ``index``; ``id`` is the member's (a new one for an add)."""

    name: str
    id: int
    index: int


@dataclass(frozen=True, slots=True)
class MoveLeaderRequest:
    """Ask the leader to hand its leadership to ``target`` (a member's name)."""

    target: str


@dataclass(frozen=True, slots=True)
class MoveLeaderReply:
    """``leader`` leads now, in ``term``; ``previous`` led when the request arrived (the
    same as ``leader`` when it already led)."""

    leader: str
    term: int
    previous: str


class ErrorCode(enum.StrEnum):
    NOT_LEADER = "not_leader"  # definite: go to leader_addr
    NO_LEADER = "no_leader"  # definite: nothing was proposed; try again shortly
    TOO_STALE = "too_stale"  # definite: this node cannot meet the staleness bound
    BAD_REQUEST = "bad_request"  # definite
    TOO_LARGE = "too_large"  # definite: a key, value or frame over its limit; nothing proposed
    SESSION = "session"  # definite: stale sequence number
    TRANSFER_FAILED = "transfer_failed"  # definite: the leader is unchanged
    TLS_REQUIRED = "tls_required"  # definite: a plaintext client on a TLS port; nothing read
    NOT_FOUND = "not_found"  # definite: no such lease
    COMPACTED = "compacted"  # definite: the watch's start revision is gone from history
    TIMEOUT = "timeout"  # indefinite
    LEADERSHIP_LOST = "leadership_lost"  # indefinite for writes; reads were not served
    UNAVAILABLE = "unavailable"  # indefinite: shutting down, proxy failed


@dataclass(frozen=True, slots=True)
class ErrorReply:
    code: str
    message: str
    definite: bool
    leader: str | None = None
    leader_addr: str | None = None


ClientRequest = (
    GetRequest
    | RangeRequest
    | SetRequest
    | CasRequest
    | DeleteRequest
    | DeleteRangeRequest
    | LeaseGrantRequest
    | LeaseRevokeRequest
    | LeaseKeepAliveRequest
    | WatchRequest
    | StatusRequest
    | StateHashRequest
    | SnapshotRequest
    | MoveLeaderRequest
    | MemberListRequest
    | MemberChangeRequest
)
ClientReply = (
    GetReply
    | RangeReply
    | WriteReply
    | LeaseReply
    | WatchReply
    | StatusReply
    | MoveLeaderReply
    | MemberListReply
    | MemberChangeReply
    | ErrorReply
)

CLIENT_REGISTRY = Registry()
CLIENT_REGISTRY.register(
    GetRequest,
    RangeRequest,
    SetRequest,
    CasRequest,
    DeleteRequest,
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    LeaseKeepAliveRequest,
    WatchRequest,
    StatusRequest,
    StateHashRequest,
    SnapshotRequest,
    MoveLeaderRequest,
    MemberListRequest,
    MemberChangeRequest,
    GetReply,
    RangeReply,
    WriteReply,
    LeaseReply,
    WatchReply,
    StatusReply,
    MoveLeaderReply,
    MemberListReply,
    MemberChangeReply,
    ErrorReply,
    SnapshotPart,
)


def oversized_field(request: object) -> str | None:
    """What in ``request`` is over its size limit ("value is N bytes, over the limit of L
    bytes (MAX_VALUE_BYTES)"), or None. Shared by the member, which refuses such a request
    before proposing it, and the client library, which refuses it before sending.

    Short text cannot be over (UTF-8 is at most four bytes a character) and is not encoded;
    lone surrogates count three bytes rather than raise: a request is refused, not crashed on.
    """
    fields: list[tuple[str, object, int, str]] = []
    match request:
        case GetRequest(key=key) | DeleteRequest(key=key):
            fields.append(("key", key, MAX_KEY_BYTES, "MAX_KEY_BYTES"))
        case (
            RangeRequest(start=start, end=end)
            | DeleteRangeRequest(start=start, end=end)
            | WatchRequest(start=start, end=end)
        ):
            fields.append(("range start", start, MAX_KEY_BYTES, "MAX_KEY_BYTES"))
            fields.append(("range end", end, MAX_KEY_BYTES, "MAX_KEY_BYTES"))
        case SetRequest(key=key, value=value):
            fields.append(("key", key, MAX_KEY_BYTES, "MAX_KEY_BYTES"))
            fields.append(("value", value, MAX_VALUE_BYTES, "MAX_VALUE_BYTES"))
        case CasRequest(key=key, expected=expected, value=value):
            fields.append(("key", key, MAX_KEY_BYTES, "MAX_KEY_BYTES"))
            fields.append(("expected value", expected, MAX_VALUE_BYTES, "MAX_VALUE_BYTES"))
            fields.append(("value", value, MAX_VALUE_BYTES, "MAX_VALUE_BYTES"))
    for what, text, limit, name in fields:
        if not isinstance(text, str) or len(text) * 4 <= limit:
            continue
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limit:
            return f"{what} is {size} bytes, over the limit of {limit} bytes ({name})"
    return None
