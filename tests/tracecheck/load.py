"""``python -m tests.tracecheck.load``: long runs that put the trace budget to the test.

    flood: a 3-member cluster under ``raftctl bench`` (mixed reads and writes) for N minutes
    storm: the same with Raft messages dropped and the leader killed (kill -9) again and again

At the end every member is stopped with SIGTERM (a clean stop flushes its spans; a kill
loses what its exporter still held, which the storm's own kills do on purpose) and the
audit reads what they exported. The figures go in docs and notes; nothing here is a timed
test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import trio

from observability.filexport import read_spans
from tests.integration.harness import Cluster
from tests.tracecheck.audit import audit


async def _bench(cluster: Cluster, clients: int, seconds: float, out: Path) -> dict[str, object]:
    result = await trio.run_process(
        [
            sys.executable, "-m", "cli", "--endpoints", ",".join(cluster.endpoints),
            "--output", "json", "bench", "--op", "mixed", "--clients", str(clients),
            "--duration", f"{seconds:g}", "--warmup", "1", "--no-progress", "--trace-requests",
        ],
        capture_stdout=True, capture_stderr=True, check=False, cwd=Path.cwd(),
    )  # fmt: skip
    (out / "bench.json").write_bytes(result.stdout)
    (out / "bench.err").write_bytes(result.stderr)
    try:
        figures: dict[str, object] = json.loads(result.stdout)
    except ValueError:
        return {"error": result.stderr.decode(errors="replace")[-500:]}
    return figures


async def _storm(cluster: Cluster, seconds: float, kill_every_s: float, log: list[str]) -> None:
    until = trio.current_time() + seconds
    while trio.current_time() + kill_every_s < until:
        await trio.sleep(kill_every_s)
        try:
            leader = await cluster.wait_for_leader(timeout_s=30)
        except trio.TooSlowError:
            log.append("no leader within 30 s")
            continue
        await cluster.kill(leader)
        log.append(f"{trio.current_time():.1f} kill -9 {leader}")
        await trio.sleep(2.0)
        await cluster.start_member(leader)


async def run(mode: str, minutes: float, clients: int, drop: int, kill_every_s: float,
              base: Path) -> int:  # fmt: skip
    cluster = Cluster(base / "members", 3)
    if mode == "storm":
        for member in cluster.members.values():
            member.env.update({"RAFTD_CHAOS_DROP_PERCENT": str(drop), "RAFTD_CHAOS_SEED": "1"})
    kills: list[str] = []
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        try:
            await cluster.wait_all_serving(timeout_s=60)
            async with trio.open_nursery() as load:
                if mode == "storm":
                    load.start_soon(_storm, cluster, minutes * 60, kill_every_s, kills)
                figures = await _bench(cluster, clients, minutes * 60, base)
        finally:
            for name, member in cluster.members.items():
                if member.process is not None:
                    await cluster.stop(name)
            await cluster.shutdown()
            nursery.cancel_scope.cancel()
    result = audit(read_spans(base / "members"), cap=20)
    ops = figures.get("ops_per_s", "?")
    print(f"{mode}: {minutes:g} min, {clients} clients, {ops} ops/s, {len(kills)} leader kills")
    print("\n".join(result.lines()))
    return 1 if result.over_cap else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tracecheck.load", description=__doc__)
    parser.add_argument("mode", choices=("flood", "storm"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--drop", type=int, default=30, help="storm: percent of messages lost")
    parser.add_argument("--kill-every", type=float, default=15.0, help="storm: seconds")
    parser.add_argument("--out", type=Path, help="where members' data and bench output go")
    args = parser.parse_args(argv)
    base = args.out or Path(tempfile.mkdtemp(prefix=f"trace-{args.mode}-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"output in {base}", flush=True)
    return trio.run(run, args.mode, args.minutes, args.clients, args.drop, args.kill_every, base)


if __name__ == "__main__":
    sys.exit(main())
