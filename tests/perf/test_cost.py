"""tests.perf.cost's own arithmetic: the leader's profile read from py-spy's raw output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.perf.cost import main, main_thread_profile


def test_the_profile_counts_the_trio_thread_only_and_leaves_idle_waits_out(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "leader.txt"
    run = "main (raftd/__main__.py:1);run (/v/site-packages/trio/_core/_run.py:9)"
    raw.write_text(
        f"{run};_loop (d.py:3) 6\n"
        f"{run};send (p.py:7);send (p.py:8) 2\n"
        f"{run};get_events (t.py:2) 50\n"
        "Thread.run (threading.py:1);fsync (fs.py:4) 40\n"
        "_work (/v/site-packages/trio/_core/_thread_cache.py:3);fsync (fs.py:4) 40\n"
    )
    shares = dict((frame, share) for share, frame in main_thread_profile(raw))
    assert "run" not in shares  # on every stack: says nothing
    assert shares["_loop"] == 75.0
    assert shares["send"] == 25.0  # a recursive frame counts once per stack
    assert "fsync" not in shares and "get_events" not in shares


def test_nonsense_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--clients", "0"])
    assert exit_info.value.code == 2
    assert "--clients must be at least 1" in capsys.readouterr().err
