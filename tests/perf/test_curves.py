"""tests.perf.curves' report: ratios per point, the history's summary, memory per member."""

from __future__ import annotations

import pytest

from tests.perf.compare import Results
from tests.perf.curves import Point, main, render


def test_the_report_puts_each_point_beside_etcd_with_its_ratio() -> None:
    points = [
        Point("clients", 64, "raftd", 6000.0, 10.0, 20.0),
        Point("clients", 64, "etcd", 7500.0, 8.0, 18.0),
        Point("clients", 1, "raftd", 480.0, 2.0, 3.0),
        Point("history", 0, "raftd", 5000.0, 0.0, 0.0),
        Point("history", 1, "raftd", 6000.0, 0.0, 0.0),
        Point("history", 2, "raftd", 7000.0, 0.0, 0.0),
        Point("memory", 1_000_000, "raftd", 0.0, 0.0, 0.0, {"rss_mb": {"n1": 300.0}}),
    ]
    results = Results()
    results.skipped["etcd (clients=1)"] = "etcd_load.py ... exited 1"
    text = render(points, results, "python -m tests.perf.curves", ["curve-clients.png"])
    assert "| 64 | 6,000 | 10.00 | 20.00 | 7,500 | 8.00 | 18.00 | 0.80 |" in text
    assert "| 1 | 480 | 2.00 | 3.00 | - | - | - | - |" in text
    assert "first third 5,000 ops/s, last third 7,000 ops/s, slowest second 5,000" in text
    assert "- raftd at 1,000,000 keys: {'n1': 300.0} MB" in text
    assert "- etcd (clients=1): etcd_load.py ... exited 1" in text
    assert "## value size" not in text  # no points, no section


def test_nonsense_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--duration", "0"])
    assert exit_info.value.code == 2
    assert "--duration must be positive" in capsys.readouterr().err
