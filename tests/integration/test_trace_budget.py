"""The trace budget on real members: a client flood and an election storm under message
loss, then the audit.

Every member's exported spans go through ``tests.tracecheck``: no member may have spans of
more than ``RAFTD_TRACES_PER_MINUTE`` traces in any sliding 60 s window, the traces it
joined included, and the kept client traces must be whole. The cap is set low so the flood
presses against it within the test's half minute.
"""

from __future__ import annotations

from pathlib import Path

import trio

from observability.filexport import read_spans
from tests.integration.harness import Cluster, metric
from tests.integration.test_cluster import Writer
from tests.tracecheck.audit import audit

CAP = 8


async def flood(cluster: Cluster, writers: int, seconds: float) -> int:
    done = 0

    async def write(n: int) -> None:
        nonlocal done
        writer = Writer(cluster)
        while trio.current_time() < until:
            await writer.set(f"k{n}", f"v{done}", timeout_s=30)
            done += 1

    until = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for n in range(writers):
            nursery.start_soon(write, n)
    return done


async def test_a_flood_and_an_election_storm_keep_every_member_within_its_cap(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    cluster.serve_metrics()
    for member in cluster.members.values():
        member.env["RAFTD_TRACES_PER_MINUTE"] = str(CAP)
        # One Raft message in ten lost: elections take several rounds, appends are retried.
        member.env.update({"RAFTD_CHAOS_DROP_PERCENT": "10", "RAFTD_CHAOS_SEED": "3"})
    await cluster.start(nursery)
    try:
        await cluster.wait_all_serving(timeout_s=30)
        writes = await flood(cluster, writers=16, seconds=8)
        assert writes > 100
        # The storm: the leader stops three times (SIGTERM, so it flushes its spans) while
        # clients keep writing; every stop is an election the others trace.
        for _ in range(3):
            leader = await cluster.wait_for_leader(timeout_s=30)
            async with trio.open_nursery() as storm:
                storm.start_soon(flood, cluster, 8, 3.0)
                await cluster.stop(leader)
                await cluster.wait_for_leader(
                    [n for n in cluster.members if n != leader], timeout_s=30
                )
                await cluster.start_member(leader)
            await cluster.wait_all_serving(timeout_s=30)
        leader = await cluster.wait_for_leader()
        room = metric(await cluster.scrape(leader), "raftd_trace_window_room")
        assert 0 <= room <= CAP
    finally:
        for name, member in cluster.members.items():
            if member.process is not None:
                await cluster.stop(name)  # a clean stop flushes every span
        await cluster.shutdown()

    result = audit(read_spans(tmp_path), CAP)
    print("\n".join(result.lines()))
    assert not result.over_cap, result.lines()
    assert all(m.most_in_window > 0 for m in result.members)
    assert result.traces >= CAP  # the flood did press against the cap
    # Every client trace whole; an election may lose a voter's part when several candidates
    # count on the same last place in its window (measured at length: docs/testing.md).
    assert result.share("client") == 1.0, result.lines()
    assert result.whole_share >= 0.8, result.lines()
