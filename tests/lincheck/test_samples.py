"""The checker against the shared hand-made histories, its command line, and its speed."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lincheck import check_history, dump_history, load_history
from tests.lincheck.generate import linearizable_history

ROOT = Path(__file__).resolve().parents[2]


# Hand-made histories of our own, one per kind of failure the checker must name.
OWN_SAMPLES = sorted((Path(__file__).parent / "samples").glob("*.jsonl"))

# The team's shared samples, when a checkout of them sits beside the repository (or where
# RAFTD_SHARED_LINCHECK points): an extra check by an independent hand, not a requirement.
SHARED_ENV = "RAFTD_SHARED_LINCHECK"
SHARED_DIR = Path(os.environ.get(SHARED_ENV) or ROOT.parent / "shared" / "lincheck")
SHARED_SAMPLES = sorted(SHARED_DIR.glob("*.jsonl")) if SHARED_DIR.is_dir() else []


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect:"), path
    return first.removeprefix("# expect:").strip()


def cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.lincheck", str(path), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )


def test_there_are_samples_of_every_verdict() -> None:
    assert {expected(p) for p in OWN_SAMPLES} == {
        "linearizable",
        "not linearizable",
        "stale read beyond its bound",
    }


def agrees(path: Path) -> None:
    result = cli(path)
    first = result.stdout.splitlines()[0]
    assert first == expected(path)
    assert result.returncode == (0 if first == "linearizable" else 1)
    if first == "not linearizable":
        assert "key " in result.stdout and "cannot place" in result.stdout


@pytest.mark.parametrize("path", OWN_SAMPLES, ids=lambda p: p.name)
def test_agrees_with_every_sample_of_ours(path: Path) -> None:
    agrees(path)


@pytest.mark.skipif(
    not SHARED_SAMPLES,
    reason=f"no shared lincheck samples at {SHARED_DIR} (set {SHARED_ENV} to check them too)",
)
@pytest.mark.parametrize("path", SHARED_SAMPLES, ids=lambda p: p.name)
def test_agrees_with_every_shared_sample(path: Path) -> None:
    agrees(path)


def test_malformed_input_exits_3_with_the_line_number(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"client":1,"op":"get","key":"x","call":0,"return":1,"output":null}\n{oops\n')
    result = cli(bad)
    assert result.returncode == 3
    assert "line 2" in result.stdout + result.stderr


def test_fifty_thousand_operations_in_seconds(tmp_path: Path) -> None:
    ops = linearizable_history(50_000, seed=1)
    path = tmp_path / "big.jsonl"
    path.write_text(dump_history(ops))
    began = time.monotonic()
    verdict = check_history(load_history(path), timeout_s=120)
    elapsed = time.monotonic() - began
    print(f"50,000 operations checked in {elapsed:.2f} s")
    assert verdict.verdict == "linearizable"
    assert elapsed < 60


def test_a_read_of_a_value_never_written_is_caught_and_named() -> None:
    ops = linearizable_history(5_000, seed=2)
    index = next(i for i, op in enumerate(ops) if op.op == "get" and op.outcome == "ok")
    ops[index] = dataclasses.replace(ops[index], output="never-written")
    result = check_history(ops, timeout_s=60)
    assert result.verdict == "not linearizable"
    assert any(failure.key == ops[index].key for failure in result.failures)


def test_a_timeout_is_never_a_pass() -> None:
    ops = linearizable_history(20_000, seed=3)
    result = check_history(ops, timeout_s=0.0)
    assert result.verdict == "unknown"
    assert result.first_line == "unknown (checker timed out)"
