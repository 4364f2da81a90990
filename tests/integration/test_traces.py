"""Traces of a real 3-member run, read back from the embedded default exporter's files.

The members write OTLP JSON lines to <data-dir>/traces.jsonl and raftctl to the file named
by RAFTCTL_TRACE_FILE; these tests read them the way `raftctl trace` and a person would.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import trio

from observability.filexport import SpanRecord, read_spans
from tests.integration.harness import ROOT, Cluster, running


async def raftctl(cluster: Cluster, trace_file: Path, *args: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = await trio.run_process(
        [sys.executable, "-m", "cli", "--endpoints", ",".join(cluster.endpoints), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env={**env, **cluster.raftctl_env, "RAFTCTL_TRACE_FILE": str(trace_file)},
    )
    return result.returncode


async def wait_for_spans(
    where: Path, found: Callable[[list[SpanRecord]], bool], timeout_s: float = 20
) -> list[SpanRecord]:
    """Members export in batches every half second: wait until the spans are on disk."""
    with trio.fail_after(timeout_s):
        while True:
            spans = list(read_spans(where)) if where.exists() else []
            if found(spans):
                return spans
            await trio.sleep(0.1)


def by_id(spans: list[SpanRecord]) -> dict[str, SpanRecord]:
    return {s["span_id"]: s for s in spans}


async def test_a_client_write_is_one_trace_across_the_client_and_every_member(
    cluster: Cluster, tmp_path: Path
) -> None:
    leader = await cluster.wait_for_leader()
    followers = sorted(n for n in cluster.members if n != leader)
    assert await raftctl(cluster, tmp_path / "raftctl" / "traces.jsonl", "set", "k", "v") == 0

    needed = {(leader, name) for name in ("kv.set", "raft.propose", "raft.commit")}
    for follower in followers:
        needed.add((leader, f"AppendEntries {follower}"))
        needed |= {(follower, name) for name in ("raft.append", "wal.fsync", "raft.apply")}

    def complete(spans: list[SpanRecord]) -> bool:
        """Every member exports on its own schedule: wait until all the pieces are in."""
        roots = [s for s in spans if s["name"] == "raftctl set"]
        if not roots:
            return False
        in_trace = {
            (s["service_instance_id"], s["name"])
            for s in spans
            if s["trace_id"] == roots[0]["trace_id"]
        }
        return needed <= in_trace

    spans = await wait_for_spans(tmp_path, complete)
    root = next(s for s in spans if s["name"] == "raftctl set")
    trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
    ids = by_id(trace)
    names = Counter((s["service_instance_id"], s["name"]) for s in trace)

    assert root["service_name"] == "raftctl" and root["parent_span_id"] is None
    server = next(s for s in trace if s["name"] == "kv.set" and s["service_instance_id"] == leader)
    assert server["service_name"] == "raftd" and server["kind"] == 2  # SERVER
    attempt = ids[server["parent_span_id"] or ""]
    assert attempt["service_name"] == "raftctl"  # its parent came in the frame header
    for name in ("raft.propose", "wal.fsync", "raft.commit", "raft.apply"):
        assert names[(leader, name)] >= 1, name
    for follower in followers:
        send = next(
            s for s in trace
            if s["name"] == f"AppendEntries {follower}" and s["service_instance_id"] == leader
        )  # fmt: skip
        assert send["kind"] == 3 and send["attributes"]["raft.match_index"] >= 2
        append = next(
            s for s in trace if s["name"] == "raft.append" and s["service_instance_id"] == follower
        )
        assert append["parent_span_id"] == send["span_id"]  # from the AppendEntries header
        fsync = next(
            s for s in trace if s["name"] == "wal.fsync" and s["service_instance_id"] == follower
        )
        assert fsync["parent_span_id"] == append["span_id"]
        assert names[(follower, "raft.apply")] == 1
    assert not any("Heartbeat" in s["name"] for s in spans)  # heartbeats are not traces


async def test_the_latest_election_is_one_trace_across_all_three_members(
    cluster: Cluster,
) -> None:
    old = await cluster.wait_for_leader()
    await cluster.kill(old)  # force a fresh election among the other two
    new = await cluster.wait_for_leader(among=[n for n in cluster.members if n != old])
    await cluster.start_member(old)  # it votes in no election now, but logs traces again
    base = cluster.base

    survivor = next(n for n in cluster.members if n not in (old, new))

    def won(spans: list[SpanRecord]) -> bool:
        """The winner's root and the survivor's vote decisions in that trace are on disk."""
        roots = [
            s
            for s in spans
            if s["name"] == "raft.election"
            and s["service_instance_id"] == new
            and s["attributes"].get("raft.election.outcome") == "won"
        ]
        return bool(roots) and any(
            s["trace_id"] == roots[-1]["trace_id"]
            and s["service_instance_id"] == survivor
            and s["name"] == "raft.vote_decision"
            for s in spans
        )

    spans = await wait_for_spans(base, won)
    # The latest election won: another member may start one after the winner did and lose
    # it (the other survivor's timer firing just before the new leader's first append, or
    # the restarted member's before the leader reconnects), which ends "lost" or
    # "superseded" and is not the election this test follows.
    election = max(
        (
            s
            for s in spans
            if s["name"] == "raft.election"
            and s["attributes"].get("raft.election.outcome") == "won"
        ),
        key=lambda s: s["start_ns"],
    )
    trace = [s for s in spans if s["trace_id"] == election["trace_id"]]
    assert election["service_instance_id"] == new and election["parent_span_id"] is None
    assert election["attributes"]["raft.term"] >= 2
    phases = {s["name"] for s in trace if s["parent_span_id"] == election["span_id"]}
    assert phases == {"raft.election.pre_vote", "raft.election.vote"}
    asks = [s for s in trace if s["name"].startswith("RequestVote ")]
    decisions = [s for s in trace if s["name"] == "raft.vote_decision"]
    assert asks and all(s["kind"] == 3 for s in asks)
    assert {s["service_instance_id"] for s in decisions} >= {survivor}
    granted = [s for s in decisions if s["attributes"].get("raft.vote_granted")]
    assert granted and all(by_id(trace)[s["parent_span_id"] or ""] for s in granted)


async def test_an_election_is_one_trace_across_all_three_members(cluster: Cluster) -> None:
    """Pause the leader past its election timeout: the other two elect a new leader, and
    when the old one resumes it reads the RequestVotes that waited in its socket and
    records its own decisions in the same trace. All three members, one trace."""
    old = await cluster.wait_for_leader()
    cluster.pause(old)
    try:
        new = await cluster.wait_for_leader(among=[n for n in cluster.members if n != old])
    finally:
        cluster.resume(old)

    def whole(spans: list[SpanRecord]) -> bool:
        won = [
            s
            for s in spans
            if s["name"] == "raft.election"
            and s["service_instance_id"] == new
            and s["attributes"].get("raft.election.outcome") == "won"
        ]
        if not won:
            return False
        latest = max(won, key=lambda s: s["start_ns"])
        members = {s["service_instance_id"] for s in spans if s["trace_id"] == latest["trace_id"]}
        return members == set(cluster.members)

    spans = await wait_for_spans(cluster.base, whole)
    election = max(
        (s for s in spans if s["name"] == "raft.election" and s["service_instance_id"] == new),
        key=lambda s: s["start_ns"],
    )
    trace = [s for s in spans if s["trace_id"] == election["trace_id"]]
    decisions = {s["service_instance_id"] for s in trace if s["name"] == "raft.vote_decision"}
    assert decisions == set(cluster.members) - {new}


async def test_a_forwarded_request_shows_the_proxy_hop_in_the_same_trace(
    cluster: Cluster, tmp_path: Path
) -> None:
    leader = await cluster.wait_for_leader()
    follower = sorted(n for n in cluster.members if n != leader)[0]
    await cluster.stop(follower)
    cluster.members[follower].extra_args.append("--forward")
    await cluster.start_member(follower)
    await cluster.wait_all_serving()
    endpoint = cluster.members[follower].client_addr
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    trace_file = tmp_path / "raftctl" / "traces.jsonl"
    result = await trio.run_process(
        [sys.executable, "-m", "cli", "--endpoints", endpoint, "set", "via", "proxy"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env={**env, **cluster.raftctl_env, "RAFTCTL_TRACE_FILE": str(trace_file)},
    )
    assert result.returncode == 0, result.stderr

    def relayed(spans: list[SpanRecord]) -> bool:
        """Both ends are on disk (each member exports on its own schedule)."""
        names = {(s["service_instance_id"], s["name"]) for s in spans}
        return {(leader, "kv.set"), (follower, "proxy to leader")} <= names

    spans = await wait_for_spans(tmp_path, relayed)
    root = next(s for s in spans if s["name"] == "raftctl set")
    trace = by_id([s for s in spans if s["trace_id"] == root["trace_id"]])
    hop = next(s for s in trace.values() if s["name"] == "proxy to leader")
    assert hop["service_instance_id"] == follower and hop["kind"] == 3
    at_leader = next(
        s for s in trace.values() if s["name"] == "kv.set" and s["service_instance_id"] == leader
    )
    assert at_leader["parent_span_id"] == hop["span_id"]
    assert "raftd.edge" not in at_leader["attributes"]  # the follower already decided


async def test_a_membership_change_and_a_leadership_transfer_are_each_one_trace(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path / "cluster", 3)
    async with running(cluster, nursery):
        leader = await cluster.wait_for_leader()
        followers = sorted(n for n in cluster.members if n != leader)
        trace_file = tmp_path / "raftctl" / "traces.jsonl"
        # A learner that never starts: the change still commits on the three voters.
        args = ("member", "add", "n9", "--peer-addr", "127.0.0.1:9", "--client-addr",
                "127.0.0.1:9", "--learner")  # fmt: skip
        assert await raftctl(cluster, trace_file, *args) == 0
        needed = {(leader, "kv.member_change"), (leader, "raft.commit"), (leader, "raft.apply")}
        needed |= {(f, name) for f in followers for name in ("raft.append", "raft.apply")}

        def change_traced(spans: list[SpanRecord]) -> bool:
            roots = [s for s in spans if s["name"] == "raftctl member"]
            return bool(roots) and needed <= {
                (s["service_instance_id"], s["name"])
                for s in spans
                if s["trace_id"] == roots[0]["trace_id"]
            }

        await wait_for_spans(tmp_path, change_traced)
        # The transfer: the leader's root, its TimeoutNow, and the target's election.
        target = followers[0]
        assert await raftctl(cluster, trace_file, "move-leader", target) == 0

        def transfer_traced(spans: list[SpanRecord]) -> bool:
            roots = [s for s in spans if s["name"] == "raft.leader_transfer"]
            if not roots:
                return False
            trace = {
                (s["service_instance_id"], s["name"])
                for s in spans
                if s["trace_id"] == roots[0]["trace_id"]
            }
            return {(leader, f"TimeoutNow {target}"), (target, "raft.election")} <= trace and any(
                name == "raft.vote_decision" for _, name in trace
            )

        spans = await wait_for_spans(tmp_path, transfer_traced)
        root = next(s for s in spans if s["name"] == "raft.leader_transfer")
        assert root["attributes"]["raft.transfer.outcome"] == "completed"
