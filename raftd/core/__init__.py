"""The pure Raft core: no I/O, no clock, no global randomness (see node.py for the rules)."""

from raftd.core.log import LogCompactedError, RaftLog
from raftd.core.node import Config, NotLeaderError, Progress, RaftNode, ReadState, Ready, Role
from raftd.core.types import (
    AppendEntries,
    AppendEntriesResponse,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "Config",
    "DurableState",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "LogCompactedError",
    "Message",
    "NodeId",
    "NotLeaderError",
    "Progress",
    "RaftLog",
    "RaftNode",
    "ReadState",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "Snapshot",
    "SnapshotMeta",
]
