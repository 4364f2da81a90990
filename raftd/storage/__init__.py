"""Where a node keeps what must survive a crash."""

from raftd.storage.base import Storage, StorageError
from raftd.storage.memory import MemoryStorage

__all__ = ["MemoryStorage", "Storage", "StorageError"]
