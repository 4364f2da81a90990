"""A member with a long log restarts without costing the cluster its leader.

Start-up replayed the whole log, then applied all of it in one driver turn: at 100k
entries about 2 s without a tick or a heartbeat, longer than an election timeout, so a
leader applying its history was deposed and the term climbed. Now the applying is cut
into chunks with ticks and messages in between.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.integration.harness import Cluster
from tests.restart.history import write_history
from wire.api import StatusReply

ENTRIES = 100_000


async def _watch_leadership(cluster: Cluster, seen: set[tuple[str, int]], stop: trio.Event) -> None:
    """Record every (leader, term) any member reports until ``stop``."""
    while not stop.is_set():
        for status in (await cluster.statuses()).values():
            if status.leader is not None:
                seen.add((status.leader, status.term))
        await trio.sleep(0.05)


async def _all_applied(cluster: Cluster, names: list[str], index: int, timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while True:
            statuses: dict[str, StatusReply] = await cluster.statuses(names)
            if len(statuses) == len(names) and all(
                s.last_applied >= index for s in statuses.values()
            ):
                return
            await trio.sleep(0.1)


async def test_members_with_100k_entries_keep_one_leader_through_start_and_restart(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path / "members", 3)
    for member in cluster.members.values():
        write_history(member.data_dir, ENTRIES)
    await cluster.start(nursery)
    try:
        names = list(cluster.members)
        leader = await cluster.wait_for_leader(timeout_s=120)
        term = (await cluster.statuses([leader]))[leader].term
        seen: set[tuple[str, int]] = set()
        stop = trio.Event()
        nursery.start_soon(_watch_leadership, cluster, seen, stop)
        # The new leader's no-op commits the whole history: every member applies 100k
        # entries now, the leader included, and must keep its heartbeats going meanwhile.
        await _all_applied(cluster, names, ENTRIES, timeout_s=120)

        follower = next(n for n in names if n != leader)
        await cluster.kill(follower)
        await cluster.start_member(follower)
        await _all_applied(cluster, [follower], ENTRIES, timeout_s=120)
        await cluster.wait_all_serving(timeout_s=30)
        stop.set()
        assert seen == {(leader, term)}, f"leadership changed while members applied: {seen}"
    finally:
        await cluster.shutdown()
