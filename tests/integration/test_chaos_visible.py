"""Chaos you can see: injected faults show up in logs, metrics and the spans they affect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from observability.filexport import SpanRecord, read_spans
from tests.integration.harness import Cluster, metric, running
from tests.integration.test_cluster import Writer, get

CHAOS = {
    "RAFTD_CHAOS_DROP_PERCENT": "10",
    "RAFTD_CHAOS_DELAY_PERCENT": "50",
    "RAFTD_CHAOS_DELAY_MS": "2-20",
    "RAFTD_CHAOS_FSYNC_DELAY_MS": "3",
    "RAFTD_CHAOS_SEED": "7",
}


@pytest.fixture
async def chaotic(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, 3)
    for member in c.members.values():
        member.env.update(CHAOS)
    c.serve_metrics()
    async with running(c, nursery) as started:
        yield started


async def test_dropped_and_delayed_messages_are_logged_counted_and_traced(
    chaotic: Cluster,
) -> None:
    leader = await chaotic.wait_for_leader(timeout_s=30)
    writer = Writer(chaotic)
    for n in range(30):
        await writer.set(f"k{n}", f"v{n}", timeout_s=30)
    for n in range(30):
        assert (await get(chaotic, await chaotic.wait_for_leader(), f"k{n}")).value == f"v{n}"

    log = chaotic.log_text(leader)
    assert "chaos: drop 10% of Raft messages" in log
    text = await chaotic.scrape(leader)
    assert metric(text, 'raftd_chaos_injections_total{kind="drop"}') > 0
    assert metric(text, 'raftd_chaos_injections_total{kind="delay"}') > 0
    assert metric(text, 'raftd_chaos_injections_total{kind="fsync_delay"}') > 0
    assert metric(text, "raftd_is_leader") in (0.0, 1.0)

    def chaos_spans(spans: list[SpanRecord]) -> list[SpanRecord]:
        return [s for s in spans if any(k.startswith("chaos.") for k in s["attributes"])]

    with trio.fail_after(20):
        while True:
            marked = chaos_spans(list(read_spans(chaotic.base)))
            kinds = {k for s in marked for k in s["attributes"] if k.startswith("chaos.")}
            if {"chaos.delay_ms", "chaos.fsync_delay_ms"} <= kinds:
                break
            await trio.sleep(0.1)
    delayed = next(s for s in marked if "chaos.delay_ms" in s["attributes"])
    assert 2 <= delayed["attributes"]["chaos.delay_ms"] <= 20
    # The message's own span: a request sent, or a vote decision whose reply was delayed.
    assert delayed["name"].startswith(("AppendEntries", "RequestVote", "raft.vote_decision"))


async def test_a_failing_disk_stops_its_member_and_loses_nothing_acknowledged(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    await cluster.start(nursery)
    try:
        leader = await cluster.wait_for_leader()
        writer = Writer(cluster)
        for n in range(10):
            await writer.set(f"before-{n}", "x")
        victim = next(n for n in cluster.members if n != leader)
        await cluster.stop(victim)
        cluster.members[victim].env["RAFTD_CHAOS_FSYNC_FAIL_PERCENT"] = "100"
        await cluster.start_member(victim)
        process = cluster.members[victim].process
        assert process is not None
        for n in range(10):
            await writer.set(f"after-{n}", "y")
        with trio.fail_after(20):  # its first fsync fails: it stops, exit status 1
            status = await process.wait()
        cluster.members[victim].process = None
        assert status == 1
        log = cluster.log_text(victim)
        assert "storage failed" in log and "fail-stop" in log
        leader = await cluster.wait_for_leader()
        for n in range(10):
            assert (await get(cluster, leader, f"before-{n}")).value == "x"
            assert (await get(cluster, leader, f"after-{n}")).value == "y"
    finally:
        await cluster.shutdown()
