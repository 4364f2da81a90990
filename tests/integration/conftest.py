"""The cluster every integration test starts from: three real members on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.integration.harness import Cluster, running


@pytest.fixture
async def cluster(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    async with running(Cluster(tmp_path / "members", 3), nursery) as started:
        yield started
    check_spans(started)


@pytest.fixture
async def plaintext_cluster(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    """Without TLS whatever RAFTD_TEST_TLS says, for tests that write raw bytes to the
    ports (the framing they attack is the same inside TLS, one layer up)."""
    async with running(Cluster(tmp_path / "members", 3, tls=False), nursery) as started:
        yield started
    check_spans(started)


def check_spans(started: Cluster) -> None:
    """Whatever the test did, the members' own instrumentation must not have misused a
    span (OpenTelemetry only warns, on stderr, which lands in the member's log)."""
    for name in started.members:
        assert "ended span" not in started.log_text(name), f"{name} touched an ended span"
