"""Stage the incident that docs/observability.md dissects: kill the leader under load while
20% of Raft messages are dropped, and keep what logs, metrics and traces saw.

    python -m tests.integration.incident --out /tmp/incident

Three members run with RAFTD_CHAOS_DROP_PERCENT=20 and metrics on; a real Prometheus
scrapes them every second; four writers keep writing; after a few seconds the leader gets
kill -9. The output directory then holds every member's log and trace files, Prometheus
query results around the kill (as JSON), and a summary with the failover time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import trio

from tests.integration.harness import Cluster, free_port, running
from tests.integration.test_cluster import Writer

QUERIES = {
    "leader_by_member": "raftd_is_leader",
    "term": "max(raftd_term)",
    "elections_per_s": "sum by (phase) (rate(raftd_elections_started_total[5s]))",
    "leader_changes": "sum(raftd_leader_changes_total)",
    "drops_per_s_by_reason": "sum by (reason) (rate(raftd_messages_dropped_total[5s]))",
    "write_p99_s": (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(raftd_client_request_duration_seconds_bucket{op="set"}[5s])))'
    ),
    "writes_per_s_by_outcome": (
        'sum by (outcome) (rate(raftd_client_requests_total{op="set"}[5s]))'
    ),
    "commit_index": "max(raftd_commit_index)",
}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


async def _prometheus(out: Path, targets: list[str]) -> tuple[trio.Process, str]:
    config = out / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: raftd\n    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
    )
    port = free_port()
    process = await trio.lowlevel.open_process(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={out / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(out / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    with trio.fail_after(30):
        while True:
            try:
                await trio.to_thread.run_sync(urllib.request.urlopen, f"{base}/-/ready")
                break
            except OSError:
                await trio.sleep(0.2)
    return process, base


async def stage(out: Path, seconds_before: float, seconds_after: float) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        cluster = Cluster(out / "members", 3)
        metrics_ports = {}
        for name, member in cluster.members.items():
            member.env["RAFTD_CHAOS_DROP_PERCENT"] = "20"
            member.env["RAFTD_CHAOS_SEED"] = "2026"
            metrics_ports[name] = free_port()
            member.extra_args += ["--metrics-addr", f"127.0.0.1:{metrics_ports[name]}"]
        targets = [f"127.0.0.1:{p}" for p in metrics_ports.values()]
        prometheus, base = await _prometheus(out, targets)
        try:
            async with running(cluster, nursery):
                acked = 0
                killed_at: list[float] = []
                first_after: list[float] = []

                async def write_forever(writer: Writer, prefix: str) -> None:
                    nonlocal acked
                    for n in itertools.count():
                        started = trio.current_time()
                        await writer.set(f"{prefix}-{n}", "x", timeout_s=30)
                        acked += 1
                        if killed_at and started > killed_at[0] and not first_after:
                            first_after.append(trio.current_time())

                async with trio.open_nursery() as load:
                    for w in range(4):
                        load.start_soon(write_forever, Writer(cluster), f"w{w}")
                    await trio.sleep(seconds_before)
                    leader = await cluster.wait_for_leader()
                    summary["killed"] = leader
                    summary["killed_at_unix"] = time.time()
                    killed_at.append(trio.current_time())
                    await cluster.kill(leader)
                    await trio.sleep(seconds_after)
                    load.cancel_scope.cancel()
                summary["new_leader"] = await cluster.wait_for_leader(
                    among=[n for n in cluster.members if n != leader]
                )
                summary["acknowledged_writes"] = acked
                if first_after:
                    summary["failover_s"] = round(first_after[0] - killed_at[0], 3)
                await trio.sleep(3)  # one more scrape and one more span export
                end = time.time()
                start = summary["killed_at_unix"] - seconds_before
                results = {}
                for name, query in QUERIES.items():
                    params = urllib.parse.urlencode(
                        {"query": query, "start": start, "end": end, "step": "1"}
                    )
                    results[name] = await trio.to_thread.run_sync(
                        _get, f"{base}/api/v1/query_range?{params}"
                    )
                (out / "prometheus-queries.json").write_text(json.dumps(results, indent=1))
        finally:
            prometheus.kill()
            await prometheus.wait()
        nursery.cancel_scope.cancel()
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load first")
    parser.add_argument("--after", type=float, default=8.0, help="seconds after the kill")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(trio.run(stage, args.out, args.before, args.after), indent=1))


if __name__ == "__main__":
    main()
