"""The shipped Prometheus and Grafana configuration: Prometheus's own validator (promtool)
accepts the scrape configs and alert rules, the rules' unit tests pass, and neither the
rules nor the dashboard refer to a metric that a member does not export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from observability.metrics import NodeState, RaftMetrics, render

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "observability" / "prometheus"
GRAFANA = ROOT / "observability" / "grafana"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
DASHBOARD = GRAFANA / "dashboards" / "raftd.json"
DATASOURCE_UID = "prometheus"
SEVERITIES = {"critical", "warning", "info"}

METRIC_NAME = re.compile(r"\braftd_\w+")
# What Grafana puts in place of its variables before it sends a query.
GRAFANA_VARIABLES = {"$member": ".*", "$__rate_interval": "1m", "$__interval": "15s"}


def promtool(*args: str | Path) -> str:
    """Runs promtool, fails with its whole report unless it succeeds, returns the report."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed; it comes with Debian's prometheus package: "
            "run `make tools` (or `apt-get install -y prometheus`)"
        )
    result = subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{report}"
    return report


def exported_metrics() -> tuple[set[str], set[str]]:
    """The family names and the sample names (with _total, _bucket, _sum, _count, _created)
    of a member's registry with every hook and binding used once, as a scrape sees them."""
    metrics = RaftMetrics()
    metrics.bind_state(lambda: NodeState(3, "leader", True, 10, 9, 11))
    metrics.bind_span_counts(lambda: (5, 1))
    metrics.bind_trace_budget(lambda: (2, 7))
    metrics.snapshot("taken", 0.1, 100)
    metrics.snapshot_transfer_cut("sender")
    metrics.leader_transfer("started")
    metrics.membership(3, 1)
    metrics.bind_sampler_totals(lambda: {"ratio": 2})
    metrics.election_started(pre_vote=True)
    metrics.election_started(pre_vote=False)
    metrics.leader_changed()
    metrics.message_sent("AppendEntries")
    metrics.message_received("AppendEntriesResponse")
    metrics.message_dropped("Heartbeat", "disconnected")
    metrics.chaos_injected("drop")
    metrics.client_request("set", "ok", 0.002)
    metrics.rpc_completed("AppendEntries", 0.001)
    metrics.fsync(0.003, 4)
    metrics.append_entries_sent(4)
    metrics.tls_certificates({"client": datetime(2030, 1, 1, tzinfo=UTC)})
    families = list(text_string_to_metric_families(render(metrics).decode()))
    names = {f.name for f in families}
    # The text format carries a counter's or histogram's creation time as a gauge family
    # of its own, <name>_created: a series Prometheus stores, but not a metric of ours.
    ours = {n for n in names if not (n.endswith("_created") and n[: -len("_created")] in names)}
    return ours, {s.name for f in families for s in f.samples}


FAMILIES, SERIES = exported_metrics()


def unknown_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr)) - SERIES


# ------------------------------------------------------------------------- alerts.yml


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def alert_expressions(text: str) -> dict[str, str]:
    """Each alert's expr, from either a one-line value or a block scalar (`expr: |`): enough
    YAML for this file without a YAML library; promtool checks the real thing."""
    found: dict[str, str] = {}
    lines = text.splitlines()
    alert: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if heading := re.match(r"\s*- alert:\s*(\w+)\s*$", line):
            alert = heading[1]
        elif key := re.match(r"(\s*)expr:\s*(.*?)\s*$", line):
            assert alert is not None, f"an expr outside an alert: {line!r}"
            value = key[2]
            if value in ("|", "|-", ">", ">-"):
                body = []
                while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(key[1])):
                    body.append(lines[i].strip())
                    i += 1
                value = " ".join(part for part in body if part)
            found[alert] = value
    return found


def alert_blocks(text: str) -> dict[str, str]:
    """Each alert's text, from its `- alert:` line to the next one (or the end)."""
    parts = re.split(r"^\s*- alert:\s*", text, flags=re.MULTILINE)[1:]
    return {part.split(None, 1)[0]: part for part in parts}


ALERT_TEXT = ALERTS.read_text()
EXPRESSIONS = alert_expressions(ALERT_TEXT)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml"])
def test_scrape_configs_pass_promtool_with_their_rule_files(config: str) -> None:
    report = promtool("check", "config", PROMETHEUS / config)
    assert "is valid prometheus config file syntax" in report, report
    # Checking a config checks the rule files it names: alerts.yml, found relative to it.
    assert "SUCCESS: 1 rule files found" in report, report
    assert f"SUCCESS: {len(EXPRESSIONS)} rules found" in report, report


@pytest.mark.parametrize(
    ("config", "targets"),
    [
        ("prometheus.yml", ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]),
        ("prometheus-compose.yml", ["n1:9101", "n2:9102", "n3:9103"]),
    ],
)
def test_scrape_configs_label_each_member(config: str, targets: list[str]) -> None:
    text = (PROMETHEUS / config).read_text()
    assert "job_name: raftd" in text
    assert re.search(r"^rule_files:\s*\n\s*- alerts\.yml\s*$", text, re.MULTILINE), text
    assert re.search(r"^\s*scrape_interval: 5s\s*$", text, re.MULTILINE), text
    for n, target in enumerate(targets, 1):
        # The target, then (as its static label) the member's Raft id.
        assert re.search(
            rf'- targets: \["{re.escape(target)}"\]\s*\n\s*labels:\s*\n\s*member: n{n}\s*$',
            text,
            re.MULTILINE,
        ), f"{config}: no target {target} labelled member n{n}"


def test_alert_rules_pass_promtool() -> None:
    report = promtool("check", "rules", ALERTS)
    assert f"SUCCESS: {len(EXPRESSIONS)} rules found" in report, report


def test_alert_rule_unit_tests_pass() -> None:
    """alerts_test.yml: each alert fires on the series meant to trigger it, and a healthy
    cluster fires none."""
    report = promtool("test", "rules", ALERTS_TEST)
    assert "SUCCESS" in report, report


def test_every_alert_is_exercised_by_the_unit_tests() -> None:
    text = ALERTS_TEST.read_text()
    healthy = text.split("- name: a healthy cluster fires nothing", 1)[1].split("- name:", 1)[0]
    assert set(re.findall(r"alertname: (\w+)", healthy)) == set(EXPRESSIONS)
    fired: set[str] = set()
    for test in re.split(r"\n\s*- eval_time:|\n\s*- \{eval_time:", text)[1:]:
        name = re.search(r"alertname: (\w+)", test)
        assert name is not None, test
        if "exp_alerts:" in test:
            fired.add(name[1])
    assert fired == set(EXPRESSIONS), f"never shown firing: {set(EXPRESSIONS) - fired}"


def test_expected_alerts_are_all_there() -> None:
    assert set(EXPRESSIONS) >= {
        "RaftNoLeader",
        "RaftMultipleLeadersReported",
        "RaftFrequentElections",
        "RaftHighCommitLatency",
        "RaftFollowerLag",
        "RaftMessagesDropped",
        "RaftSpanExportFailing",
        "RaftFsyncSlow",
    }
    assert "absent(raftd_is_leader" in EXPRESSIONS["RaftNoLeader"]
    assert 'phase="vote"' in EXPRESSIONS["RaftFrequentElections"]


def test_every_alert_has_a_delay_a_severity_and_annotations() -> None:
    blocks = alert_blocks(ALERT_TEXT)
    assert set(blocks) == set(EXPRESSIONS)
    for name, block in blocks.items():
        assert re.search(r"^\s*for: \d+[smh]\s*$", block, re.MULTILINE), f"{name}: no for"
        severity = re.search(r"^\s*severity: (\w+)\s*$", block, re.MULTILINE)
        assert severity is not None and severity[1] in SEVERITIES, f"{name}: severity"
        for annotation in ("summary", "description"):
            assert re.search(rf"^\s*{annotation}: \S", block, re.MULTILINE), (
                f"{name}: no {annotation}"
            )


def test_alert_expressions_use_only_exported_metrics() -> None:
    assert len(EXPRESSIONS) == len(re.findall(r"^\s*- alert:", ALERT_TEXT, re.MULTILINE))
    for name, expr in EXPRESSIONS.items():
        # RaftMemberDown is about the scrape itself: Prometheus's own `up`.
        assert METRIC_NAME.search(expr) or expr.startswith("up{"), f"{name}: {expr!r}"
        assert not unknown_names(expr), f"{name}: {unknown_names(expr)} in {expr!r}"
    # The annotations may name a family (a histogram's base name) or a series.
    mentioned = set(METRIC_NAME.findall(ALERT_TEXT))
    assert mentioned <= SERIES | FAMILIES, mentioned - SERIES - FAMILIES


# ------------------------------------------------------------------------ the dashboard

DASHBOARD_JSON: dict[str, Any] = json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels, and those inside collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation; not the variables' queries,
    which use Grafana's label_values() rather than PromQL."""
    found = [
        (f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    found += [
        (f"annotation {a['name']!r}", a["expr"])
        for a in dashboard["annotations"]["list"]
        if "expr" in a
    ]
    return found


def substituted(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr!r}"
    return expr


def test_dashboard_identity() -> None:
    assert DASHBOARD_JSON["uid"] == "raftd"
    assert DASHBOARD_JSON["title"] == "raftd: Raft consensus"
    assert 36 <= DASHBOARD_JSON["schemaVersion"] <= 41
    assert "id" not in DASHBOARD_JSON or DASHBOARD_JSON["id"] is None


def test_dashboard_panel_ids_are_unique_and_the_layout_does_not_overlap() -> None:
    panels = all_panels(DASHBOARD_JSON)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), sorted(ids)
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_every_dashboard_query_goes_to_the_prometheus_data_source() -> None:
    for panel in all_panels(DASHBOARD_JSON):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel
        assert panel["targets"], f"{panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert target["expr"].strip(), panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']!r}: no unit"
    for annotation in DASHBOARD_JSON["annotations"]["list"]:
        assert annotation["datasource"]["uid"] == DATASOURCE_UID, annotation
    for variable in DASHBOARD_JSON["templating"]["list"]:
        assert variable["datasource"]["uid"] == DATASOURCE_UID, variable


def test_dashboard_queries_use_only_exported_metrics() -> None:
    for where, expr in queries(DASHBOARD_JSON):
        assert not unknown_names(expr), f"{where}: {unknown_names(expr)} in {expr!r}"
    for variable in DASHBOARD_JSON["templating"]["list"]:
        assert not unknown_names(variable["definition"]), variable


def test_dashboard_shows_every_metric_a_member_exports() -> None:
    used = {name for _, expr in queries(DASHBOARD_JSON) for name in METRIC_NAME.findall(expr)}
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    shown = {f for f in FAMILIES if any(f + suffix in used for suffix in suffixes)}
    assert shown == FAMILIES, f"not on the dashboard: {FAMILIES - shown}"


def test_dashboard_has_the_panels_an_operator_needs() -> None:
    panels = all_panels(DASHBOARD_JSON)

    def exprs(title: str) -> list[str]:
        """The queries of the panels whose title contains ``title``."""
        found = [t["expr"] for p in panels if title in p["title"] for t in p.get("targets", [])]
        assert found, f"no panel titled like {title!r}: {[p['title'] for p in panels]}"
        return found

    assert any("raftd_is_leader" in e for e in exprs("Leader per member"))
    assert any("raftd_term" in e for e in exprs("Term"))
    assert any("by (member, phase)" in e for e in exprs("Elections"))
    assert any("raftd_leader_changes_total" in e for e in exprs("Leader changes"))
    writes = [e for e in exprs("Write latency") if 'op=~"set|cas|delete"' in e]
    assert any(e.startswith("histogram_quantile(0.5,") for e in writes)
    assert any(e.startswith("histogram_quantile(0.99,") for e in writes)
    assert any("by (reason)" in e for e in exprs("dropped by reason"))
    assert any("by (kind)" in e for e in exprs("Chaos injections"))
    assert any("raftd_fsync_duration_seconds_bucket" in e for e in exprs("fsync latency"))
    assert any("raftd_fsync_batch_entries" in e for e in exprs("Entries per fsync"))
    assert any("max(raftd_commit_index)" in e and "raftd_applied_index" in e for e in exprs("Lag"))
    assert any("by (outcome)" in e for e in exprs("by outcome"))
    assert any("raftd_spans_failed_total" in e for e in exprs("Spans"))
    assert any("raftd_sampler_decisions_total" in e for e in exprs("Sampler"))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no command to parse a lone expression, but it parses recording rules:
    each query becomes one, in a rule file written as JSON (which YAML reads)."""
    found = queries(DASHBOARD_JSON)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": substituted(expr)}
                    for n, (_, expr) in enumerate(found)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules, indent=2))
    report = promtool("check", "rules", path)
    assert f"SUCCESS: {len(found)} rules found" in report, report


# ----------------------------------------------------------------- Grafana provisioning


def test_provisioned_data_source_is_the_compose_prometheus() -> None:
    text = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert re.search(r"^apiVersion: 1\s*$", text, re.MULTILINE)
    for setting in (
        f"uid: {DATASOURCE_UID}",
        "type: prometheus",
        "url: http://prometheus:9090",
        "access: proxy",
    ):
        assert re.search(rf"^\s+(- )?{re.escape(setting)}\s*$", text, re.MULTILINE), setting


def test_provisioned_dashboards_come_from_the_mounted_directory() -> None:
    text = (GRAFANA / "provisioning" / "dashboards" / "raftd.yml").read_text()
    assert re.search(r"^apiVersion: 1\s*$", text, re.MULTILINE)
    assert re.search(r"^\s+type: file\s*$", text, re.MULTILINE)
    assert re.search(r"^\s+path: /var/lib/grafana/dashboards\s*$", text, re.MULTILINE)
    # What compose mounts there: this directory, holding the dashboard.
    assert [p.name for p in DASHBOARD.parent.glob("*.json")] == ["raftd.json"]
