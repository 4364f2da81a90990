"""Key and value sizes are bounded at the client port, and the bound is the one documented.

A write is one log entry and an entry is never split across AppendEntries messages, so a
value much larger than the limit would be a message no peer frame could carry. The member
refuses it with a definite ``too_large`` reply naming the limit before anything is proposed;
a request whose frame is over the client port's frame limit is answered the same way (under
request id 0, since its header was never read) before the connection is closed. Exactly at
the limits, the largest request there is (a cas with both values at the limit) is accepted
and replicated to every member.
"""

from __future__ import annotations

import struct

import pytest
import trio

from raftd.runtime.clients import size_refusal
from tests.integration.harness import Cluster
from wire.api import (
    CLIENT_REGISTRY,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    CasRequest,
    DeleteRequest,
    ErrorCode,
    ErrorReply,
    GetReply,
    GetRequest,
    SetRequest,
    StatusRequest,
    WriteReply,
)
from wire.codec import Header
from wire.frame import DEFAULT_MAX_FRAME_BYTES
from wire.stream import FramedStream

OVER_KEY = "k" * (MAX_KEY_BYTES + 1)
# Two UTF-8 bytes per "é": under the limit in characters, one byte over it in bytes.
OVER_VALUE = "é" * (MAX_VALUE_BYTES // 2) + "x"
KEY_TOO_LARGE = (
    f"key is {MAX_KEY_BYTES + 1} bytes, over the limit of {MAX_KEY_BYTES} bytes (MAX_KEY_BYTES)"
)
VALUE_TOO_LARGE = (
    f"value is {MAX_VALUE_BYTES + 1} bytes, over the limit of {MAX_VALUE_BYTES} bytes"
    " (MAX_VALUE_BYTES)"
)

REFUSED = [
    pytest.param(SetRequest("k", OVER_VALUE, "c", 1), VALUE_TOO_LARGE, id="set-value"),
    pytest.param(CasRequest("k", None, OVER_VALUE, "c", 1), VALUE_TOO_LARGE, id="cas-value"),
    pytest.param(
        CasRequest("k", OVER_VALUE, "v", "c", 1), "expected " + VALUE_TOO_LARGE, id="cas-expected"
    ),
    pytest.param(SetRequest(OVER_KEY, "v", "c", 1), KEY_TOO_LARGE, id="set-key"),
    pytest.param(CasRequest(OVER_KEY, None, "v", "c", 1), KEY_TOO_LARGE, id="cas-key"),
    pytest.param(DeleteRequest(OVER_KEY, "c", 1), KEY_TOO_LARGE, id="delete-key"),
    pytest.param(GetRequest(OVER_KEY), KEY_TOO_LARGE, id="get-key"),
    pytest.param(GetRequest(OVER_KEY, 1.0), KEY_TOO_LARGE, id="stale-get-key"),
]


@pytest.fixture
def cluster(plaintext_cluster: Cluster) -> Cluster:
    """These tests write raw bytes to the ports: plaintext whatever RAFTD_TEST_TLS says."""
    return plaintext_cluster


@pytest.mark.parametrize(("request_", "message"), REFUSED)
def test_the_check_names_the_limit_and_the_size(request_: object, message: str) -> None:
    refusal = size_refusal(request_)
    assert refusal == ErrorReply(
        ErrorCode.TOO_LARGE, f"{message}; nothing was proposed", definite=True
    )


def test_exactly_at_the_limits_passes_the_check() -> None:
    key, value = "k" * MAX_KEY_BYTES, "é" * (MAX_VALUE_BYTES // 2)
    for request in (
        SetRequest(key, value, "c", 1),
        CasRequest(key, value, value, "c", 1),
        CasRequest(key, None, value, "c", 1),
        DeleteRequest(key, "c", 1),
        GetRequest(key),
        StatusRequest(),
    ):
        assert size_refusal(request) is None, type(request).__name__


async def converse(port: int, requests: list[object]) -> list[object]:
    """Requests one after the other on a single connection, so a refusal is shown to
    leave the connection open for the next one."""
    replies: list[object] = []
    with trio.fail_after(15):
        stream = FramedStream(await trio.open_tcp_stream("127.0.0.1", port), CLIENT_REGISTRY)
        try:
            for request_id, request in enumerate(requests, start=1):
                await stream.send(Header(type(request).__name__, request_id), request)
                received = await stream.receive()
                assert received is not None, f"closed after {type(request).__name__}"
                assert received[0].request_id == request_id
                replies.append(received[1])
        finally:
            await stream.aclose()
    return replies


async def test_oversized_requests_are_refused_by_every_member_and_nothing_is_proposed(
    cluster: Cluster,
) -> None:
    leader = await cluster.wait_for_leader()
    before = await cluster.statuses([leader])
    # Far over the limit, and still inside the frame limit: refused the same way.
    huge = SetRequest("k", "x" * (5 * MAX_VALUE_BYTES), "c", 1)
    requests = [param.values[0] for param in REFUSED] + [huge]
    for name, member in cluster.members.items():
        replies = await converse(member.client_port, [*requests, GetRequest("k")])
        *refusals, last = replies
        for request, reply in zip(requests, refusals, strict=True):
            assert isinstance(reply, ErrorReply), (name, request)
            assert (reply.code, reply.definite) == (ErrorCode.TOO_LARGE, True), reply
            assert "over the limit of" in reply.message and "nothing was proposed" in reply.message
        huge_refusal = refusals[-1]
        assert isinstance(huge_refusal, ErrorReply)
        assert huge_refusal.message.startswith(f"value is {5 * MAX_VALUE_BYTES} bytes")
        # The connection is still in use, and nothing was written.
        if name == leader:
            assert last == GetReply(False, None, leader)
    after = await cluster.statuses([leader])
    assert after[leader].last_index == before[leader].last_index


async def test_a_frame_over_the_client_frame_limit_is_answered_before_the_close(
    cluster: Cluster,
) -> None:
    leader = await cluster.wait_for_leader()
    port = cluster.members[leader].client_port
    length = DEFAULT_MAX_FRAME_BYTES + 1
    with trio.fail_after(15):
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = FramedStream(tcp, CLIENT_REGISTRY)
        # The whole frame is sent: the member reads and drops the rest, so the answer is
        # not lost to a reset.
        await tcp.send_all(struct.pack(">I", length) + bytes(length))
        received = await stream.receive()
        assert await stream.receive() is None  # and then closed
        await stream.aclose()
    assert received is not None
    header, reply = received
    assert header.request_id == 0
    assert isinstance(reply, ErrorReply) and reply.code == ErrorCode.TOO_LARGE and reply.definite
    assert f"frame of {length} bytes" in reply.message
    assert f"limit of {DEFAULT_MAX_FRAME_BYTES} bytes" in reply.message
    assert f"values to {MAX_VALUE_BYTES} bytes" in reply.message
    assert "client connection closed: bad_frame" in cluster.log_text(leader)
    assert await cluster.wait_for_leader() == leader


async def test_a_value_exactly_at_the_limit_is_accepted_and_replicated(cluster: Cluster) -> None:
    leader = await cluster.wait_for_leader()
    key = "k" * MAX_KEY_BYTES
    first = "a" * MAX_VALUE_BYTES
    second = "é" * (MAX_VALUE_BYTES // 2)
    reply = await cluster.request(leader, SetRequest(key, first, "big", 1), timeout_s=15)
    assert isinstance(reply, WriteReply) and reply.ok, reply
    # The largest request there is: a key and two values, each at its limit.
    reply = await cluster.request(leader, CasRequest(key, first, second, "big", 2), timeout_s=15)
    assert isinstance(reply, WriteReply) and reply.ok and reply.value == second, reply
    with trio.fail_after(15):
        for name in cluster.members:
            while True:  # each member answers from its own copy once it has applied it
                got = await cluster.request(name, GetRequest(key, 60.0))
                if isinstance(got, GetReply) and got.value == second:
                    break
                await trio.sleep(0.05)
