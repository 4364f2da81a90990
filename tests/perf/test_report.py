"""The comparison's arithmetic and report, on made-up figures (the real run is make bench)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.perf.compare import WORKLOADS, Measurement, Results, _last_json, interleaved
from tests.perf.report import draw, render_markdown


def results() -> Results:
    r = Results()
    for system, workload, ops, p50 in [
        ("raftd", "writes, 64 clients", 7000.0, 9.0),
        ("raftd", "writes, 64 clients", 5000.0, 9.0),
        ("raftd", "writes, 64 clients", 6000.0, 9.0),
        ("etcd", "writes, 64 clients", 6000.0, 9.0),
        ("PySyncObj", "writes, 64 clients", 8000.0, 8.0),
        ("raftd", "writes, 1 client", 500.0, 2.0),
        ("etcd", "writes, 1 client", 900.0, 1.0),
        ("raftd", "writes, 64 clients, tracing off", 6100.0, 9.0),
    ]:
        r.measurements.append(Measurement(system, workload, ops, p50, p50 * 3))
    r.skipped["etcd (linearizable reads, 64 clients)"] = "etcd_load.py ... exited 1"
    return r


def test_ratios_use_medians_and_say_whether_each_target_is_met() -> None:
    text = render_markdown(results(), command="python -m tests.perf", plot_name=None)
    assert "| write throughput @64 vs etcd | 1.00 | 1 | yes |" in text  # median 6000/6000
    assert "| write throughput @64 vs PySyncObj | 0.75 | 1 | no |" in text
    assert "| write p50 @1: etcd's / ours (at least 1.0 means ours is no slower) | 0.50 |" in text
    assert "| linearizable reads @64 vs etcd | not measured |" in text
    assert "| tracing cost: default sampler / tracing off, writes @64 | 0.98 | 0.95 | yes |" in text
    assert "etcd_load.py ... exited 1" in text


def test_the_last_json_line_of_a_tool_is_its_result() -> None:
    out = 'setting up\n{"ops_per_s": 1.5, "p50_ms": 2, "p99_ms": 3}\n'
    assert _last_json(out)["ops_per_s"] == 1.5
    with pytest.raises(RuntimeError, match="no JSON"):
        _last_json("nothing here\n")


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "throughput.png"
    assert draw(results(), path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_each_group_runs_back_to_back_in_both_orders() -> None:
    odd = [w.name for w in interleaved(WORKLOADS, 1)]
    even = [w.name for w in interleaved(WORKLOADS, 2)]
    assert odd == [w.name for w in WORKLOADS]
    tls_pair = ["writes, 1 client", "writes, 1 client, TLS"]
    assert [n for n in odd if n in tls_pair] == tls_pair
    assert [n for n in even if n in tls_pair] == tls_pair[::-1]
    assert even.index("writes, 64 clients, TLS") < even.index("writes, 64 clients")
    assert sorted(odd) == sorted(even)


def test_the_cost_of_tls_is_a_target_of_its_own() -> None:
    r = results()
    r.measurements.append(Measurement("raftd", "writes, 64 clients, TLS", 5400.0, 9.5, 20))
    r.measurements.append(Measurement("raftd", "writes, 1 client, TLS", 480.0, 2.5, 6))
    text = render_markdown(r, command="python -m tests.perf", plot_name=None)
    assert "| TLS cost: with / without mutual TLS, writes @64 | 0.90 | 0.85 | yes |" in text
    assert "| TLS cost: write p50 @1 without / with mutual TLS | 0.80 | 0.85 | no |" in text
