"""Where a node keeps what must survive a crash."""

from raftd.storage.base import SnapshotStorage, Storage, StorageError, stage_ready
from raftd.storage.memory import MemoryStorage
from raftd.storage.wal import CorruptLogError, DataDirLocked, WalStorage

__all__ = [
    "CorruptLogError",
    "DataDirLocked",
    "MemoryStorage",
    "SnapshotStorage",
    "Storage",
    "StorageError",
    "WalStorage",
    "stage_ready",
]
