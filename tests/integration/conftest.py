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
    # Whatever the test did, the members' own instrumentation must not have misused a span
    # (OpenTelemetry only warns, on stderr, which lands in the member's log).
    for name in started.members:
        assert "ended span" not in started.log_text(name), f"{name} touched an ended span"
