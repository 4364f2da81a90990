"""The member's trace sampler: parent-based inside the cluster, rate-limited at its edge.

Inside the cluster a span follows its parent's decision, wherever that parent ran. A
trace the leader keeps is therefore complete on every follower, even one whose own
budget is empty, and a member never spends budget on a trace another member started.

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

The budget (``RAFTD_TRACES_PER_MINUTE``) is a token bucket per member: its capacity is
the per-minute cap, it starts full and refills continuously at cap/60 tokens a second,
and every edge trace kept costs a token. A quarter of it (``reserve_fraction``) is kept
for the member's own roots: a client trace may take a token only if the reserve is still
whole afterwards, while an election may take any token. Without the reserve a steady
client flood would drain each token as soon as it refilled, and the traces one most
wants to read (why did leadership move?) would be the ones never kept. At the defaults,
20 a minute: a burst of clients gets 15 traces at once, then one every 3 s; 5 tokens stay
for elections and other rare roots, and a refill goes to the reserve first whenever it is
short. Elections alone can use all 20. A member with a budget of 0 keeps no trace it
starts, but still records its part of every trace another member kept.

``SampleRate`` (Honeycomb's weight) on a kept edge span is ``round(1 / ratio)`` for
client traces and 1 for the member's own roots. It reflects the ratio only: a trace lost
to the cap cannot be weighted exactly, since how many were lost depends on the traffic.
The sampler cannot put it on child spans (it learns nothing of the root there);
``sample_rate`` is exposed so that the runtime can.

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

EDGE_ATTRIBUTE = "raftd.edge"
EDGE_CLIENT = "client"
EDGE_ELECTION = "election"
SAMPLE_RATE_ATTRIBUTE = "SampleRate"

RATIO_ENV = "RAFTD_TRACE_SAMPLE_RATIO"
PER_MINUTE_ENV = "RAFTD_TRACES_PER_MINUTE"
DEFAULT_RATIO = 1.0
DEFAULT_PER_MINUTE = 20.0
DEFAULT_RESERVE_FRACTION = 0.25

# Decision reasons, the label values of the runtime's counter.
PARENT_SAMPLED = "parent_sampled"
PARENT_DROPPED = "parent_dropped"
UNMARKED_ROOT = "unmarked_root"
CLIENT_DECLINED = "client_declined"
RATIO = "ratio"
RATE_LIMITED = "rate_limited"
SAMPLED = "sampled"
REASONS = (
    PARENT_SAMPLED,
    PARENT_DROPPED,
    UNMARKED_ROOT,
    CLIENT_DECLINED,
    RATIO,
    RATE_LIMITED,
    SAMPLED,
)

# Refills add fractions of a token (a third a second at the defaults); without slack, a
# token refilled in three steps could fall a rounding error short of whole.
_EPSILON = 1e-9

DecisionCallback = Callable[[str, bool], None]


class _TokenBucket:
    """The budget; not locked itself, the sampler holds its lock around every use."""

    def __init__(self, capacity: float, reserve: float, now: float) -> None:
        self.capacity = capacity
        self.reserve = reserve
        self.per_second = capacity / 60.0
        self.tokens = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        # A clock that steps back refills nothing, and later time is not counted twice.
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
            self.updated = now

    def take(self, now: float, *, may_use_reserve: bool) -> bool:
        self.refill(now)
        floor = 0.0 if may_use_reserve else self.reserve
        if self.tokens - 1.0 + _EPSILON >= floor:
            self.tokens -= 1.0
            return True
        return False


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
    """Parent-based inside the cluster, ratio and token bucket at its edge.

    One instance per member (per TracerProvider): the budget is the member's own.
    """

    def __init__(
        self,
        ratio: float = DEFAULT_RATIO,
        traces_per_minute: float = DEFAULT_PER_MINUTE,
        *,
        reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
        clock: Callable[[], float] = time.monotonic,
        on_decision: DecisionCallback | None = None,
    ) -> None:
        self._ratio = _check_ratio(ratio, "ratio")
        self._per_minute = _check_per_minute(traces_per_minute, "traces_per_minute")
        self._reserve_fraction = _check_ratio(reserve_fraction, "reserve_fraction")
        self._bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        self._clock = clock
        self._on_decision = on_decision
        # The runtime samples from the trio thread, but OpenTelemetry lets any thread that
        # starts a span call the sampler; an uncontended lock costs next to nothing.
        self._lock = threading.Lock()
        self._bucket = _TokenBucket(
            traces_per_minute, traces_per_minute * reserve_fraction, clock()
        )
        # Every reason present from the start: a scrape thread iterating the counter never
        # sees a key appear, and Prometheus shows zeros instead of missing series.
        self.decisions: Counter[str] = Counter(dict.fromkeys(REASONS, 0))

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] = os.environ,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_decision: DecisionCallback | None = None,
    ) -> RaftdSampler:
        """Unset or blank variables take the defaults; a bad value names its variable."""
        ratio = _ratio_from(environ.get(RATIO_ENV), RATIO_ENV)
        per_minute = _per_minute_from(environ.get(PER_MINUTE_ENV), PER_MINUTE_ENV)
        return cls(ratio, per_minute, clock=clock, on_decision=on_decision)

    @property
    def ratio(self) -> float:
        return self._ratio

    @property
    def traces_per_minute(self) -> float:
        return self._per_minute

    @property
    def sample_rate(self) -> int:
        """Honeycomb's weight for spans of a kept client trace, for the runtime to copy
        onto spans the sampler cannot mark; 1 at ratio 0, where no client trace is kept."""
        return round(1.0 / self._ratio) if self._ratio > 0.0 else 1

    @property
    def tokens_available(self) -> float:
        """The budget left now, reserve included, for a gauge and for tests."""
        with self._lock:
            self._bucket.refill(self._clock())
            return self._bucket.tokens

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

        sample_rate = 1
        if edge == EDGE_CLIENT:
            sample_rate = self.sample_rate
            if has_parent and not parent.trace_flags.sampled:
                reason = CLIENT_DECLINED
            elif trace_id & TraceIdRatioBased.TRACE_ID_LIMIT >= self._bound:
                reason = RATIO
            else:
                reason = self._spend(may_use_reserve=False)
        elif has_parent:
            reason = PARENT_SAMPLED if parent.trace_flags.sampled else PARENT_DROPPED
        elif edge is None:
            reason = UNMARKED_ROOT
        else:
            reason = self._spend(may_use_reserve=True)

        sampled = reason in (SAMPLED, PARENT_SAMPLED)
        with self._lock:
            self.decisions[reason] += 1
        # Outside the lock: a callback that starts a span of its own must not deadlock.
        if self._on_decision is not None:
            self._on_decision(reason, sampled)

        if not sampled:
            return SamplingResult(Decision.DROP, None, parent_state)
        # The SDK builds the span's attributes from the result, not from its arguments:
        # they are passed on, or the span would lose them.
        if reason == SAMPLED:
            attributes = {**(attributes or {}), SAMPLE_RATE_ATTRIBUTE: sample_rate}
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_state)

    def _spend(self, *, may_use_reserve: bool) -> str:
        with self._lock:
            taken = self._bucket.take(self._clock(), may_use_reserve=may_use_reserve)
        return SAMPLED if taken else RATE_LIMITED

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
    falls back to its default sampler, which has no cap.
    """
    if arg is None or not arg.strip():
        return RaftdSampler.from_env()
    return RaftdSampler(
        _ratio_from(arg, "OTEL_TRACES_SAMPLER_ARG"),
        _per_minute_from(os.environ.get(PER_MINUTE_ENV), PER_MINUTE_ENV),
    )
