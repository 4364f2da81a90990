"""The door of each port: the connection limit and the log that cannot be flooded."""

from __future__ import annotations

from typing import Any

import pytest

from observability.metrics import RaftMetrics
from raftd.runtime.gate import ConnectionGate, QuietLog


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sample(metrics: RaftMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_burst_is_one_line_then_one_summary_per_interval() -> None:
    recorder, clock = Recorder(), Clock()
    quiet = QuietLog(recorder, interval_s=10.0, clock=clock)
    for _ in range(100):
        quiet.warning("bad frame", remote="a")
    assert recorder.lines == [("bad frame", {"remote": "a"})]
    clock.now = 10.5
    quiet.warning("bad frame", remote="b")
    assert recorder.lines[-1] == ("bad frame", {"remote": "b", "repeats_not_logged": 99})
    clock.now = 25.0
    quiet.warning("bad frame", remote="c")
    assert recorder.lines[-1] == ("bad frame", {"remote": "c"})  # nothing was suppressed


def test_kinds_of_trouble_are_rate_limited_separately() -> None:
    recorder = Recorder()
    quiet = QuietLog(recorder, clock=Clock())
    quiet.warning("peer connection refused", key="handshake:cluster", reason="other cluster")
    quiet.warning("peer connection refused", key="handshake:stranger", reason="stranger")
    quiet.warning("peer connection refused", key="handshake:stranger", reason="stranger 2")
    quiet.warning("client connection closed")
    assert [fields.get("reason") for _, fields in recorder.lines] == [
        "other cluster",
        "stranger",
        None,
    ]


def test_the_gate_refuses_past_its_limit_and_counts() -> None:
    metrics, recorder = RaftMetrics(), Recorder()
    gate = ConnectionGate("client", 2, metrics, QuietLog(recorder, clock=Clock()))
    assert gate.try_enter("a") and gate.try_enter("b")
    assert not gate.try_enter("c") and not gate.try_enter("d")
    assert gate.open == 2
    assert sample(metrics, "raftd_open_connections", {"port": "client"}) == 2
    labels = {"port": "client", "reason": "limit"}
    assert sample(metrics, "raftd_connections_closed_by_member_total", labels) == 2
    assert len(recorder.lines) == 1 and recorder.lines[0][1]["limit"] == 2
    gate.leave()
    assert gate.try_enter("e")
    assert sample(metrics, "raftd_open_connections", {"port": "client"}) == 2


def test_a_limit_below_one_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionGate("peer", 0, RaftMetrics(), QuietLog(Recorder()))
