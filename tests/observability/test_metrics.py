"""The member's Prometheus metrics: what each hook moves, what a scrape reads, and that the
exposition stays well-formed and bounded enough for promtool and a Prometheus server."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from observability.metrics import (
    CHAOS_KINDS,
    CLIENT_OPS,
    CLIENT_OUTCOMES,
    LEADER_TRANSFER_OUTCOMES,
    MAX_LABEL_VALUES,
    MESSAGE_KINDS,
    OTHER,
    ROLES,
    SAMPLER_REASONS,
    SNAPSHOT_KINDS,
    TRANSFER_SIDES,
    NodeState,
    RaftMetrics,
    render,
    serve_metrics,
)
from raftd.config import Address

Labels = dict[str, str]
Expected = list[tuple[str, Labels, float]]

ALLOWED_LABEL_NAMES = {
    "phase",
    "kind",
    "reason",
    "op",
    "outcome",
    "sampled",
    "role",
    "le",
    "port",
    "side",
}

FAMILIES = {
    "raftd_term",
    "raftd_is_leader",
    "raftd_role",
    "raftd_commit_index",
    "raftd_applied_index",
    "raftd_last_log_index",
    "raftd_snapshot_index",
    "raftd_log_entries",
    "raftd_snapshots",
    "raftd_snapshot_duration_seconds",
    "raftd_snapshot_bytes",
    "raftd_snapshot_transfers_cut",
    "raftd_leader_transfers",
    "raftd_cluster_members",
    "raftd_is_learner",
    "raftd_elections_started",
    "raftd_leader_changes",
    "raftd_leases_expired",
    "raftd_messages_sent",
    "raftd_messages_received",
    "raftd_messages_dropped",
    "raftd_chaos_injections",
    "raftd_client_requests",
    "raftd_client_request_duration_seconds",
    "raftd_rpc_duration_seconds",
    "raftd_fsync_duration_seconds",
    "raftd_append_entries_batch_entries",
    "raftd_fsync_batch_entries",
    "raftd_spans_exported",
    "raftd_spans_failed",
    "raftd_sampler_decisions",
    "raftd_connections_closed_by_member",
    "raftd_bad_traceparents",
    "raftd_open_connections",
    "raftd_tls_reloads",
    "raftd_tls_certificate_expiry_timestamp_seconds",
}

LEADER = NodeState(
    term=7, role="leader", is_leader=True, commit_index=40, applied_index=39, last_log_index=42
)


def sample(metrics: RaftMetrics, name: str, labels: Labels | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def exercise(metrics: RaftMetrics) -> None:
    """Every hook and every binding once, so a check over the exposition sees every family
    with samples in it."""
    metrics.bind_state(lambda: LEADER)
    metrics.bind_span_counts(lambda: (12, 3))
    for kind in SNAPSHOT_KINDS:
        metrics.snapshot(kind, 0.25, 4096)
    for side in TRANSFER_SIDES:
        metrics.snapshot_transfer_cut(side)
    for outcome in LEADER_TRANSFER_OUTCOMES:
        metrics.leader_transfer(outcome)
    metrics.membership(3, 1)
    metrics.bind_sampler_totals(lambda: {"sampled": 1, "ratio": 2})
    metrics.election_started(pre_vote=True)
    metrics.election_started(pre_vote=False)
    metrics.leader_changed()
    for kind in MESSAGE_KINDS:
        metrics.message_sent(kind)
        metrics.message_received(kind)
    metrics.message_dropped("AppendEntries", "chaos")
    metrics.message_dropped("Heartbeat", "inbox_full")
    for chaos in CHAOS_KINDS:
        metrics.chaos_injected(chaos)
    metrics.client_request("set", "ok", 0.002)
    metrics.client_request("get", "redirected", 0.0004)
    metrics.rpc_completed("AppendEntries", 0.0008)
    metrics.rpc_completed("RequestVote", 0.003)
    metrics.fsync(0.004, 9)
    metrics.append_entries_sent(3)
    metrics.sampler_decision("rate_limited", False)
    metrics.connection_closed("client", "limit")
    metrics.bad_traceparent("peer")
    metrics.connection_opened("client")
    metrics.tls_reloaded("ok")
    metrics.tls_certificates({"peer": datetime(2030, 1, 1, tzinfo=UTC)})


def open_two_close_one(metrics: RaftMetrics) -> None:
    for delta in (1, 1, -1):
        metrics.connection_opened("client", delta)


HOOKS: list[tuple[str, Callable[[RaftMetrics], None], Expected]] = [
    (
        "pre-vote",
        lambda m: m.election_started(pre_vote=True),
        [
            ("raftd_elections_started_total", {"phase": "pre_vote"}, 1),
            ("raftd_elections_started_total", {"phase": "vote"}, 0),
        ],
    ),
    (
        "vote",
        lambda m: m.election_started(pre_vote=False),
        [
            ("raftd_elections_started_total", {"phase": "vote"}, 1),
            ("raftd_elections_started_total", {"phase": "pre_vote"}, 0),
        ],
    ),
    ("leader-changed", lambda m: m.leader_changed(), [("raftd_leader_changes_total", {}, 1)]),
    ("lease-expired", lambda m: m.lease_expired(), [("raftd_leases_expired_total", {}, 1)]),
    (
        "connection-closed",
        lambda m: m.connection_closed("peer", "frame_timeout"),
        [
            (
                "raftd_connections_closed_by_member_total",
                {"port": "peer", "reason": "frame_timeout"},
                1,
            ),
            ("raftd_connections_closed_by_member_total", {"port": "client", "reason": "limit"}, 0),
        ],
    ),
    (
        "bad-traceparent",
        lambda m: m.bad_traceparent("client"),
        [
            ("raftd_bad_traceparents_total", {"port": "client"}, 1),
            ("raftd_bad_traceparents_total", {"port": "peer"}, 0),
        ],
    ),
    (
        "connections-open",
        lambda m: open_two_close_one(m),
        [
            ("raftd_open_connections", {"port": "client"}, 1),
            ("raftd_open_connections", {"port": "peer"}, 0),
        ],
    ),
    (
        "sent",
        lambda m: m.message_sent("AppendEntries"),
        [("raftd_messages_sent_total", {"kind": "AppendEntries"}, 1)],
    ),
    (
        "received",
        lambda m: m.message_received("HeartbeatResponse"),
        [("raftd_messages_received_total", {"kind": "HeartbeatResponse"}, 1)],
    ),
    (
        "dropped",
        lambda m: m.message_dropped("RequestVote", "disconnected"),
        [("raftd_messages_dropped_total", {"kind": "RequestVote", "reason": "disconnected"}, 1)],
    ),
    (
        "chaos",
        lambda m: m.chaos_injected("fsync_delay"),
        [
            ("raftd_chaos_injections_total", {"kind": "fsync_delay"}, 1),
            ("raftd_chaos_injections_total", {"kind": "drop"}, 0),
        ],
    ),
    (
        "client-request",
        lambda m: m.client_request("cas", "not_swapped", 0.0007),
        [
            ("raftd_client_requests_total", {"op": "cas", "outcome": "not_swapped"}, 1),
            ("raftd_client_requests_total", {"op": "cas", "outcome": "ok"}, 0),
            ("raftd_client_request_duration_seconds_count", {"op": "cas"}, 1),
            ("raftd_client_request_duration_seconds_sum", {"op": "cas"}, 0.0007),
            ("raftd_client_request_duration_seconds_bucket", {"op": "cas", "le": "0.0005"}, 0),
            ("raftd_client_request_duration_seconds_bucket", {"op": "cas", "le": "0.001"}, 1),
        ],
    ),
    (
        "rpc",
        lambda m: m.rpc_completed("RequestVote", 0.002),
        [
            ("raftd_rpc_duration_seconds_count", {"kind": "RequestVote"}, 1),
            ("raftd_rpc_duration_seconds_sum", {"kind": "RequestVote"}, 0.002),
            ("raftd_rpc_duration_seconds_count", {"kind": "AppendEntries"}, 0),
        ],
    ),
    (
        "fsync",
        lambda m: m.fsync(0.004, 5),
        [
            ("raftd_fsync_duration_seconds_count", {}, 1),
            ("raftd_fsync_duration_seconds_sum", {}, 0.004),
            ("raftd_fsync_batch_entries_count", {}, 1),
            ("raftd_fsync_batch_entries_sum", {}, 5),
            ("raftd_fsync_batch_entries_bucket", {"le": "4.0"}, 0),
            ("raftd_fsync_batch_entries_bucket", {"le": "8.0"}, 1),
        ],
    ),
    (
        "append-entries",
        lambda m: m.append_entries_sent(3),
        [
            ("raftd_append_entries_batch_entries_count", {}, 1),
            ("raftd_append_entries_batch_entries_sum", {}, 3),
            ("raftd_append_entries_batch_entries_bucket", {"le": "2.0"}, 0),
            ("raftd_append_entries_batch_entries_bucket", {"le": "4.0"}, 1),
        ],
    ),
    (
        "sampler",
        lambda m: m.sampler_decision("client_declined", False),
        [
            ("raftd_sampler_decisions_total", {"reason": "client_declined", "sampled": "false"}, 1),
            ("raftd_sampler_decisions_total", {"reason": "client_declined", "sampled": "true"}, 0),
        ],
    ),
]


@pytest.mark.parametrize(
    ("hook", "expected"), [(h, e) for _, h, e in HOOKS], ids=[name for name, *_ in HOOKS]
)
def test_each_hook_moves_its_samples(
    hook: Callable[[RaftMetrics], None], expected: Expected
) -> None:
    metrics = RaftMetrics()
    exercise(metrics)  # the hook must move its own series, not merely create them
    before = [sample(metrics, name, labels) for name, labels, _ in expected]
    hook(metrics)
    for (name, labels, delta), old in zip(expected, before, strict=True):
        assert sample(metrics, name, labels) - old == pytest.approx(delta), (name, labels)


def test_closed_label_sets_exist_at_zero_before_any_event() -> None:
    # rate() and alerts on absent series work from the first scrape.
    metrics = RaftMetrics()
    registry = metrics.registry
    for phase in ("pre_vote", "vote"):
        assert registry.get_sample_value("raftd_elections_started_total", {"phase": phase}) == 0
    for kind in CHAOS_KINDS:
        assert registry.get_sample_value("raftd_chaos_injections_total", {"kind": kind}) == 0
    for op in CLIENT_OPS:
        count = registry.get_sample_value("raftd_client_request_duration_seconds_count", {"op": op})
        assert count == 0
        for outcome in CLIENT_OUTCOMES:
            labels = {"op": op, "outcome": outcome}
            assert registry.get_sample_value("raftd_client_requests_total", labels) == 0


def test_state_gauges_are_read_from_the_bound_source_at_each_scrape() -> None:
    metrics = RaftMetrics()
    assert metrics.registry.get_sample_value("raftd_term") is None  # unbound: no made-up zeros
    current = [NodeState(3, "follower", False, 10, 9, 12)]
    metrics.bind_state(lambda: current[0])
    assert sample(metrics, "raftd_term") == 3
    assert sample(metrics, "raftd_is_leader") == 0
    assert sample(metrics, "raftd_commit_index") == 10
    assert sample(metrics, "raftd_applied_index") == 9
    assert sample(metrics, "raftd_last_log_index") == 12
    assert {role: sample(metrics, "raftd_role", {"role": role}) for role in ROLES} == {
        "follower": 1,
        "pre-candidate": 0,
        "candidate": 0,
        "leader": 0,
    }
    current[0] = LEADER
    assert sample(metrics, "raftd_term") == 7
    assert sample(metrics, "raftd_is_leader") == 1
    assert sample(metrics, "raftd_role", {"role": "leader"}) == 1
    assert sample(metrics, "raftd_role", {"role": "follower"}) == 0
    metrics.bind_state(None)
    assert metrics.registry.get_sample_value("raftd_term") is None


def test_span_counts_are_read_from_the_exporter_at_each_scrape() -> None:
    metrics = RaftMetrics()
    assert metrics.registry.get_sample_value("raftd_spans_exported_total") is None
    counts = [(5, 1)]
    metrics.bind_span_counts(lambda: counts[0])
    assert sample(metrics, "raftd_spans_exported_total") == 5
    assert sample(metrics, "raftd_spans_failed_total") == 1
    counts[0] = (8, 2)
    assert sample(metrics, "raftd_spans_exported_total") == 8
    assert sample(metrics, "raftd_spans_failed_total") == 2


def test_sampler_totals_counted_elsewhere_are_folded_in_once() -> None:
    metrics = RaftMetrics()
    decisions = {"sampled": 1, "parent_dropped": 4}
    metrics.bind_sampler_totals(lambda: decisions)
    for _ in range(3):  # repeated scrapes must not add the same total again
        assert (
            sample(
                metrics, "raftd_sampler_decisions_total", {"reason": "sampled", "sampled": "true"}
            )
            == 1
        )
    decisions["sampled"] = 3
    assert (
        sample(metrics, "raftd_sampler_decisions_total", {"reason": "sampled", "sampled": "true"})
        == 3
    )


def test_values_outside_a_closed_label_set_are_reported_as_other() -> None:
    metrics = RaftMetrics()
    metrics.message_dropped("AppendEntries", "cosmic_ray")
    metrics.chaos_injected("meteor")
    metrics.client_request("scan", "exploded", 0.001)
    labels = {"kind": "AppendEntries", "reason": OTHER}
    assert sample(metrics, "raftd_messages_dropped_total", labels) == 1
    assert sample(metrics, "raftd_chaos_injections_total", {"kind": OTHER}) == 1
    assert sample(metrics, "raftd_client_requests_total", {"op": OTHER, "outcome": OTHER}) == 1
    assert sample(metrics, "raftd_client_request_duration_seconds_count", {"op": OTHER}) == 1


def test_open_label_sets_stop_growing_at_their_cap() -> None:
    metrics = RaftMetrics()
    for i in range(10 * MAX_LABEL_VALUES):
        metrics.message_sent(f"Kind{i}")
        metrics.sampler_decision(f"reason{i}", i % 2 == 0)
    families = {f.name: f for f in metrics.registry.collect()}
    sent = {s.labels["kind"] for s in families["raftd_messages_sent"].samples}
    assert len(sent) == MAX_LABEL_VALUES + 1
    assert OTHER in sent
    reasons = {s.labels["reason"] for s in families["raftd_sampler_decisions"].samples}
    assert len(reasons) == MAX_LABEL_VALUES + 1
    assert sample(metrics, "raftd_messages_sent_total", {"kind": OTHER}) == (
        10 * MAX_LABEL_VALUES - MAX_LABEL_VALUES
    )


def test_documented_sampler_reasons_are_all_admitted() -> None:
    metrics = RaftMetrics()
    for reason in SAMPLER_REASONS:
        metrics.sampler_decision(reason, reason in ("sampled", "parent_sampled"))
    for reason in SAMPLER_REASONS:
        sampled = "true" if reason in ("sampled", "parent_sampled") else "false"
        labels = {"reason": reason, "sampled": sampled}
        assert sample(metrics, "raftd_sampler_decisions_total", labels) == 1


def test_every_family_is_present_prefixed_and_bounded_in_its_label_names() -> None:
    metrics = RaftMetrics()
    exercise(metrics)
    families = list(metrics.registry.collect())
    assert {f.name for f in families} == FAMILIES
    for family in families:
        assert family.name.startswith("raftd_"), family.name
        assert family.samples, family.name
        for s in family.samples:
            assert s.name.startswith("raftd_"), s.name
            assert set(s.labels) <= ALLOWED_LABEL_NAMES, (s.name, s.labels)


def test_metrics_stay_out_of_the_global_registry() -> None:
    # Members of an in-process cluster, and tests, would otherwise see each other's counts.
    first, second = RaftMetrics(), RaftMetrics()
    first.leader_changed()
    assert sample(first, "raftd_leader_changes_total") == 1
    assert sample(second, "raftd_leader_changes_total") == 0
    assert not [f.name for f in REGISTRY.collect() if f.name.startswith("raftd_")]


def test_exposition_parses() -> None:
    metrics = RaftMetrics()
    exercise(metrics)
    text = render(metrics).decode()
    parsed = {f.name for f in text_string_to_metric_families(text)}
    assert parsed >= FAMILIES


def test_promtool_check_metrics_reports_nothing() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed; it comes with Debian's prometheus package: "
            "run `apt-get install -y prometheus`"
        )
    metrics = RaftMetrics()
    exercise(metrics)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=render(metrics),
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, report
    assert report == ""


def test_serve_metrics_serves_the_registry_over_http() -> None:
    metrics = RaftMetrics()
    metrics.bind_state(lambda: LEADER)
    metrics.leader_changed()
    server = serve_metrics(Address("127.0.0.1", 0), metrics)
    try:
        assert server.port != 0
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            content_type = response.headers["Content-Type"]
            body = response.read().decode()
    finally:
        server.close()
    assert content_type.startswith("text/plain")
    assert "raftd_leader_changes_total 1.0" in body
    assert "raftd_term 7.0" in body
    assert 'raftd_role{role="leader"} 1.0' in body
