"""``python -m tests.perf.snapshot_pause [KEYS...]``: what a snapshot costs the consensus loop.

For each size, a store of that many keys (16-byte keys and values, as the bench writes) is
snapshotted the way a member does it: ``capture`` inside the trio loop, ``encode`` in a
worker thread, then ``restore`` in a worker thread. A task in the loop meanwhile sleeps
1 ms at a time and records the longest it was kept waiting beyond that: the pause a
heartbeat due then would have suffered. Figures go in notes and docs, not in tests.
"""

from __future__ import annotations

import argparse
import sys
import time

import trio

from raftd import kvsnapshot
from raftd.kv import KVStore, Request, Set, encode_request


def build(keys: int) -> KVStore:
    store = KVStore()
    for n in range(keys):
        store.apply(n + 1, encode_request(Request("", 0, Set(f"k{n:015d}", f"v{n:015d}"))))
    return store


async def measure(keys: int) -> str:
    store = build(keys)
    longest = 0.0
    done = False

    async def heartbeat() -> None:
        nonlocal longest
        while not done:
            before = trio.current_time()
            await trio.sleep(0.001)
            longest = max(longest, trio.current_time() - before - 0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat)
        await trio.sleep(0.2)
        baseline, longest = longest, 0.0
        started = time.perf_counter()
        capture = store.capture()
        captured = time.perf_counter() - started
        data = await trio.to_thread.run_sync(kvsnapshot.encode, capture)
        encoded = time.perf_counter() - started
        taking, longest = longest, 0.0
        started = time.perf_counter()
        restored = await trio.to_thread.run_sync(KVStore.restore, data)
        restoring_s = time.perf_counter() - started
        restoring = longest
        done = True
    assert restored.state_hash() == store.state_hash()
    return (
        f"{keys:>9} keys: snapshot {len(data) / 1e6:.1f} MB; capture in the loop "
        f"{captured * 1e3:.1f} ms, encoded after {encoded:.2f} s; longest loop pause while "
        f"taking it {taking * 1e3:.1f} ms; restore {restoring_s:.2f} s with the longest pause "
        f"{restoring * 1e3:.1f} ms (idle loop: {baseline * 1e3:.2f} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.snapshot_pause")
    parser.add_argument("keys", nargs="*", type=int, default=[100_000, 1_000_000])
    args = parser.parse_args(argv)
    for keys in args.keys:
        print(trio.run(measure, keys), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
