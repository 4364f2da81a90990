"""raftd: a Raft consensus key-value store built to be watched through distributed tracing.

``raftd.core`` is the pure algorithm; ``raftd.storage`` keeps what must survive a crash.
"""
