"""A real Prometheus scraping a live three-member cluster, configured by the shipped
observability/prometheus/prometheus.yml and alerts.yml (only its targets pointed at this
test's members and its intervals shortened), queried through its HTTP API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.integration.harness import ROOT, Cluster, free_port, running
from tests.integration.test_cluster import Writer

PROMETHEUS_DIR = ROOT / "observability" / "prometheus"
DASHBOARD = ROOT / "observability" / "grafana" / "dashboards" / "raftd.json"

Sample = tuple[dict[str, str], float]

# Straight to 127.0.0.1, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str) -> dict[str, Any]:
    """Prometheus answers errors (a bad query: 400) with a JSON body too."""
    try:
        with _OPENER.open(url, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
    return body


def _ready(url: str) -> bool:
    try:
        with _OPENER.open(f"{url}/-/ready", timeout=2) as response:
            status: int = response.status
    except OSError:  # refused while it starts, 503 until it is ready
        return False
    return status == 200


@dataclass
class Prometheus:
    url: str
    log_path: Path

    async def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = await trio.to_thread.run_sync(_get_json, f"{self.url}/api/v1/{path}{query}")
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    async def query(self, expr: str) -> list[Sample]:
        data = await self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]

    async def scalar(self, expr: str) -> float | None:
        """The value of a query that yields one sample, or None while it yields none."""
        samples = await self.query(expr)
        assert len(samples) <= 1, samples
        return samples[0][1] if samples else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def scrape_config_for(cluster: Cluster) -> str:
    """The shipped prometheus.yml, scraping this cluster's members every second."""
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    replacements = {
        "scrape_interval: 5s": "scrape_interval: 1s",
        "scrape_timeout: 4s": "scrape_timeout: 1s",
        "evaluation_interval: 5s": "evaluation_interval: 1s",
    }
    for n, name in enumerate(cluster.members, 1):
        replacements[f'"127.0.0.1:910{n}"'] = f'"{cluster.metrics_address(name)}"'
    for old, new in replacements.items():
        assert text.count(old) == 1, f"prometheus.yml no longer has {old!r} once"
        text = text.replace(old, new)
    return text


@pytest.fixture
async def metered(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    """Three members, each serving metrics on a port of its own."""
    cluster = Cluster(tmp_path / "members", 3)
    cluster.serve_metrics()
    async with running(cluster, nursery) as started:
        yield started


@pytest.fixture
async def prometheus(metered: Cluster, tmp_path: Path) -> AsyncIterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the prometheus server is not installed; it comes with Debian's prometheus "
            "package: run `make tools` (or `apt-get install -y prometheus`)"
        )
    home = tmp_path / "prometheus"
    home.mkdir()
    config = home / "prometheus.yml"
    config.write_text(scrape_config_for(metered))
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", home / "alerts.yml")  # rule_files: relative
    server = Prometheus(f"http://127.0.0.1:{free_port()}", home / "prometheus.log")
    with server.log_path.open("ab") as log:
        process = await trio.lowlevel.open_process(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address={server.url.removeprefix('http://')}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with trio.fail_after(30):
                while not await trio.to_thread.run_sync(_ready, server.url):
                    assert process.poll() is None, f"prometheus exited:\n{server.log()}"
                    await trio.sleep(0.1)
            yield server
        finally:
            process.kill()
            await process.wait()


async def test_prometheus_sees_exactly_one_leader_and_commits_advancing_under_load(
    metered: Cluster, prometheus: Prometheus
) -> None:
    targets = {name: metered.metrics_address(name) for name in metered.members}
    # Every member scraped, and exactly one reporting itself leader: the one the members
    # agree on (polled: a slow machine can see an election in between).
    with trio.fail_after(20):
        while True:
            up = await prometheus.query('up{job="raftd"} == 1')
            leaders = await prometheus.query("raftd_is_leader == 1")
            total = await prometheus.scalar("sum(raftd_is_leader)")
            leader = await metered.wait_for_leader()
            if (
                len(up) == 3
                and total == 1
                and [labels["member"] for labels, _ in leaders] == [leader]
            ):
                break
            await trio.sleep(0.2)
    # Each member is told apart by its instance (the target) and its member label.
    reported = await prometheus.query("raftd_is_leader")
    assert {labels["member"]: labels["instance"] for labels, _ in reported} == targets
    assert all(labels["job"] == "raftd" for labels, _ in reported)

    before = await prometheus.scalar("max(raftd_commit_index)")
    assert before is not None
    writer = Writer(metered)
    for n in range(50):
        await writer.set(f"k{n}", f"v{n}", timeout_s=15)
    # Each write is one more entry: every member must have applied all of them.
    with trio.fail_after(20):
        while True:
            committed = await prometheus.scalar("max(raftd_commit_index)")
            applied = await prometheus.scalar("min(raftd_applied_index)")
            if committed is not None and applied is not None and applied >= before + 50:
                break
            await trio.sleep(0.2)
    assert committed is not None and committed >= applied
    writes = await prometheus.scalar('sum(raftd_client_requests_total{op="set",outcome="ok"})')
    assert writes is not None and writes >= 50
    # RaftFollowerLag's arithmetic, on real series: one lag per member, all small.
    lags = await prometheus.query(
        "max by (job) (raftd_commit_index) - on (job) group_right raftd_applied_index"
    )
    assert {labels["member"] for labels, _ in lags} == set(targets)


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    found: list[tuple[str, str]] = []
    for row in dashboard["panels"]:
        for panel in [row, *row.get("panels", [])]:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
    return found


def _as_grafana_sends(expr: str) -> str:
    """The query with Grafana's variables filled in: every member, and a rate window of
    several one-second scrapes."""
    expr = expr.replace("$member", ".*").replace("$__rate_interval", "10s")
    assert not re.search(r"\$\w+", expr), expr
    return expr


async def test_alert_rules_and_dashboard_queries_evaluate_on_live_data(
    metered: Cluster, prometheus: Prometheus
) -> None:
    alert_names = set(re.findall(r"- alert: (\w+)", (PROMETHEUS_DIR / "alerts.yml").read_text()))
    # Prometheus loaded every rule from the shipped file and evaluates each without error.
    with trio.fail_after(20):
        while True:
            groups = (await prometheus.api("rules"))["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            if rules and all(rule["health"] == "ok" for rule in rules):
                break
            assert all(rule["health"] != "err" for rule in rules), rules
            await trio.sleep(0.2)
    assert {rule["name"] for rule in rules} == alert_names
    # A healthy cluster: nothing fires (the `for` delays also keep it from firing this soon;
    # the point is that the rules run on real series).
    assert await prometheus.query('ALERTS{alertstate="firing"}') == []

    await Writer(metered).set("k", "v")
    # Every panel's query is valid PromQL (Prometheus answers an error otherwise); those
    # drawn per member see all three once each member has been scraped twice.
    queries = _dashboard_queries()
    per_member = {"Leader per member", "Term", "Lag behind the cluster, per member"}
    assert per_member <= {title for title, _ in queries}
    with trio.fail_after(20):
        while True:
            members: dict[str, set[str | None]] = {}
            for title, expr in queries:
                samples = await prometheus.query(_as_grafana_sends(expr))
                if title in per_member:
                    members[title] = {labels.get("member") for labels, _ in samples}
            if all(seen == set(metered.members) for seen in members.values()):
                break
            await trio.sleep(0.2)
