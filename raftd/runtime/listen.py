"""Opening a member's listening ports, with an error that names the port.

The kernel's own message ("[Errno 98] Address already in use") does not say which of a
member's three ports failed, so an operator could not tell a clash on the client port from
one on the peer or metrics port.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from raftd.config import Address

T = TypeVar("T")


class ListenError(OSError):
    """A port could not be opened; ``str()`` says which one, where, and why."""

    def __str__(self) -> str:
        return str(self.strerror)


def _named(exc: OSError, what: str, address: Address) -> ListenError:
    reason = exc.strerror or str(exc)
    return ListenError(exc.errno, f"cannot listen for {what} on {address}: {reason}")


async def open_listeners(address: Address, what: str) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(address.port, host=address.host)
    except OSError as exc:
        raise _named(exc, what, address) from exc


def start_listening(address: Address, what: str, start: Callable[[], T]) -> T:
    """Run a synchronous server start (the metrics exporter's) with the same naming."""
    try:
        return start()
    except OSError as exc:
        raise _named(exc, what, address) from exc
