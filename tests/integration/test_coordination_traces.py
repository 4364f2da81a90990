"""What docs/locking.md promises of the traces: a lock acquisition, a lease's expiry and a
watch delivery each show up as one trace across the members."""

from __future__ import annotations

import contextlib
from pathlib import Path

import trio

from cli.client import Client
from observability.filexport import SpanRecord
from tests.integration.harness import Cluster
from tests.integration.test_traces import raftctl, wait_for_spans
from wire.api import WatchEvent


def in_trace_of(spans: list[SpanRecord], root_name: str) -> set[tuple[str | None, str]]:
    """(member or raftctl, span name) of every span in the trace of the first root named so."""
    roots = [s for s in spans if s["name"] == root_name]
    if not roots:
        return set()
    trace_id = roots[0]["trace_id"]
    return {(s["service_instance_id"], s["name"]) for s in spans if s["trace_id"] == trace_id}


async def test_a_lock_acquisition_is_one_trace_into_the_leader(
    cluster: Cluster, tmp_path: Path
) -> None:
    leader = await cluster.wait_for_leader()
    trace_file = tmp_path / "raftctl" / "traces.jsonl"
    assert await raftctl(cluster, trace_file, "lock", "traced", "--", "true") == 0
    needed = {(leader, f"kv.{op}") for op in ("lease_grant", "cas", "range", "lease_revoke")}

    def whole(spans: list[SpanRecord]) -> bool:
        return needed <= in_trace_of(spans, "raftctl lock")

    spans = await wait_for_spans(tmp_path, whole)
    names = {name for _, name in in_trace_of(spans, "raftctl lock")}
    assert {"client.lease_grant", "client.cas", "client.range", "client.lease_revoke"} <= names


async def test_a_lease_expiry_is_a_trace_from_the_leaders_decision_to_every_apply(
    cluster: Cluster,
) -> None:
    leader = await cluster.wait_for_leader()
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        lease = await client.lease_grant(1)
        await client.set("expiring", "v", lease=lease.lease)
    followers = {n for n in cluster.members if n != leader}
    needed = {(leader, "lease.expire"), (leader, "raft.apply")}
    needed |= {(follower, "raft.apply") for follower in followers}

    def whole(spans: list[SpanRecord]) -> bool:
        return needed <= in_trace_of(spans, "lease.expire")

    spans = await wait_for_spans(cluster.base, whole, timeout_s=30)
    decision = next(s for s in spans if s["name"] == "lease.expire")
    assert decision["attributes"]["raftd.lease"] == lease.lease
    assert decision["attributes"]["raftd.keys_deleted"] == 1


async def test_a_watch_delivery_joins_the_trace_of_the_write(
    cluster: Cluster, tmp_path: Path
) -> None:
    seen: list[WatchEvent] = []
    async with (
        Client(cluster.endpoints, tls=cluster.client_tls) as client,
        trio.open_nursery() as nursery,
    ):
        now = (await client.get("watched")).revision

        async def follow() -> None:
            changes = client.watch("watched", "watched\0", start_revision=now + 1)
            async with contextlib.aclosing(changes) as events:
                async for event in events:
                    seen.append(event)

        nursery.start_soon(follow)
        trace_file = tmp_path / "raftctl" / "traces.jsonl"
        assert await raftctl(cluster, trace_file, "set", "watched", "v") == 0
        with trio.fail_after(20):
            while not seen:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    # The watch was served by the first endpoint's member.
    watcher_member = next(iter(cluster.members))

    def delivered(spans: list[SpanRecord]) -> bool:
        return (watcher_member, "watch.deliver") in in_trace_of(spans, "raftctl set")

    spans = await wait_for_spans(tmp_path, delivered)
    delivery = next(s for s in spans if s["name"] == "watch.deliver")
    assert delivery["attributes"]["raftd.watch.key"] == "watched"
    assert delivery["attributes"]["raft.index"] == seen[0].revision
