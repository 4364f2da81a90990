"""Measure failover: kill -9 the leader under a write load, time the first acknowledged write.

    python -m tests.integration.failover --kills 10

Each round: four writers keep writing; the leader is killed; the time from the kill to the
first acknowledgement of a write sent after it is the failover time; the killed member restarts and
catches up before the next round. Prints one line per kill and the distribution at the end.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path

import trio

from tests.integration.harness import Cluster
from tests.integration.test_cluster import Writer


async def measure(kills: int, base: Path) -> list[float]:
    times: list[float] = []
    async with trio.open_nursery() as nursery:
        cluster = Cluster(base, 3)
        await cluster.start(nursery)
        await cluster.wait_all_serving()
        acked = 0
        killed_at: float | None = None
        first_after: list[float] = []

        async def write_forever(writer: Writer, prefix: str) -> None:
            nonlocal acked
            for n in itertools.count():
                started = trio.current_time()
                await writer.set(f"{prefix}-{n}", "x", timeout_s=30)
                acked += 1
                # Only a write sent after the kill shows that a new leader is serving.
                if killed_at is not None and started > killed_at and not first_after:
                    first_after.append(trio.current_time())

        async with trio.open_nursery() as load:
            for w in range(4):
                load.start_soon(write_forever, Writer(cluster), f"w{w}")
            for round_number in range(1, kills + 1):
                leader = await cluster.wait_for_leader()
                target = acked + 20
                while acked < target:
                    await trio.sleep(0.01)
                first_after.clear()
                killed_at = trio.current_time()
                await cluster.kill(leader)
                while not first_after:
                    await trio.sleep(0.001)
                times.append(first_after[0] - killed_at)
                killed_at = None
                print(f"kill {round_number:2}: {leader} -> first write after {times[-1]:.3f} s")
                await cluster.start_member(leader)
                await cluster.wait_all_serving()
            load.cancel_scope.cancel()
        await cluster.shutdown()
        nursery.cancel_scope.cancel()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as base:
        times = trio.run(measure, args.kills, Path(base))
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"{len(times)} kills: failover min {ordered[0]:.3f} s, median "
        f"{statistics.median(ordered):.3f} s, p99 {p99:.3f} s, max {ordered[-1]:.3f} s"
    )


if __name__ == "__main__":
    main()
