"""Prometheus metrics for one member, in the member's own registry.

Two kinds of source feed it. State that the driver already holds (term, role, indexes) and
totals another component already counts (spans) are read when Prometheus scrapes, so they
cost the consensus loop nothing. Events that nobody else counts (messages, elections, client
requests, latencies) arrive through small hook methods on ``RaftMetrics`` that the runtime
calls on its hot path; each one is a dictionary lookup of a cached labelled child and an
increment or observation, never any string formatting.

No label takes a key, a request id or a member id: every label value comes from a closed
set, or from a small open set (message kinds, sampler reasons) capped at
``MAX_LABEL_VALUES`` distinct values, beyond which values are reported as ``other``. A bug
in a caller can therefore never blow up the number of series.

The HTTP server is prometheus-client's own exporter thread, the one kind of thread the
runtime allows besides fsync workers. It reads hook-fed instruments under their own locks,
and the scrape-time sources without any: a scrape may see the term of one instant and the
commit index of the next, which a monitoring view tolerates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from observability.health import LOOP_STALL_S, Health, serve, with_health
from raftd.core import Role

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from raftd.config import Address
    from raftd.runtime.driver import Driver

__all__ = [
    "CHAOS_KINDS",
    "CLIENT_OPS",
    "CLIENT_OUTCOMES",
    "CONNECTION_CLOSE_REASONS",
    "DROP_REASONS",
    "LEADER_TRANSFER_OUTCOMES",
    "MAX_LABEL_VALUES",
    "MESSAGE_KINDS",
    "OTHER",
    "PORTS",
    "ROLES",
    "SAMPLER_REASONS",
    "SNAPSHOT_KINDS",
    "TLS_RELOAD_OUTCOMES",
    "TRANSFER_SIDES",
    "MetricsServer",
    "NodeState",
    "RaftMetrics",
    "driver_state",
    "render",
    "serve_metrics",
]

OTHER = "other"
MAX_LABEL_VALUES = 32

ROLES = ("follower", "pre-candidate", "candidate", "leader")
MESSAGE_KINDS = (
    "AppendEntries",
    "AppendEntriesResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "RequestVote",
    "RequestVoteResponse",
    "InstallSnapshot",
    "TimeoutNow",
)
RPC_KINDS = ("AppendEntries", "RequestVote")
DROP_REASONS = (
    "outbox_full",
    "disconnected",
    "send_failed",
    "unencodable",
    "inbox_full",
    "chaos",
    "superseded",
)
CHAOS_KINDS = ("drop", "delay", "fsync_delay", "fsync_fail")
CLIENT_OPS = (
    "get",
    "stale_get",
    "set",
    "cas",
    "delete",
    "status",
    "snapshot",
    "move_leader",
    "member_list",
    "member_change",
)
PORTS = ("client", "peer")
# Why a member closed or refused a connection on one of its ports (hostile or broken input).
# tls_handshake: a TLS handshake failed (an untrusted or expired certificate, none given);
# tls_mismatch: plaintext on a TLS port or TLS on a plaintext one; identity: a peer whose
# Hello names a member its certificate was not issued for.
CONNECTION_CLOSE_REASONS = (
    "limit",
    "bad_frame",
    "frame_timeout",
    "handshake",
    "misaddressed",
    "tls_handshake",
    "tls_mismatch",
    "identity",
)
CLIENT_OUTCOMES = (
    "ok",
    "not_found",
    "not_swapped",
    "redirected",
    "refused",
    "timeout",
    "leadership_lost",
    "error",
)
SNAPSHOT_KINDS = ("taken", "installed", "sent", "received")
TRANSFER_SIDES = ("sender", "receiver")
TLS_RELOAD_OUTCOMES = ("ok", "failed")
LEADER_TRANSFER_OUTCOMES = ("started", "completed", "aborted")
SAMPLER_REASONS = (
    "sampled",
    "ratio",
    "rate_limited",
    "client_declined",
    "parent_sampled",
    "parent_dropped",
    "unmarked_root",
    "window_full",
)
_SAMPLED_BY_REASON = {"sampled": "true", "parent_sampled": "true"}

# Client requests span a local read (well under a millisecond) to a write stuck behind an
# election; the client library gives up at 5 s, so nothing longer is worth a bucket.
CLIENT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Round trips on a LAN and fsyncs on an SSD can take a tenth of a millisecond; a chaos
# fsync delay or a stalled disk can take seconds.
# A snapshot of a small store takes milliseconds; a million keys, seconds.
SNAPSHOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
IO_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# Batches are bounded by the outbox and the driver's inputs per turn; powers of two show
# whether group commit and pipelining are doing anything. Empty probes land in le="1".
BATCH_BUCKETS = tuple(float(2**i) for i in range(11))


@dataclass(frozen=True, slots=True)
class NodeState:
    """What a scrape reports about the member's Raft state, decoupled from the driver so
    the metrics need neither its types nor its thread."""

    term: int
    role: str
    is_leader: bool
    commit_index: int
    applied_index: int
    last_log_index: int
    snapshot_index: int = 0  # of the newest snapshot (0: none yet)
    log_entries: int = 0  # entries held in the log (and in memory) since its compaction point


class _Bound:
    """Keeps one label's values bounded whatever callers pass.

    A closed bound maps anything outside its set to ``other`` (a metrics typo must not
    crash the consensus loop); an open bound admits the first ``cap`` distinct values."""

    __slots__ = ("_allowed", "_cap", "_seen")

    def __init__(self, allowed: Iterable[str] | None = None, cap: int = MAX_LABEL_VALUES) -> None:
        self._allowed = frozenset(allowed) if allowed is not None else None
        self._seen: set[str] = set()
        self._cap = cap

    def admit(self, value: str) -> str:
        if self._allowed is not None:
            return value if value in self._allowed else OTHER
        if value in self._seen:
            return value
        if len(self._seen) >= self._cap:
            return OTHER
        self._seen.add(value)
        return value


_M = TypeVar("_M", Counter, Histogram)
_Key = str | tuple[str, ...]


class _Children(dict[_Key, _M]):
    """Labelled children keyed by the caller's raw values, so the hot path is one
    ``dict.get``; ``labels()`` (validation, a lock, a tuple of strings) runs once per
    distinct value. Concurrent misses from two threads are harmless: ``labels()`` returns
    the same child to both."""

    def __init__(self, metric: _M, *bounds: _Bound) -> None:
        super().__init__()
        self.metric: _M = metric
        self._bounds = bounds

    def child(self, key: _Key) -> _M:
        values = (key,) if isinstance(key, str) else key
        child = self.metric.labels(*(b.admit(v) for b, v in zip(self._bounds, values, strict=True)))
        # Garbage values all share the ``other`` child; caching each of them would leak.
        if len(self) < 4 * MAX_LABEL_VALUES * len(self._bounds):
            self[key] = child
        return child


class _Folded:
    """A hook-fed counter that can also take running totals kept elsewhere.

    Some components count by themselves (a sampler that OpenTelemetry built from the
    environment, without a callback). Their totals are turned into increments
    of the same series at scrape time, so a dashboard need not care who counted. The
    counter is not registered: the scrape collector syncs it, then yields it."""

    def __init__(self, children: _Children[Counter], key: Callable[[str], _Key]) -> None:
        self.children = children
        self.source: Callable[[], Mapping[str, int]] | None = None
        self._key = key
        self._seen: dict[str, int] = {}
        # Two concurrent scrapes must not both add the same difference.
        self._lock = threading.Lock()

    def sync(self) -> None:
        source = self.source
        if source is None:
            return
        with self._lock:
            # dict() copies in one step under the GIL, while the owner keeps counting.
            for name, total in dict(source()).items():
                delta = total - self._seen.get(name, 0)
                if delta > 0:
                    self._seen[name] = total
                    key = self._key(name)
                    (self.children.get(key) or self.children.child(key)).inc(delta)


class RaftMetrics:
    """The member's metrics: instruments fed by hooks, plus values read at scrape time.

    Only ever registered in its own ``CollectorRegistry``: the global one would mix the
    members of an in-process test cluster and leak between tests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._state_source: Callable[[], NodeState] | None = None
        self._span_counts: Callable[[], tuple[int, int]] | None = None
        self._trace_budget: Callable[[], tuple[int, int]] | None = None
        reg = self.registry

        elections = Counter(
            "raftd_elections_started",
            "Elections this member started, by phase (pre_vote asks without bumping the term).",
            ["phase"],
            registry=reg,
        )
        self._pre_vote_started = elections.labels("pre_vote")
        self._vote_started = elections.labels("vote")
        self._leader_changes = Counter(
            "raftd_leader_changes",
            "Times the leader this member knows of changed.",
            registry=reg,
        )
        self._leases_expired = Counter(
            "raftd_leases_expired",
            "Leases this member, as leader, found expired and proposed to revoke.",
            registry=reg,
        )
        self._members = Gauge(
            "raftd_cluster_members",
            "Members in the configuration in force on this member, by kind (voter or "
            "learner); members disagree for a moment while a change is replicated.",
            ["kind"],
            registry=reg,
        )
        self._is_learner = Gauge(
            "raftd_is_learner",
            "1 if this member is a learner (receives the log, does not vote) in the "
            "configuration in force here.",
            registry=reg,
        )
        self._leader_transfers: _Children[Counter] = _Children(
            Counter(
                "raftd_leader_transfers",
                "Leadership transfers this member started as leader, and how they ended "
                "(completed: the target leads; aborted: it did not within an election timeout).",
                ["outcome"],
                registry=reg,
            ),
            _Bound(LEADER_TRANSFER_OUTCOMES),
        )
        kind = _Bound()
        self._sent: _Children[Counter] = _Children(
            Counter("raftd_messages_sent", "Raft messages sent, by kind.", ["kind"], registry=reg),
            kind,
        )
        self._received: _Children[Counter] = _Children(
            Counter(
                "raftd_messages_received",
                "Raft messages received, by kind.",
                ["kind"],
                registry=reg,
            ),
            kind,
        )
        self._dropped: _Children[Counter] = _Children(
            Counter(
                "raftd_messages_dropped",
                "Raft messages dropped, by kind and reason (Raft retransmits what matters).",
                ["kind", "reason"],
                registry=reg,
            ),
            kind,
            _Bound(DROP_REASONS),
        )
        self._chaos: _Children[Counter] = _Children(
            Counter(
                "raftd_chaos_injections",
                "Faults the chaos layer injected, by kind.",
                ["kind"],
                registry=reg,
            ),
            _Bound(CHAOS_KINDS),
        )
        port = _Bound(PORTS)
        self._connections_closed: _Children[Counter] = _Children(
            Counter(
                "raftd_connections_closed_by_member",
                "Connections this member closed or refused because of what (or how much) came "
                "in, by port and reason; each first occurrence is also a log line.",
                ["port", "reason"],
                registry=reg,
            ),
            port,
            _Bound(CONNECTION_CLOSE_REASONS),
        )
        self._bad_traceparents: _Children[Counter] = _Children(
            Counter(
                "raftd_bad_traceparents",
                "Requests and messages whose traceparent was invalid and dropped (the request "
                "itself was still served), by port.",
                ["port"],
                registry=reg,
            ),
            port,
        )
        self._open_connections = Gauge(
            "raftd_open_connections",
            "Connections open on each port right now (the client port's are limited).",
            ["port"],
            registry=reg,
        )
        ops, outcomes = _Bound(CLIENT_OPS), _Bound(CLIENT_OUTCOMES)
        self._requests: _Children[Counter] = _Children(
            Counter(
                "raftd_client_requests",
                "Client requests answered, by operation and outcome.",
                ["op", "outcome"],
                registry=reg,
            ),
            ops,
            outcomes,
        )
        self._request_seconds: _Children[Histogram] = _Children(
            Histogram(
                "raftd_client_request_duration_seconds",
                "Time from a client request's arrival to its answer, by operation.",
                ["op"],
                buckets=CLIENT_BUCKETS,
                registry=reg,
            ),
            ops,
        )
        self._rpc_seconds: _Children[Histogram] = _Children(
            Histogram(
                "raftd_rpc_duration_seconds",
                "Round trip from sending a Raft request to its response, by request kind.",
                ["kind"],
                buckets=IO_BUCKETS,
                registry=reg,
            ),
            _Bound(),
        )
        snapshot_kind = _Bound(SNAPSHOT_KINDS)
        self._snapshots: _Children[Counter] = _Children(
            Counter(
                "raftd_snapshots",
                "Snapshots taken here, installed from a leader, sent to and received from "
                "peers, by kind.",
                ["kind"],
                registry=reg,
            ),
            snapshot_kind,
        )
        self._snapshot_seconds: _Children[Histogram] = _Children(
            Histogram(
                "raftd_snapshot_duration_seconds",
                "Time to take, install, send or receive one snapshot, by kind.",
                ["kind"],
                buckets=SNAPSHOT_BUCKETS,
                registry=reg,
            ),
            snapshot_kind,
        )
        self._transfers_cut: _Children[Counter] = _Children(
            Counter(
                "raftd_snapshot_transfers_cut",
                "Snapshot transfers a lost connection cut short, by side (a sender knows "
                "only of those a write failed in); the leader sends it again from the start.",
                ["side"],
                registry=reg,
            ),
            _Bound(TRANSFER_SIDES),
        )
        self._tls_reloads: _Children[Counter] = _Children(
            Counter(
                "raftd_tls_reloads",
                "Reloads of the TLS certificates (SIGHUP or changed files), by outcome; a "
                "failed one leaves the member on its previous certificates.",
                ["outcome"],
                registry=reg,
            ),
            _Bound(TLS_RELOAD_OUTCOMES),
        )
        self._tls_expiry = Gauge(
            "raftd_tls_certificate_expiry_timestamp_seconds",
            "When the certificate each TLS port presents stops being valid (Unix time).",
            ["port"],
            registry=reg,
        )
        self._snapshot_bytes = Gauge(
            "raftd_snapshot_bytes",
            "Size of the last snapshot this member took, installed, sent or received.",
            registry=reg,
        )
        self._fsync_seconds = Histogram(
            "raftd_fsync_duration_seconds",
            "Time to make one batch of log writes durable.",
            buckets=IO_BUCKETS,
            registry=reg,
        )
        self._append_batch = Histogram(
            "raftd_append_entries_batch_entries",
            "Log entries carried per AppendEntries sent.",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self._fsync_batch = Histogram(
            "raftd_fsync_batch_entries",
            "Log entries made durable per fsync (group commit).",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self._sampler: _Children[Counter] = _Children(
            Counter(
                "raftd_sampler_decisions",
                "Trace sampling decisions, by reason and whether the trace was kept.",
                ["reason", "sampled"],
                registry=None,
            ),
            _Bound(),
            _Bound(("true", "false")),
        )
        self._sampler_totals = _Folded(
            self._sampler, lambda reason: (reason, _SAMPLED_BY_REASON.get(reason, "false"))
        )
        self._folded = (self._sampler_totals,)
        reg.register(_ScrapeCollector(self))

        # Series that exist from the start make rate() and absent() work before the first
        # event; the closed sets are small enough to create them all.
        for chaos_kind in CHAOS_KINDS:
            self._chaos.child(chaos_kind)
        for reload_outcome in TLS_RELOAD_OUTCOMES:
            self._tls_reloads.child(reload_outcome)
        for port_name in PORTS:
            self._bad_traceparents.child(port_name)
            self._open_connections.labels(port_name)
            for reason in CONNECTION_CLOSE_REASONS:
                self._connections_closed.child((port_name, reason))
        for op in CLIENT_OPS:
            self._request_seconds.child(op)
            for outcome in CLIENT_OUTCOMES:
                self._requests.child((op, outcome))

    # ------------------------------------------------------------ binding

    def bind_state(self, source: Callable[[], NodeState] | None) -> None:
        """Reports the Raft state gauges from ``source`` at each scrape (None: none)."""
        self._state_source = source

    def bind_span_counts(self, source: Callable[[], tuple[int, int]] | None) -> None:
        """Reports ``(exported, failed)`` span totals that the trace exporter keeps itself,
        so the exporter needs no dependency on Prometheus."""
        self._span_counts = source

    def bind_trace_budget(self, source: Callable[[], tuple[int, int]] | None) -> None:
        """Reports ``(parts dropped, room)`` of the member's trace window at each scrape:
        the traces it declined to record for want of room, and how many more fit now."""
        self._trace_budget = source

    def bind_sampler_totals(self, source: Callable[[], Mapping[str, int]] | None) -> None:
        """Folds a sampler's own totals by reason (``RaftdSampler.decisions``) into
        ``raftd_sampler_decisions_total`` at scrape time, for a sampler that OpenTelemetry
        built from the environment and so has no ``on_decision`` callback. Using both
        counts every decision twice. Only ``sampled`` and ``parent_sampled`` keep a trace."""
        self._sampler_totals.source = source

    # --------------------------------------------------------------- hooks

    def election_started(self, pre_vote: bool) -> None:
        (self._pre_vote_started if pre_vote else self._vote_started).inc()

    def leader_changed(self) -> None:
        self._leader_changes.inc()

    def lease_expired(self) -> None:
        self._leases_expired.inc()

    def membership(self, voters: int, learners: int, learner: bool = False) -> None:
        """The configuration in force on this member (its newest, committed or not), and
        whether this member is one of its learners."""
        self._members.labels("voter").set(voters)
        self._members.labels("learner").set(learners)
        self._is_learner.set(1 if learner else 0)

    def leader_transfer(self, outcome: str) -> None:
        """``outcome`` is one of ``LEADER_TRANSFER_OUTCOMES``."""
        child = self._leader_transfers.get(outcome)
        (child or self._leader_transfers.child(outcome)).inc()

    def message_sent(self, kind: str) -> None:
        """``kind`` is the message's class name (``MESSAGE_KINDS``)."""
        child = self._sent.get(kind)
        (child or self._sent.child(kind)).inc()

    def message_received(self, kind: str) -> None:
        child = self._received.get(kind)
        (child or self._received.child(kind)).inc()

    def message_dropped(self, kind: str, reason: str) -> None:
        """``reason`` is one of ``DROP_REASONS``; anything else is reported as ``other``."""
        key = (kind, reason)
        child = self._dropped.get(key)
        (child or self._dropped.child(key)).inc()

    def chaos_injected(self, kind: str) -> None:
        """``kind`` is one of ``CHAOS_KINDS``."""
        child = self._chaos.get(kind)
        (child or self._chaos.child(kind)).inc()

    def connection_closed(self, port: str, reason: str) -> None:
        """``port`` from ``PORTS``, ``reason`` from ``CONNECTION_CLOSE_REASONS``."""
        key = (port, reason)
        child = self._connections_closed.get(key)
        (child or self._connections_closed.child(key)).inc()

    def bad_traceparent(self, port: str) -> None:
        child = self._bad_traceparents.get(port)
        (child or self._bad_traceparents.child(port)).inc()

    def connection_opened(self, port: str, delta: int = 1) -> None:
        """+1 when a connection is accepted, -1 (``delta``) when it ends."""
        self._open_connections.labels(port).inc(delta)

    def client_request(self, op: str, outcome: str, seconds: float) -> None:
        """``op`` from ``CLIENT_OPS``, ``outcome`` from ``CLIENT_OUTCOMES``."""
        key = (op, outcome)
        child = self._requests.get(key)
        (child or self._requests.child(key)).inc()
        timer = self._request_seconds.get(op)
        (timer or self._request_seconds.child(op)).observe(seconds)

    def rpc_completed(self, kind: str, seconds: float) -> None:
        """``kind`` is the request's class name: ``AppendEntries`` or ``RequestVote``."""
        timer = self._rpc_seconds.get(kind)
        (timer or self._rpc_seconds.child(kind)).observe(seconds)

    def fsync(self, seconds: float, entries: int) -> None:
        self._fsync_seconds.observe(seconds)
        self._fsync_batch.observe(entries)

    def snapshot(self, kind: str, seconds: float, size: int) -> None:
        """``kind`` is one of ``SNAPSHOT_KINDS``: taken here, installed from a leader, sent
        to a follower or received from a leader (the transfer alone)."""
        child = self._snapshots.get(kind)
        (child or self._snapshots.child(kind)).inc()
        timed = self._snapshot_seconds.get(kind)
        (timed or self._snapshot_seconds.child(kind)).observe(seconds)
        self._snapshot_bytes.set(size)

    def snapshot_transfer_cut(self, side: str) -> None:
        """``side`` is one of ``TRANSFER_SIDES``."""
        child = self._transfers_cut.get(side)
        (child or self._transfers_cut.child(side)).inc()

    def tls_reloaded(self, outcome: str) -> None:
        """``outcome`` is one of ``TLS_RELOAD_OUTCOMES``."""
        child = self._tls_reloads.get(outcome)
        (child or self._tls_reloads.child(outcome)).inc()

    def tls_certificates(self, not_after: Mapping[str, datetime]) -> None:
        for port, when in not_after.items():
            self._tls_expiry.labels(port).set(when.timestamp())

    def append_entries_sent(self, entries: int) -> None:
        self._append_batch.observe(entries)

    def sampler_decision(self, reason: str, sampled: bool) -> None:
        """Shaped as a sampler's ``on_decision(reason, sampled)`` callback. Expected
        reasons are ``SAMPLER_REASONS``; others are admitted up to ``MAX_LABEL_VALUES``."""
        key = (reason, "true" if sampled else "false")
        child = self._sampler.get(key)
        (child or self._sampler.child(key)).inc()


class _ScrapeCollector(Collector):
    def __init__(self, metrics: RaftMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        """Names the families up front so the registry refuses a clash at registration."""
        yield from _state_families()
        yield CounterMetricFamily("raftd_spans_exported", _SPANS_EXPORTED_HELP)
        yield CounterMetricFamily("raftd_spans_failed", _SPANS_FAILED_HELP)
        yield CounterMetricFamily("raftd_trace_parts_dropped", _PARTS_DROPPED_HELP)
        yield GaugeMetricFamily("raftd_trace_window_room", _WINDOW_ROOM_HELP)
        for folded in self._metrics._folded:
            yield from folded.children.metric.describe()

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        state_source = metrics._state_source
        if state_source is not None:
            yield from _state_families(state_source())
        span_counts = metrics._span_counts
        if span_counts is not None:
            exported, failed = span_counts()
            yield CounterMetricFamily("raftd_spans_exported", _SPANS_EXPORTED_HELP, value=exported)
            yield CounterMetricFamily("raftd_spans_failed", _SPANS_FAILED_HELP, value=failed)
        trace_budget = metrics._trace_budget
        if trace_budget is not None:
            dropped, room = trace_budget()
            yield CounterMetricFamily(
                "raftd_trace_parts_dropped", _PARTS_DROPPED_HELP, value=dropped
            )
            yield GaugeMetricFamily("raftd_trace_window_room", _WINDOW_ROOM_HELP, value=room)
        for folded in metrics._folded:
            folded.sync()
            yield from folded.children.metric.collect()


_SPANS_EXPORTED_HELP = "Spans the trace exporter delivered."
_SPANS_FAILED_HELP = "Spans the trace exporter could not deliver and gave up on."
_PARTS_DROPPED_HELP = (
    "Traces of which this member recorded nothing (or, rarely, not every span) because its "
    "window of traces per minute was full: each is a partial trace somewhere."
)
_WINDOW_ROOM_HELP = "Traces this member could still record within its per-minute cap now."


def _state_families(state: NodeState | None = None) -> Iterator[GaugeMetricFamily]:
    """Without a state, the same families with no samples, for ``describe``."""

    def gauge(name: str, doc: str, value: Callable[[NodeState], float]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=None if state is None else value(state))

    yield gauge("raftd_term", "Current Raft term.", lambda s: s.term)
    yield gauge("raftd_is_leader", "1 if this member leads.", lambda s: s.is_leader)
    role = GaugeMetricFamily(
        "raftd_role", "1 for the member's current role, 0 for the others.", labels=["role"]
    )
    if state is not None:
        for name in ROLES:
            role.add_metric([name], name == state.role)
    yield role
    yield gauge(
        "raftd_commit_index", "Highest log index known committed.", lambda s: s.commit_index
    )
    yield gauge("raftd_applied_index", "Highest log index applied.", lambda s: s.applied_index)
    yield gauge("raftd_last_log_index", "Last index in the local log.", lambda s: s.last_log_index)
    yield gauge(
        "raftd_snapshot_index",
        "Last log index the member's newest snapshot includes (0: none yet).",
        lambda s: s.snapshot_index,
    )
    yield gauge(
        "raftd_log_entries",
        "Log entries held since the compaction point (memory and disk grow with it).",
        lambda s: s.log_entries,
    )


def driver_state(driver: Driver) -> Callable[[], NodeState]:
    """A state source for ``bind_state`` that reads the driver directly, from the
    exporter thread; plain attribute reads are safe without the driver's cooperation."""

    def read() -> NodeState:
        node = driver.node
        role = node.role
        return NodeState(
            term=node.current_term,
            role=role.value,
            is_leader=role is Role.LEADER,
            commit_index=node.commit_index,
            applied_index=driver.applied_index,
            last_log_index=node.log.last_index,
            snapshot_index=0 if node.snapshot is None else node.snapshot.meta.index,
            log_entries=node.log.last_index - node.log.snapshot_index,
        )

    return read


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """The running exporter: its bound port (useful when asked for port 0) and a way to
    stop it, which tests need and the daemon (a daemon thread) does not."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve_metrics(
    address: Address, metrics: RaftMetrics, health: Health | None = None
) -> MetricsServer:
    """Serves ``/metrics`` from the member's registry on the exporter thread, and with
    ``health`` also ``/health`` and ``/ready`` (observability.health)."""
    app = make_wsgi_app(metrics.registry)
    if health is not None:
        app = with_health(app, health)
    server, thread = serve(address.host, address.port, app)
    return MetricsServer(address.host, server.server_port, server, thread)


def driver_health(driver: Driver) -> Health:
    """Liveness and readiness read from the driver, like ``driver_state``, from the
    exporter thread."""

    def live() -> str | None:
        stalled = time.monotonic() - driver.loop_turned_at
        if stalled > LOOP_STALL_S:
            return f"the consensus loop has not turned for {stalled:.0f} s"
        return None

    def ready() -> str | None:
        node = driver.node
        if node.leader_id is None:
            return "no leader known"
        committed, applied = node.commit_index, driver.applied_index
        if applied < committed:
            return f"applied {applied} of the {committed} entries known committed"
        return None

    return Health(live, ready)


def render(metrics: RaftMetrics) -> bytes:
    """The exposition exactly as a scrape would see it."""
    return generate_latest(metrics.registry)
