"""The sampler: parent-based inside the cluster, ratio and capped budget at its edge.

Time is a fake clock the tests move by hand and trace ids come from seeded generators,
so every run makes the same decisions; nothing sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from itertools import islice, pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._configuration import _import_sampler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import Attributes

from observability.budget import PeerRooms, TraceWindow
from observability.sampling import (
    CLIENT_DECLINED,
    EDGE_ATTRIBUTE,
    EDGE_CLIENT,
    EDGE_ELECTION,
    PARENT_DROPPED,
    PARENT_SAMPLED,
    PER_MINUTE_ENV,
    RATE_LIMITED,
    RATIO,
    RATIO_ENV,
    REASONS,
    SAMPLE_RATE_ATTRIBUTE,
    SAMPLED,
    UNMARKED_ROOT,
    WINDOW_FULL,
    RaftdSampler,
    sampler_factory,
)
from observability.tracing import BudgetedSpanProcessor
from tests.tracecheck.audit import max_in_window
from wire.tracecontext import parse_traceparent

deterministic = settings(derandomize=True, database=None, max_examples=200, deadline=None)

CLIENT = {EDGE_ATTRIBUTE: EDGE_CLIENT}
ELECTION = {EDGE_ATTRIBUTE: EDGE_ELECTION}
HUGE_BUDGET = 1e12


class FakeClock:
    """Wall-clock nanoseconds, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000 * 10**9

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)


def trace_ids(seed: int) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield rng.getrandbits(128) or 1


def remote_parent(trace_id: int, *, sampled: bool, span_id: int = 0xABCDEF) -> Context:
    """What the runtime builds from a frame header before starting the server span."""
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    span_context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def local_parent(trace_id: int, *, sampled: bool) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    span_context = SpanContext(trace_id, 0x1234, is_remote=False, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def decide(
    sampler: RaftdSampler,
    trace_id: int,
    attributes: Attributes = None,
    parent: Context | None = None,
    *,
    name: str = "kv.set",
) -> SamplingResult:
    return sampler.should_sample(parent, trace_id, name, SpanKind.SERVER, attributes)


def kept(result: SamplingResult) -> bool:
    return result.decision is Decision.RECORD_AND_SAMPLE


# ------------------------------------------------------------------ the ratio


def test_the_ratio_holds_statistically() -> None:
    sampler = RaftdSampler(0.25, HUGE_BUDGET)
    ids = list(islice(trace_ids(7), 20_000))
    decisions = [kept(decide(sampler, tid, CLIENT)) for tid in ids]
    assert abs(sum(decisions) / len(decisions) - 0.25) <= 0.02
    assert sampler.decisions[SAMPLED] + sampler.decisions[RATIO] == len(ids)


def test_the_ratio_is_decided_by_the_trace_id_as_opentelemetry_does() -> None:
    # Two members meeting the same trace id reach the same verdict, and it is the one
    # TraceIdRatioBased would reach.
    first, second = RaftdSampler(0.3, HUGE_BUDGET), RaftdSampler(0.3, HUGE_BUDGET)
    reference = TraceIdRatioBased(0.3)
    gen = trace_ids(11)
    for _ in range(2_000):
        tid = next(gen)
        verdict = kept(decide(first, tid, CLIENT))
        assert kept(decide(second, tid, CLIENT)) is verdict
        assert kept(reference.should_sample(None, tid, "span")) is verdict


def test_a_ratio_drop_costs_no_budget() -> None:
    sampler = RaftdSampler(0.0, 20, clock_ns=FakeClock())
    for tid in islice(trace_ids(3), 100):
        assert not kept(decide(sampler, tid, CLIENT))
    assert sampler.room() == 20
    assert sampler.decisions[RATIO] == 100


def test_elections_are_not_subject_to_the_ratio() -> None:
    sampler = RaftdSampler(0.0, 20, clock_ns=FakeClock())
    result = decide(sampler, 0xFFFF_FFFF_FFFF_FFFF, ELECTION)
    assert kept(result)
    assert result.attributes[SAMPLE_RATE_ATTRIBUTE] == 1


def test_a_kept_client_span_carries_its_attributes_and_sample_rate() -> None:
    # The SDK takes the span's attributes from the sampling result: dropping them there
    # would strip every span the sampler keeps.
    sampler = RaftdSampler(0.5, HUGE_BUDGET)
    below_every_bound = 0x5EED << 64  # the ratio reads the low 64 bits only
    result = decide(sampler, below_every_bound, {**CLIENT, "rpc.method": "Put"})
    assert dict(result.attributes) == {
        EDGE_ATTRIBUTE: EDGE_CLIENT,
        "rpc.method": "Put",
        SAMPLE_RATE_ATTRIBUTE: 1,  # the first request seen, and kept
    }


# ------------------------------------------------------------------ honest weights


def weighted_count(sampler: RaftdSampler, requests: int, name: str, seed: int) -> int:
    total = 0
    for tid in islice(trace_ids(seed), requests):
        result = decide(sampler, tid, CLIENT, name=name)
        if kept(result):
            total += result.attributes[SAMPLE_RATE_ATTRIBUTE]
    return total


def test_weights_add_up_to_the_requests_under_the_ratio() -> None:
    sampler = RaftdSampler(0.25, HUGE_BUDGET)
    total = weighted_count(sampler, 20_000, "kv.get", 31)
    # Exact up to the requests after the last one kept (a few, at a ratio of 1/4).
    assert 20_000 - 40 <= total <= 20_000


def test_weights_count_what_the_cap_dropped_within_ten_percent_under_a_flood() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(0.5, 20, clock_ns=clock)
    gen = trace_ids(32)
    weighted = 0
    for _ in range(10 * 60 * 200):  # 200 requests a second for 10 minutes
        result = decide(sampler, next(gen), CLIENT, name="kv.set")
        if kept(result):
            weighted += result.attributes[SAMPLE_RATE_ATTRIBUTE]
        clock.advance(0.005)
    assert abs(weighted - 120_000) <= 12_000
    assert weighted <= 120_000  # never more than were seen


def test_each_request_name_is_weighted_apart() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 6, reserve_fraction=0.0, clock_ns=clock)  # a burst of 2
    gen = trace_ids(33)
    gets = [decide(sampler, next(gen), CLIENT, name="kv.get") for _ in range(3)]
    assert [kept(r) for r in gets] == [True, True, False]  # the burst is spent
    clock.advance(10.0)  # one every 10 s at 6 a minute
    kept_set = decide(sampler, next(gen), CLIENT, name="kv.set")
    clock.advance(10.0)
    kept_get = decide(sampler, next(gen), CLIENT, name="kv.get")
    assert kept_set.attributes[SAMPLE_RATE_ATTRIBUTE] == 1  # sets are counted apart...
    assert kept_get.attributes[SAMPLE_RATE_ATTRIBUTE] == 2  # ...from the get dropped before


# ------------------------------------------------------------------ the per-minute cap


def test_a_burst_of_clients_gets_a_few_then_one_every_four_seconds() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock_ns=clock)
    gen = trace_ids(1)
    assert sum(kept(decide(sampler, next(gen), CLIENT)) for _ in range(1000)) == 5
    assert sampler.decisions[RATE_LIMITED] == 995
    kept_at = []
    for tick in range(60 * 10):  # ten requests a second for a minute
        clock.advance(0.1)
        if kept(decide(sampler, next(gen), CLIENT)):
            kept_at.append(tick / 10)
    # 15 a minute for clients (20 less the reserve of 5): 5 at once, then one every 4 s.
    assert len(kept_at) == 10
    gaps = [b - a for a, b in pairwise(kept_at)]
    assert all(3.9 <= gap <= 4.1 for gap in gaps), gaps
    assert sampler.room() == 5


def test_the_window_slides_it_does_not_refill() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock_ns=clock)
    gen = trace_ids(2)
    for _ in range(10):
        assert kept(decide(sampler, next(gen), ELECTION))
        clock.advance(1.0)
    for _ in range(10):
        assert kept(decide(sampler, next(gen), ELECTION))
    # A bucket would have refilled by now; a window holds the 20 for a full minute...
    clock.advance(49.0)
    assert not kept(decide(sampler, next(gen), ELECTION))
    # ...and frees each place 60 s after the trace in it last acted.
    clock.advance(1.5)
    assert sum(kept(decide(sampler, next(gen), ELECTION)) for _ in range(5)) == 1
    clock.advance(60.0)
    assert sampler.room() == 20 - 1


def test_the_reserve_is_left_to_elections() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock_ns=clock)
    gen = trace_ids(4)
    clients = 0
    for _ in range(60):  # a request a second: the burst, then one every 4 s, up to 15
        clients += kept(decide(sampler, next(gen), CLIENT))
        clock.advance(1.0)
    assert clients == 15
    assert sampler.room() == 5
    assert sum(kept(decide(sampler, next(gen), ELECTION)) for _ in range(100)) == 5
    assert sampler.room() == 0


def test_elections_may_use_the_whole_window_and_no_more() -> None:
    sampler = RaftdSampler(1.0, 20, clock_ns=FakeClock())
    gen = trace_ids(6)
    assert sum(kept(decide(sampler, next(gen), ELECTION)) for _ in range(100)) == 20


def test_ten_minutes_of_client_flood_stay_under_the_cap_and_elections_get_through() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock_ns=clock)
    gen = trace_ids(8)
    kept_at: list[tuple[int, str]] = []
    elections = elections_kept = 0
    for tick in range(10 * 60 * 100):  # 100 client requests a second for 10 minutes
        tid = next(gen)
        if kept(decide(sampler, tid, CLIENT)):
            kept_at.append((clock(), str(tid)))
        if tick % 2000 == 1000:  # an election every 20 s, in the thick of the flood
            elections += 1
            tid = next(gen)
            if kept(decide(sampler, tid, ELECTION)):
                elections_kept += 1
                kept_at.append((clock(), str(tid)))
        clock.advance(0.01)
    assert max_in_window(kept_at) <= 20
    assert elections == elections_kept == 30
    assert len(kept_at) >= 10 * 15  # the cap is a cap, not a starvation


# What happens to a trace in the window, activity by activity: (seconds, trace, keep_free).
activities = st.lists(
    st.tuples(st.floats(-5.0, 20.0), st.integers(0, 40), st.sampled_from([0, 0, 2])),
    min_size=1,
    max_size=300,
)


@deterministic
@given(activities, st.sampled_from([0, 1, 3, 7, 20]))
def test_no_pattern_of_activity_exceeds_the_cap_in_any_window(
    steps: list[tuple[float, int, int]], cap: int
) -> None:
    # Activities mostly move forward in time but may be dated up to 5 s back (a span's
    # start given explicitly); a trace may act many times. Whatever was admitted, no 60 s
    # window holds more than the cap, counted the way the audit counts.
    window = TraceWindow(cap)
    now = 10**12
    admitted: list[tuple[int, str]] = []
    refused: set[int] = set()
    for seconds, trace_id, keep_free in steps:
        at = now + round(seconds * 1e9)
        now = max(now, at)
        if window.admit(trace_id, at, keep_free=keep_free):
            assert trace_id not in refused  # refused once, refused for good
            admitted.append((at, str(trace_id)))
        elif window.refused(trace_id):
            refused.add(trace_id)
    assert max_in_window(admitted) <= cap


def test_a_restarted_member_still_counts_the_traces_it_recorded(tmp_path: Path) -> None:
    clock = FakeClock()
    journal = tmp_path / "trace-window"
    before = TraceWindow(5, journal=journal, wall_clock_ns=clock)
    for trace_id in range(5):
        assert before.admit(trace_id, clock())
    clock.advance(30.0)
    after = TraceWindow(5, journal=journal, wall_clock_ns=clock)  # kill -9 and restart
    assert not after.admit(99, clock())
    assert after.room(clock()) == 0
    assert after.admit(3, clock())  # its own traces still belong to it
    clock.advance(62.0)
    assert after.admit(100, clock())


def test_a_torn_or_foreign_journal_line_is_ignored(tmp_path: Path) -> None:
    clock = FakeClock()
    journal = tmp_path / "trace-window"
    journal.write_text(f"{7:032x} {clock()}\nnot a line\n{8:032x} soon\n{9:032x}")
    window = TraceWindow(5, journal=journal, wall_clock_ns=clock)
    assert window.room(clock()) == 4
    assert journal.read_text() == f"{7:032x} {clock() + 1_000_000_000}\n"


# ------------------------------------------------------------------ parent-based


def test_a_member_with_no_room_records_nothing_of_a_trace_it_joins() -> None:
    follower = RaftdSampler(1.0, 0, clock_ns=FakeClock())
    tid = next(trace_ids(10))
    result = decide(follower, tid, {"raft.term": 3}, remote_parent(tid, sampled=True))
    assert not kept(result)
    assert follower.decisions[WINDOW_FULL] == 1
    assert follower.window.parts_refused == 1


def test_joining_a_sampled_parent_takes_a_place_once_per_trace() -> None:
    sampler = RaftdSampler(1.0, 20, clock_ns=FakeClock())
    gen = trace_ids(12)
    for _ in range(5):
        tid = next(gen)
        for _ in range(3):
            assert kept(decide(sampler, tid, None, remote_parent(tid, sampled=True)))
            assert kept(decide(sampler, tid, None, local_parent(tid, sampled=True)))
    assert sampler.room() == 15


def test_a_trace_already_held_keeps_its_spans_when_the_window_fills() -> None:
    sampler = RaftdSampler(1.0, 2, reserve_fraction=0.0, clock_ns=FakeClock())
    first, second, third = islice(trace_ids(22), 3)
    assert kept(decide(sampler, first, CLIENT))
    assert kept(decide(sampler, second, None, remote_parent(second, sampled=True)))
    assert not kept(decide(sampler, third, None, remote_parent(third, sampled=True)))
    assert kept(decide(sampler, first, None, local_parent(first, sampled=True)))
    assert not kept(decide(sampler, third, None, local_parent(third, sampled=True)))


@pytest.mark.parametrize("make_parent", [remote_parent, local_parent])
def test_an_unsampled_parent_is_followed(make_parent: Callable[..., Context]) -> None:
    sampler = RaftdSampler(1.0, HUGE_BUDGET)
    tid = next(trace_ids(13))
    assert not kept(decide(sampler, tid, None, make_parent(tid, sampled=False)))
    assert sampler.decisions[PARENT_DROPPED] == 1


def test_an_election_marked_span_with_a_parent_follows_the_parent() -> None:
    sampler = RaftdSampler(1.0, 1, clock_ns=FakeClock())
    tid = next(trace_ids(14))
    assert kept(decide(sampler, tid, ELECTION, local_parent(tid, sampled=True)))
    assert not kept(decide(sampler, tid, ELECTION, local_parent(tid, sampled=False)))


def test_an_unmarked_root_is_dropped() -> None:
    sampler = RaftdSampler(1.0, HUGE_BUDGET)
    assert not kept(decide(sampler, next(trace_ids(15)), {"raft.term": 1}))
    assert sampler.decisions[UNMARKED_ROOT] == 1


def test_the_parents_tracestate_is_kept() -> None:
    tid = next(trace_ids(16))
    state = trace.TraceState([("vendor", "value")])
    span_context = SpanContext(
        tid, 0x99, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=state
    )
    parent = trace.set_span_in_context(NonRecordingSpan(span_context), Context())
    result = decide(RaftdSampler(1.0, 1, clock_ns=FakeClock()), tid, None, parent)
    assert result.trace_state == state


# ------------------------------------------------------------------ the client's flag


def test_a_client_that_declines_is_not_traced() -> None:
    sampler = RaftdSampler(1.0, HUGE_BUDGET)
    tid = next(trace_ids(17))
    assert not kept(decide(sampler, tid, CLIENT, remote_parent(tid, sampled=False)))
    assert sampler.decisions[CLIENT_DECLINED] == 1


def test_a_clients_sampled_flag_is_honoured_only_within_the_budget() -> None:
    sampler = RaftdSampler(1.0, 20, clock_ns=FakeClock())
    gen = trace_ids(18)
    results = []
    for _ in range(20):
        tid = next(gen)
        results.append(kept(decide(sampler, tid, CLIENT, remote_parent(tid, sampled=True))))
    assert results == [True] * 5 + [False] * 15
    assert sampler.decisions[SAMPLED] == 5
    assert sampler.decisions[RATE_LIMITED] == 15


def test_a_clients_sampled_flag_meets_an_empty_budget() -> None:
    sampler = RaftdSampler(1.0, 0, clock_ns=FakeClock())
    tid = next(trace_ids(19))
    assert not kept(decide(sampler, tid, CLIENT, remote_parent(tid, sampled=True)))
    assert sampler.decisions[RATE_LIMITED] == 1


def test_a_client_without_trace_context_is_decided_by_the_member() -> None:
    sampler = RaftdSampler(1.0, 20, clock_ns=FakeClock())
    assert kept(decide(sampler, next(trace_ids(20)), CLIENT))


# ------------------------------------------------------------------ peers' room


def test_a_write_starts_only_if_every_peer_has_room_beyond_the_reserve() -> None:
    sampler = RaftdSampler(1.0, 20, clock_ns=FakeClock())
    gen = trace_ids(23)
    sampler.peer_reported(2, 20, 0.0)
    sampler.peer_reported(3, 6, 0.0)  # room for one write beyond the reserve of 5
    assert kept(decide(sampler, next(gen), CLIENT, name="kv.set"))
    assert not kept(decide(sampler, next(gen), CLIENT, name="kv.cas"))
    assert kept(decide(sampler, next(gen), CLIENT, name="kv.get"))  # peers do not join reads
    assert kept(decide(sampler, next(gen), ELECTION))  # elections may use the reserve
    sampler.peer_reported(3, 20, 0.0)
    assert kept(decide(sampler, next(gen), CLIENT, name="kv.delete"))


def test_a_peer_silent_for_long_is_not_waited_for() -> None:
    now = [100.0]
    peers = PeerRooms(stale_after_s=3.0, clock=lambda: now[0])
    peers.report("n2", 0, age_s=0.0)
    assert peers.least_room() == 0
    now[0] += 3.5
    assert peers.least_room() is None


def test_traces_started_since_a_report_count_against_it() -> None:
    now = [100.0]
    peers = PeerRooms(clock=lambda: now[0])
    peers.started()  # before the report, but possibly still on its way to the peer
    now[0] += 1.0
    peers.report("n2", 10, age_s=0.2)
    peers.started()
    peers.started()
    assert peers.least_room() == 10 - 2
    now[0] += 0.2
    peers.report("n2", 9, age_s=0.0)  # it has seen them, but they may still be on the way
    assert peers.least_room() == 9 - 2
    now[0] += 0.6
    peers.report("n2", 9, age_s=0.0)
    assert peers.least_room() == 9


# ------------------------------------------------------------------ across members


def provider(sampler: RaftdSampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(
        BudgetedSpanProcessor(SimpleSpanProcessor(exporter), sampler.window)
    )
    return tracer_provider, exporter


def header_of(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def context_from_header(value: str) -> Context:
    parsed = parse_traceparent(value)
    assert parsed is not None
    span_context = SpanContext(
        int(parsed.trace_id, 16),
        int(parsed.parent_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(parsed.flags),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def test_a_trace_kept_by_the_leader_is_complete_on_followers_with_room() -> None:
    leader_provider, leader_spans = provider(RaftdSampler(1.0, 20))
    followers = [provider(RaftdSampler(1.0, 20)) for _ in range(2)]
    leader = leader_provider.get_tracer("raftd")

    with (
        leader.start_as_current_span(
            "kv.set", context=Context(), kind=SpanKind.SERVER, attributes=CLIENT
        ) as root,
        leader.start_as_current_span("raft.replicate") as replicate,
    ):
        header = header_of(replicate)
    for follower_provider, _ in followers:
        tracer = follower_provider.get_tracer("raftd")
        with (
            tracer.start_as_current_span(
                "raft.append_entries", context=context_from_header(header), kind=SpanKind.SERVER
            ),
            tracer.start_as_current_span("raft.wal.append"),
        ):
            pass

    trace_id = root.get_span_context().trace_id
    assert [s.name for s in leader_spans.get_finished_spans()] == ["raft.replicate", "kv.set"]
    for _, follower_spans in followers:
        finished = follower_spans.get_finished_spans()
        assert [s.name for s in finished] == ["raft.wal.append", "raft.append_entries"]
        assert {s.context.trace_id for s in finished if s.context} == {trace_id}
        append = finished[1]
        assert append.parent is not None
        assert append.parent.span_id == replicate.get_span_context().span_id


def test_a_trace_dropped_by_the_leader_is_dropped_on_followers() -> None:
    leader_provider, leader_spans = provider(RaftdSampler(1.0, 0))
    follower_provider, follower_spans = provider(RaftdSampler(1.0, 20))
    with leader_provider.get_tracer("raftd").start_as_current_span(
        "kv.set", context=Context(), attributes=CLIENT
    ) as root:
        header = header_of(root)
    assert not int(header[-2:], 16) & TraceFlags.SAMPLED
    follower = follower_provider.get_tracer("raftd")
    with follower.start_as_current_span("raft.append_entries", context=context_from_header(header)):
        pass
    assert leader_spans.get_finished_spans() == ()
    assert follower_spans.get_finished_spans() == ()


def test_a_span_dated_too_far_back_is_not_exported_nor_is_the_rest_of_its_trace() -> None:
    # Two traces fill the window at t = 100 s; a third trace's first span is admitted by
    # the sampler "now" but says it started at t = 30 s, when the other two were... not
    # yet there: the processor judges the span by its own start and end, and may refuse
    # it; here the end, at 100 s, cannot fit, so nothing of the trace is exported.
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 2, reserve_fraction=0.0, clock_ns=clock)
    tracer_provider, spans = provider(sampler)
    tracer = tracer_provider.get_tracer("raftd")
    for name in ("a", "b"):
        tracer.start_span(name, context=Context(), attributes=ELECTION).end(end_time=clock())
    late = tracer.start_span(
        "c", context=Context(), attributes=ELECTION, start_time=clock() - 70 * 10**9
    )
    assert not late.is_recording()  # the sampler already saw no room
    assert [s.name for s in spans.get_finished_spans()] == ["a", "b"]
    assert sampler.window.room(clock()) == 0


# ------------------------------------------------------------------ decisions, configuration


def test_every_decision_reaches_the_callback_with_its_reason() -> None:
    seen: list[tuple[str, bool]] = []

    def record(reason: str, sampled: bool) -> None:
        seen.append((reason, sampled))

    sampler = RaftdSampler(1.0, 0, clock_ns=FakeClock(), on_decision=record)
    tid = next(trace_ids(21))
    decide(sampler, tid, CLIENT)
    decide(sampler, tid, CLIENT, remote_parent(tid, sampled=False))
    decide(sampler, tid, None, remote_parent(tid, sampled=True))
    decide(sampler, tid, None, remote_parent(tid, sampled=False))
    decide(sampler, tid, None)
    roomy = RaftdSampler(1.0, 1, clock_ns=FakeClock(), on_decision=record)
    decide(roomy, tid, None, remote_parent(tid, sampled=True))
    assert seen == [
        (RATE_LIMITED, False),
        (CLIENT_DECLINED, False),
        (WINDOW_FULL, False),
        (PARENT_DROPPED, False),
        (UNMARKED_ROOT, False),
        (PARENT_SAMPLED, True),
    ]
    assert sum(sampler.decisions.values()) + sum(roomy.decisions.values()) == len(seen)


def test_every_reason_is_counted_from_the_start() -> None:
    assert dict(RaftdSampler().decisions) == dict.fromkeys(REASONS, 0)


def test_description() -> None:
    assert RaftdSampler().get_description() == "RaftdSampler{ratio=1.0,per_minute=20,reserve=0.25}"
    assert (
        RaftdSampler(0.1, 2.5, reserve_fraction=0.5).get_description()
        == "RaftdSampler{ratio=0.1,per_minute=2.5,reserve=0.5}"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RaftdSampler(ratio=-0.1), "ratio must be between 0 and 1"),
        (lambda: RaftdSampler(ratio=1.5), "ratio must be between 0 and 1"),
        (lambda: RaftdSampler(ratio=float("nan")), "ratio must be between 0 and 1"),
        (lambda: RaftdSampler(traces_per_minute=-1), "traces_per_minute must be a finite"),
        (lambda: RaftdSampler(traces_per_minute=float("inf")), "traces_per_minute must be a"),
        (lambda: RaftdSampler(reserve_fraction=2.0), "reserve_fraction must be between 0 and 1"),
    ],
)
def test_bad_arguments_are_refused(make: Callable[[], RaftdSampler], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_from_env_defaults() -> None:
    sampler = RaftdSampler.from_env({})
    assert (sampler.ratio, sampler.traces_per_minute) == (1.0, 20.0)
    blank = RaftdSampler.from_env({RATIO_ENV: " ", PER_MINUTE_ENV: ""})
    assert (blank.ratio, blank.traces_per_minute) == (1.0, 20.0)


def test_from_env_reads_both_variables() -> None:
    sampler = RaftdSampler.from_env({RATIO_ENV: "0.1", PER_MINUTE_ENV: " 120 "})
    assert (sampler.ratio, sampler.traces_per_minute) == (0.1, 120.0)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({RATIO_ENV: "half"}, RATIO_ENV),
        ({RATIO_ENV: "2"}, RATIO_ENV),
        ({PER_MINUTE_ENV: "lots"}, PER_MINUTE_ENV),
        ({PER_MINUTE_ENV: "-5"}, PER_MINUTE_ENV),
        ({PER_MINUTE_ENV: "nan"}, PER_MINUTE_ENV),
    ],
)
def test_from_env_names_the_bad_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        RaftdSampler.from_env(environ)


# ------------------------------------------------------------------ the entry point


def test_the_entry_point_is_registered() -> None:
    (entry,) = entry_points(group="opentelemetry_traces_sampler", name="raftd")
    assert entry.load() is sampler_factory


def test_otel_traces_sampler_selects_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK's configurator (opentelemetry-instrument, distros) reads entry points; a bare
    # TracerProvider() knows only the built-in names.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "raftd")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    monkeypatch.setenv(PER_MINUTE_ENV, "60")
    sampler = _import_sampler("raftd")
    assert isinstance(sampler, RaftdSampler)
    assert (sampler.ratio, sampler.traces_per_minute) == (0.5, 60.0)


def test_the_factory_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RATIO_ENV, "0.2")
    monkeypatch.delenv(PER_MINUTE_ENV, raising=False)
    for arg in (None, "", "  "):
        sampler = sampler_factory(arg)
        assert (sampler.ratio, sampler.traces_per_minute) == (0.2, 20.0)


def test_the_factory_refuses_a_bad_argument() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        sampler_factory("often")


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_declining_a_client_edge_early_decides_and_counts_as_should_sample_does(
    ratio: float,
) -> None:
    """The client port asks ``declines_client_edge`` before the SDK: a request it declines
    must be one ``should_sample`` would drop, counted the same way, and the pacing and the
    weights of the traces kept afterwards must not change."""
    early_clock, plain_clock = FakeClock(), FakeClock()
    early = RaftdSampler(ratio, 30, clock_ns=early_clock)
    plain = RaftdSampler(ratio, 30, clock_ns=plain_clock)
    rng = random.Random(7)
    ids = trace_ids(3)
    declined = 0
    for _ in range(400):
        trace_id = next(ids)
        flag = rng.choice([None, None, None, True, False])
        parent = None if flag is None else remote_parent(trace_id, sampled=flag)
        if early.declines_client_edge("kv.set", flag):
            declined += 1
            early_result = None
        else:
            early_result = decide(early, trace_id, CLIENT, parent)
        plain_result = decide(plain, trace_id, CLIENT, parent)
        if early_result is None:
            assert not kept(plain_result)
        else:
            assert early_result.decision == plain_result.decision
            assert early_result.attributes == plain_result.attributes
        step = rng.choice([0.0, 0.01, 0.5, 3.0])
        early_clock.advance(step)
        plain_clock.advance(step)
    assert early.decisions == plain.decisions
    assert declined > 50 and plain.decisions[SAMPLED] > 5
