"""Where a node keeps what must survive a crash."""

from raftd.storage.base import Storage, StorageError, stage_ready
from raftd.storage.memory import MemoryStorage

__all__ = ["MemoryStorage", "Storage", "StorageError", "stage_ready"]
