"""/health and /ready on the metrics port: status codes and reasons, beside /metrics."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import cast

from observability.health import LOOP_STALL_S, Health
from observability.metrics import RaftMetrics, driver_health, serve_metrics
from raftd.config import Address
from raftd.runtime.driver import Driver


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_each_probe_answers_200_or_503_with_its_reason_and_metrics_are_still_served() -> None:
    problems: dict[str, str | None] = {"live": None, "ready": "no leader known"}

    def broken() -> str | None:
        raise RuntimeError("a bug")

    health = Health(lambda: problems["live"], lambda: problems["ready"])
    server = serve_metrics(Address("127.0.0.1", 0), RaftMetrics(), health)
    try:
        assert get(server.port, "/health") == (200, "ok\n")
        assert get(server.port, "/ready") == (503, "no leader known\n")
        problems["ready"] = None
        assert get(server.port, "/ready") == (200, "ok\n")
        status, body = get(server.port, "/metrics")
        assert status == 200 and "raftd_leader_changes_total" in body
        health_of_a_bug = serve_metrics(
            Address("127.0.0.1", 0), RaftMetrics(), Health(broken, broken)
        )
        try:
            status, body = get(health_of_a_bug.port, "/health")
            assert status == 503 and "the check failed" in body
        finally:
            health_of_a_bug.close()
    finally:
        server.close()


def test_the_driver_probes_say_ready_only_with_a_leader_and_everything_applied() -> None:
    """driver_health on a stand-in driver (the fields it reads, nothing else), through the
    HTTP server as an orchestrator would see it."""
    node = SimpleNamespace(leader_id=None, commit_index=7)
    driver = SimpleNamespace(node=node, applied_index=7, loop_turned_at=time.monotonic())
    server = serve_metrics(
        Address("127.0.0.1", 0), RaftMetrics(), driver_health(cast(Driver, driver))
    )
    try:
        assert get(server.port, "/ready") == (503, "no leader known\n")
        assert get(server.port, "/health") == (200, "ok\n")  # no leader is no reason to restart
        node.leader_id = 2
        driver.applied_index = 5  # committed, not yet applied: reads here would be behind
        assert get(server.port, "/ready") == (503, "applied 5 of the 7 entries known committed\n")
        driver.applied_index = 7
        assert get(server.port, "/ready") == (200, "ok\n")
        assert get(server.port, "/health") == (200, "ok\n")
        # The consensus loop stops turning (wedged): liveness fails, saying for how long.
        driver.loop_turned_at = time.monotonic() - LOOP_STALL_S - 5
        status, body = get(server.port, "/health")
        assert status == 503, body
        assert re.fullmatch(r"the consensus loop has not turned for 1\d s\n", body), body
        driver.loop_turned_at = time.monotonic()
        assert get(server.port, "/health") == (200, "ok\n")
    finally:
        server.close()
