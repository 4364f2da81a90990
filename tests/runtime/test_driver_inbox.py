"""Peer messages are not starved by queued client requests.

Both used to share one 4096-slot inbox: with it full of client operations, a heartbeat
or an acknowledgement was dropped, and overload could trip check-quorum."""

from __future__ import annotations

from pathlib import Path

import trio

from raftd.config import NodeConfig, parse_address
from raftd.core import Heartbeat
from raftd.runtime.driver import Driver, Status
from raftd.storage import MemoryStorage


def _driver(tmp_path: Path) -> Driver:
    members = {n: parse_address(f"127.0.0.1:{p}") for n, p in (("a", 1), ("b", 2), ("c", 3))}
    config = NodeConfig("a", members, parse_address("127.0.0.1:4"), tmp_path)
    return Driver(config, MemoryStorage(), lambda msg, parent, span, lag: None)


async def test_a_heartbeat_gets_in_while_the_client_inbox_is_full(tmp_path: Path) -> None:
    driver = _driver(tmp_path)
    queued = 0
    while True:
        try:
            driver.inbox_send.send_nowait(Status())
        except trio.WouldBlock:
            break
        queued += 1
    assert queued >= 1000
    driver.deliver(Heartbeat(1, 2, 1, 0))
    dropped = driver.metrics.registry.get_sample_value(
        "raftd_messages_dropped_total", {"kind": "Heartbeat", "reason": "inbox_full"}
    )
    assert not dropped
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        with trio.fail_after(10):
            while driver.node.leader_id != 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_a_state_hash_matches_the_status_it_comes_with(tmp_path: Path) -> None:
    driver = _driver(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        reply = await driver.submit(Status(state_hash=True))
        nursery.cancel_scope.cancel()
    assert reply.state_hash == driver.kv.state_hash()  # type: ignore[union-attr]
