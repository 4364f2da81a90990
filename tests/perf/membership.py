"""``python -m tests.perf.membership``: what changing the cluster costs its clients.

1. A rolling restart of all three members (SIGTERM, restart, wait until it serves, next)
   under 16 writing clients: the writes that failed and the longest stretch without any
   write completing, from the clients' side.
2. Adding a member to a cluster holding 100,000 keys: from ``member add`` (as a learner) to
   the new member having applied everything the leader had committed, then the promotion.

Figures for notes and docs; nothing here is a timed test.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import trio

from cli.client import Client, ClientError
from tests.integration.harness import Cluster, running
from tests.perf.resources import commit_of, prefill
from wire.api import MemberChangeRequest


async def rolling_restart(base: Path, clients: int, report: list[str]) -> None:
    cluster = Cluster(base / "rolling", 3)
    async with trio.open_nursery() as nursery:
        async with running(cluster, nursery, timeout_s=60):
            done: list[float] = []  # when each successful write completed
            failed: list[str] = []
            stop = trio.Event()

            async def writer(lane: int) -> None:
                async with Client(cluster.endpoints, timeout_s=10.0) as client:
                    n = 0
                    while not stop.is_set():
                        n += 1
                        try:
                            await client.set(f"k{lane}-{n % 100}", f"v{n}")
                            done.append(time.monotonic())
                        except ClientError as exc:
                            failed.append(f"{exc.code}: {exc}")

            async with trio.open_nursery() as writers:
                for lane in range(clients):
                    writers.start_soon(writer, lane)
                await trio.sleep(3)
                started = time.monotonic()
                for name in list(cluster.members):
                    leader = await cluster.wait_for_leader()
                    role = "leader" if name == leader else "follower"
                    took = time.monotonic()
                    await cluster.stop(name)
                    await cluster.start_member(name)
                    await cluster.wait_all_serving(timeout_s=60)
                    report.append(f"  {name} ({role}) restarted in {time.monotonic() - took:.2f} s")
                ended = time.monotonic()
                await trio.sleep(3)
                stop.set()
            during = sorted(t for t in done if started <= t <= ended)
            edges = [started, *during, ended]
            gap = max(b - a for a, b in itertools.pairwise(edges))
            report.append(
                f"rolling restart of 3 members under {clients} clients: {len(during):,} writes "
                f"in {ended - started:.1f} s, {len(failed)} failed, longest gap without a "
                f"completed write {gap * 1000:.0f} ms"
            )
            for line in sorted(set(failed))[:5]:
                report.append(f"  failed: {line}")
        nursery.cancel_scope.cancel()  # the link proxies


async def add_member(base: Path, keys: int, report: list[str]) -> None:
    cluster = Cluster(base / "add", 3)
    async with trio.open_nursery() as nursery:
        async with running(cluster, nursery, timeout_s=60):
            await prefill(cluster, keys)
            member = await cluster.add_member("n4", nursery)
            async with Client(cluster.endpoints[:3], timeout_s=30.0) as client:
                started = time.monotonic()
                add = MemberChangeRequest(
                    "add", "n4", f"127.0.0.1:{member.peer_port}", member.client_addr, True
                )
                await client.change_members(add)
                await cluster.start_member("n4")
                _, commit = await commit_of(cluster)
                await cluster.wait_applied("n4", commit, timeout_s=300)
                caught_up = time.monotonic() - started
                while True:
                    try:
                        await client.change_members(MemberChangeRequest("promote", "n4"))
                        break
                    except ClientError:
                        await trio.sleep(0.1)
                promoted = time.monotonic() - started
            report.append(
                f"adding a member at {keys:,} keys: caught up to index {commit:,} "
                f"{caught_up:.2f} s after member add (process start included), a voter "
                f"after {promoted:.2f} s"
            )
        nursery.cancel_scope.cancel()  # the link proxies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.membership", description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="raftd-membership-") as base:
        for run, arg in ((rolling_restart, args.clients), (add_member, args.keys)):
            report: list[str] = []
            trio.run(run, Path(base), arg, report)
            print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
