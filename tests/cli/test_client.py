"""The client library against scripted fake members: where requests go, when they are
retried and with which sequence number, and what each kind of failure turns into.

Deadlines are short and back-offs tiny so the retry loops run fast; no test sleeps for a
fixed time, they wait for what the fake members recorded.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from cli.client import (
    CODE_BUSY,
    CallStats,
    Client,
    ClientError,
    DefiniteError,
    Unavailable,
    UnknownOutcome,
    _Backoff,
    parse_endpoint,
)
from tests.cli.fakeserver import (
    ClosedPort,
    Drop,
    FakeKV,
    FakeNode,
    Garbage,
    Misaddressed,
    Received,
    ReplyThenClose,
    Response,
    ThenStop,
    no_leader,
    not_leader,
    start,
)
from wire.api import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    CasRequest,
    DeleteRequest,
    ErrorCode,
    ErrorReply,
    GetReply,
    GetRequest,
    SetRequest,
    StatusReply,
)


@asynccontextmanager
async def client(endpoints: list[str], **kwargs: Any) -> AsyncIterator[Client]:
    settings: dict[str, Any] = {
        "timeout_s": 2.0,
        "attempt_timeout_s": 1.0,
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.01,
    }
    settings.update(kwargs)
    async with Client(endpoints, **settings) as c:
        yield c


@pytest.fixture
def closed_port() -> Iterator[ClosedPort]:
    port = ClosedPort()
    yield port
    port.close()


async def leader(nursery: trio.Nursery, name: str = "n1") -> tuple[FakeNode, FakeKV]:
    kv = FakeKV(name)
    node = await start(nursery, name, kv.handle)
    kv.endpoint = node.endpoint
    return node, kv


async def never(_: Received) -> Response:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


def write_ids(node: FakeNode) -> list[tuple[str, int]]:
    return [
        (r.request.client_id, r.request.seq)
        for r in node.received
        if isinstance(r.request, SetRequest | CasRequest | DeleteRequest)
    ]


# ----------------------------------------------------------------- basics


async def test_operations_against_a_leader(nursery: trio.Nursery) -> None:
    node, kv = await leader(nursery)
    async with client([node.endpoint]) as c:
        assert (await c.set("k", "v")).ok
        assert await c.get("k") == GetReply(True, "v", "n1")
        swapped = await c.cas("k", "v", "w")
        assert (swapped.ok, swapped.value) == (True, "w")
        refused = await c.cas("k", "v", "x")
        assert (refused.ok, refused.value, refused.found) == (False, "w", True)
        assert (await c.cas("new", None, "first")).ok
        assert (await c.delete("k")).ok
        assert not (await c.delete("k")).ok
        assert await c.get("k") == GetReply(False, None, "n1")
        assert c.leader_endpoint == node.endpoint
    assert kv.data == {"new": "first"}
    assert node.connections == 1  # one persistent connection for everything


async def test_sequence_numbers_start_at_one_and_grow_per_write(nursery: trio.Nursery) -> None:
    node, _ = await leader(nursery)
    async with client([node.endpoint], client_id="me") as c:
        await c.set("a", "1")
        await c.get("a")
        await c.cas("a", "1", "2")
        stats = CallStats()
        await c.delete("a", stats=stats)
    assert write_ids(node) == [("me", 1), ("me", 2), ("me", 3)]
    assert (stats.operation, stats.client_id, stats.seq, stats.attempts) == ("delete", "me", 3, 1)


async def test_default_client_id_is_a_random_hex_session_id() -> None:
    first, second = Client(["127.0.0.1:1"]), Client(["127.0.0.1:1"])
    assert first.client_id != second.client_id
    assert len(first.client_id) == 32 and int(first.client_id, 16) >= 0


# -------------------------------------------------------------- redirects


async def test_follows_a_redirect_and_remembers_the_leader(nursery: trio.Nursery) -> None:
    n2, kv = await leader(nursery, "n2")
    n1 = await start(nursery, "n1", lambda _: _ready(not_leader("n2", n2.endpoint)))
    async with client([n1.endpoint, n2.endpoint]) as c:
        stats = CallStats()
        reply = await c.set("k", "v", stats=stats)
        assert reply.ok
        assert (stats.attempts, stats.redirects, stats.endpoint) == (2, 1, n2.endpoint)
        assert c.leader_endpoint == n2.endpoint
        await c.get("k")  # straight to the leader now
    assert len(n1.received) == 1
    assert write_ids(n2) == [write_ids(n2)[0]]
    assert kv.data == {"k": "v"}


async def test_follows_a_redirect_to_an_address_it_was_not_given(nursery: trio.Nursery) -> None:
    n2, _ = await leader(nursery, "n2")
    n1 = await start(nursery, "n1", lambda _: _ready(not_leader("n2", n2.endpoint)))
    async with client([n1.endpoint]) as c:
        assert (await c.get("k")).served_by == "n2"
        assert c.leader_endpoint == n2.endpoint


async def test_a_redirect_loop_backs_off_and_ends_when_a_leader_emerges(
    nursery: trio.Nursery,
) -> None:
    kv = FakeKV("n2")
    n1 = FakeNode("n1", lambda _: _ready(not_leader("n2", n2.endpoint)))
    n2 = FakeNode("n2", lambda r: kv.handle(r) if len(n2.received) > 3 else _back_to_n1())

    async def _back_to_n1() -> Response:
        return not_leader("n1", n1.endpoint)

    await nursery.start(n1.serve)
    await nursery.start(n2.serve)
    async with client([n1.endpoint, n2.endpoint]) as c:
        stats = CallStats()
        assert (await c.set("k", "v", stats=stats)).ok
    assert stats.redirects == 7
    assert len(set(write_ids(n1) + write_ids(n2))) == 1  # every hop carried the same seq


async def test_no_leader_moves_on_to_the_next_endpoint(nursery: trio.Nursery) -> None:
    n1 = await start(nursery, "n1", lambda _: _ready(no_leader()))
    n2, _ = await leader(nursery, "n2")
    async with client([n1.endpoint, n2.endpoint]) as c:
        stats = CallStats()
        assert (await c.set("k", "v", stats=stats)).ok
    assert [a.endpoint for a in stats.history] == [n1.endpoint, n2.endpoint]
    assert stats.history[0].outcome == ErrorCode.NO_LEADER


async def test_a_refused_connection_moves_on_to_the_next_endpoint(
    nursery: trio.Nursery, closed_port: ClosedPort
) -> None:
    n2, _ = await leader(nursery, "n2")
    async with client([closed_port.endpoint, n2.endpoint]) as c:
        stats = CallStats()
        assert (await c.set("k", "v", stats=stats)).ok
    assert stats.history[0].outcome == "connect failed: connection refused"
    assert stats.history[0].request_id is None
    assert write_ids(n2) == [(stats.client_id, 1)]


# ----------------------------------------------------- retries, same seq


async def test_write_retried_after_a_dropped_connection_keeps_its_seq(
    nursery: trio.Nursery,
) -> None:
    kv = FakeKV("n1")

    async def drop_first_write(received: Received) -> Response:
        if isinstance(received.request, SetRequest) and len(write_ids(node)) == 1:
            return Drop()
        return await kv.handle(received)

    node = await start(nursery, "n1", drop_first_write)
    async with client([node.endpoint], client_id="c1") as c:
        stats = CallStats()
        assert (await c.set("k", "v", stats=stats)).ok
        await c.set("k", "w")
    assert write_ids(node) == [("c1", 1), ("c1", 1), ("c1", 2)]
    assert stats.attempts == 2
    assert stats.history[0].outcome.startswith("connection lost")
    assert node.connections == 2
    assert kv.applied == [SetRequest("k", "v", "c1", 1), SetRequest("k", "w", "c1", 2)]


@pytest.mark.parametrize("code", [ErrorCode.LEADERSHIP_LOST, ErrorCode.TIMEOUT])
async def test_indefinite_error_then_success_retries_with_the_same_seq(
    nursery: trio.Nursery, code: ErrorCode
) -> None:
    kv = FakeKV("n1")

    async def indefinite_first(received: Received) -> Response:
        if len(node.received) == 1:
            return ErrorReply(code, "maybe", False)
        return await kv.handle(received)

    node = await start(nursery, "n1", indefinite_first)
    async with client([node.endpoint], client_id="c1") as c:
        stats = CallStats()
        assert (await c.cas("k", None, "v", stats=stats)).ok
    assert write_ids(node) == [("c1", 1), ("c1", 1)]
    assert [a.outcome for a in stats.history] == [code, "ok"]


async def test_no_definite_answer_before_the_deadline_is_an_unknown_outcome(
    nursery: trio.Nursery,
) -> None:
    node = await start(nursery, "n1", never)
    async with client([node.endpoint], timeout_s=0.5, attempt_timeout_s=0.05) as c:
        with pytest.raises(UnknownOutcome) as caught:
            await c.set("k", "v")
    error = caught.value
    assert (error.code, error.definite) == (ErrorCode.TIMEOUT, False)
    assert error.message == f"no definite answer within 0.5 s ({node.endpoint}: no reply)"
    assert error.stats.attempts >= 2
    assert len(set(write_ids(node))) == 1  # every retry: same session, same seq
    assert error.stats.elapsed_s < 2


async def test_a_calls_deadline_ends_its_attempt_even_behind_a_later_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # A's second attempt starts at 6 and is cut by A's deadline, 10; B's attempt, sent at 5,
    # is due at 11. The timekeeper must end A's at 10, not after B's.
    node = await start(nursery, "n1", never)
    async with client([node.endpoint], timeout_s=10.0, attempt_timeout_s=6.0) as c:
        started = trio.current_time()
        ended: dict[str, float] = {}

        async def call(name: str) -> None:
            with pytest.raises(UnknownOutcome):
                await c.get(name)
            ended[name] = trio.current_time() - started

        async with trio.open_nursery() as calls:
            calls.start_soon(call, "a")
            await trio.sleep(5)
            calls.start_soon(call, "b")
    assert ended["a"] == pytest.approx(10.0, abs=0.05)
    assert ended["b"] == pytest.approx(15.0, abs=0.05)


async def test_a_write_that_finds_no_free_session_by_its_deadline_sends_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    node, _ = await leader(nursery)
    async with client([node.endpoint], timeout_s=3.0, write_sessions=1) as c:
        c._session_slots.acquire_nowait()  # another writer holds the only session
        with pytest.raises(Unavailable) as caught:
            await c.set("k", "v")
        c._session_slots.release()
        assert (await c.set("k", "v")).ok
    assert caught.value.code == CODE_BUSY
    assert "nothing was sent" in caught.value.message
    assert caught.value.stats.elapsed_s == pytest.approx(3.0, abs=0.05)
    assert len(write_ids(node)) == 1


async def test_an_unknown_outcome_is_sticky_after_later_definite_answers(
    nursery: trio.Nursery,
) -> None:
    # n1 loses the write (it may have been applied), n2 then says "no leader", and from then
    # on both refuse connections: nothing after the first attempt can settle the outcome.
    n1 = await start(nursery, "n1", lambda _: _ready(ThenStop(Drop())))
    n2 = await start(nursery, "n2", lambda _: _ready(ThenStop(no_leader())))
    async with client([n1.endpoint, n2.endpoint], timeout_s=0.2) as c:
        with pytest.raises(UnknownOutcome) as caught:
            await c.delete("k")
    error = caught.value
    assert error.code == "connection_lost"
    outcomes = [a.outcome for a in error.stats.history]
    assert outcomes[0].startswith("connection lost")
    assert outcomes[1] == ErrorCode.NO_LEADER
    # The deadline may cut the last connect short.
    assert set(outcomes[2:-1]) <= {"connect failed: connection refused"}
    assert outcomes[-1] in {"connect failed: connection refused", "connect timed out (deadline)"}
    assert f"{n2.endpoint}: no leader known, connection refused" in error.message


async def test_a_read_that_fails_indefinitely_is_retried(nursery: trio.Nursery) -> None:
    node, kv = await leader(nursery)
    kv.data["k"] = "v"
    handle = node.handler

    async def lose_first(received: Received) -> Response:
        return Drop() if len(node.received) == 1 else await handle(received)

    node.handler = lose_first
    async with client([node.endpoint]) as c:
        assert (await c.get("k")).value == "v"


async def test_a_late_reply_to_an_abandoned_attempt_is_ignored(nursery: trio.Nursery) -> None:
    first_may_answer = trio.Event()

    async def handler(received: Received) -> Response:
        if received.header.request_id == 1:
            await first_may_answer.wait()
            return GetReply(True, "late", "n1")
        first_may_answer.set()
        await node.wait_until(lambda: 1 in node.replied)
        return GetReply(True, "fresh", "n1")

    node = await start(nursery, "n1", handler)
    async with client([node.endpoint], attempt_timeout_s=0.05) as c:
        assert (await c.get("k")).value == "fresh"
    assert node.replied == [1, 2]
    assert node.connections == 1


async def test_a_connection_closed_by_the_server_is_replaced(nursery: trio.Nursery) -> None:
    kv = FakeKV("n1")

    async def close_after_answering(received: Received) -> Response:
        reply = await kv.handle(received)
        return ReplyThenClose(reply)

    node = await start(nursery, "n1", close_after_answering)
    async with client([node.endpoint], client_id="c1") as c:
        assert (await c.set("k", "1")).ok
        assert (await c.set("k", "2")).ok
        assert (await c.get("k")).value == "2"
    # Usually 3; 2 if a request slipped onto the first connection before the server closed
    # it. Either way the closed connection was replaced, and each write applied once.
    assert node.connections >= 2
    assert [(r.client_id, r.seq) for r in kv.applied] == [("c1", 1), ("c1", 2)]


# ------------------------------------------------------- hostile servers


async def test_garbage_bytes_drop_the_connection_and_the_write_is_retried(
    nursery: trio.Nursery,
) -> None:
    kv = FakeKV("n1")

    async def garbage_first(received: Received) -> Response:
        if received.connection == 1:
            return Garbage(b"\x00\x00\x00\x05hello")
        return await kv.handle(received)

    node = await start(nursery, "n1", garbage_first)
    async with client([node.endpoint], client_id="c1") as c:
        stats = CallStats()
        assert (await c.set("k", "v", stats=stats)).ok
    assert "garbled reply" in stats.history[0].outcome
    assert write_ids(node) == [("c1", 1), ("c1", 1)]
    assert node.connections == 2


async def test_a_reply_of_the_wrong_type_is_a_broken_connection(nursery: trio.Nursery) -> None:
    kv = FakeKV("n1")

    async def wrong_first(received: Received) -> Response:
        if received.connection == 1:
            return kv.status("leader", "n1", None)  # a StatusReply to a GetRequest
        return await kv.handle(received)

    node = await start(nursery, "n1", wrong_first)
    async with client([node.endpoint]) as c:
        stats = CallStats()
        assert not (await c.get("k", stats=stats)).found
    assert "StatusReply is not a reply to that request" in stats.history[0].outcome


async def test_an_oversized_frame_announcement_is_a_broken_connection(
    nursery: trio.Nursery,
) -> None:
    kv = FakeKV("n1")

    async def huge_first(received: Received) -> Response:
        if received.connection == 1:
            return Garbage(b"\xff\xff\xff\xff")
        return await kv.handle(received)

    node = await start(nursery, "n1", huge_first)
    async with client([node.endpoint]) as c:
        assert not (await c.get("k")).found
    assert node.connections == 2


async def test_replies_to_unknown_request_ids_are_ignored(nursery: trio.Nursery) -> None:
    async def handler(received: Received) -> Response:
        if received.header.request_id == 1:
            return Misaddressed(GetReply(True, "intruder", "n1"), request_id=999)
        return GetReply(True, "v", "n1")

    node = await start(nursery, "n1", handler)
    async with client([node.endpoint], attempt_timeout_s=0.05) as c:
        stats = CallStats()
        assert (await c.get("k", stats=stats)).value == "v"
    assert stats.history[0].outcome == "no reply within 0.05 s"
    assert node.connections == 1  # the stray reply did not cost the connection


# ---------------------------------------------------------- definite errors


@pytest.mark.parametrize("code", [ErrorCode.BAD_REQUEST, ErrorCode.SESSION])
async def test_definite_errors_are_raised_without_retrying(
    nursery: trio.Nursery, code: ErrorCode
) -> None:
    node = await start(nursery, "n1", lambda _: _ready(ErrorReply(code, "no", True)))
    async with client([node.endpoint]) as c:
        with pytest.raises(DefiniteError) as caught:
            await c.set("k", "v")
    error = caught.value
    assert not isinstance(error, Unavailable)
    assert (error.code, error.message, error.definite) == (code, "no", True)
    assert error.endpoint == node.endpoint
    assert error.stats.attempts == 1


async def test_too_stale_is_a_definite_error(nursery: trio.Nursery) -> None:
    refusal = ErrorReply(ErrorCode.TOO_STALE, "last heard from the leader 3 s ago", True)
    node = await start(nursery, "n2", lambda _: _ready(refusal))
    async with client([node.endpoint]) as c:
        with pytest.raises(DefiniteError) as caught:
            await c.get("k", max_staleness_s=0.5)
    assert caught.value.code == ErrorCode.TOO_STALE
    assert node.requests() == [GetRequest("k", 0.5)]


async def test_stale_reads_go_to_the_first_endpoint_even_when_a_leader_is_known(
    nursery: trio.Nursery,
) -> None:
    n1, _ = await leader(nursery, "n1")
    n2 = await start(nursery, "n2", lambda _: _ready(GetReply(True, "old", "n2", True, 0.12)))
    async with client([n2.endpoint, n1.endpoint]) as c:
        await c.set("k", "new")
        assert c.leader_endpoint is not None
        assert await c.get("k", max_staleness_s=1) == GetReply(True, "old", "n2", True, 0.12)


async def test_an_unreachable_cluster_is_a_definite_unavailable() -> None:
    ports = [ClosedPort(), ClosedPort()]
    endpoints = [port.endpoint for port in ports]
    try:
        async with client(endpoints, timeout_s=0.2) as c:
            with pytest.raises(Unavailable) as caught:
                await c.set("k", "v")
    finally:
        for port in ports:
            port.close()
    error = caught.value
    assert (error.code, error.definite) == ("unreachable", True)
    assert error.message == (
        f"cannot reach the cluster at {endpoints[0]}, {endpoints[1]}: connection refused"
    )
    assert error.stats.attempts > 2  # it kept trying, round the list, until the deadline
    assert all(a.request_id is None for a in error.stats.history)


async def test_no_leader_then_no_member_is_unavailable(nursery: trio.Nursery) -> None:
    node = await start(nursery, "n1", lambda _: _ready(ThenStop(no_leader())))
    async with client([node.endpoint], timeout_s=0.2) as c:
        with pytest.raises(Unavailable) as caught:
            await c.set("k", "v")
    error = caught.value
    assert (error.code, error.definite) == (ErrorCode.NO_LEADER, True)
    assert error.message == (
        f"cannot reach the cluster at {node.endpoint}: no leader known, connection refused"
    )


async def test_errors_from_the_body_are_not_wrapped_in_groups(nursery: trio.Nursery) -> None:
    node = await start(nursery, "n1", lambda _: _ready(ErrorReply("bad_request", "no", True)))
    with pytest.raises(DefiniteError):
        async with client([node.endpoint]) as c:
            await c.get("k")


async def test_text_that_cannot_be_encoded_is_a_bad_request(nursery: trio.Nursery) -> None:
    node, _ = await leader(nursery)
    async with client([node.endpoint]) as c:
        with pytest.raises(DefiniteError) as caught:
            await c.set("k", "\udcff")
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert node.received == []


async def test_keys_and_values_over_their_limits_are_refused_before_sending(
    nursery: trio.Nursery,
) -> None:
    """Counted in UTF-8 bytes, as the member counts them: "é" is two bytes, so half as
    many of them reach the limit; exactly at the limit is still sent."""
    node, kv = await leader(nursery)
    over_value = "é" * (MAX_VALUE_BYTES // 2) + "x"  # MAX_VALUE_BYTES + 1 bytes
    over_key = "k" * (MAX_KEY_BYTES + 1)
    refused: list[tuple[str, Any]] = [
        ("value", lambda c: c.set("k", over_value)),
        ("value", lambda c: c.cas("k", None, over_value)),
        ("expected value", lambda c: c.cas("k", over_value, "v")),
        ("key", lambda c: c.set(over_key, "v")),
        ("key", lambda c: c.get(over_key)),
        ("key", lambda c: c.get(over_key, max_staleness_s=1.0)),
        ("key", lambda c: c.delete(over_key)),
    ]
    async with client([node.endpoint]) as c:
        for what, call in refused:
            with pytest.raises(DefiniteError) as caught:
                await call(c)
            error = caught.value
            assert error.code == ErrorCode.TOO_LARGE, what
            limit = "MAX_KEY_BYTES" if what == "key" else "MAX_VALUE_BYTES"
            size = MAX_KEY_BYTES + 1 if what == "key" else MAX_VALUE_BYTES + 1
            assert error.message.startswith(f"{what} is {size} bytes"), error.message
            assert f"limit of {size - 1} bytes ({limit})" in error.message
            assert error.stats.attempts == 0
        assert node.received == []
        at_limit = "é" * (MAX_VALUE_BYTES // 2)
        assert (await c.set("k" * MAX_KEY_BYTES, at_limit)).ok
    assert kv.data == {"k" * MAX_KEY_BYTES: at_limit}


# ------------------------------------------------------------- pipelining


async def test_fifty_concurrent_gets_share_one_connection_answered_out_of_order(
    nursery: trio.Nursery,
) -> None:
    count = 50
    release: dict[int, trio.Event] = {}

    async def handler(received: Received) -> Response:
        assert isinstance(received.request, GetRequest)
        event = release.setdefault(received.header.request_id, trio.Event())
        await event.wait()
        return GetReply(True, received.request.key.replace("key", "value"), "n1")

    node = await start(nursery, "n1", handler)

    def replied(n: int) -> Callable[[], bool]:
        return lambda: len(node.replied) == n

    results: dict[int, GetReply] = {}
    async with client([node.endpoint]) as c:

        async def get(i: int) -> None:
            results[i] = await c.get(f"key{i}")

        async with trio.open_nursery() as gets:
            for i in range(count):
                gets.start_soon(get, i)
            await node.wait_until(lambda: len(node.received) == count)
            # Answer newest first, each reply written before the next is released.
            for done, header in enumerate(reversed([r.header for r in node.received]), 1):
                release.setdefault(header.request_id, trio.Event()).set()
                await node.wait_until(replied(done))
    assert node.connections == 1
    assert {r.connection for r in node.received} == {1}
    assert len({r.header.request_id for r in node.received}) == count
    assert node.replied == sorted(node.replied, reverse=True)
    assert {i: r.value for i, r in results.items()} == {i: f"value{i}" for i in range(count)}


async def test_concurrent_writes_never_share_a_session(nursery: trio.Nursery) -> None:
    kv = FakeKV("n1")
    both_arrived = trio.Event()

    async def handler(received: Received) -> Response:
        if len(write_ids(node)) == 2:
            both_arrived.set()
        await both_arrived.wait()
        return await kv.handle(received)

    node = await start(nursery, "n1", handler)
    async with client([node.endpoint], client_id="c") as c:
        async with trio.open_nursery() as writes:
            writes.start_soon(c.set, "a", "1")
            writes.start_soon(c.set, "b", "2")
        await c.set("c", "3")
    first_two = sorted(write_ids(node)[:2])
    assert first_two == [("c", 1), ("c-1", 1)]
    assert write_ids(node)[2] in {("c", 2), ("c-1", 2)}
    assert kv.data == {"a": "1", "b": "2", "c": "3"}


async def test_writes_beyond_the_session_limit_wait_their_turn(nursery: trio.Nursery) -> None:
    node, kv = await leader(nursery)
    async with (
        client([node.endpoint], client_id="c", write_sessions=1) as c,
        trio.open_nursery() as writes,
    ):
        for i in range(5):
            writes.start_soon(c.set, f"k{i}", "v")
    assert sorted(write_ids(node)) == [("c", seq) for seq in range(1, 6)]
    assert len(kv.data) == 5


# ------------------------------------------------------------------ status


async def test_status_all_reports_every_member_in_order(
    nursery: trio.Nursery, closed_port: ClosedPort
) -> None:
    n1, kv = await leader(nursery, "n1")
    async with client([closed_port.endpoint, n1.endpoint], timeout_s=0.5) as c:
        members = await c.status_all()
        assert [m.endpoint for m in members] == [closed_port.endpoint, n1.endpoint]
        down, up = members
        assert not down.ok and isinstance(down.error, Unavailable)
        assert down.error.message == f"cannot reach {closed_port.endpoint}: connection refused"
        assert up.ok and up.reply == kv.status("leader", "n1", n1.endpoint)
        assert c.leader_endpoint == n1.endpoint


async def test_status_of_a_silent_member_times_out(nursery: trio.Nursery) -> None:
    node = await start(nursery, "n1", never)
    async with client([node.endpoint], timeout_s=0.2) as c:
        with pytest.raises(UnknownOutcome) as caught:
            await c.status(node.endpoint)
    assert caught.value.message == f"{node.endpoint}: no reply within 0.2 s"


async def test_status_retries_once_on_a_dead_pooled_connection(nursery: trio.Nursery) -> None:
    kv = FakeKV("n1")

    async def close_after_answering(received: Received) -> Response:
        reply = await kv.handle(received)
        assert isinstance(reply, StatusReply)
        return ReplyThenClose(reply)

    node = await start(nursery, "n1", close_after_answering)
    async with client([node.endpoint]) as c:
        await c.status(node.endpoint)
        assert (await c.status(node.endpoint)).node == "n1"


# ------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7001", ("127.0.0.1", 7001)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:7001", ("::1", 7001)),
        ("node-3.example:65535", ("node-3.example", 65535)),
    ],
)
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "text", ["localhost", ":7001", "host:", "host:abc", "host:0", "host:65536", "a b:1", "h:+1"]
)
def test_parse_endpoint_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)


def test_bad_configuration_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="no port"):
        Client(["localhost"])
    with pytest.raises(ValueError):
        Client([])
    with pytest.raises(ValueError):
        Client(["127.0.0.1:1"], timeout_s=0)
    with pytest.raises(ValueError):
        Client(["127.0.0.1:1"], client_id="")
    with pytest.raises(TypeError):
        Client("127.0.0.1:1")  # type: ignore[arg-type]


async def test_a_client_must_be_entered_before_use() -> None:
    c = Client(["127.0.0.1:1"])
    with pytest.raises(RuntimeError):
        await c.get("k")
    async with c:
        pass
    with pytest.raises(RuntimeError):
        await c.get("k")


def test_error_classes() -> None:
    assert issubclass(Unavailable, DefiniteError)
    assert DefiniteError("c", "m").definite and not UnknownOutcome("c", "m").definite
    error = ClientError("c", "m", definite=False)
    assert (str(error), error.code, error.message) == ("m", "c", "m")


async def _ready(response: Response) -> Response:
    return response


def test_retry_waits_double_with_jitter_so_clients_do_not_retry_in_lockstep() -> None:
    first = _Backoff(0.05, 0.5, random.Random(1))
    second = _Backoff(0.05, 0.5, random.Random(2))
    a = [first.next_delay() for _ in range(7)]
    b = [second.next_delay() for _ in range(7)]
    steps = [0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    for delays in (a, b):
        assert all(step / 2 <= d <= step for d, step in zip(delays, steps, strict=True))
    assert all(x != y for x, y in zip(a, b, strict=True))
