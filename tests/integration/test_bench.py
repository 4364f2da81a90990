"""raftctl bench against three real members: every op runs clean and reports in full.

No assertion is about speed (the machine is shared); the point is that a bench of each op
completes against a real cluster with no errors, and that its JSON and its plot are whole.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

from tests.integration.harness import ROOT, Cluster

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADLINE = ("ops_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")


async def bench(cluster: Cluster, *args: str) -> tuple[int, Any, str]:
    argv = [
        sys.executable,
        "-m",
        "cli",
        "--endpoints",
        ",".join(cluster.endpoints),
        "--output",
        "json",
        "bench",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--keys",
        "200",
        "--clients",
        "8",
        *args,
    ]
    result = await trio.run_process(
        argv,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, **cluster.raftctl_env},
    )
    out = result.stdout.decode()
    return result.returncode, json.loads(out) if out else None, result.stderr.decode()


async def test_every_op_runs_clean_against_a_live_cluster(cluster: Cluster) -> None:
    for op in ("set", "get", "cas", "mixed"):
        code, doc, err = await bench(cluster, "--op", op)
        assert code == 0, err
        assert err == ""  # stderr is no terminal: no progress line, no notes in JSON mode
        assert doc["ops"] > 0 and doc["errors"] == {} and doc["errors_total"] == 0, (op, doc)
        for name in HEADLINE:
            assert doc[name] > 0, (op, name)
        assert doc["p50_ms"] <= doc["p99_ms"] <= doc["max_ms"]
        assert doc["duration_s"] == 1.0
        assert doc["config"]["op"] == op and doc["config"]["clients"] == 8
        assert len(doc["timeline"]) == 1 and doc["timeline"][0]["ops"] == doc["ops"]
        assert doc["prefill"]["keys"] == (0 if op == "set" else 200)
        if op == "get":
            assert doc["not_found"] == 0  # the prefill wrote every key


async def test_stale_reads_and_a_plot(cluster: Cluster, tmp_path: Path) -> None:
    target = tmp_path / "bench.png"
    args = ("--op", "mixed", "--max-staleness", "5", "--connections", "3", "--plot", str(target))
    code, doc, err = await bench(cluster, *args)
    assert code == 0, err
    assert doc["ops"] > 0 and doc["errors"] == {}
    assert doc["config"]["connections"] == 3 and doc["config"]["max_staleness_s"] == 5.0
    assert target.read_bytes()[:8] == PNG_SIGNATURE
