"""The trio side of raftd: the driver that owns the core, peers, clients."""
