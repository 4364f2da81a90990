"""The audit's own rules: windows counted strictly, and what makes a trace not whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from observability.filexport import SpanRecord
from observability.sampling import EDGE_ATTRIBUTE
from tests.integration.harness import ROOT
from tests.tracecheck.audit import audit, max_in_window, why_not_whole

S = 1_000_000_000


def span(
    trace: str,
    span_id: str,
    member: str,
    name: str = "raft.apply",
    *,
    parent: str | None = None,
    start: int = 0,
    end: int | None = None,
    attributes: dict[str, Any] | None = None,
) -> SpanRecord:
    return SpanRecord(
        trace_id=trace,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=1,
        start_ns=start,
        end_ns=start if end is None else end,
        attributes=attributes or {},
        events=[],
        links=[],
        status_code=0,
        status_message="",
        service_name="raftd",
        service_instance_id=member,
        scope_name="raftd",
        resource={},
    )


def test_a_window_is_closed_at_both_ends_and_slides() -> None:
    assert max_in_window([(0, "a"), (60 * S, "b")]) == 2
    assert max_in_window([(0, "a"), (60 * S + 1, "b")]) == 1
    assert max_in_window([(0, "a"), (1, "a"), (2, "a")]) == 1
    points = [(i * 10 * S, str(i)) for i in range(20)]  # one every 10 s
    assert max_in_window(points) == 7


def test_a_long_span_counts_at_its_start_and_its_end() -> None:
    # By start times alone no window holds both; t1's end at 100 s and t2 at 150 s share one.
    spans = [span("t1", "1", "n1", start=0, end=100 * S), span("t2", "2", "n1", start=150 * S)]
    (figures,) = audit(spans, cap=2).members
    assert figures.most_in_window == 2


def test_a_span_whose_parent_is_missing_breaks_the_trace_unless_it_is_an_edge() -> None:
    edge = span("t", "1", "n1", "kv.set", parent="client", attributes={EDGE_ATTRIBUTE: "client"})
    child = span("t", "2", "n1", parent="1")
    assert why_not_whole([edge, child]) is None
    orphan = span("t", "3", "n2", "raft.append", parent="gone")
    assert why_not_whole([edge, child, orphan]) == "raft.append on n2 has no parent span"


def test_a_member_that_answered_must_have_recorded_its_part() -> None:
    reply = {"raft.peer": "n2", "raft.match_index": 4}
    answered = span("t", "1", "n1", "AppendEntries n2", attributes=reply)
    # No reply: the message may never have arrived, so it claims nothing.
    lost = span("t", "2", "n1", "AppendEntries n3", attributes={"raft.peer": "n3"})
    assert why_not_whole([answered, lost]) == (
        "n2 answered AppendEntries n2 but recorded nothing of the trace"
    )
    part = span("t", "3", "n2", "raft.append", parent="1")
    assert why_not_whole([answered, lost, part]) is None


def test_the_command_line_exits_1_over_the_cap_and_names_the_member(tmp_path: Path) -> None:
    lines = []
    for i in range(3):
        resource = {
            "attributes": [
                {"key": "service.instance.id", "value": {"stringValue": "n1"}},
                {"key": "service.name", "value": {"stringValue": "raftd"}},
            ]
        }
        one = {
            "traceId": f"{i + 1:032x}",
            "spanId": f"{i + 1:016x}",
            "name": "raft.election",
            "kind": 1,
            "startTimeUnixNano": str(i * S),
            "endTimeUnixNano": str(i * S),
        }
        lines.append({"resourceSpans": [{"resource": resource,
                                         "scopeSpans": [{"scope": {"name": "raftd"},
                                                         "spans": [one]}]}]})  # fmt: skip
    (tmp_path / "n1").mkdir()
    (tmp_path / "n1" / "traces.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.tracecheck", str(tmp_path), *args],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip

    over = run("--cap", "2")
    assert over.returncode == 1
    assert "n1: at most 3 traces in any 60 s window (cap 2): OVER THE CAP" in over.stdout
    within = run("--cap", "3")
    assert within.returncode == 0, within.stdout
    assert "kept traces: 3, whole: 3 (100.0%)" in within.stdout
    assert run(str(tmp_path / "missing")).returncode == 2
