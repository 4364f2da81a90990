"""raftctl bench against fake members: its arithmetic, its arguments, its output shapes.

The numbers a bench prints are only as good as the percentile math and the window rules
under them, so those are checked on values whose answers are known. Runs against the fake
members are short (a fraction of a second, no warm-up) and assert on shapes and counts,
never on speed. ``main`` runs in a worker thread, as in test_raftctl.py.
"""

from __future__ import annotations

import io
import sys
from array import array
from functools import partial
from pathlib import Path

import pytest
import trio

from cli import benchplot
from cli.bench import (
    BenchConfig,
    BenchResult,
    LatencySummary,
    Progress,
    TimelinePoint,
    _Values,
    default_connections,
    key_name,
    parse_mix,
    percentile,
    run_bench,
    summarize,
)
from cli.raftctl import main
from tests.cli.fakeserver import ClosedPort, FakeKV, FakeNode, Received, Response, start
from tests.cli.test_raftctl import Run
from wire.api import CasRequest, ErrorCode, ErrorReply, GetReply, GetRequest, SetRequest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHORT = ("--duration", "0.3", "--warmup", "0", "--keys", "50", "--timeout", "2")


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, to see the progress line."""

    def isatty(self) -> bool:
        return True


async def raftctl(*argv: str, err: io.StringIO | None = None) -> Run:
    out = io.StringIO()
    err = err if err is not None else io.StringIO()
    run = partial(main, list(argv), stdout=out, stderr=err, environ={})
    code = await trio.to_thread.run_sync(run)
    return Run(code, out.getvalue(), err.getvalue())


def bench_usage(*argv: str) -> Run:
    """Argument errors never reach the network: run main directly."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["--endpoints", "127.0.0.1:1", "bench", *argv], stdout=out, stderr=err, environ={})
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
async def leader(nursery: trio.Nursery) -> tuple[FakeNode, FakeKV]:
    kv = FakeKV("n1")
    node = await start(nursery, "n1", kv.handle)
    kv.endpoint = node.endpoint
    return node, kv


# ------------------------------------------------------------------ the math


def test_percentiles_are_nearest_rank_values() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([7.0], 99.9) == 7.0
    hundred = [float(i) for i in range(1, 101)]
    assert [percentile(hundred, p) for p in (50, 90, 99, 99.9)] == [50.0, 90.0, 99.0, 100.0]


def test_percentile_ranks_use_exact_fractions() -> None:
    # 99.9% of 1000 is exactly 999 (in floating point a hair more, which would give 1000).
    thousand = [float(i) for i in range(1, 1001)]
    assert percentile(thousand, 99.9) == 999.0
    assert percentile(thousand, 99) == 990.0
    ten_thousand = [float(i) for i in range(1, 10_001)]
    assert percentile(ten_thousand, 99.9) == 9990.0


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_is_in_milliseconds_and_handles_no_samples() -> None:
    samples = array("d", [0.004, 0.001, 0.003, 0.002])
    summary = summarize(samples)
    assert summary.count == 4
    assert summary.p50_ms == pytest.approx(2.0)
    assert summary.p99_ms == pytest.approx(4.0)
    assert summary.max_ms == pytest.approx(4.0)
    assert summary.mean_ms == pytest.approx(2.5)
    assert summarize([]) == LatencySummary(0, None, None, None, None, None, None)


def test_keys_are_16_bytes_and_values_exactly_value_size() -> None:
    assert key_name(0) == "k000000000000000"
    assert {len(key_name(i)) for i in (0, 42, 10**15 - 1)} == {16}
    values = _Values(16)
    made = [values.next() for _ in range(1000)]
    assert {len(v.encode()) for v in made} == {16}
    assert len(set(made)) == 1000
    assert _Values(0).next() == ""
    short = _Values(2)
    assert {len(short.next()) for _ in range(500)} == {2}


def test_mix_parsing() -> None:
    assert parse_mix("get=50,set=30,cas=20") == (("get", 50), ("set", 30), ("cas", 20))
    assert parse_mix(" get = 9 , cas=1 ") == (("get", 9), ("cas", 1))
    assert parse_mix("get=1,set=0") == (("get", 1),)
    for bad, says in (
        ("get=50,put=50", "unknown op 'put'"),
        ("get=50,get=1", "twice"),
        ("get=half", "whole number"),
        ("get", "OP=WEIGHT"),
        ("get=0,set=0", "above zero"),
        ("get=-1", "whole number"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_mix(bad)


def test_default_connections() -> None:
    # 4 measured fastest; never more than one per worker, never more than 128 per connection.
    assert [default_connections(n) for n in (1, 3, 4, 64, 512, 513, 1000)] == [1, 3, 4, 4, 4, 5, 8]


def test_config_problems_name_the_option() -> None:
    endpoints = ("127.0.0.1:1",)
    assert BenchConfig(endpoints).problems() == []
    cases = {
        "--clients": BenchConfig(endpoints, clients=0),
        "--connections": BenchConfig(endpoints, clients=2, connections=3),
        "--duration": BenchConfig(endpoints, duration_s=0),
        "--warmup": BenchConfig(endpoints, warmup_s=-1),
        "--value-size": BenchConfig(endpoints, value_size=-1),
        "--keys": BenchConfig(endpoints, keys=0),
        "--max-staleness": BenchConfig(endpoints, op="set", max_staleness_s=1.0),
        "unknown op": BenchConfig(endpoints, op="scan"),
    }
    for says, config in cases.items():
        problems = config.problems()
        assert len(problems) == 1 and says in problems[0], (says, problems)
        with pytest.raises(ValueError):
            config.validate()


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--clients", "0"], "--clients must be at least 1"),
        (["--clients", "many"], "--clients must be a whole number"),
        (["--duration", "-1"], "--duration must be more than zero"),
        (["--duration", "0"], "--duration must be more than zero"),
        (["--duration", "nan"], "--duration must be more than zero"),
        (["--warmup", "-0.5"], "--warmup must be zero or more"),
        (["--op", "scan"], "invalid choice: 'scan'"),
        (["--mix", "get=1,put=2"], "unknown op 'put'"),
        (["--mix", "get=1"], "--mix applies only to --op mixed"),
        (["--max-staleness", "1"], "--max-staleness applies to gets"),
        (["--op", "cas", "--max-staleness", "1"], "--max-staleness applies to gets"),
        (["--clients", "2", "--connections", "3"], "--connections must be from 1"),
        (["--value-size", "2000000"], "--value-size must be from 0 to 1048576"),
        (["--keys", "0"], "--keys must be from 1"),
        (["--seed", "-3"], "--seed must be at least 0"),
    ],
)
def test_usage_errors_exit_2_with_the_reason(argv: list[str], says: str) -> None:
    run = bench_usage(*argv)
    assert run.code == 2
    assert run.out == ""
    assert says in run.err
    assert "usage: raftctl bench" in run.err
    assert "Traceback" not in run.err


def test_help_explains_every_option() -> None:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "--help"], stdout=out, stderr=err, environ={})
    assert stopped.value.code == 0
    text = out.getvalue()
    for option in (
        "--op",
        "--clients",
        "--connections",
        "--duration",
        "--warmup",
        "--mix",
        "--value-size",
        "--keys",
        "--max-staleness",
        "--seed",
        "--plot",
        "--no-progress",
        "--trace-requests",
        "--endpoints",
        "--timeout",
        "--output",
    ):
        assert option in text, option
    assert "trace" in text and "spans" in text  # says requests are not traced by default
    assert "exit codes" in text
    assert "get=50,set=30,cas=20" in text


def test_plot_without_matplotlib_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    run = bench_usage("--plot", str(tmp_path / "out.png"))
    assert run.code == 2
    assert run.err.count("\n") == 1 and "matplotlib" in run.err and "raftd[bench]" in run.err
    assert "Traceback" not in run.err
    assert not (tmp_path / "out.png").exists()


def test_plot_into_a_missing_directory_is_refused_before_the_run(tmp_path: Path) -> None:
    run = bench_usage("--plot", str(tmp_path / "no" / "such" / "out.png"))
    assert run.code == 2 and "does not exist" in run.err


# ------------------------------------------------------- against fake members


async def test_every_op_in_json(leader: tuple[FakeNode, FakeKV]) -> None:
    node, kv = leader
    for op in ("set", "get", "cas", "mixed"):
        run = await raftctl(
            "--endpoints", node.endpoint, "--output", "json", "bench", "--op", op, *SHORT
        )
        assert run.code == 0, run.err
        doc = run.json
        assert doc["ops"] > 0 and doc["errors"] == {} and doc["errors_total"] == 0
        for name in ("ops_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"):
            assert isinstance(doc[name], float) and doc[name] > 0, name
        assert doc["p50_ms"] <= doc["p90_ms"] <= doc["p99_ms"] <= doc["p999_ms"] <= doc["max_ms"]
        assert doc["duration_s"] == 0.3
        assert doc["config"]["op"] == op and doc["config"]["keys"] == 50
        assert doc["config"]["endpoints"] == [node.endpoint]
        assert [point["t_s"] for point in doc["timeline"]] == [0]
        assert sum(point["ops"] for point in doc["timeline"]) == doc["ops"]
        expected_ops = {"get", "set", "cas"} if op == "mixed" else {op}
        assert set(doc["by_op"]) == expected_ops
        assert sum(s["count"] for s in doc["by_op"].values()) == doc["ops"]
        assert doc["prefill"]["keys"] == (0 if op == "set" else 50)
        assert run.err == ""  # stderr is no terminal: no progress line
    assert {len(v) for v in kv.data.values()} == {16}
    assert set(kv.data) <= {key_name(i) for i in range(50)}


async def test_cas_compares_against_the_last_known_value(leader: tuple[FakeNode, FakeKV]) -> None:
    node, kv = leader
    argv = ("--op", "cas", "--clients", "1", *SHORT)
    run = await raftctl("--endpoints", node.endpoint, "--output", "json", "bench", *argv)
    assert run.code == 0
    # One worker, so no other write comes between: every compare had the right value.
    assert run.json["not_swapped"] == 0
    swaps = [r for r in kv.applied if isinstance(r, CasRequest)]
    assert swaps and all(r.expected is not None for r in swaps)


async def test_text_output_and_the_progress_line(leader: tuple[FakeNode, FakeKV]) -> None:
    node, _ = leader
    # Long enough for the progress line (every 0.5 s) to show at least once.
    argv = ("--op", "mixed", *SHORT, "--duration", "1.2")
    run = await raftctl("--endpoints", node.endpoint, "bench", *argv, err=Terminal())
    assert run.code == 0
    lines = run.out.splitlines()
    assert lines[0].startswith("mixed get=50,set=30,cas=20: 16 clients over 4 connections")
    assert lines[1].startswith("ops ") and "ops/s" in lines[1]
    assert lines[2].startswith("latency ms") and "p99.9" in lines[2]
    assert any(line.startswith("errors       none") for line in lines)
    assert any(line.startswith("not swapped") for line in lines)
    # A self-overwriting line, cleared at the end; never a newline of its own.
    assert "\r" in run.err and "ops/s" in run.err and "\n" not in run.err
    assert run.err.endswith("\r\x1b[K")


async def test_no_progress_even_on_a_terminal(leader: tuple[FakeNode, FakeKV]) -> None:
    node, _ = leader
    run = await raftctl(
        "--endpoints", node.endpoint, "bench", "--no-progress", *SHORT, err=Terminal()
    )
    assert run.code == 0 and run.err == ""


async def test_an_unreachable_cluster_exits_3_without_a_traceback() -> None:
    port = ClosedPort()
    try:
        run = await raftctl("--endpoints", port.endpoint, "bench", *SHORT[:4], "--timeout", "0.5")
    finally:
        port.close()
    assert run.code == 3
    assert run.out == ""
    assert "cannot reach the cluster" in run.err and "nothing was written" in run.err
    assert "Traceback" not in run.err


async def test_a_refused_first_request_exits_1(nursery: trio.Nursery) -> None:
    async def refuse(received: Received) -> Response:
        return ErrorReply(ErrorCode.BAD_REQUEST, "value too large", True)

    node = await start(nursery, "n1", refuse)
    run = await raftctl("--endpoints", node.endpoint, "--output", "json", "bench", *SHORT)
    assert run.code == 1
    assert run.json["error"]["code"] == "bad_request"


async def test_errors_are_counted_by_kind(nursery: trio.Nursery) -> None:
    kv = FakeKV("n1")

    async def no_stale_reads(received: Received) -> Response:
        request = received.request
        if isinstance(request, GetRequest) and request.max_staleness_s is not None:
            return ErrorReply(ErrorCode.TOO_STALE, "last heard from the leader long ago", True)
        return await kv.handle(received)

    node = await start(nursery, "n1", no_stale_reads)
    kv.endpoint = node.endpoint
    argv = ("--op", "get", "--max-staleness", "0.5", *SHORT)
    run = await raftctl("--endpoints", node.endpoint, "--output", "json", "bench", *argv)
    doc = run.json
    assert run.code == 3  # nothing succeeded in the window
    assert doc["ops"] == 0 and doc["p50_ms"] is None
    assert set(doc["errors"]) == {"refused:too_stale"}
    assert doc["errors_total"] == doc["errors"]["refused:too_stale"] > 0
    assert sum(point["errors"] for point in doc["timeline"]) == doc["errors_total"]
    assert "no operation succeeded" in run.err


async def test_not_found_gets_are_answers_not_errors(nursery: trio.Nursery) -> None:
    async def forgetful(received: Received) -> Response:
        request = received.request
        if isinstance(request, SetRequest):
            return FakeKV("n1").write(request)
        return GetReply(False, None, "n1")

    node = await start(nursery, "n1", forgetful)
    run = await raftctl(
        "--endpoints", node.endpoint, "--output", "json", "bench", "--op", "get", *SHORT
    )
    doc = run.json
    assert run.code == 0 and doc["errors"] == {}
    assert doc["not_found"] == doc["ops"] > 0


async def test_the_library_runs_from_a_test(leader: tuple[FakeNode, FakeKV]) -> None:
    node, _ = leader
    seen: list[Progress] = []
    config = BenchConfig(
        (node.endpoint,), op="get", clients=4, duration_s=1.5, warmup_s=0.2, keys=20
    )
    result = await run_bench(config, progress=seen.append, progress_interval_s=0.1)
    assert result.ops == len(result.latencies_s) > 0
    assert [p.t_s for p in result.timeline] == [0, 1]
    assert result.timeline[1].span_s == pytest.approx(0.5)
    assert sum(p.ops for p in result.timeline) == result.ops
    assert result.prefill_keys == 20
    phases = [p.phase for p in seen]
    assert "measure" in phases and phases == sorted(
        phases, key=["prefill", "warmup", "measure"].index
    )
    assert all(p.line() for p in seen)


async def test_stale_reads_spread_over_the_members(nursery: trio.Nursery) -> None:
    kv = FakeKV("n1")
    leader = await start(nursery, "n1", kv.handle)
    kv.endpoint = leader.endpoint
    follower = await start(nursery, "n2", kv.handle)  # answers stale reads, like a member
    config = BenchConfig(
        (leader.endpoint, follower.endpoint),
        op="get",
        clients=4,
        connections=2,
        duration_s=0.3,
        warmup_s=0,
        keys=10,
        max_staleness_s=1.0,
    )
    result = await run_bench(config)
    assert result.ops > 0 and result.errors == {}
    # Each connection starts with a different member, so both served stale reads.
    for node in (leader, follower):
        gets = [r for r in node.requests(GetRequest) if isinstance(r, GetRequest)]
        assert any(r.max_staleness_s == 1.0 for r in gets), node.name


# ------------------------------------------------------------------- plotting


def synthetic_result() -> BenchResult:
    latencies = array("d", [0.001 * (1 + i % 50) for i in range(2000)])
    return BenchResult(
        config=BenchConfig(("127.0.0.1:1",), duration_s=2.0),
        duration_s=2.0,
        latency=summarize(latencies),
        by_op={"set": summarize(latencies)},
        errors={"unknown_outcome:timeout": 3},
        not_swapped=0,
        not_found=0,
        timeline=[TimelinePoint(0, 1.0, 1000, 0), TimelinePoint(1, 1.0, 1000, 3)],
        prefill_keys=0,
        prefill_s=0.0,
        latencies_s=latencies,
    )


def test_plot_writes_a_png(tmp_path: Path) -> None:
    target = tmp_path / "bench.png"
    assert benchplot.plot(synthetic_result(), target) is None
    assert target.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_of_nothing_still_draws(tmp_path: Path) -> None:
    empty = synthetic_result()
    empty = BenchResult(
        **{
            **{name: getattr(empty, name) for name in empty.__dataclass_fields__},
            "latency": summarize([]),
            "latencies_s": array("d"),
            "timeline": [TimelinePoint(0, 1.0, 0, 0)],
        }
    )
    target = tmp_path / "empty.png"
    assert benchplot.plot(empty, target) is None
    assert target.read_bytes()[:8] == PNG_SIGNATURE
