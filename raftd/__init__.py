"""raftd: a Raft consensus key-value store built to be watched through distributed tracing.

``raftd.core`` is the pure algorithm; ``raftd.storage`` keeps what must survive a crash.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version


def version() -> str:
    """The installed distribution's version, for ``--version`` of raftd and raftctl."""
    try:
        return _distribution_version("raftd")
    except PackageNotFoundError:
        return "unknown (not installed; run from a source tree)"
