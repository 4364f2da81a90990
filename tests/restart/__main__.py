"""``python -m tests.restart``: restart-to-serving time of a member with a long log.

For each size, three members get the same history of N entries over 10,000 keys, the
cluster starts, and once every member has applied it a follower is killed and restarted;
the figure is the time from its process starting to it having applied the whole log and
answering (replay of the WAL, then applying), and whether the leader kept its term.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio

from tests.integration.harness import Cluster
from tests.restart.history import write_history


async def _measure(entries: int, base: Path) -> str:
    cluster = Cluster(base, 3)
    started = time.monotonic()
    for member in cluster.members.values():
        write_history(member.data_dir, entries)
    written = time.monotonic() - started
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        try:
            cold = time.monotonic()
            leader = await cluster.wait_for_leader(timeout_s=600)
            await _applied(cluster, list(cluster.members), entries)
            cold_s = time.monotonic() - cold
            term = (await cluster.statuses([leader]))[leader].term
            follower = next(n for n in cluster.members if n != leader)
            await cluster.kill(follower)
            restart = time.monotonic()
            await cluster.start_member(follower)
            await _applied(cluster, [follower], entries)
            restart_s = time.monotonic() - restart
            after = (await cluster.statuses([leader]))[leader]
            kept = after.role == "leader" and after.term == term
        finally:
            await cluster.shutdown()
            nursery.cancel_scope.cancel()
    return (
        f"{entries:>9} entries: history written in {written:.1f} s; cold start of the "
        f"cluster to all applied {cold_s:.1f} s; follower restart to applied and serving "
        f"{restart_s:.2f} s; leader kept its term: {'yes' if kept else 'NO'}"
    )


async def _applied(cluster: Cluster, names: list[str], index: int) -> None:
    with trio.fail_after(900):
        while True:
            statuses = await cluster.statuses(names)
            if len(statuses) == len(names) and all(
                s.last_applied >= index for s in statuses.values()
            ):
                return
            await trio.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.restart",
        description="Measure how long a member with a long log takes from restart to serving.",
    )
    parser.add_argument(
        "sizes", nargs="*", type=int, default=[100_000, 1_000_000], help="log lengths"
    )
    args = parser.parse_args(argv)
    if any(size < 2 for size in args.sizes):
        parser.error("each size must be at least 2 entries")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="raftd-restart-") as base:
            print(trio.run(_measure, size, Path(base)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
