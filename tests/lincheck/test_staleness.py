"""The staleness pass of ``python -m tests.lincheck`` (tests/lincheck/staleness.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lincheck.__main__ import main
from tests.lincheck.checker import check_history
from tests.lincheck.history import MalformedHistory, Operation, Outcome, parse_history
from tests.lincheck.staleness import check_staleness

MS = 1_000_000


def w(value: str, call: int, ret: int | None, outcome: Outcome = "ok") -> Operation:
    return Operation(
        1, "set", "k", call * MS, None if ret is None else ret * MS, value=value, outcome=outcome
    )


def r(output: str | None, call: int, ret: int, bound: int) -> Operation:
    return Operation(2, "get", "k", call * MS, ret * MS, output=output, max_staleness_ns=bound * MS)


def test_a_value_current_within_the_window_passes() -> None:
    history = [w("a", 0, 10), w("b", 100, 110), r("a", 150, 151, 60), r("b", 150, 151, 0)]
    assert check_staleness(history).verified == 2


def test_a_value_overwritten_before_the_window_is_caught() -> None:
    history = [w("a", 0, 10), w("b", 100, 110), r("a", 500, 501, 300)]
    result = check_staleness(history)
    assert not result.ok and "not current" in result.violations[0]


def test_the_initial_absent_value_counts_until_a_write_certainly_completed() -> None:
    assert check_staleness([w("a", 100, 110), r(None, 300, 301, 200)]).ok
    assert not check_staleness([w("a", 100, 110), r(None, 300, 301, 150)]).ok


def test_unknown_and_failed_writes() -> None:
    # An unknown write may take effect any time after its call, and is never known overwritten.
    assert check_staleness([w("a", 0, None, "unknown"), w("b", 50, 60), r("a", 500, 501, 0)]).ok
    # A failed write never happened; neither did a write called after the read returned.
    assert not check_staleness([w("a", 0, 5, "fail"), r("a", 10, 11, 100)]).ok
    assert not check_staleness([w("a", 20, 25), r("a", 10, 11, 100)]).ok
    # A cas that did not swap wrote nothing.
    no_swap = Operation(1, "cas", "k", 0, 5 * MS, expected="x", value="a", ok=False)
    assert not check_staleness([no_swap, r("a", 10, 11, 100)]).ok


def test_stale_reads_are_left_out_of_the_linearizability_search() -> None:
    history = [w("a", 0, 10), w("b", 100, 110), r("a", 150, 151, 100)]
    assert check_history(history).verdict == "linearizable"
    assert check_staleness(history).ok


def test_the_field_is_strict() -> None:
    with pytest.raises(MalformedHistory, match="max_staleness_ns"):
        parse_history(
            [
                '{"client":1,"op":"set","key":"k","call":1,"return":2,"value":"a",'
                '"max_staleness_ns":5}'
            ]
        )
    with pytest.raises(MalformedHistory, match="max_staleness_ns"):
        parse_history(
            [
                '{"client":1,"op":"get","key":"k","call":1,"return":2,"output":null,'
                '"max_staleness_ns":-1}'
            ]
        )
    with pytest.raises(MalformedHistory, match="max_staleness_ns"):
        parse_history(
            [
                '{"client":1,"op":"get","key":"k","call":1,"return":2,"output":null,'
                '"max_staleness_ns":null}'
            ]
        )


def test_the_command_line_reports_the_pass_and_fails_on_a_violation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def write(path: Path, ops: list[dict[str, object]]) -> str:
        path.write_text("".join(json.dumps(op) + "\n" for op in ops))
        return str(path)

    set_a = {"client": 1, "op": "set", "key": "k", "call": 0, "return": 10, "value": "a"}
    set_b = {"client": 1, "op": "set", "key": "k", "call": 20, "return": 30, "value": "b"}
    read = {
        "client": 2,
        "op": "get",
        "key": "k",
        "call": 1000,
        "return": 1001,
        "output": "a",
        "max_staleness_ns": 2000,
    }
    assert main([write(tmp_path / "ok.jsonl", [set_a, set_b, read])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "linearizable" and out[-1] == "staleness: 1 stale reads within their bound"
    read["max_staleness_ns"] = 100
    assert main([write(tmp_path / "bad.jsonl", [set_a, set_b, read])]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "stale read beyond its bound"
    assert "staleness: 1 stale reads beyond their bound" in out
