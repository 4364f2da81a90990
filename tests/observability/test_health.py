"""/health and /ready on the metrics port: status codes and reasons, beside /metrics."""

from __future__ import annotations

import urllib.error
import urllib.request

from observability.health import Health
from observability.metrics import RaftMetrics, serve_metrics
from raftd.config import Address


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
