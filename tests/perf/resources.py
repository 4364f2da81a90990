"""``python -m tests.perf.resources``: what a member holds after a long history, with compaction on.

Three members with the default snapshot settings take ``raftctl bench --op set`` over 10,000
keys until a million writes are in. Reported: each member's resident memory after the first
50,000 writes and at the end, what its data directory holds (log segments, snapshots), the
time a follower takes from restart to serving, and, in a second cluster prefilled with
100,000 keys, the time a follower whose data directory was wiped takes to be back (through
InstallSnapshot). Figures for notes and docs; nothing here is a timed test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from tests.integration.harness import ROOT, Cluster, running

MB = 1024 * 1024


async def bench(cluster: Cluster, *args: str) -> dict[str, Any]:
    result = await trio.run_process(
        [sys.executable, "-m", "cli", "--endpoints", ",".join(cluster.endpoints),
         "--output", "json", "bench", "--no-progress", *args],
        capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"bench failed: {result.stderr.decode()[-500:]}")
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


async def prefill(cluster: Cluster, keys: int) -> None:
    """Write every one of ``keys`` keys (bench's mixed run prefills each once first)."""
    await bench(cluster, "--op", "mixed", "--keys", str(keys), "--clients", "64",
                "--duration", "2", "--warmup", "0")  # fmt: skip


def rss_mb(cluster: Cluster) -> dict[str, float]:
    found = {}
    for name, member in cluster.members.items():
        assert member.process is not None
        status = Path(f"/proc/{member.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        found[name] = int(line.split()[1]) / 1024
    return found


def disk_mb(cluster: Cluster) -> dict[str, str]:
    found = {}
    for name, member in cluster.members.items():
        files = list(member.data_dir.iterdir())
        wal = sum(p.stat().st_size for p in files if p.name.startswith("wal-"))
        snaps = [p.stat().st_size for p in files if p.suffix == ".snap"]
        segments = len([p for p in files if p.name.startswith("wal-")])
        found[name] = (
            f"{wal / MB:.1f} MB in {segments} log segments, {len(snaps)} snapshots of "
            f"{max(snaps, default=0) / MB:.1f} MB at most"
        )
    return found


async def commit_of(cluster: Cluster) -> tuple[str, int]:
    leader = await cluster.wait_for_leader(timeout_s=60)
    return leader, (await cluster.statuses([leader]))[leader].commit_index


async def restart_follower(cluster: Cluster) -> str:
    """Restart a follower and time it to applied and serving at the leader's commit."""
    leader, commit = await commit_of(cluster)
    follower = next(n for n in cluster.members if n != leader)
    await cluster.stop(follower)
    started = time.monotonic()
    await cluster.start_member(follower)
    await cluster.wait_applied(follower, commit, timeout_s=600)
    took = time.monotonic() - started
    return f"  {follower} restart to serving at index {commit:,}: {took:.2f} s"


async def long_history(base: Path, writes: int, report: list[str]) -> None:
    cluster = Cluster(base / "long", 3)
    async with trio.open_nursery() as nursery:
        async with running(cluster, nursery, timeout_s=60):
            first = await bench(cluster, "--op", "set", "--keys", "10000", "--clients", "64",
                                "--duration", "10", "--warmup", "0")  # fmt: skip
            done = int(first["ops"])
            # Restarted before the first measure, so both measures see the same processes.
            restarted = await restart_follower(cluster)
            early = rss_mb(cluster)
            report.append(f"after {done:,} writes: resident {_mb(early)}")
            report.append(restarted)
            while done < writes:
                more = await bench(cluster, "--op", "set", "--keys", "10000", "--clients", "64",
                                   "--duration", "60", "--warmup", "0")  # fmt: skip
                done += int(more["ops"])
                report.append(f"  {done:,} writes ({more['ops_per_s']} ops/s)")
            late = rss_mb(cluster)
            report.append(f"after {done:,} writes: resident {_mb(late)}")
            ratios = {n: late[n] / early[n] for n in late}
            report.append("  growth: " + ", ".join(f"{n} x{r:.2f}" for n, r in ratios.items()))
            for name, what in disk_mb(cluster).items():
                report.append(f"  {name} data directory: {what}")
            report.append(await restart_follower(cluster))
        nursery.cancel_scope.cancel()  # the link proxies


async def wiped_member(base: Path, keys: int, report: list[str]) -> None:
    cluster = Cluster(base / "wiped", 3)
    async with trio.open_nursery() as nursery:
        async with running(cluster, nursery, timeout_s=60):
            await prefill(cluster, keys)
            leader, commit = await commit_of(cluster)
            follower = next(n for n in cluster.members if n != leader)
            await cluster.stop(follower)
            shutil.rmtree(cluster.members[follower].data_dir)
            started = time.monotonic()
            await cluster.start_member(follower)
            await cluster.wait_applied(follower, commit, timeout_s=600)
            took = time.monotonic() - started
            report.append(
                f"{keys:,} keys: {follower}, its data directory wiped, back to index "
                f"{commit:,} in {took:.2f} s (InstallSnapshot)"
            )
        nursery.cancel_scope.cancel()  # the link proxies


def _mb(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {mb:.0f} MB" for name, mb in values.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.resources", description=__doc__)
    parser.add_argument("--writes", type=int, default=1_000_000)
    parser.add_argument("--wiped-keys", type=int, default=100_000)
    parser.add_argument("--only", choices=("long", "wiped"), help="run one of the two measurements")
    args = parser.parse_args(argv)
    report: list[str] = []
    with tempfile.TemporaryDirectory(prefix="raftd-resources-") as base:
        if args.only != "wiped":
            trio.run(long_history, Path(base), args.writes, report)
            print("\n".join(report), flush=True)
            report.clear()
        if args.only != "long":
            trio.run(wiped_member, Path(base), args.wiped_keys, report)
            print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
