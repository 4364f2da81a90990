"""The member's trace sampler: parent-based inside the cluster, rate-limited at its edge.

Inside the cluster a span follows its parent's decision, wherever that parent ran, as
far as this member's budget allows (below): a trace is kept or dropped whole at its root,
and the members agree on the budget so that a kept trace stays whole.

At the cluster's edge the member decides, and the runtime tells the sampler where the
edge is through the span attribute ``raftd.edge`` (``EDGE_ATTRIBUTE``), set when the span
is started (samplers see only the attributes given at creation):

* ``"client"`` on the server span of an accepted client request. The client's
  ``traceparent`` supplies the trace id and the parent, but it is untrusted input: a
  ``sampled=0`` flag is honoured (a client may opt out), while ``sampled=1`` is honoured
  only within the member's budget, so no client can make a member exceed its cap. Then
  comes the ratio (``RAFTD_TRACE_SAMPLE_RATIO``), decided from the trace id as
  ``TraceIdRatioBased`` does, so members that see the same trace id agree; then the cap.
* ``"election"``, or any other value, on roots the member starts itself (an election, a
  leader change). Elections are rare and each one matters, so the ratio does not apply to
  them: only the budget does, and they may use all of it. Such a root must be started
  with an empty context (``context=opentelemetry.context.Context()``); should it have a
  parent anyway, it is not a root, and it follows that parent like any internal span.

A span without the attribute and without a parent is a root the runtime forgot to mark.
It is dropped and counted as ``unmarked_root`` rather than traced on the house.

The budget (``RAFTD_TRACES_PER_MINUTE``) is exact: ``observability.budget.TraceWindow``
holds every trace this member touched in the last 60 s, and no span of a new trace is
recorded when that would make more than the cap in any sliding minute. It counts the
traces a member joins as well as those it starts, so a span that follows a sampled
parent is recorded only if the trace is already this member's or the window has room;
otherwise the member records nothing of that trace and counts it (``window_full``, and
``raftd_trace_parts_dropped_total``). A quarter of the window (``reserve_fraction``) is
kept for elections: a client trace starts only if that many places stay free, here and,
for a write that the followers will join, on every peer as it last reported its room
(``observability.budget.PeerRooms``). An election may use the whole window. Client traces
are also paced (``_Pacing``): a burst of a third of their share, then one every
``60 / share`` seconds (4 s at the defaults), so that a flood's kept traces, and their
weights, are spread over the minute rather than bunched where the window frees up.

``SampleRate`` (Honeycomb's weight) on a kept client span is the number of requests of the
same name (``kv.set``, ``kv.get``, ...) that reached this member's edge since the last one
kept, itself included: the ratio, the cap and a client's opt-out together. Summed over the
kept spans it is exactly the number of requests, bar those since the last kept one, which
is what a weighted ``COUNT`` needs; it is a little noisy per span, as every weight is.
Spans of elections carry 1. Child spans carry no weight: count requests on the ``kv.*``
spans.

Every decision is counted by reason in ``decisions``, and passed to ``on_decision`` when
given; a sampler built by OpenTelemetry from ``OTEL_TRACES_SAMPLER=raftd`` (the entry
point ``sampler_factory``) has no callback, so a scrape-time collector reads the counter.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from observability.budget import PeerRooms, TraceWindow

EDGE_ATTRIBUTE = "raftd.edge"
EDGE_CLIENT = "client"
EDGE_ELECTION = "election"
EDGE_SNAPSHOT = "snapshot"  # a leader sending its snapshot: the follower joins
EDGE_LEASE = "lease"  # a leader deciding that a lease expired: every member's apply joins
SAMPLE_RATE_ATTRIBUTE = "SampleRate"

RATIO_ENV = "RAFTD_TRACE_SAMPLE_RATIO"
PER_MINUTE_ENV = "RAFTD_TRACES_PER_MINUTE"
DEFAULT_RATIO = 1.0
DEFAULT_PER_MINUTE = 20.0
DEFAULT_RESERVE_FRACTION = 0.25

# Client spans whose trace the followers join (a write the leader replicates); the others
# (reads, redirects of reads) stay on the member that answered.
REPLICATED_SPANS = frozenset({"kv.set", "kv.cas", "kv.delete"})

# Decision reasons, the label values of the runtime's counter.
PARENT_SAMPLED = "parent_sampled"
PARENT_DROPPED = "parent_dropped"
UNMARKED_ROOT = "unmarked_root"
CLIENT_DECLINED = "client_declined"
RATIO = "ratio"
RATE_LIMITED = "rate_limited"
WINDOW_FULL = "window_full"
SAMPLED = "sampled"
REASONS = (
    PARENT_SAMPLED,
    PARENT_DROPPED,
    UNMARKED_ROOT,
    CLIENT_DECLINED,
    RATIO,
    RATE_LIMITED,
    WINDOW_FULL,
    SAMPLED,
)

DecisionCallback = Callable[[str, bool], None]


class _Pacing:
    """Spreads client traces over the minute: a short burst, then one every so often.

    The window alone would let a flood take its whole share at once and then keep nothing
    until those traces left the window a minute later: the kept traces, and the weights
    they carry, would all fall in one second of each minute, and a graph of weighted
    counts would be a comb. Pacing keeps one every ``60 / share`` seconds instead, after a
    burst of a few (so a person running a handful of commands sees every one traced). Not
    locked itself: the sampler holds its lock around every use."""

    def __init__(self, per_minute: int, burst: int, now_ns: int) -> None:
        self._interval_ns = 60_000_000_000 // per_minute if per_minute > 0 else 0
        self._burst = burst if per_minute > 0 else 0
        self._tokens = float(self._burst)
        self._updated = now_ns

    def ready(self, now_ns: int) -> bool:
        if self._interval_ns and now_ns > self._updated:
            gained = (now_ns - self._updated) / self._interval_ns
            self._tokens = min(float(self._burst), self._tokens + gained)
            self._updated = now_ns
        return self._tokens >= 1.0 - 1e-9

    def take(self) -> None:
        self._tokens -= 1.0


def _check_ratio(ratio: float, name: str) -> float:
    if not 0.0 <= ratio <= 1.0:  # also refuses NaN
        raise ValueError(f"{name} must be between 0 and 1, not {ratio!r}")
    return ratio


def _check_per_minute(per_minute: float, name: str) -> float:
    if not (math.isfinite(per_minute) and per_minute >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, not {per_minute!r}")
    return per_minute


def _parse_float(raw: str, name: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None


def _ratio_from(raw: str | None, name: str) -> float:
    if raw is None or not raw.strip():
        return DEFAULT_RATIO
    return _check_ratio(_parse_float(raw.strip(), name), name)


def _per_minute_from(raw: str | None, name: str) -> float:
    if raw is None or not raw.strip():
        return DEFAULT_PER_MINUTE
    return _check_per_minute(_parse_float(raw.strip(), name), name)


class RaftdSampler(Sampler):
    """Parent-based inside the cluster, ratio and an exact sliding-window cap at its edge.

    One instance per member (per TracerProvider): the window is the member's own. Pass the
    member's ``window`` (with its journal) and ``peers`` (fed by the peer transport); the
    defaults suit a process on its own.
    """

    def __init__(
        self,
        ratio: float = DEFAULT_RATIO,
        traces_per_minute: float = DEFAULT_PER_MINUTE,
        *,
        reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
        window: TraceWindow | None = None,
        peers: PeerRooms | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        on_decision: DecisionCallback | None = None,
    ) -> None:
        self._ratio = _check_ratio(ratio, "ratio")
        self._per_minute = _check_per_minute(traces_per_minute, "traces_per_minute")
        self._reserve_fraction = _check_ratio(reserve_fraction, "reserve_fraction")
        cap = int(traces_per_minute)
        self.window = window if window is not None else TraceWindow(cap)
        if self.window.cap != cap:
            raise ValueError(f"the window holds {self.window.cap} traces, the cap is {cap}")
        self.peers = peers if peers is not None else PeerRooms()
        self._reserve = round(cap * reserve_fraction)
        share = cap - self._reserve
        self._pacing = _Pacing(share, max(1, share // 3), clock_ns())
        self._bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        self._clock_ns = clock_ns
        self._on_decision = on_decision
        # The runtime samples from the trio thread, but OpenTelemetry lets any thread that
        # starts a span call the sampler; an uncontended lock costs next to nothing.
        self._lock = threading.Lock()
        # Requests of each name seen at the edge since the last one kept: the next weight.
        self._unweighted: Counter[str] = Counter()
        # Every reason present from the start: a scrape thread iterating the counter never
        # sees a key appear, and Prometheus shows zeros instead of missing series.
        self.decisions: Counter[str] = Counter(dict.fromkeys(REASONS, 0))

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] = os.environ,
        *,
        on_decision: DecisionCallback | None = None,
    ) -> RaftdSampler:
        """Unset or blank variables take the defaults; a bad value names its variable."""
        ratio = _ratio_from(environ.get(RATIO_ENV), RATIO_ENV)
        per_minute = _per_minute_from(environ.get(PER_MINUTE_ENV), PER_MINUTE_ENV)
        return cls(ratio, per_minute, on_decision=on_decision)

    @property
    def ratio(self) -> float:
        return self._ratio

    @property
    def traces_per_minute(self) -> float:
        return self._per_minute

    @property
    def reserve(self) -> int:
        """Places in the window that client traces leave free for elections."""
        return self._reserve

    def room(self) -> int:
        """Traces this member could still join now: what it tells its peers."""
        return self.window.room(self._clock_ns())

    def peer_reported(self, peer: int, room: int, age_s: float) -> None:
        """A peer's frame said how much room it had ``age_s`` seconds ago."""
        self.peers.report(peer, room, age_s)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        has_parent = parent is not None and parent.is_valid
        parent_state = parent.trace_state if has_parent else None
        edge = attributes.get(EDGE_ATTRIBUTE) if attributes else None
        now = self._clock_ns()

        weight = 1
        if edge == EDGE_CLIENT:
            with self._lock:
                self._unweighted[name] += 1
            if has_parent and not parent.trace_flags.sampled:
                reason = CLIENT_DECLINED
            elif trace_id & TraceIdRatioBased.TRACE_ID_LIMIT >= self._bound:
                reason = RATIO
            else:
                with self._lock:
                    paced = self._pacing.ready(now)
                joined = name in REPLICATED_SPANS
                reason = (
                    self._start(trace_id, now, keep_free=self._reserve, joined=joined)
                    if paced
                    else RATE_LIMITED
                )
            if reason == SAMPLED:
                with self._lock:
                    self._pacing.take()
                    weight = self._unweighted.pop(name, 1)
        elif has_parent:
            if not parent.trace_flags.sampled:
                reason = PARENT_DROPPED
            elif self.window.admit(trace_id, now):
                reason = PARENT_SAMPLED
            else:
                reason = WINDOW_FULL
        elif edge is None:
            reason = UNMARKED_ROOT
        else:
            reason = self._start(trace_id, now, keep_free=0, joined=True)

        sampled = reason in (SAMPLED, PARENT_SAMPLED)
        self._count(reason, sampled)

        if not sampled:
            return SamplingResult(Decision.DROP, None, parent_state)
        # The SDK builds the span's attributes from the result, not from its arguments:
        # they are passed on, or the span would lose them.
        if reason == SAMPLED:
            attributes = {**(attributes or {}), SAMPLE_RATE_ATTRIBUTE: weight}
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_state)

    def declines_client_edge(self, name: str, parent_sampled: bool | None) -> bool:
        """True when a client request's span would be dropped for a reason that needs no
        trace id (its client declined, or the pacing has no trace to give), with the
        decision counted exactly as ``should_sample`` counts it; False: ask the SDK.

        The client port asks this first: most requests are dropped, and building a
        non-recording span through the SDK (context, sampler call, ids, result objects)
        was a visible share of a busy leader's loop thread (docs/performance.md).
        ``parent_sampled``: None without a traceparent, else its sampled flag."""
        if parent_sampled:
            return False
        if parent_sampled is None and self._bound <= TraceIdRatioBased.TRACE_ID_LIMIT:
            return False  # a ratio below 1 decides on the trace id first
        reason = RATE_LIMITED if parent_sampled is None else CLIENT_DECLINED
        # One hold of the lock for the check and both counts: this runs for nearly every
        # request a busy leader serves.
        with self._lock:
            if parent_sampled is None and self._pacing.ready(self._clock_ns()):
                return False
            self._unweighted[name] += 1
            self.decisions[reason] += 1
        if self._on_decision is not None:
            self._on_decision(reason, False)
        return True

    def _count(self, reason: str, sampled: bool) -> None:
        with self._lock:
            self.decisions[reason] += 1
        # Outside the lock: a callback that starts a span of its own must not deadlock.
        if self._on_decision is not None:
            self._on_decision(reason, sampled)

    def _start(self, trace_id: int, now: int, *, keep_free: int, joined: bool) -> str:
        """A trace rooted here: room for it here and, if peers join it, on every peer."""
        if joined:
            least = self.peers.least_room()
            if least is not None and least < 1 + keep_free:
                return RATE_LIMITED
        if not self.window.admit(trace_id, now, keep_free=keep_free):
            return RATE_LIMITED
        if joined:
            self.peers.started()
        return SAMPLED

    def get_description(self) -> str:
        return (
            f"RaftdSampler{{ratio={self._ratio!r},per_minute={self._per_minute:g},"
            f"reserve={self._reserve_fraction!r}}}"
        )


def sampler_factory(arg: str | None) -> RaftdSampler:
    """The ``opentelemetry_traces_sampler`` entry point, named by ``OTEL_TRACES_SAMPLER=raftd``.

    OpenTelemetry passes ``OTEL_TRACES_SAMPLER_ARG`` (None when unset). When it holds a
    number it is the ratio, and wins over ``RAFTD_TRACE_SAMPLE_RATIO`` because it was
    named next to the sampler; everything else comes from the environment as in
    ``RaftdSampler.from_env``. A bad argument raises, and the SDK then logs a warning and
    falls back to its default sampler, which has no cap. (raftd itself always builds its
    own sampler, with the member's journal and peers; this is for other processes.)
    """
    if arg is None or not arg.strip():
        return RaftdSampler.from_env()
    return RaftdSampler(
        _ratio_from(arg, "OTEL_TRACES_SAMPLER_ARG"),
        _per_minute_from(os.environ.get(PER_MINUTE_ENV), PER_MINUTE_ENV),
    )
