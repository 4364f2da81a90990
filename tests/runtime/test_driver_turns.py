"""The driver's loop keeps logical time when its turns are slow.

It counted at most one tick per turn, so turns slower than a tick stretched every
election timeout and heartbeat interval by the same factor."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from raftd.config import NodeConfig, parse_address
from raftd.runtime.driver import Driver
from raftd.storage import MemoryStorage

TICK_S = 0.05
SLOW_TURN_S = 0.15


async def test_every_tick_that_passed_is_counted_even_when_turns_are_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = {n: parse_address(f"127.0.0.1:{p}") for n, p in (("a", 1), ("b", 2), ("c", 3))}
    config = NodeConfig("a", members, parse_address("127.0.0.1:4"), tmp_path, tick_seconds=TICK_S)
    driver = Driver(config, MemoryStorage(), lambda msg, parent, span, lag: None)
    ticks = 0
    real_tick = driver.node.tick

    def slow_tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks % 3 == 0:
            time.sleep(SLOW_TURN_S)  # a turn that blocks, as a slow apply or GC pause would
        real_tick()

    monkeypatch.setattr(driver.node, "tick", slow_tick)
    started = trio.current_time()
    with trio.move_on_after(2.0):
        await driver.run()
    elapsed = trio.current_time() - started
    # Every tick of the elapsed time is counted (less those owed when it is cancelled); the old
    # loop managed about one per slow turn, a third as many.
    assert ticks >= elapsed / TICK_S - 5, (ticks, elapsed)
