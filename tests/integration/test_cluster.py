"""Three real raftd processes on 127.0.0.1: elections, writes, crashes, partitions."""

from __future__ import annotations

import itertools

import trio

from tests.integration.harness import Cluster
from wire.api import (
    CasRequest,
    ClientReply,
    DeleteRequest,
    ErrorCode,
    ErrorReply,
    GetReply,
    GetRequest,
    SetRequest,
    WriteReply,
)


class Writer:
    """A client session that follows redirects and retries a write with the same sequence
    number until it gets a definite answer: what raftctl does, reduced to the essentials."""

    _ids = itertools.count(1)

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.client_id = f"writer-{next(self._ids)}"
        self.seq = 0
        self.leader = next(iter(cluster.members))

    async def set(self, key: str, value: str, timeout_s: float = 10.0) -> WriteReply:
        self.seq += 1
        request = SetRequest(key, value, self.client_id, self.seq)
        with trio.fail_after(timeout_s):
            while True:
                reply = await self._try(request)
                if isinstance(reply, WriteReply):
                    return reply
                await trio.sleep(0.02)

    async def _try(self, request: object) -> ClientReply | None:
        if self.cluster.members[self.leader].process is None:
            self.leader = self._next_member()
        try:
            reply = await self.cluster.request(self.leader, request, timeout_s=2.0)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, AssertionError):
            self.leader = self._next_member()
            return None
        if isinstance(reply, ErrorReply):
            if reply.code == ErrorCode.NOT_LEADER and reply.leader:
                self.leader = reply.leader
            elif reply.definite and reply.code != ErrorCode.NO_LEADER:
                raise AssertionError(f"definite failure: {reply}")
            else:
                self.leader = self._next_member()
            return None
        return reply

    def _next_member(self) -> str:
        names = [n for n, m in self.cluster.members.items() if m.process is not None]
        return (
            names[(names.index(self.leader) + 1) % len(names)]
            if self.leader in names
            else (names[0])
        )


async def to_leader(cluster: Cluster, request: object) -> ClientReply:
    """Send to whoever leads now; a leader change mid-test (a slow CI machine can miss a
    heartbeat) redirects, and the same request goes to the new leader."""
    with trio.fail_after(30):
        while True:
            leader = await cluster.wait_for_leader()
            reply = await cluster.request(leader, request)
            if not (
                isinstance(reply, ErrorReply)
                and reply.code in (ErrorCode.NOT_LEADER, ErrorCode.NO_LEADER)
            ):
                return reply


async def get(cluster: Cluster, name: str, key: str) -> GetReply:
    reply = await cluster.request(name, GetRequest(key))
    assert isinstance(reply, GetReply), reply
    return reply


async def test_one_leader_serves_writes_and_reads_and_followers_redirect(
    cluster: Cluster,
) -> None:
    leader = await cluster.wait_for_leader()
    follower = next(n for n in cluster.members if n != leader)

    assert await cluster.request(leader, SetRequest("k", "v1", "c", 1)) == WriteReply(
        True, "v1", True, 2
    )
    assert (await get(cluster, leader, "k")).value == "v1"
    swapped = await cluster.request(leader, CasRequest("k", "v1", "v2", "c", 2))
    assert isinstance(swapped, WriteReply) and swapped.ok and swapped.value == "v2"
    refused = await cluster.request(leader, CasRequest("k", "v1", "v3", "c", 3))
    assert isinstance(refused, WriteReply) and not refused.ok and refused.value == "v2"
    created = await cluster.request(leader, CasRequest("new", None, "x", "c", 4))
    assert isinstance(created, WriteReply) and created.ok
    deleted = await cluster.request(leader, DeleteRequest("new", "c", 5))
    assert isinstance(deleted, WriteReply) and deleted.ok
    assert not (await get(cluster, leader, "new")).found

    redirect = await cluster.request(follower, SetRequest("k", "v9", "c", 6))
    assert isinstance(redirect, ErrorReply) and redirect.code == ErrorCode.NOT_LEADER
    assert redirect.definite and redirect.leader == leader
    assert redirect.leader_addr == cluster.members[leader].client_addr

    with trio.fail_after(5):  # the follower applies what the leader committed
        while True:
            stale = await cluster.request(follower, GetRequest("k", max_staleness_s=2.0))
            if isinstance(stale, GetReply) and stale.value == "v2":
                break
            await trio.sleep(0.02)
    assert stale.stale and stale.served_by == follower
    assert stale.max_age_s is not None and stale.max_age_s <= 2.0


async def test_a_retried_write_applies_once(cluster: Cluster) -> None:
    first = await to_leader(cluster, CasRequest("once", None, "a", "s", 1))
    await to_leader(cluster, SetRequest("once", "b", "other", 1))
    retry = await to_leader(cluster, CasRequest("once", None, "a", "s", 1))
    # The cached answer of the first attempt, not a second cas (which would fail now).
    assert isinstance(first, WriteReply) and isinstance(retry, WriteReply)
    assert (retry.ok, retry.value, retry.found) == (first.ok, first.value, first.found)
    read = await to_leader(cluster, GetRequest("once"))
    assert isinstance(read, GetReply) and read.value == "b"


async def test_forwarding_relays_a_followers_request_to_the_leader(cluster: Cluster) -> None:
    leader = await cluster.wait_for_leader()
    follower = next(n for n in cluster.members if n != leader)
    with trio.fail_after(5):  # followers learn the leader's client address from its Hello
        while True:
            status = (await cluster.statuses([follower])).get(follower)
            if status is not None and status.leader_addr:
                break
            await trio.sleep(0.02)
    reply = await cluster.request(follower, SetRequest("fwd", "x", "f", 1, forward=True))
    assert isinstance(reply, WriteReply) and reply.ok
    read = await cluster.request(follower, GetRequest("fwd", forward=True))
    assert isinstance(read, GetReply) and read.value == "x" and read.served_by == leader


async def test_killing_the_leader_under_load_loses_no_acknowledged_write(
    cluster: Cluster,
) -> None:
    old = await cluster.wait_for_leader()
    acknowledged: dict[str, str] = {}
    after_kill: list[float] = []
    killed_at: list[float] = []

    async def write_forever(writer: Writer, prefix: str) -> None:
        for n in itertools.count():
            key = f"{prefix}-{n}"
            started = trio.current_time()
            await writer.set(key, key)
            acknowledged[key] = key
            if killed_at and started > killed_at[0] and not after_kill:
                after_kill.append(trio.current_time())

    async with trio.open_nursery() as load:
        for w in range(4):
            load.start_soon(write_forever, Writer(cluster), f"w{w}")
        with trio.fail_after(10):
            while len(acknowledged) < 50:
                await trio.sleep(0.01)
        killed_at.append(trio.current_time())
        await cluster.kill(old)
        with trio.fail_after(10):
            while not after_kill:
                await trio.sleep(0.01)
        with trio.fail_after(10):
            target = len(acknowledged) + 50
            while len(acknowledged) < target:
                await trio.sleep(0.01)
        load.cancel_scope.cancel()

    failover_s = after_kill[0] - killed_at[0]
    assert failover_s < 2.0, f"first write after the kill took {failover_s:.2f} s"
    new = await cluster.wait_for_leader(among=[n for n in cluster.members if n != old])
    for key, value in acknowledged.items():
        assert (await get(cluster, new, key)).value == value

    await cluster.start_member(old)  # it comes back and catches up
    with trio.fail_after(15):
        while True:
            statuses = await cluster.statuses()
            if old in statuses and statuses[old].last_applied >= statuses[new].commit_index:
                break
            await trio.sleep(0.05)


async def test_restarting_every_member_keeps_the_data(cluster: Cluster) -> None:
    leader = await cluster.wait_for_leader()
    writer = Writer(cluster)
    for n in range(20):
        await writer.set(f"k{n}", f"v{n}")
    for name in cluster.members:
        assert await cluster.stop(name) == 0  # SIGTERM: a clean shutdown, exit status 0
    for name in cluster.members:
        await cluster.start_member(name)
    leader = await cluster.wait_for_leader()
    for n in range(20):
        assert (await get(cluster, leader, f"k{n}")).value == f"v{n}"

    for name in cluster.members:  # and again after kill -9 of everyone at once
        await cluster.kill(name)
    for name in cluster.members:
        await cluster.start_member(name)
    leader = await cluster.wait_for_leader()
    for n in range(20):
        assert (await get(cluster, leader, f"k{n}")).value == f"v{n}"


async def test_a_leader_cut_off_from_the_majority_serves_no_read_and_acks_no_write(
    cluster: Cluster,
) -> None:
    old = await cluster.wait_for_leader()
    writer = Writer(cluster)
    await writer.set("k", "before")
    await cluster.isolate(old)

    write = await cluster.request(old, SetRequest("k", "during", "cut", 1), timeout_s=10)
    read = await cluster.request(old, GetRequest("k"), timeout_s=10)
    assert not isinstance(write, WriteReply), write
    assert isinstance(write, ErrorReply) and (
        not write.definite or write.code in (ErrorCode.NO_LEADER, ErrorCode.NOT_LEADER)
    )
    assert not isinstance(read, GetReply), read

    majority = [n for n in cluster.members if n != old]
    new = await cluster.wait_for_leader(among=majority)
    assert new != old
    await writer.set("k", "after")
    cluster.heal()
    with trio.fail_after(15):  # the old leader rejoins as a follower and catches up
        while True:
            statuses = await cluster.statuses()
            top = max(s.term for s in statuses.values())
            if old in statuses and statuses[old].role == "follower" and statuses[old].term == top:
                break
            await trio.sleep(0.05)
    leader = await cluster.wait_for_leader()
    assert (await get(cluster, leader, "k")).value == "after"
