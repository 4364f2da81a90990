"""``raftctl trace`` over span files written the way members and raftctl write them.

The files come from the real SDK and the real ``JsonLinesSpanExporter``, one directory per
process as ``raftd cluster`` lays them out, with parents crossing files through remote span
contexts exactly as trace context crosses the wire. Ids and times are fixed, so the output
is the same on every run and can be compared whole.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode

from cli.raftctl import main
from cli.trace import assemble, load_traces
from observability.filexport import JsonLinesSpanExporter, SpanRecord
from tests.cli import test_raftctl as raftctl_tests

T0 = 1_717_243_200_000_000_000  # 2024-06-01 12:00:00 UTC
OLD_ELECTION = 0xAA11_0000_0000_0000_0000_0000_0000_0001
ELECTION = 0xAB22_0000_0000_0000_0000_0000_0000_0002
WRITE = 0xC0FF_EE00_0000_0000_0000_0000_0000_0003
READ = 0xD00D_0000_0000_0000_0000_0000_0000_0004
LONE_WRITE = 0xE0E0_0000_0000_0000_0000_0000_0000_0005


def tid(trace_id: int) -> str:
    return format(trace_id, "032x")


class Ids(IdGenerator):
    """Span ids count up across every process; a root takes the trace id the test set."""

    def __init__(self) -> None:
        self.trace_id = 0
        self._span_id = 0

    def generate_span_id(self) -> int:
        self._span_id += 1
        return self._span_id

    def generate_trace_id(self) -> int:
        return self.trace_id


Parent = Span | SpanContext | None


class Cluster:
    """One TracerProvider and trace file per process, under one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ids = Ids()
        self._providers: dict[str, TracerProvider] = {}

    def _tracer(self, node: str) -> trace.Tracer:
        provider = self._providers.get(node)
        if provider is None:
            service, instance = ("raftctl", "host-4242") if node == "raftctl" else ("raftd", node)
            provider = TracerProvider(
                # Not Resource.create(), which would let OTEL_* variables in.
                resource=Resource({"service.name": service, "service.instance.id": instance}),
                sampler=ALWAYS_ON,
                id_generator=self.ids,
            )
            exporter = JsonLinesSpanExporter(self.data_dir / node / "traces.jsonl")
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            self._providers[node] = provider
        return provider.get_tracer("raftd.test")

    def span(
        self,
        node: str,
        name: str,
        start_ms: float,
        end_ms: float,
        *,
        parent: Parent = None,
        trace_id: int = 0,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        events: Sequence[tuple[str, float, dict[str, Any]]] = (),
        error: str | None = None,
    ) -> Span:
        """A finished span; a SpanContext parent is another process's span, as received."""
        if isinstance(parent, SpanContext):
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        elif parent is not None:
            context = trace.set_span_in_context(parent)
        else:
            context = Context()
            self.ids.trace_id = trace_id
        span = self._tracer(node).start_span(
            name, context=context, kind=kind, attributes=attributes, start_time=at(start_ms)
        )
        assert isinstance(span, Span)
        for event, event_ms, event_attributes in events:
            span.add_event(event, event_attributes, timestamp=at(event_ms))
        if error is not None:
            span.set_status(StatusCode.ERROR, error)
        span.end(end_time=at(end_ms))
        return span

    def shutdown(self) -> None:
        for provider in self._providers.values():
            provider.shutdown()


def at(ms: float) -> int:
    return T0 + round(ms * 1_000_000)


def wire(span: Span) -> SpanContext:
    """The span as another process sees it once its traceparent crossed the network."""
    context = span.get_span_context()
    return SpanContext(
        context.trace_id, context.span_id, is_remote=True, trace_flags=context.trace_flags
    )


def old_election(c: Cluster) -> None:
    """n2's split vote in term 4, five seconds before everything else."""
    root = c.span(
        "n2", "raft.election", -5000, -4700, trace_id=OLD_ELECTION,
        attributes={"raft.term": 4, "raft.election.outcome": "split"},
    )  # fmt: skip
    phase = c.span("n2", "raft.election.vote", -5000, -4700, parent=root)
    for peer in ("n1", "n3"):
        asked = c.span(
            "n2", f"RequestVote {peer}", -4999, -4700, parent=phase, kind=SpanKind.CLIENT,
            attributes={"raft.peer": peer, "raft.term": 4, "raft.pre_vote": False},
            events=[("no reply before the election ended", -4700, {})],
        )  # fmt: skip
    # n3 voted, but its reply was lost on the way back.
    c.span(
        "n3", "raft.vote_decision", -4990, -4989, parent=wire(asked), kind=SpanKind.SERVER,
        attributes={"raft.candidate": "n2", "raft.term": 4, "raft.pre_vote": False,
                    "raft.vote_granted": True},
    )  # fmt: skip


def election(c: Cluster) -> None:
    """n1 wins term 5: a pre-vote (n3's request dropped by chaos), then the vote."""
    root = c.span(
        "n1", "raft.election", 0, 30, trace_id=ELECTION,
        attributes={
            "raft.term": 5, "raft.election.reason": "timeout", "raft.pre_vote": True,
            "raft.election.outcome": "won", "raft.votes": 2,
        },
    )  # fmt: skip
    pre = c.span("n1", "raft.election.pre_vote", 0, 10, parent=root, attributes={"raft.term": 5})
    asked = c.span(
        "n1", "RequestVote n2", 0.5, 5, parent=pre, kind=SpanKind.CLIENT,
        attributes={"raft.peer": "n2", "raft.term": 5, "raft.pre_vote": True,
                    "raft.vote_granted": True},
        events=[("written to the peer", 0.6, {"raftd.outbox_wait_ms": 0.1})],
    )  # fmt: skip
    c.span(
        "n2", "raft.vote_decision", 1, 2, parent=wire(asked), kind=SpanKind.SERVER,
        attributes={"raft.candidate": "n1", "raft.term": 5, "raft.pre_vote": True,
                    "raft.vote_granted": True},
    )  # fmt: skip
    c.span(
        "n1", "RequestVote n3", 0.5, 10, parent=pre, kind=SpanKind.CLIENT,
        attributes={"raft.peer": "n3", "raft.term": 5, "raft.pre_vote": True,
                    "chaos.dropped": True},
        events=[("chaos.dropped", 0.5, {}), ("no reply before the election ended", 10, {})],
    )  # fmt: skip
    vote = c.span("n1", "raft.election.vote", 10, 30, parent=root, attributes={"raft.term": 5})
    asked = c.span(
        "n1", "RequestVote n2", 10.5, 20, parent=vote, kind=SpanKind.CLIENT,
        attributes={"raft.peer": "n2", "raft.term": 5, "raft.pre_vote": False,
                    "raft.vote_granted": True, "chaos.delay_ms": 3.0},
        events=[("chaos.delayed", 10.5, {"chaos.delay_ms": 3.0})],
    )  # fmt: skip
    c.span(
        "n2", "raft.vote_decision", 14, 15, parent=wire(asked), kind=SpanKind.SERVER,
        attributes={"raft.candidate": "n1", "raft.term": 5, "raft.pre_vote": False,
                    "raft.vote_granted": True},
    )  # fmt: skip
    asked = c.span(
        "n1", "RequestVote n3", 10.5, 25, parent=vote, kind=SpanKind.CLIENT,
        attributes={"raft.peer": "n3", "raft.term": 5, "raft.pre_vote": False,
                    "raft.vote_granted": False},
    )  # fmt: skip
    c.span(
        "n3", "raft.vote_decision", 12, 13, parent=wire(asked), kind=SpanKind.SERVER,
        attributes={"raft.candidate": "n1", "raft.term": 5, "raft.pre_vote": False,
                    "raft.vote_granted": False, "raft.vote_refused_reason": "already_voted"},
    )  # fmt: skip


def write(c: Cluster) -> None:
    """raftctl set, redirected by n2 to n1, replicated to n2 and (delayed by chaos) n3."""
    root = c.span(
        "raftctl", "raftctl set", 1000, 1020, trace_id=WRITE, attributes={"raftctl.endpoints": 3}
    )
    call = c.span("raftctl", "client.set", 1000.2, 1019.8, parent=root)
    first = c.span(
        "raftctl", "SetRequest 127.0.0.1:7002", 1000.3, 1002, parent=call, kind=SpanKind.CLIENT,
        attributes={"raftd.endpoint": "127.0.0.1:7002", "raftd.attempt": 1,
                    "raftd.attempt_outcome": "not_leader"},
    )  # fmt: skip
    c.span(
        "n2", "kv.set", 1000.5, 1001.5, parent=wire(first), kind=SpanKind.SERVER,
        attributes={"raftd.outcome": "redirected", "raftd.error_code": "not_leader"},
    )  # fmt: skip
    second = c.span(
        "raftctl", "SetRequest 127.0.0.1:7001", 1002.1, 1019.5, parent=call, kind=SpanKind.CLIENT,
        attributes={"raftd.endpoint": "127.0.0.1:7001", "raftd.attempt": 2,
                    "raftd.attempt_outcome": "ok"},
    )  # fmt: skip
    served = c.span(
        "n1", "kv.set", 1002.5, 1019, parent=wire(second), kind=SpanKind.SERVER,
        attributes={"raftd.outcome": "ok"}, events=[("reply sent", 1019, {})],
    )  # fmt: skip
    c.span("n1", "raft.propose", 1002.6, 1003, parent=served,
           attributes={"raft.index": 7, "raft.term": 5})  # fmt: skip
    c.span("n1", "wal.fsync", 1003, 1005, parent=served, attributes={"wal.entries": 1})
    for peer, sent, replied, chaos in (("n2", 1003, 1008, None), ("n3", 1003, 1015, 6.5)):
        append = c.span(
            "n1", f"AppendEntries {peer}", sent, replied, parent=served, kind=SpanKind.CLIENT,
            attributes={"raft.peer": peer, "raft.term": 5, "raft.entries": 1,
                        "raft.match_index": 7, **({"chaos.delay_ms": chaos} if chaos else {})},
            events=[("chaos.delayed", sent, {"chaos.delay_ms": chaos})] if chaos else [],
        )  # fmt: skip
        arrived = replied - 4
        received = c.span(
            peer, "raft.append", arrived, arrived + 3, parent=wire(append), kind=SpanKind.SERVER,
            attributes={"raft.leader": "n1", "raft.term": 5, "raft.entries": 1},
        )  # fmt: skip
        c.span(
            peer, "wal.fsync", arrived + 0.5, arrived + 2.5, parent=received,
            attributes={"wal.entries": 1, **({"chaos.fsync_delay_ms": 1.5} if chaos else {})},
        )  # fmt: skip
        c.span(peer, "raft.apply", replied + 1, replied + 1.2, parent=wire(served),
               attributes={"raft.index": 7, "raft.term": 5, "kv.outcome": "ok"})  # fmt: skip
    c.span("n1", "raft.commit", 1008.1, 1008.2, parent=served,
           attributes={"raft.index": 7, "raft.term": 5})  # fmt: skip
    c.span("n1", "raft.apply", 1008.3, 1008.6, parent=served,
           attributes={"raft.index": 7, "raft.term": 5, "kv.outcome": "ok"})  # fmt: skip


def read(c: Cluster) -> None:
    """The latest trace of all: a get, neither an election nor a write."""
    root = c.span("raftctl", "raftctl get", 2000, 2003, trace_id=READ)
    call = c.span("raftctl", "client.get", 2000.1, 2002.9, parent=root)
    attempt = c.span("raftctl", "GetRequest 127.0.0.1:7001", 2000.2, 2002.8, parent=call,
                     kind=SpanKind.CLIENT, attributes={"raftd.attempt_outcome": "ok"})  # fmt: skip
    c.span("n1", "kv.get", 2000.5, 2002.5, parent=wire(attempt), kind=SpanKind.SERVER,
           attributes={"raftd.outcome": "ok"})  # fmt: skip


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    cluster = Cluster(tmp_path / ".raftd")
    old_election(cluster)
    election(cluster)
    write(cluster)
    read(cluster)
    cluster.shutdown()
    yield cluster.data_dir


class Run(raftctl_tests.Run):
    def line(self, *parts: str) -> str:
        """The one output line holding every part, in order of appearance or not."""
        found = [line for line in self.out.splitlines() if all(part in line for part in parts)]
        assert len(found) == 1, (parts, self.out)
        return found[0]


def raftctl(*argv: str | Path, env: dict[str, str] | None = None) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(arg) for arg in argv], stdout=out, stderr=err, environ=env or {})
    return Run(code, out.getvalue(), err.getvalue())


def ctl(data_dir: Path, *argv: str) -> Run:
    return raftctl("trace", "--data-dir", data_dir, *argv)


# ------------------------------------------------------------------- elections

ELECTION_WATERFALL = """\
trace ab220000000000000000000000000002  raft.election (election)
started 2024-06-01 12:00:00.000 UTC, lasted 30.00 ms, 10 spans on n1, n2, n3

NODE  SPAN                      START ms  DUR ms  TIMELINE                                    ATTRIBUTES
n1    raft.election                 0.00   30.00  |========================================|  raft.term=5 raft.pre_vote=true raft.election.reason=timeout raft.election.outcome=won
n1      raft.election.pre_vote      0.00   10.00  |==============                          |  raft.term=5
n1        RequestVote n2            0.50    4.50  |=======                                 |  raft.term=5 raft.peer=n2 raft.pre_vote=true raft.vote_granted=true
n2          raft.vote_decision      1.00    1.00  | ==                                     |  raft.term=5 raft.candidate=n1 raft.pre_vote=true raft.vote_granted=true
n1        RequestVote n3            0.50    9.50  |==============                          |  raft.term=5 raft.peer=n3 raft.pre_vote=true chaos.dropped=true
            ! chaos.dropped at 0.50 ms
            ! no reply before the election ended at 10.00 ms
n1      raft.election.vote         10.00   20.00  |             ===========================|  raft.term=5
n1        RequestVote n2           10.50    9.50  |              =============             |  raft.term=5 raft.peer=n2 raft.vote_granted=true chaos.delay_ms=3
            ! chaos.delayed at 10.50 ms  chaos.delay_ms=3
n2          raft.vote_decision     14.00    1.00  |                  ==                    |  raft.term=5 raft.candidate=n1 raft.vote_granted=true
n1        RequestVote n3           10.50   14.50  |              ====================      |  raft.term=5 raft.peer=n3 raft.vote_granted=false
n3          raft.vote_decision     12.00    1.00  |                ==                      |  raft.term=5 raft.candidate=n1 raft.vote_granted=false raft.vote_refused_reason=already_voted

election: won, term 5, candidate n1, 30.00 ms
  pre-vote: n2 granted, n3 no reply (request dropped by chaos)
  vote: n2 granted, n3 refused (already_voted)
chaos: 1 message dropped, 1 delayed (3 ms in all)
"""  # noqa: E501 - the waterfall is as wide as it prints


def test_last_election_prints_the_newest_election_across_the_nodes(data_dir: Path) -> None:
    run = ctl(data_dir, "--last", "election")
    assert (run.code, run.err) == (0, "")
    assert run.out == ELECTION_WATERFALL


def test_last_election_needs_an_election_not_just_traces(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    write(cluster)
    cluster.shutdown()
    run = ctl(tmp_path, "--last", "election")
    assert (run.code, run.out) == (1, "")
    assert run.err == f"raftctl: no election trace among the 1 trace under {tmp_path}\n"


def test_an_election_says_which_votes_never_reached_the_candidate(data_dir: Path) -> None:
    run = ctl(data_dir, "aa")
    assert run.code == 0
    assert run.out.endswith(
        "election: split, term 4, candidate n2, 300.00 ms\n"
        "  vote: n1 no reply, n3 granted (reply not received)\n"
    )


def test_an_election_whose_candidate_file_is_gone_still_shows_the_votes(
    data_dir: Path,
) -> None:
    shutil.rmtree(data_dir / "n1")
    run = ctl(data_dir, "--last", "election")
    assert run.code == 0
    assert "candidate's spans are not recorded" in run.out
    assert "  vote: n2 granted, n3 refused (already_voted)" in run.out
    assert "(parent not recorded)" in run.line("n3", "raft.vote_decision")


# ------------------------------------------------------------------- writes


def test_last_write_follows_the_write_from_the_client_through_every_member(
    data_dir: Path,
) -> None:
    run = ctl(data_dir, "--last", "write")
    assert (run.code, run.err) == (0, "")
    lines = run.out.splitlines()
    assert lines[0] == f"trace {tid(WRITE)}  raftctl set (write)"
    assert lines[1] == (
        "started 2024-06-01 12:00:01.000 UTC, lasted 20.00 ms, 18 spans on client, n2, n1, n3"
    )
    assert run.line("client", "raftctl set").startswith("client  raftctl set ")
    # Each member's span sits under the client attempt that reached it.
    assert run.line("n2", " kv.set ").startswith("n2            kv.set ")
    assert run.line("n1", " kv.set ").startswith("n1            kv.set ")
    assert "raftd.outcome=redirected raftd.error_code=not_leader" in run.line("n2", "kv.set")
    assert "raftd.attempt_outcome=not_leader" in run.line("SetRequest 127.0.0.1:7002")
    assert run.line("n3", "raft.append").startswith("n3                raft.append ")
    assert run.line("n2", "raft.apply").startswith("n2              raft.apply ")
    assert lines[-4:] == [
        "write: ok in 20.00 ms (raftctl set)",
        "  committed: index 7 on n1",
        "  applied on: n1, n2, n3",
        "chaos: 1 delayed (6.5 ms in all), 1 fsync slowed",
    ]


def test_chaos_attributes_and_events_are_shown_and_routine_events_are_not(
    data_dir: Path,
) -> None:
    run = ctl(data_dir, "--last", "write")
    lines = run.out.splitlines()
    delayed = run.line("AppendEntries n3")
    assert "raft.peer=n3 raft.entries=1 raft.match_index=7 chaos.delay_ms=6.5" in delayed
    event = lines[lines.index(delayed) + 1]
    assert event.strip() == "! chaos.delayed at 3.00 ms  chaos.delay_ms=6.5"
    # Under the span's name, one level deeper.
    assert event.index("!") == delayed.index("AppendEntries") + 2
    assert "chaos.fsync_delay_ms=1.5" in run.line("n3", "wal.fsync")
    assert "reply sent" not in run.out


def test_a_write_without_the_client_spans_is_still_a_write(data_dir: Path) -> None:
    shutil.rmtree(data_dir / "raftctl")
    run = ctl(data_dir, "--last", "write")
    assert run.code == 0
    assert run.out.startswith(f"trace {tid(WRITE)}  kv.set (write)\n")
    for node in ("n1", "n2"):
        assert "(parent not recorded)" in run.line(node, " kv.set ")
    assert "write: ok in 18.50 ms (its first spans are not recorded)" in run.out


def test_a_member_only_write_from_another_client_counts_as_a_write(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    unknown_client = SpanContext(LONE_WRITE, 0xFEED, is_remote=True)
    served = cluster.span(
        "n1", "kv.delete", 0, 4, parent=unknown_client, kind=SpanKind.SERVER,
        attributes={"raftd.outcome": "ok"},
    )  # fmt: skip
    cluster.span("n1", "raft.apply", 2, 3, parent=served, attributes={"raft.index": 9})
    cluster.span(
        "n1", "wal.fsync", 1, 2, parent=served, attributes={"chaos.fsync_delay_ms": 2.96833}
    )
    cluster.shutdown()
    run = ctl(tmp_path, "--last", "write")
    assert run.code == 0
    assert "kv.delete (write)" in run.out.splitlines()[0]
    assert "  applied on: n1" in run.out
    assert run.line("wal.fsync").endswith("  chaos.fsync_delay_ms=2.97")


# ------------------------------------------------------------------- picking a trace


@pytest.mark.parametrize("prefix", ["c0ff", "C0FFEE", tid(WRITE)])
def test_a_trace_id_or_any_unique_prefix_picks_the_trace(data_dir: Path, prefix: str) -> None:
    run = ctl(data_dir, prefix)
    assert run.code == 0
    assert run.out.startswith(f"trace {tid(WRITE)}  raftctl set (write)\n")


def test_an_ambiguous_prefix_is_a_usage_error_naming_the_candidates(data_dir: Path) -> None:
    run = ctl(data_dir, "a")
    assert (run.code, run.out) == (2, "")
    assert run.err == (
        f"raftctl: TRACE_ID a is ambiguous: 2 traces start with it"
        f" ({tid(OLD_ELECTION)}, {tid(ELECTION)}); give more digits\n"
    )
    assert ctl(data_dir, "aa").code == 0


def test_an_unknown_trace_id_exits_1(data_dir: Path) -> None:
    run = ctl(data_dir, "0123")
    assert (run.code, run.out) == (1, "")
    assert run.err == f"raftctl: no trace 0123 among the 4 traces under {data_dir}\n"


def test_last_any_is_the_latest_trace_of_any_kind(data_dir: Path) -> None:
    run = ctl(data_dir, "--last", "any")
    assert run.out.startswith(f"trace {tid(READ)}  raftctl get (read)\n")
    assert run.out.endswith("\nread: ok in 3.00 ms (raftctl get)\n")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["xyz"], "TRACE_ID must be 1 to 32 hex digits, not 'xyz'"),
        (["1" * 33], "TRACE_ID must be 1 to 32 hex digits"),
        (["c0ff", "--last", "write"], "argument --last: not allowed with argument TRACE_ID"),
        (["--last", "read"], "argument --last: invalid choice: 'read'"),
    ],
)
def test_bad_arguments_exit_2_with_the_trace_usage(
    data_dir: Path, argv: list[str], error: str
) -> None:
    run = ctl(data_dir, *argv)
    assert (run.code, run.out) == (2, "")
    assert run.err.startswith("usage: raftctl trace ")
    assert error in run.err


def test_without_a_choice_the_recent_traces_are_listed_newest_first(data_dir: Path) -> None:
    run = ctl(data_dir)
    assert run.code == 0
    assert run.out.splitlines() == [
        "START (UTC)              TRACE ID                          KIND      ROOT           "
        "NODES  SPANS  DURATION ms  OUTCOME",
        f"2024-06-01 12:00:02.000  {tid(READ)}  read      raftctl get        "
        "2      4         3.00  ok",
        f"2024-06-01 12:00:01.000  {tid(WRITE)}  write     raftctl set        "
        "4     18        20.00  ok",
        f"2024-06-01 12:00:00.000  {tid(ELECTION)}  election  raft.election      "
        "3     10        30.00  won",
        f"2024-06-01 11:59:55.000  {tid(OLD_ELECTION)}  election  raft.election      "
        "2      5       300.00  split",
    ]
    assert run.err == (
        "raftctl: show one with: raftctl trace TRACE_ID (a unique prefix will do),"
        " or --last election|write|any\n"
    )


# ------------------------------------------------------------------- json


def test_json_output_is_one_object_with_the_spans_in_waterfall_order(data_dir: Path) -> None:
    run = ctl(data_dir, "--last", "write", "--output", "json")
    assert (run.code, run.err) == (0, "")
    obj = run.json
    spans = obj.pop("spans")
    assert obj == {
        "trace_id": tid(WRITE),
        "kind": "write",
        "root": "raftctl set",
        "start": "2024-06-01 12:00:01.000Z",
        "start_unix_nano": at(1000),
        "duration_ms": 20.0,
        "nodes": ["client", "n2", "n1", "n3"],
        "span_count": 18,
        "outcome": "ok",
    }
    assert [(s["node"], s["depth"], s["name"]) for s in spans[:5]] == [
        ("client", 0, "raftctl set"),
        ("client", 1, "client.set"),
        ("client", 2, "SetRequest 127.0.0.1:7002"),
        ("n2", 3, "kv.set"),
        ("client", 2, "SetRequest 127.0.0.1:7001"),
    ]
    by_name = {(s["node"], s["name"]): s for s in spans}
    delayed = by_name[("n1", "AppendEntries n3")]
    assert delayed["parent_span_id"] == by_name[("n1", "kv.set")]["span_id"]
    assert delayed | {"span_id": "-", "parent_span_id": "-"} == {
        "node": "n1",
        "service_name": "raftd",
        "name": "AppendEntries n3",
        "span_id": "-",
        "parent_span_id": "-",
        "parent_missing": False,
        "depth": 4,
        "kind": "client",
        "start_offset_ms": 3.0,
        "duration_ms": 12.0,
        "status": {"code": "unset", "message": ""},
        "attributes": {
            "raft.peer": "n3",
            "raft.term": 5,
            "raft.entries": 1,
            "raft.match_index": 7,
            "chaos.delay_ms": 6.5,
        },
        "events": [
            {"name": "chaos.delayed", "offset_ms": 3.0, "attributes": {"chaos.delay_ms": 6.5}}
        ],
        "links": [],
    }
    assert by_name[("n2", "raft.append")]["depth"] == 5


def test_json_listing_has_every_trace_newest_first(data_dir: Path) -> None:
    run = ctl(data_dir, "--output", "json")
    assert (run.code, run.err) == (0, "")
    listing = run.json
    assert listing["data_dir"] == str(data_dir)
    assert [(t["trace_id"], t["kind"], t["outcome"]) for t in listing["traces"]] == [
        (tid(READ), "read", "ok"),
        (tid(WRITE), "write", "ok"),
        (tid(ELECTION), "election", "won"),
        (tid(OLD_ELECTION), "election", "split"),
    ]


def test_json_errors_are_one_error_object_on_stdout(tmp_path: Path) -> None:
    run = ctl(tmp_path / "nowhere", "--output", "json")
    assert (run.code, run.err) == (2, "")
    assert run.json["error"]["code"] == "usage"
    run = ctl(tmp_path, "--last", "write", "--output", "json")
    assert (run.code, run.err) == (1, "")
    assert run.json["error"]["code"] == "not_found"


# ------------------------------------------------------------------- the files


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    run = ctl(tmp_path / "nowhere", "--last", "election")
    assert (run.code, run.out) == (2, "")
    assert run.err == (
        f"raftctl: {tmp_path / 'nowhere'} does not exist (give --data-dir; `raftd cluster`"
        " keeps its members in .raftd)\n"
    )


@pytest.mark.parametrize(
    ("argv", "what"), [(["--last", "election"], "election trace"), ([], "trace")]
)
def test_an_empty_directory_says_where_traces_may_have_gone(
    tmp_path: Path, argv: list[str], what: str
) -> None:
    (tmp_path / "n1").mkdir()
    run = ctl(tmp_path, *argv)
    assert (run.code, run.out) == (1, "")
    assert run.err == (
        f"raftctl: no {what} under {tmp_path}: is the cluster running with the embedded"
        " default? (spans go to Honeycomb or a collector instead when"
        " OTEL_EXPORTER_OTLP_ENDPOINT is set)\n"
    )


def test_the_default_directory_is_the_cluster_one(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data_dir.parent)
    run = raftctl("trace", "--last", "election")
    assert (run.code, run.out) == (0, ELECTION_WATERFALL)


def test_a_torn_last_line_is_skipped(data_dir: Path) -> None:
    before = ctl(data_dir, "--last", "election").out
    with open(data_dir / "n2" / "traces.jsonl", "a") as file:
        file.write('{"resourceSpans":[{"resource":{"attr')
    run = ctl(data_dir, "--last", "election")
    assert (run.code, run.out, run.err) == (0, before, "")


def test_rotated_files_are_read_too(data_dir: Path) -> None:
    (data_dir / "n3" / "traces.jsonl").rename(data_dir / "n3" / "traces.jsonl.1")
    run = ctl(data_dir, "--last", "election")
    assert run.out == ELECTION_WATERFALL


def test_a_member_file_that_is_not_otlp_costs_only_that_member(data_dir: Path) -> None:
    with open(data_dir / "n3" / "traces.jsonl", "a") as file:
        file.write('{"not": "otlp", "resourceSpans": [{"scopeSpans": [{"spans": [{}]}]}]}\n')
    run = ctl(data_dir, "--last", "election")
    assert run.code == 0
    assert run.err.startswith(
        f"raftctl: warning: skipped the rest of the trace files in {data_dir / 'n3'}: "
    )
    assert run.out == ELECTION_WATERFALL  # n3's spans came before the bad line


def test_data_dir_may_be_a_single_trace_file(data_dir: Path) -> None:
    run = ctl(data_dir / "n2" / "traces.jsonl", "--last", "election")
    assert run.code == 0
    assert run.out.splitlines()[1].endswith("2 spans on n2")


def test_parent_cycles_in_damaged_files_do_not_lose_spans() -> None:
    def record(span_id: str, parent: str | None) -> SpanRecord:
        return SpanRecord(
            trace_id="1" * 32, span_id=span_id, parent_span_id=parent, name=f"s{span_id}",
            kind=1, start_ns=int(span_id), end_ns=int(span_id) + 1, attributes={}, events=[],
            links=[], status_code=0, status_message="", service_name="raftd",
            service_instance_id="n1", scope_name="", resource={},
        )  # fmt: skip

    built = assemble("1" * 32, [record("1", "2"), record("2", "1"), record("3", "3")])
    assert [(row.span["span_id"], row.depth) for row in built.rows] == [
        ("3", 0),
        ("1", 0),
        ("2", 1),
    ]
    assert all(row.parent_missing for row in built.rows if row.depth == 0)


# ------------------------------------------------------------------- raftctl


def test_trace_reads_files_only_and_writes_no_spans_of_its_own(data_dir: Path) -> None:
    own = data_dir / "raftctl-trace" / "traces.jsonl"
    before = sorted(data_dir.rglob("*"))
    # Endpoints that could not even parse: trace never looks at them.
    run = raftctl(
        "--endpoints", "not an endpoint", "trace", "--data-dir", data_dir, "--last", "write",
        env={"RAFTCTL_TRACE_FILE": str(own), "RAFTCTL_ENDPOINTS": ","},
    )  # fmt: skip
    assert run.code == 0
    assert sorted(data_dir.rglob("*")) == before


def test_the_output_option_also_works_before_the_command(data_dir: Path) -> None:
    run = raftctl("--output", "json", "trace", "--data-dir", data_dir, "--last", "election")
    assert run.json["trace_id"] == tid(ELECTION)


def test_help_explains_the_command_and_its_exit_codes() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        main(["trace", "--help"], stdout=out, stderr=io.StringIO(), environ={})
    assert exited.value.code == 0
    text = out.getvalue()
    assert text.startswith("usage: raftctl trace [-h] [--data-dir DIR]")
    for needle in ("--last {election,write,any}", "exit codes:", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        assert needle in text
    assert "--endpoints" not in text
    top = io.StringIO()
    with pytest.raises(SystemExit):
        main(["--help"], stdout=top, stderr=io.StringIO(), environ={})
    assert "show a trace from the local trace files" in top.getvalue()


def test_load_traces_joins_the_spans_of_every_process(data_dir: Path) -> None:
    loaded = load_traces(data_dir)
    assert loaded.warnings == ()
    assert [t.trace_id for t in loaded.traces] == [
        tid(OLD_ELECTION),
        tid(ELECTION),
        tid(WRITE),
        tid(READ),
    ]
    assert loaded.traces[2].nodes == ("client", "n2", "n1", "n3")
