"""A member's TLS: its contexts, reloaded from the files on SIGHUP or when they change, and
the checks at each port's door.

Peer links are mutual: both ends present a certificate from the peer CA, and each checks
that the other's certificate names the member it says it is (the dialler: the member it
meant to reach; the listener: the name in the caller's Hello). Without that check, any
holder of a certificate from the CA could claim to be any member. The client port presents
the member's client certificate and, with a client CA, requires one from every client.

Reloading builds every context first and swaps them only if all were built, so a half-
written certificate leaves the member on its old ones (and says so), never on none. Only
new connections use the new contexts; open ones keep the session they negotiated.
"""

from __future__ import annotations

import signal
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import structlog
import trio
from cryptography import x509

from observability.metrics import RaftMetrics
from raftd.config import TlsSettings
from wire.tls import (
    TlsConfigError,
    TlsFailure,
    client_context,
    handshake,
    last_words,
    looks_like_tls,
    peer_certificate,
    server_context,
    wrap,
)

log = structlog.get_logger("raftd.tls")

WATCH_INTERVAL_S: Final = 5.0
PEEK_BYTES: Final = 2


@dataclass(frozen=True, slots=True)
class Contexts:
    """One consistent generation of a member's contexts (None: that side is plaintext)."""

    peer_server: ssl.SSLContext | None
    peer_client: ssl.SSLContext | None
    client_server: ssl.SSLContext | None
    proxy_client: ssl.SSLContext | None
    # Each port's certificate's end of validity, for the expiry gauge.
    not_after: dict[str, datetime]


def build_contexts(settings: TlsSettings) -> Contexts:
    peer, client = settings.peer, settings.client
    proxy = settings.proxy_files()
    not_after: dict[str, datetime] = {}
    for port, files in (("peer", peer), ("client", client)):
        if files is not None and files.cert is not None:
            not_after[port] = _not_after(files.cert)
    return Contexts(
        peer_server=server_context(peer) if peer else None,
        peer_client=client_context(peer, check_hostname=False) if peer else None,
        client_server=server_context(client) if client else None,
        proxy_client=client_context(proxy) if proxy else None,
        not_after=not_after,
    )


def _not_after(cert: Path) -> datetime:
    try:
        return x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    except OSError as exc:
        raise TlsConfigError(f"cannot read {cert}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TlsConfigError(f"{cert} is not a PEM certificate: {exc}") from None


class Credentials:
    """The member's current contexts; ``reload`` swaps in a new generation."""

    def __init__(self, settings: TlsSettings, metrics: RaftMetrics | None = None) -> None:
        self.settings = settings
        self._metrics = metrics
        self.current = build_contexts(settings)  # TlsConfigError: refuse to start
        self._stamps = self._file_stamps()
        if metrics is not None:
            metrics.tls_certificates(self.current.not_after)

    def reload(self, why: str) -> bool:
        """Rebuild from the files; on failure keep the old contexts and log why."""
        self._stamps = self._file_stamps()
        try:
            fresh = build_contexts(self.settings)
        except TlsConfigError as exc:
            log.error(
                "TLS reload failed: still using the previous certificates", why=why, error=str(exc)
            )
            if self._metrics is not None:
                self._metrics.tls_reloaded("failed")
            return False
        self.current = fresh
        if self._metrics is not None:
            self._metrics.tls_reloaded("ok")
            self._metrics.tls_certificates(fresh.not_after)
        log.info(
            "TLS certificates reloaded: new connections use them",
            why=why,
            valid_until={port: t.isoformat() for port, t in fresh.not_after.items()},
        )
        return True

    def changed_on_disk(self) -> bool:
        return self._file_stamps() != self._stamps

    def _file_stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self.settings.paths:
            try:
                st = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    async def keep_fresh(self, *, interval_s: float = WATCH_INTERVAL_S) -> None:
        """Reload on SIGHUP, and when a file changes (a Kubernetes Secret, a renewal
        cron job that does not signal)."""
        with trio.open_signal_receiver(signal.SIGHUP) as hangups:
            while True:
                with trio.move_on_after(interval_s):
                    await hangups.__anext__()
                    self.reload("SIGHUP")
                    continue
                if self.changed_on_disk():
                    self.reload("the files changed")


class Refused(Exception):
    """A connection turned away at the door; ``reason`` is the metrics label."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason


async def accept(
    tcp: trio.SocketStream, context: ssl.SSLContext | None, *, timeout_s: float
) -> tuple[trio.abc.Stream, dict[str, object] | None]:
    """The stream to read frames from, and the caller's certificate (None without TLS).

    A plaintext caller on a TLS port is told apart from a broken handshake by its first
    bytes, so the log says which mistake it is; ``Refused`` either way."""
    if context is None:
        return tcp, None
    first: bytes | None = None
    with trio.move_on_after(timeout_s):
        first = await tcp.socket.recv(PEEK_BYTES, socket.MSG_PEEK)
    if first is None:
        raise Refused("tls_handshake", f"no TLS handshake within {timeout_s:g} s")
    if not first:
        raise Refused("tls_handshake", "closed before the TLS handshake")
    if not looks_like_tls(first):
        raise Refused("tls_mismatch", "a plaintext caller on a TLS port")
    stream = wrap(tcp, context, server_side=True)
    try:
        await handshake(stream, timeout_s=timeout_s)
    except TlsFailure as exc:
        raise Refused("tls_handshake", f"TLS handshake failed: {exc}") from None
    return stream, peer_certificate(stream)


PLAINTEXT_NOTICE: Final = b"raftd: this port does not use TLS\n"


async def answer_tls_in_plaintext(stream: trio.abc.Stream) -> None:
    """Answer a TLS caller on a port without TLS with plaintext: its TLS then reports "not
    TLS" instead of a connection closed mid-handshake, which looks like a member
    restarting."""
    await last_words(stream, PLAINTEXT_NOTICE)


async def dial(
    tcp: trio.SocketStream,
    context: ssl.SSLContext | None,
    *,
    server_hostname: str | None = None,
    timeout_s: float,
) -> trio.abc.Stream:
    """``tcp`` itself without TLS; else the stream after a completed handshake
    (``TlsFailure`` saying why when it fails)."""
    if context is None:
        return tcp
    stream = wrap(tcp, context, server_hostname=server_hostname)
    await handshake(stream, timeout_s=timeout_s)
    return stream
