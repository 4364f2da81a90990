"""Which trace each piece of Raft work belongs to, and the spans that show it.

The core knows nothing of tracing; the driver tells this module what it is about to do
(send a message, fsync, apply) and what the core reported (events), and this module opens
and closes spans around those effects:

* a client write: the server span's traceparent is stored in the log entry (``Entry.context``)
  so the leader's AppendEntries to each follower, each follower's append and fsync, the
  commit and every member's apply are spans in the request's trace. When one AppendEntries
  carries entries of several traces, each sampled trace gets its own span and links to the
  others in the batch;
* an election: the candidate's root span with a child per phase (pre-vote, vote), a client
  span per RequestVote, each voter's decision as a server span in the same trace, and the
  outcome (won, lost, split, superseded) and term as attributes of the root;
* a leadership transfer: the leader's root span, a client span for its TimeoutNow, and the
  target's election as a child of it, so the hand-over and the election it causes (with
  every vote) are one trace;
* heartbeats and unsampled work: nothing at all, not even attribute building.

All of this runs in the driver task: no locks. Spans waiting for a reply that never comes
(a dropped message, a dead peer) are ended by ``sweep`` with an event saying so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from observability.propagation import context_of, span_context_of, traceparent_of
from observability.sampling import EDGE_ATTRIBUTE, EDGE_ELECTION, EDGE_SNAPSHOT
from raftd.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftd.core import events as ev
from wire.tracecontext import TraceParent, parse_traceparent

PENDING_SPAN_TIMEOUT_NS = 10_000_000_000


def _sampled_contexts(entries: Sequence[Entry]) -> dict[str, list[Entry]]:
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.context:
            groups.setdefault(entry.context, []).append(entry)
    return groups


@dataclass
class _Election:
    root: Span
    phase: Span
    term: int
    # (peer, pre_vote) -> (the round's campaign number, its RequestVote span)
    rpcs: dict[tuple[NodeId, bool], tuple[int, Span]] = field(default_factory=dict)


class RaftSpans:
    def __init__(self, tracer: trace.Tracer, names: dict[NodeId, str]) -> None:
        self.tracer = tracer
        self.names = names
        self._election: _Election | None = None
        self._vote_decisions: dict[tuple[NodeId, int, bool], Span] = {}
        self._replication: dict[NodeId, list[tuple[int, Span, int]]] = {}
        self._appends: dict[str, Span] = {}  # entry context -> this member's append span
        self._install: Span | None = None  # a snapshot being installed here
        # A leadership transfer: on the leader its root span and target; on the target the
        # TimeoutNow's context, under which its election starts.
        self._transfer: tuple[Span, NodeId] | None = None
        self._asked_to_campaign: TraceParent | None = None

    # ------------------------------------------------------------ elections

    def before_send(self, events: tuple[ev.Event, ...]) -> None:
        """Election spans must exist before the RequestVotes of the same Ready go out."""
        for event in events:
            match event:
                # A timed-out election and the next one arrive in the same Ready, in this
                # order: end the old root before the new one starts, not after.
                case ev.ElectionTimedOut():
                    self._end_election(
                        "split", **{"raft.granted": len(event.granted),
                                    "raft.refused": len(event.refused)}
                    )  # fmt: skip
                case ev.ElectionStarted():
                    self._start_election(event)
                case ev.LeaderTransferStarted():
                    self._end_transfer("superseded")
                    root = self.tracer.start_span(
                        "raft.leader_transfer",
                        context=Context(),
                        attributes={
                            EDGE_ATTRIBUTE: EDGE_ELECTION,
                            "raft.term": event.term,
                            "raft.target": self.names.get(event.target, str(event.target)),
                        },
                    )
                    self._transfer = (root, event.target)
                case ev.BecameCandidate() if self._election is not None:
                    election = self._election
                    election.phase.end()
                    election.term = event.term
                    election.phase = self.tracer.start_span(
                        "raft.election.vote",
                        context=trace.set_span_in_context(election.root),
                        attributes={"raft.term": event.term},
                    )
                case _:
                    pass

    def _start_election(self, event: ev.ElectionStarted) -> None:
        if self._election is not None:
            self._end_election("superseded")
        parent = self._asked_to_campaign if event.reason == "transfer" else None
        self._asked_to_campaign = None
        root = self.tracer.start_span(
            "raft.election",
            context=context_of(parent) if parent is not None else Context(),
            kind=SpanKind.INTERNAL,
            attributes={
                EDGE_ATTRIBUTE: EDGE_ELECTION,
                "raft.term": event.term,
                "raft.election.reason": event.reason,
                "raft.pre_vote": event.pre_vote,
            },
        )
        name = "raft.election.pre_vote" if event.pre_vote else "raft.election.vote"
        phase = self.tracer.start_span(
            name, context=trace.set_span_in_context(root), attributes={"raft.term": event.term}
        )
        self._election = _Election(root, phase, event.term)

    def _end_transfer(self, outcome: str) -> None:
        if self._transfer is None:
            return
        root, _ = self._transfer
        self._transfer = None
        root.set_attribute("raft.transfer.outcome", outcome)
        root.end()

    def _end_election(self, outcome: str, **attributes: object) -> None:
        election = self._election
        if election is None:
            return
        self._election = None
        for _, span in election.rpcs.values():
            span.add_event("no reply before the election ended")
            span.end()
        election.phase.end()
        election.root.set_attribute("raft.election.outcome", outcome)
        election.root.set_attribute("raft.term", election.term)
        for key, value in attributes.items():
            election.root.set_attribute(key, value)  # type: ignore[arg-type]
        election.root.end()

    # ------------------------------------------------------------ messages

    def outgoing(self, msg: Message) -> tuple[TraceParent | None, Span | None]:
        """The traceparent for the frame header and the span the message belongs to."""
        match msg:
            case RequestVote() if self._election is not None:
                election = self._election
                span = self.tracer.start_span(
                    f"RequestVote {self.names.get(msg.dst, msg.dst)}",
                    context=trace.set_span_in_context(election.phase),
                    kind=SpanKind.CLIENT,
                    attributes={
                        "raft.peer": self.names.get(msg.dst, str(msg.dst)),
                        "raft.term": msg.term,
                        "raft.pre_vote": msg.pre_vote,
                    },
                )
                previous = election.rpcs.pop((msg.dst, msg.pre_vote), None)
                if previous is not None:
                    previous[1].end()
                election.rpcs[(msg.dst, msg.pre_vote)] = (msg.campaign, span)
                return traceparent_of(span), span
            case AppendEntries(entries=entries) if entries:
                return self._replicate(msg)
            case InstallSnapshot():
                meta = msg.snapshot.meta
                peer = self.names.get(msg.dst, str(msg.dst))
                # A trace of its own, rooted here: the transport adds a chunk event per
                # chunk and ends it once the last one is written.
                span = self.tracer.start_span(
                    f"InstallSnapshot {peer}",
                    context=Context(),
                    kind=SpanKind.CLIENT,
                    attributes={
                        EDGE_ATTRIBUTE: EDGE_SNAPSHOT,
                        "raft.peer": peer,
                        "raft.term": msg.term,
                        "raft.snapshot.index": meta.index,
                        "raft.snapshot.term": meta.term,
                        "raftd.snapshot.bytes": len(msg.snapshot.data),
                    },
                )
                return traceparent_of(span), span
            case RequestVoteResponse():
                decision = self._vote_decisions.get((msg.dst, msg.term, msg.pre_vote))
                return (traceparent_of(decision), decision) if decision else (None, None)
            case TimeoutNow() if self._transfer is not None:
                span = self.tracer.start_span(
                    f"TimeoutNow {self.names.get(msg.dst, msg.dst)}",
                    context=trace.set_span_in_context(self._transfer[0]),
                    kind=SpanKind.CLIENT,
                    attributes={"raft.peer": self.names.get(msg.dst, str(msg.dst))},
                )
                span.end()  # one way: the answer is the election it starts
                return traceparent_of(span), None
            case _:
                return None, None

    def _replicate(self, msg: AppendEntries) -> tuple[TraceParent | None, Span | None]:
        groups = _sampled_contexts(msg.entries)
        if not groups:
            return None, None
        parents = {ctx: parse_traceparent(ctx) for ctx in groups}
        links = [Link(span_context_of(p, remote=False)) for p in parents.values() if p]
        peer = self.names.get(msg.dst, str(msg.dst))
        first: tuple[TraceParent | None, Span | None] = (None, None)
        last_index = msg.entries[-1].index
        for ctx, entries in groups.items():
            parent = parents[ctx]
            if parent is None:
                continue
            span = self.tracer.start_span(
                f"AppendEntries {peer}",
                context=context_of(parent, remote=False),
                kind=SpanKind.CLIENT,
                links=[link for link in links if link.context.trace_id != int(parent.trace_id, 16)],
                attributes={
                    "raft.peer": peer,
                    "raft.term": msg.term,
                    "raft.prev_log_index": msg.prev_log_index,
                    "raft.entries": len(msg.entries),
                    "raft.entries_in_trace": len(entries),
                    "raft.batch_traces": len(groups),
                    "raft.leader_commit": msg.leader_commit,
                },
            )
            self._replication.setdefault(msg.dst, []).append((last_index, span, time.time_ns()))
            if first[1] is None:
                first = (traceparent_of(span), span)
        return first

    def incoming(self, msg: Message, parent: TraceParent | None) -> None:
        match msg:
            case RequestVote() if parent is not None and parent.flags & 1:
                key = (msg.src, msg.term, msg.pre_vote)
                previous = self._vote_decisions.pop(key, None)
                if previous is not None:
                    previous.end()
                self._vote_decisions[key] = self.tracer.start_span(
                    "raft.vote_decision",
                    context=context_of(parent),
                    kind=SpanKind.SERVER,
                    attributes={
                        "raft.candidate": self.names.get(msg.src, str(msg.src)),
                        "raft.term": msg.term,
                        "raft.pre_vote": msg.pre_vote,
                        "raft.candidate_last_log_index": msg.last_log_index,
                        "raft.candidate_last_log_term": msg.last_log_term,
                    },
                )
            case RequestVoteResponse() if self._election is not None:
                # Only the reply to this round's request: a reply delayed from an earlier
                # round answered a request of another trace (the audit found such replies
                # recorded here, in a trace the voter had no part in).
                asked = self._election.rpcs.get((msg.src, msg.pre_vote))
                if asked is None or asked[0] != msg.campaign:
                    return
                _, span = self._election.rpcs.pop((msg.src, msg.pre_vote))
                span.set_attribute("raft.vote_granted", msg.vote_granted)
                span.set_attribute("raft.reply_term", msg.term)
                span.end()
            case AppendEntriesResponse():
                self._replied(msg)
            case AppendEntries(entries=entries) if entries:
                self._follower_append(msg, parent)
            case TimeoutNow() if parent is not None and parent.flags & 1:
                self._asked_to_campaign = parent
            case InstallSnapshot() if parent is not None and parent.flags & 1:
                self._install = self.tracer.start_span(
                    "raft.install_snapshot",
                    context=context_of(parent),
                    kind=SpanKind.SERVER,
                    attributes={
                        "raft.leader": self.names.get(msg.src, str(msg.src)),
                        "raft.snapshot.index": msg.snapshot.meta.index,
                        "raftd.snapshot.bytes": len(msg.snapshot.data),
                    },
                )
            case _:
                pass

    def _replied(self, msg: AppendEntriesResponse) -> None:
        pending = self._replication.get(msg.src)
        if not pending:
            return
        still = []
        for last_index, span, started in pending:
            if msg.success and msg.match_index >= last_index:
                span.set_attribute("raft.match_index", msg.match_index)
                span.end()
            elif not msg.success and msg.rejected_index < last_index:
                span.set_attribute("raft.rejected", True)
                span.add_event(
                    "rejected: the follower's log does not match",
                    {"raft.conflict_index": msg.conflict_index},
                )
                span.end()
            else:
                still.append((last_index, span, started))
        self._replication[msg.src] = still

    def _follower_append(self, msg: AppendEntries, parent: TraceParent | None) -> None:
        for ctx, entries in _sampled_contexts(msg.entries).items():
            entry_parent = parse_traceparent(ctx)
            if entry_parent is None:
                continue
            same_trace = parent is not None and parent.trace_id == entry_parent.trace_id
            links = [] if same_trace or parent is None else [Link(span_context_of(parent))]
            span = self.tracer.start_span(
                "raft.append",
                context=context_of(parent if same_trace else entry_parent),
                kind=SpanKind.SERVER,
                links=links,
                attributes={
                    "raft.leader": self.names.get(msg.src, str(msg.src)),
                    "raft.term": msg.term,
                    "raft.prev_log_index": msg.prev_log_index,
                    "raft.entries": len(msg.entries),
                    "raft.entries_in_trace": len(entries),
                    "raft.first_index": entries[0].index,
                },
            )
            self._appends[ctx] = span

    # ------------------------------------------------------ storage, apply

    def fsync(
        self,
        entries: Sequence[Entry],
        start_ns: int,
        end_ns: int,
        *,
        error: str = "",
        chaos: Mapping[str, bool | float] | None = None,
    ) -> None:
        """One span per sampled trace among the entries this fsync made durable."""
        for ctx, in_trace in _sampled_contexts(entries).items():
            parent = parse_traceparent(ctx)
            if parent is None:
                continue
            # On a follower the fsync belongs under the append that brought the entries.
            append = self._appends.get(ctx)
            span = self.tracer.start_span(
                "wal.fsync",
                context=trace.set_span_in_context(append)
                if append is not None
                else context_of(parent, remote=False),
                start_time=start_ns,
                attributes={
                    "wal.entries": len(entries),
                    "wal.entries_in_trace": len(in_trace),
                    "wal.first_index": in_trace[0].index,
                    **(chaos or {}),
                },
            )
            if error:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end(end_time=end_ns)

    def installed(self, restore_s: float) -> None:
        """The state machine was restored from the snapshot being installed."""
        if self._install is not None and self._install.is_recording():
            self._install.add_event("state machine restored", {"raftd.restore_s": restore_s})

    def after_ready(self) -> None:
        """A follower's append spans end once its entries are durable and it has replied;
        so does an install's, once the snapshot is durable and answered."""
        for span in self._appends.values():
            span.end()
        self._appends.clear()
        if self._install is not None:
            self._install.end()
            self._install = None

    def committed(self, entry: Entry, commit_index: int) -> None:
        parent = parse_traceparent(entry.context)
        if parent is None:
            return
        span = self.tracer.start_span(
            "raft.commit",
            context=context_of(parent, remote=False),
            attributes={"raft.index": entry.index, "raft.term": entry.term,
                        "raft.commit_index": commit_index},
        )  # fmt: skip
        span.end()

    def applied(self, entry: Entry, start_ns: int, outcome: str) -> None:
        parent = parse_traceparent(entry.context)
        if parent is None:
            return
        span = self.tracer.start_span(
            "raft.apply",
            context=context_of(parent, remote=False),
            start_time=start_ns,
            attributes={"raft.index": entry.index, "raft.term": entry.term, "kv.outcome": outcome},
        )
        span.end()

    # -------------------------------------------------------------- events

    def after_events(self, events: tuple[ev.Event, ...]) -> None:
        for event in events:
            match event:
                case ev.VoteGranted() | ev.VoteRefused():
                    key = (event.candidate, event.term, event.pre_vote)
                    span = self._vote_decisions.pop(key, None)
                    if span is not None:
                        granted = isinstance(event, ev.VoteGranted)
                        span.set_attribute("raft.vote_granted", granted)
                        if isinstance(event, ev.VoteRefused):
                            span.set_attribute("raft.vote_refused_reason", event.reason)
                        span.end()
                case ev.BecameLeader():
                    self._end_election("won", **{"raft.votes": len(event.votes)})
                case ev.ElectionLost():
                    self._end_election(
                        "lost", **{"raft.granted": len(event.granted),
                                   "raft.refused": len(event.refused)}
                    )  # fmt: skip
                case ev.BecameFollower() if self._election is not None:
                    self._end_election("superseded")
                    if event.leader_id is not None and self._transfer is not None:
                        won = event.leader_id == self._transfer[1]
                        self._end_transfer("completed" if won else "superseded")
                case ev.BecameFollower(leader_id=leader) if leader is not None:
                    if self._transfer is not None:
                        won = leader == self._transfer[1]
                        self._end_transfer("completed" if won else "superseded")
                case ev.LeaderTransferAborted():
                    # A superseded transfer's root was ended when the next one began.
                    if self._transfer is not None and self._transfer[1] == event.target:
                        self._transfer[0].set_attribute("raft.transfer.reason", event.reason)
                        self._end_transfer("aborted")
                case ev.SteppedDown():
                    for pending in self._replication.values():
                        for _, span, _ in pending:
                            span.add_event("leadership lost before the reply")
                            span.end()
                    self._replication.clear()
                case _:
                    pass

    def sweep(self) -> None:
        """End spans whose reply was lost, so they are exported at all."""
        cutoff = time.time_ns() - PENDING_SPAN_TIMEOUT_NS
        for peer, pending in self._replication.items():
            keep = []
            for last_index, span, started in pending:
                if started < cutoff:
                    span.add_event("no reply within 10 s")
                    span.end()
                else:
                    keep.append((last_index, span, started))
            self._replication[peer] = keep
