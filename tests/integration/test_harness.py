"""The harness itself: what a cluster test relies on before it tests raftd."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.integration.harness import Cluster, free_port


def test_free_ports_never_repeat_within_a_test_process() -> None:
    # Drawn at random by the kernel, 2,000 bind(0) ports repeat dozens of times; a repeat
    # inside one cluster once left a member unable to bind its port (a CI failure).
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


async def test_a_cluster_that_never_serves_says_why(tmp_path: Path, nursery: trio.Nursery) -> None:
    cluster = Cluster(tmp_path, 3)
    # The collision the fix above prevents: n3's client port is one a proxy already holds.
    taken = cluster.links[("n1", "n2")].port
    cluster.members["n3"].client_port = taken
    await cluster.start(nursery)
    try:
        with pytest.raises(AssertionError) as failure:
            await cluster.wait_all_serving(timeout_s=5)
    finally:
        await cluster.shutdown()
    text = str(failure.value)
    assert "did not serve within 5 s" in text
    assert "n3: no answer; exited 1" in text, text
    assert f"raftd: cannot listen for clients on 127.0.0.1:{taken}: Address already in use" in text
