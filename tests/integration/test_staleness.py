"""``get --max-staleness`` keeps its bound on a follower whose disk is slow.

The follower's fsync takes 1 s; meanwhile its driver waits and its leader's messages
queue. The old rule stamped "leader contact" when the driver dequeued one of them, so
right after each slow fsync the follower reported an age of ~0 and answered with a
value about 1 s old under a 0.3 s bound. A read may be refused (TOO_STALE); one that is
answered must hold a value no older than the bound: at least the latest value whose
write was acknowledged before ``call - bound``.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.integration.harness import Cluster
from wire.api import ErrorCode, ErrorReply, GetReply, GetRequest, SetRequest, WriteReply

BOUND_S = 0.3
SLOW_FSYNC_MS = 1000


async def test_a_slow_disk_follower_never_answers_older_than_the_bound(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path / "members", 3)
    slow = "n3"
    cluster.members[slow].env["RAFTD_CHAOS_FSYNC_DELAY_MS"] = str(SLOW_FSYNC_MS)
    for proxy in cluster.links.values():
        await nursery.start(proxy.run)
    try:
        for name in ("n1", "n2"):
            await cluster.start_member(name)
        leader = await cluster.wait_for_leader(among=("n1", "n2"), timeout_s=30)
        await cluster.start_member(slow)
        await cluster.wait_all_serving(timeout_s=30)

        acked: list[tuple[float, int]] = []  # (when the write's ack arrived, its number)
        answered = refused = 0

        async def read_and_check() -> None:
            nonlocal answered, refused
            call = trio.current_time()
            read = await cluster.request(slow, GetRequest("k", max_staleness_s=BOUND_S))
            if isinstance(read, ErrorReply):
                assert read.code == ErrorCode.TOO_STALE, read
                refused += 1
                return
            assert isinstance(read, GetReply) and read.stale, read
            answered += 1
            owed = max((m for t, m in acked if t < call - BOUND_S), default=0)
            got = int(read.value) if read.value is not None else 0
            assert got >= owed, (
                f"a read under a {BOUND_S} s bound returned write {got}, but write {owed} "
                f"was acknowledged more than the bound before it (age {read.max_age_s})"
            )

        n = 0
        with trio.fail_after(120):
            for _ in range(4):
                for _ in range(3):  # writes keep the slow disk busy: reads must be refused
                    n += 1
                    reply = await cluster.request(leader, SetRequest("k", str(n), "w", n))
                    assert isinstance(reply, WriteReply) and reply.ok, reply
                    acked.append((trio.current_time(), n))
                    await read_and_check()
                quiet_until = trio.current_time() + 2.5 * SLOW_FSYNC_MS / 1000
                while trio.current_time() < quiet_until:  # the follower catches up
                    await read_and_check()
                    await trio.sleep(0.05)
        # Both outcomes must have been seen: the member is not simply refusing everything,
        # and the slow disk really made it stale at times.
        assert refused > 0
        assert answered > 0
    finally:
        await cluster.shutdown()
