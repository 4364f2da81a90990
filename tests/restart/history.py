"""Give members a long, identical history without writing it through a cluster.

Writing 100k entries through the client port takes minutes on this machine; the WAL API
writes them in seconds, through the same code path a member's own appends take, so the
restart that follows replays exactly what a long-running member would hold.
"""

from __future__ import annotations

from pathlib import Path

from raftd import kv
from raftd.core.types import Entry, EntryKind, HardState
from raftd.storage.wal import WalStorage

BATCH = 10_000


def write_history(data_dir: Path, entries: int, *, keys: int = 10_000, term: int = 1) -> None:
    """``entries`` committed-looking writes of term ``term`` (index 1 is the term's no-op),
    spread over ``keys`` keys, with the member's hard state at that term."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with WalStorage.open(data_dir) as storage:
        storage.set_hard_state(HardState(term, None))
        storage.append([Entry(1, term, b"", EntryKind.NOOP)])
        for first in range(2, entries + 1, BATCH):
            batch = [
                Entry(
                    i, term, kv.encode_request(kv.Request("", 0, kv.Set(f"k{i % keys}", f"v{i}")))
                )
                for i in range(first, min(first + BATCH, entries + 1))
            ]
            storage.append(batch)
            storage.sync()
        storage.sync()


def _write(key: str, value: str) -> bytes:
    return kv.encode_request(kv.Request("", 0, kv.Set(key, value)))
