"""Watches against three real members: every change once, in order, across a member's
death, with lease expiries; raftctl watch; a watcher that stops reading is dropped."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import trio

from cli.client import Client
from raftd.kv import prefix_end
from tests.integration.harness import ROOT, Cluster
from wire.api import CLIENT_REGISTRY, WatchEvent, WatchRequest
from wire.codec import Header
from wire.stream import FramedStream


async def collect(
    client: Client, start: str, end: str | None, into: list[WatchEvent], start_revision: int
) -> None:
    changes = client.watch(start, end, start_revision=start_revision)
    async with contextlib.aclosing(changes) as events:
        async for event in events:
            into.append(event)


async def test_a_watch_sees_every_change_once_across_a_member_failure(cluster: Cluster) -> None:
    seen: list[WatchEvent] = []
    async with (
        Client(cluster.endpoints, tls=cluster.client_tls) as writer,
        Client(cluster.endpoints, tls=cluster.client_tls) as watching,
        trio.open_nursery() as nursery,
    ):
        first = await writer.set("w/0", "start")
        # From the first write's revision on: the watch starts after it, misses nothing.
        nursery.start_soon(collect, watching, "w/", prefix_end("w/"), seen, first.index)
        expected: list[tuple[str, str | None, int]] = [("w/0", "start", first.index)]
        for i in range(1, 40):
            if i == 15:
                await cluster.kill("n1")  # the watch's first member (endpoints in order)
            reply = await writer.set(f"w/{i % 7}", f"v{i}")
            expected.append((f"w/{i % 7}", f"v{i}", reply.index))
        removed = await writer.delete_range("w/", prefix_end("w/"))
        expected += [(f"w/{k}", None, removed.index) for k in range(7)]
        with trio.fail_after(30):
            while len(seen) < len(expected):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert [(e.key, e.value, e.revision) for e in seen] == expected


async def test_a_lease_expiry_is_watched_as_deletes(cluster: Cluster) -> None:
    seen: list[WatchEvent] = []
    async with (
        Client(cluster.endpoints, tls=cluster.client_tls) as client,
        trio.open_nursery() as nursery,
    ):
        now = (await client.get("eph/")).revision  # every later change is after it
        nursery.start_soon(collect, client, "eph/", prefix_end("eph/"), seen, now + 1)
        lease = await client.lease_grant(1)
        await client.set("eph/a", "1", lease=lease.lease)
        await client.set("eph/b", "2", lease=lease.lease)
        with trio.fail_after(30):
            while len(seen) < 4:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    puts, deletes = seen[:2], seen[2:]
    assert [e.key for e in puts] == ["eph/a", "eph/b"] and puts[0].lease == lease.lease
    assert [(e.key, e.value) for e in deletes] == [("eph/a", None), ("eph/b", None)]
    assert deletes[0].revision == deletes[1].revision  # one revocation, one revision


async def test_raftctl_watch_prints_changes_and_stops_on_sigterm(cluster: Cluster) -> None:
    argv = [sys.executable, "-m", "cli", "--endpoints", ",".join(cluster.endpoints)]
    out: list[bytes] = []
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        before = await client.set("cfg", "old")
        process = await trio.lowlevel.open_process(
            [*argv, "watch", "cfg", "--from-revision", str(before.index)],
            cwd=ROOT,
            env={**os.environ, **cluster.raftctl_env},
            stdout=-1,
        )
        assert process.stdout is not None
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                assert process.stdout is not None
                async for chunk in process.stdout:
                    out.append(bytes(chunk))

            nursery.start_soon(read)
            after = await client.set("cfg", "new")
            await client.set("other", "ignored")
            await client.delete("cfg")
            with trio.fail_after(20):
                while b"".join(out).count(b"\n") < 3:
                    await trio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert b"".join(out).decode().splitlines() == [
        f"put cfg old (revision {before.index})",
        f"put cfg new (revision {after.index})",
        f"delete cfg (revision {after.index + 2})",
    ]


async def test_a_watcher_that_stops_reading_is_dropped_not_buffered(
    plaintext_cluster: Cluster,
) -> None:
    """A client that asks for a watch and never reads: the member holds at most its
    bound of frames for it, then ends the watch with a reason, and serves on."""
    cluster = plaintext_cluster
    leader = await cluster.wait_for_leader()
    member = cluster.members[leader]
    tcp = await trio.open_tcp_stream("127.0.0.1", member.client_port)
    stream = FramedStream(tcp, CLIENT_REGISTRY)
    await stream.send(Header("WatchRequest", 1), WatchRequest("big/", prefix_end("big/")))
    value = "x" * 60_000
    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        with trio.fail_after(60):
            i = 0
            while "read too slowly" not in cluster.log_text(leader):
                await client.set(f"big/{i % 50}", value)
                i += 1
        assert (await client.get("big/0")).found  # the member still serves
    await stream.aclose()
