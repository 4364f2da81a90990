"""What stands at the door of each port: a connection limit, and logs that cannot flood.

Hostile or broken input must leave one clear log line per kind of trouble, but a flood of
bad connections must not become a flood of log lines (the log is how an operator finds
the one line that matters). So each kind of trouble logs its first occurrence at once and
then at most one summary line per ``LOG_INTERVAL_S`` with how many more there were; the
metrics count every single one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import trio

from observability.metrics import RaftMetrics

LOG_INTERVAL_S: Final = 10.0


class QuietLog:
    """Logs a kind of event at its first occurrence, then summarizes repeats per interval."""

    def __init__(
        self,
        logger: Any,
        *,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        # event -> (when it was last logged, occurrences since then)
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, event: str, *, key: str | None = None, **fields: Any) -> None:
        """``key`` (default: the event) names the kind of trouble; keep it to a small
        fixed set, never text a remote party chose, or the bookkeeping grows with it."""
        kind = event if key is None else f"{event}|{key}"
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self._interval_s:
            self._last[kind] = (last[0], last[1] + 1)
            return
        if last is not None and last[1]:
            fields["repeats_not_logged"] = last[1]
        self._last[kind] = (now, 0)
        self._log.warning(event, **fields)


class ConnectionGate:
    """Counts one port's open connections and refuses new ones past ``limit``.

    Refusing at accept time bounds what a connection flood can cost: a refused socket is
    closed before any buffer is allocated for it, and the node keeps serving the
    connections it already has."""

    def __init__(self, port: str, limit: int, metrics: RaftMetrics, quiet: QuietLog) -> None:
        if limit < 1:
            raise ValueError(f"the connection limit must be at least 1, not {limit}")
        self.port = port
        self.limit = limit
        self.open = 0
        self._metrics = metrics
        self._quiet = quiet

    def try_enter(self, remote: str) -> bool:
        if self.open >= self.limit:
            self._metrics.connection_closed(self.port, "limit")
            self._quiet.warning(
                f"{self.port} connection refused: too many connections",
                remote=remote,
                limit=self.limit,
            )
            return False
        self.open += 1
        self._metrics.connection_opened(self.port)
        return True

    def leave(self) -> None:
        self.open -= 1
        self._metrics.connection_opened(self.port, -1)


def remote_of(tcp: trio.SocketStream) -> str:
    """``host:port`` of the other end, for log lines; '?' once the socket is gone."""
    try:
        host, port = tcp.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"
