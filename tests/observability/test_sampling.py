"""The sampler: parent-based inside the cluster, ratio and capped budget at its edge.

Time is a fake clock the tests move by hand and trace ids come from seeded generators,
so every run makes the same decisions; nothing sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from itertools import islice

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
    RaftdSampler,
    sampler_factory,
)
from wire.tracecontext import parse_traceparent

deterministic = settings(derandomize=True, database=None, max_examples=200, deadline=None)

CLIENT = {EDGE_ATTRIBUTE: EDGE_CLIENT}
ELECTION = {EDGE_ATTRIBUTE: EDGE_ELECTION}
HUGE_BUDGET = 1e12


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
) -> SamplingResult:
    return sampler.should_sample(parent, trace_id, "span", SpanKind.SERVER, attributes)


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
    clock = FakeClock()
    sampler = RaftdSampler(0.0, 20, clock=clock)
    for tid in islice(trace_ids(3), 100):
        assert not kept(decide(sampler, tid, CLIENT))
    assert sampler.tokens_available == 20
    assert sampler.decisions[RATIO] == 100


def test_elections_are_not_subject_to_the_ratio() -> None:
    sampler = RaftdSampler(0.0, 20, clock=FakeClock())
    result = decide(sampler, 0xFFFF_FFFF_FFFF_FFFF, ELECTION)
    assert kept(result)
    assert result.attributes[SAMPLE_RATE_ATTRIBUTE] == 1


@pytest.mark.parametrize(
    ("ratio", "rate"), [(1.0, 1), (0.5, 2), (0.25, 4), (0.3, 3), (0.01, 100), (0.0, 1)]
)
def test_sample_rate_is_the_inverse_of_the_ratio(ratio: float, rate: int) -> None:
    assert RaftdSampler(ratio).sample_rate == rate


def test_a_kept_client_span_carries_its_attributes_and_sample_rate() -> None:
    # The SDK takes the span's attributes from the sampling result: dropping them there
    # would strip every span the sampler keeps.
    sampler = RaftdSampler(0.5, HUGE_BUDGET)
    below_every_bound = 0x5EED << 64  # the ratio reads the low 64 bits only
    result = decide(sampler, below_every_bound, {**CLIENT, "rpc.method": "Put"})
    assert dict(result.attributes) == {
        EDGE_ATTRIBUTE: EDGE_CLIENT,
        "rpc.method": "Put",
        SAMPLE_RATE_ATTRIBUTE: 2,
    }


# ------------------------------------------------------------------ the per-minute cap


def test_a_burst_of_clients_gets_the_budget_less_the_reserve() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock=clock)
    gen = trace_ids(1)
    assert sum(kept(decide(sampler, next(gen), CLIENT)) for _ in range(1000)) == 15
    assert sampler.decisions[RATE_LIMITED] == 985
    assert sampler.tokens_available == pytest.approx(5)


def test_the_bucket_refills_to_the_cap_and_no_further() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock=clock)
    gen = trace_ids(2)
    for _ in range(1000):
        decide(sampler, next(gen), CLIENT)
    clock.advance(3.0)  # one token, at 20 a minute
    assert sum(kept(decide(sampler, next(gen), CLIENT)) for _ in range(100)) == 1
    clock.advance(60.0)
    assert sampler.tokens_available == pytest.approx(20)
    clock.advance(3600.0)
    assert sampler.tokens_available == pytest.approx(20)
    assert sum(kept(decide(sampler, next(gen), CLIENT)) for _ in range(1000)) == 15


def test_the_reserve_is_refilled_before_clients_get_a_token() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock=clock)
    gen = trace_ids(4)
    for _ in range(100):
        decide(sampler, next(gen), CLIENT)
    assert kept(decide(sampler, next(gen), ELECTION))  # 5 -> 4, into the reserve
    clock.advance(3.0)  # 4 -> 5: the reserve whole again, nothing for clients yet
    assert not kept(decide(sampler, next(gen), CLIENT))
    clock.advance(3.0)
    assert kept(decide(sampler, next(gen), CLIENT))


def test_elections_may_use_the_whole_budget_and_no_more() -> None:
    sampler = RaftdSampler(1.0, 20, clock=FakeClock())
    gen = trace_ids(6)
    assert sum(kept(decide(sampler, next(gen), ELECTION)) for _ in range(100)) == 20


def test_ten_minutes_of_client_flood_stay_under_the_cap_and_elections_get_through() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock=clock)
    gen = trace_ids(8)
    clients_kept = elections_kept = elections = 0
    for tick in range(10 * 60 * 100):  # 100 client requests a second for 10 minutes
        clients_kept += kept(decide(sampler, next(gen), CLIENT))
        if tick % 2000 == 1000:  # an election every 20 s, in the thick of the flood
            elections += 1
            elections_kept += kept(decide(sampler, next(gen), ELECTION))
        clock.advance(0.01)
    assert clients_kept <= 20 * 10 + 20
    assert clients_kept >= 20 * 10 - elections  # the cap is a cap, not a starvation
    assert elections == 30
    assert elections_kept == elections


@deterministic
@given(
    st.lists(
        st.tuples(st.floats(0.0, 30.0), st.booleans()),
        min_size=1,
        max_size=300,
    ),
    st.sampled_from([0.0, 1.0, 7.0, 20.0, 90.0]),
)
def test_no_traffic_pattern_exceeds_the_budget(
    events: list[tuple[float, bool]], per_minute: float
) -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, per_minute, clock=clock)
    gen = trace_ids(9)
    clients = total = 0
    elapsed = 0.0
    for delay, is_client in events:
        clock.advance(delay)
        elapsed += delay
        if kept(decide(sampler, next(gen), CLIENT if is_client else ELECTION)):
            total += 1
            clients += is_client
        refilled = elapsed * per_minute / 60
        assert total <= per_minute + refilled + 1e-6
        assert clients <= per_minute * 0.75 + refilled + 1e-6


# ------------------------------------------------------------------ parent-based


def test_a_follower_with_no_budget_keeps_what_its_leader_kept() -> None:
    clock = FakeClock()
    follower = RaftdSampler(1.0, 0, clock=clock)
    tid = next(trace_ids(10))
    result = decide(follower, tid, {"raft.term": 3}, remote_parent(tid, sampled=True))
    assert kept(result)
    assert dict(result.attributes) == {"raft.term": 3}  # no SampleRate: not an edge
    assert follower.decisions[PARENT_SAMPLED] == 1
    assert not kept(decide(follower, tid, ELECTION))  # its own budget really is empty


def test_following_a_sampled_parent_spends_no_budget() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock=clock)
    gen = trace_ids(12)
    for _ in range(100):
        tid = next(gen)
        assert kept(decide(sampler, tid, None, remote_parent(tid, sampled=True)))
        assert kept(decide(sampler, tid, None, local_parent(tid, sampled=True)))
    assert sampler.tokens_available == 20


@pytest.mark.parametrize("make_parent", [remote_parent, local_parent])
def test_an_unsampled_parent_is_followed(make_parent: Callable[..., Context]) -> None:
    sampler = RaftdSampler(1.0, HUGE_BUDGET)
    tid = next(trace_ids(13))
    assert not kept(decide(sampler, tid, None, make_parent(tid, sampled=False)))
    assert sampler.decisions[PARENT_DROPPED] == 1


def test_an_election_marked_span_with_a_parent_follows_the_parent() -> None:
    sampler = RaftdSampler(1.0, 0, clock=FakeClock())
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
    result = decide(RaftdSampler(1.0, 0, clock=FakeClock()), tid, None, parent)
    assert result.trace_state == state


# ------------------------------------------------------------------ the client's flag


def test_a_client_that_declines_is_not_traced() -> None:
    sampler = RaftdSampler(1.0, HUGE_BUDGET)
    tid = next(trace_ids(17))
    assert not kept(decide(sampler, tid, CLIENT, remote_parent(tid, sampled=False)))
    assert sampler.decisions[CLIENT_DECLINED] == 1


def test_a_clients_sampled_flag_is_honoured_only_within_the_budget() -> None:
    clock = FakeClock()
    sampler = RaftdSampler(1.0, 20, clock=clock)
    gen = trace_ids(18)
    results = []
    for _ in range(20):
        tid = next(gen)
        results.append(kept(decide(sampler, tid, CLIENT, remote_parent(tid, sampled=True))))
    assert results == [True] * 15 + [False] * 5
    assert sampler.decisions[SAMPLED] == 15
    assert sampler.decisions[RATE_LIMITED] == 5


def test_a_clients_sampled_flag_meets_an_empty_budget() -> None:
    sampler = RaftdSampler(1.0, 0, clock=FakeClock())
    tid = next(trace_ids(19))
    assert not kept(decide(sampler, tid, CLIENT, remote_parent(tid, sampled=True)))
    assert sampler.decisions[RATE_LIMITED] == 1


def test_a_client_without_trace_context_is_decided_by_the_member() -> None:
    sampler = RaftdSampler(1.0, 20, clock=FakeClock())
    assert kept(decide(sampler, next(trace_ids(20)), CLIENT))


# ------------------------------------------------------------------ across members


def provider(sampler: RaftdSampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
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


def test_a_trace_kept_by_the_leader_is_complete_on_followers_with_empty_budgets() -> None:
    leader_provider, leader_spans = provider(RaftdSampler(1.0, 20, clock=FakeClock()))
    followers = [provider(RaftdSampler(1.0, 0, clock=FakeClock())) for _ in range(2)]
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
    leader_provider, leader_spans = provider(RaftdSampler(1.0, 0, clock=FakeClock()))
    follower_provider, follower_spans = provider(RaftdSampler(1.0, 20, clock=FakeClock()))
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


# ------------------------------------------------------------------ decisions, configuration


def test_every_decision_reaches_the_callback_with_its_reason() -> None:
    seen: list[tuple[str, bool]] = []
    sampler = RaftdSampler(1.0, 0, clock=FakeClock(), on_decision=lambda r, s: seen.append((r, s)))
    tid = next(trace_ids(21))
    decide(sampler, tid, CLIENT)
    decide(sampler, tid, CLIENT, remote_parent(tid, sampled=False))
    decide(sampler, tid, None, remote_parent(tid, sampled=True))
    decide(sampler, tid, None, remote_parent(tid, sampled=False))
    decide(sampler, tid, None)
    assert seen == [
        (RATE_LIMITED, False),
        (CLIENT_DECLINED, False),
        (PARENT_SAMPLED, True),
        (PARENT_DROPPED, False),
        (UNMARKED_ROOT, False),
    ]
    assert sum(sampler.decisions.values()) == len(seen)


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
