"""The runtime's span bookkeeping, with an in-memory exporter: batches, links, elections."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raftd.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftd.core import events as ev
from raftd.runtime.spans import RaftSpans
from wire.tracecontext import format_traceparent, parse_traceparent

TRACE_A = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-00000000000000a1-01"
TRACE_B = "00-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-00000000000000b1-01"
NAMES = {1: "n1", 2: "n2", 3: "n3"}


def make() -> tuple[RaftSpans, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return RaftSpans(provider.get_tracer("test"), NAMES), exporter


def finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_batch_of_two_traces_gives_each_its_own_span_linked_to_the_other() -> None:
    spans, exporter = make()
    batch = (Entry(5, 2, b"a", context=TRACE_A), Entry(6, 2, b"b", context=TRACE_B), Entry(7, 2))
    parent, span = spans.outgoing(AppendEntries(2, 1, 2, 4, 2, batch, 4))
    assert parent is not None and span is not None
    spans.incoming(AppendEntriesResponse(2, 2, 1, True, match_index=7), None)
    sent = finished(exporter, "AppendEntries n2")
    assert {format(s.context.trace_id, "032x")[0] for s in sent} == {"a", "b"}
    for s in sent:
        assert s.attributes is not None and s.attributes["raft.batch_traces"] == 2
        assert [link.context.trace_id for link in s.links] != [s.context.trace_id]
        assert len(s.links) == 1
    # The frame header carries the first trace's span.
    assert parent.trace_id == "a" * 32


def test_a_follower_parents_on_the_header_for_its_trace_and_links_the_others() -> None:
    spans, exporter = make()
    header = parse_traceparent("00-" + "a" * 32 + "-00000000000000c1-01")
    batch = (Entry(5, 2, b"a", context=TRACE_A), Entry(6, 2, b"b", context=TRACE_B))
    spans.incoming(AppendEntries(2, 1, 2, 4, 2, batch, 4), header)
    spans.after_ready()
    appended = finished(exporter, "raft.append")
    by_trace = {format(s.context.trace_id, "032x")[0]: s for s in appended}
    assert by_trace["a"].parent is not None and by_trace["a"].parent.span_id == 0xC1
    assert by_trace["b"].parent is not None and by_trace["b"].parent.span_id == 0xB1
    assert [link.context.span_id for link in by_trace["b"].links] == [0xC1]


def test_unsampled_work_makes_no_spans() -> None:
    spans, exporter = make()
    unsampled = "00-" + "d" * 32 + "-00000000000000d1-00"
    spans.outgoing(AppendEntries(2, 1, 2, 4, 2, (Entry(5, 2), Entry(6, 2, context="")), 4))
    spans.incoming(AppendEntries(2, 1, 2, 4, 2, (Entry(5, 2),), 4), None)
    spans.incoming(RequestVote(3, 2, 1, 0, 0), parse_traceparent(unsampled))
    spans.fsync((Entry(5, 2),), 0, 1)
    spans.after_ready()
    assert exporter.get_finished_spans() == ()


def test_an_election_ends_with_its_outcome_and_term() -> None:
    spans, exporter = make()
    spans.before_send((ev.ElectionStarted(4, True, "timeout"),))
    parent, _ = spans.outgoing(RequestVote(4, 1, 2, 9, 3, pre_vote=True))
    assert parent is not None
    spans.before_send((ev.BecameCandidate(4),))
    spans.outgoing(RequestVote(4, 1, 2, 9, 3))
    spans.after_events((ev.BecameLeader(4, (1, 2)),))
    (root,) = finished(exporter, "raft.election")
    assert root.attributes is not None
    assert root.attributes["raft.election.outcome"] == "won"
    assert root.attributes["raft.term"] == 4
    phases = {s.name for s in exporter.get_finished_spans() if s.parent == root.context}
    assert phases == {"raft.election.pre_vote", "raft.election.vote"}
    assert format_traceparent(parent).split("-")[1] == format(root.context.trace_id, "032x")


def test_a_timed_out_election_ends_as_split_and_the_next_one_starts_fresh() -> None:
    """The core reports the timeout and the new election in one Ready: the old root must
    end as a split vote, and the new one must stay open for its own outcome."""
    spans, exporter = make()
    spans.before_send((ev.ElectionStarted(4, True, "timeout"),))
    spans.before_send(
        (ev.ElectionTimedOut(4, True, (1,), ()), ev.ElectionStarted(4, True, "timeout"))
    )
    spans.after_events(
        (ev.ElectionTimedOut(4, True, (1,), ()), ev.ElectionStarted(4, True, "timeout"))
    )
    (first,) = finished(exporter, "raft.election")
    assert first.attributes is not None and first.attributes["raft.election.outcome"] == "split"
    spans.after_events((ev.BecameLeader(5, (1, 2)),))
    second = finished(exporter, "raft.election")[1]
    assert second.attributes is not None and second.attributes["raft.election.outcome"] == "won"


def test_a_vote_reply_from_an_earlier_round_is_not_recorded_in_this_rounds_trace() -> None:
    """The first round's RequestVote to n2 reached n2 (its decision is in the first trace),
    but its reply arrived during the second round: recording it on the second round's
    RequestVote span claimed n2 answered a request it never saw (the trace audit found it)."""
    spans, exporter = make()
    spans.before_send((ev.ElectionStarted(4, True, "timeout"),))
    spans.outgoing(RequestVote(4, 1, 2, 9, 3, pre_vote=True, campaign=1))
    spans.before_send(
        (ev.ElectionTimedOut(4, True, (1,), ()), ev.ElectionStarted(4, True, "timeout"))
    )
    spans.outgoing(RequestVote(4, 1, 2, 9, 3, pre_vote=True, campaign=2))
    spans.incoming(RequestVoteResponse(4, 2, 1, True, pre_vote=True, campaign=1), None)
    assert finished(exporter, "RequestVote n2") == [
        first := finished(exporter, "RequestVote n2")[0]
    ]
    assert first.attributes is not None and "raft.vote_granted" not in first.attributes
    spans.incoming(RequestVoteResponse(4, 2, 1, True, pre_vote=True, campaign=2), None)
    answered = finished(exporter, "RequestVote n2")[1]
    assert answered.attributes is not None and answered.attributes["raft.vote_granted"] is True


def test_a_leadership_transfer_and_the_election_it_causes_are_one_trace() -> None:
    leader, leader_spans = make()
    target, target_spans = make()
    leader.before_send((ev.LeaderTransferStarted(4, 2),))
    header, _ = leader.outgoing(TimeoutNow(4, 1, 2))
    assert header is not None
    target.incoming(TimeoutNow(4, 1, 2), header)
    target.before_send((ev.ElectionStarted(5, False, "transfer"), ev.BecameCandidate(5)))
    vote_header, _ = target.outgoing(RequestVote(5, 2, 1, 9, 4, transfer=True))
    target.after_events((ev.BecameLeader(5, (1, 2)),))
    leader.after_events((ev.BecameFollower(5, None), ev.BecameFollower(5, 2)))
    (root,) = finished(leader_spans, "raft.leader_transfer")
    (timeout_now,) = finished(leader_spans, "TimeoutNow n2")
    (election,) = finished(target_spans, "raft.election")
    assert root.attributes is not None and root.attributes["raft.transfer.outcome"] == "completed"
    assert timeout_now.parent is not None and timeout_now.parent.span_id == root.context.span_id
    assert election.parent is not None and election.parent.span_id == timeout_now.context.span_id
    trace_id = root.context.trace_id
    assert election.context.trace_id == trace_id
    assert vote_header is not None and vote_header.trace_id == format(trace_id, "032x")


def test_an_aborted_transfer_ends_its_root_and_a_superseded_one_too() -> None:
    spans, exporter = make()
    spans.before_send(
        (ev.LeaderTransferAborted(4, 2, "superseded"), ev.LeaderTransferStarted(4, 2))
    )
    spans.before_send(
        (ev.LeaderTransferAborted(4, 2, "superseded"), ev.LeaderTransferStarted(4, 3))
    )
    spans.after_events((ev.LeaderTransferAborted(4, 2, "superseded"),))
    assert len(finished(exporter, "raft.leader_transfer")) == 1  # the one superseded
    spans.after_events((ev.LeaderTransferAborted(4, 3, "timeout"),))
    outcomes = [s.attributes for s in finished(exporter, "raft.leader_transfer") if s.attributes]
    assert [(a["raft.transfer.outcome"], a.get("raft.transfer.reason")) for a in outcomes] == [
        ("superseded", None),
        ("aborted", "timeout"),
    ]
