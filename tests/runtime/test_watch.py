"""The watch hub alone: history, compaction, catching up, slow watchers, snapshots."""

from __future__ import annotations

import pytest
import trio

from raftd.kvsnapshot import Stored
from raftd.runtime import watch
from raftd.runtime.watch import Compacted, WatchHub


def put(key: str, revision: int) -> tuple[str, Stored | None]:
    return key, Stored(f"v{revision}", revision, revision, 0)


def keys_of(hub_batch: list[watch.Change]) -> list[tuple[int, str]]:
    return [(change.revision, change.key) for change in hub_batch]


async def test_a_watcher_gets_history_from_its_revision_then_live_changes() -> None:
    hub = WatchHub(floor=0)
    hub.publish(1, [put("a/1", 1)], "")
    hub.publish(2, [put("b", 2)], "")
    hub.publish(3, [put("a/2", 3), ("a/1", None)], "")  # two changes, one revision
    watcher = hub.subscribe("a/", "a0", 2)
    hub.publish(4, [put("a/3", 4)], "")
    assert keys_of(await watcher.next_batch(10)) == [(3, "a/2"), (3, "a/1"), (4, "a/3")]
    from_now = hub.subscribe("", None, 0)
    hub.publish(5, [put("z", 5)], "")
    assert keys_of(await from_now.next_batch(10)) == [(5, "z")]
    assert hub.revision == 5 and hub.watchers == 2


async def test_history_is_bounded_and_older_revisions_are_compacted() -> None:
    hub = WatchHub(floor=0, history_changes=3)
    for revision in range(1, 4):
        hub.publish(revision, [put("k", revision)], "")
    hub.publish(4, [put("x", 4), put("y", 4)], "")  # evicts revisions 1 and 2
    assert hub.floor == 2
    with pytest.raises(Compacted, match="revision 2 is compacted"):
        hub.subscribe("", None, 2)
    watcher = hub.subscribe("", None, 3)
    assert keys_of(await watcher.next_batch(10)) == [(3, "k"), (4, "x"), (4, "y")]
    hub.publish(5, [put("z", 5), put("w", 5)], "")  # cuts revision 4 in half
    assert hub.floor == 4  # so none of revision 4 is offered any more
    with pytest.raises(Compacted):
        hub.subscribe("", None, 4)


async def test_a_watcher_that_falls_behind_is_dropped_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch, "WATCHER_QUEUE_CHANGES", 3)
    hub = WatchHub(floor=0)
    watcher = hub.subscribe("", None, 0)
    for revision in range(1, 6):
        hub.publish(revision, [put("k", revision)], "")
    assert watcher.dropped == "fell 3 changes behind"
    assert await watcher.next_batch(10) == []  # nothing held for it any more
    assert not watcher.pending


async def test_a_snapshot_drops_every_watcher_and_moves_the_floor() -> None:
    hub = WatchHub(floor=10)
    with pytest.raises(Compacted):
        hub.subscribe("", None, 10)
    watcher = hub.subscribe("", None, 11)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.next_batch, 10)  # woken by the drop
            await trio.testing.wait_all_tasks_blocked()
            hub.reset(50)
    assert watcher.dropped is not None and "snapshot at revision 50" in watcher.dropped
    assert (hub.floor, hub.revision, hub.watchers) == (50, 50, 0)


def test_watchers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "MAX_WATCHERS", 2)
    hub = WatchHub(floor=0)
    hub.subscribe("", None, 0)
    second = hub.subscribe("", None, 0)
    with pytest.raises(OverflowError):
        hub.subscribe("", None, 0)
    hub.unsubscribe(second)
    hub.subscribe("", None, 0)
