"""TLS for the framed connections, shared by the members and raftctl.

TLS sits between TCP and the frames (``TlsStream``), so nothing above it changes: the
same frames, the same trace context in their headers. Three choices hold everywhere:

- TLS 1.2 at least (1.3 when both ends have it, as OpenSSL prefers);
- no close_notify on close and none expected. A close_notify is a write, and a close that
  must first write can hang on a peer that stopped reading (every close here runs shielded
  from cancellation). Truncation is still caught: every message is a length-prefixed
  frame, and a stream cut inside one is a ``TruncatedFrame``;
- the handshake is done at once, inside a deadline, so a connection that never completes
  it (a plaintext client, a stalled one) costs a bounded wait, and a failure is reported
  where it happened, with ``explain`` turning OpenSSL's reason into a sentence.

``TlsStream`` and not ``trio.SSLStream``: trio's stream is general (renegotiation, any
number of waiting tasks, close_notify both ways) and pays for it on every read and write
with locks and extra trips through the scheduler. On a busy member those trips are
latency: with it, TLS on the peer links alone added a third of a millisecond to a
one-client write (four TLS reads and writes on the critical path). raftd needs one reader
and one writer per connection and TLS 1.2+ without renegotiation, which is a small loop
around ``ssl.SSLObject``. It also delivers the alert of a refused handshake, which trio's
drops.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from wire.stream import raw_socket_of

MIN_VERSION: Final = ssl.TLSVersion.TLSv1_2
HANDSHAKE_TIMEOUT_S: Final = 5.0
LAST_WORDS_S: Final = 1.0
DRAIN_BYTES: Final = 16 * 1024
RECEIVE_BYTES: Final = 64 * 1024
REFILL_BYTES: Final = 64 * 1024
# Every TLS connection opens with a handshake record: content type 22, version 3.x.
_HANDSHAKE_RECORD: Final = 0x16
_RECORD_MAJOR_VERSION: Final = 0x03

_LOST_LINK_REASONS: Final = frozenset(
    {"UNEXPECTED_EOF_WHILE_READING", "EOF_OCCURRED_IN_VIOLATION_OF_PROTOCOL", ""}
)
# OpenSSL's X509 verification codes that need a sentence of their own.
_UNTRUSTED_ISSUER: Final = frozenset({2, 18, 19, 20, 21})
_EXPIRED: Final = 10
_NOT_YET_VALID: Final = 9
_NAME_MISMATCH: Final = frozenset({62, 64})


class TlsConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file."""


class TlsFailure(Exception):
    """A TLS handshake failed; ``str()`` says why in words, not OpenSSL's codes.

    ``configuration``: the two sides disagree (a certificate refused, TLS on one side
    only), which retrying will not fix; otherwise the connection merely went away during
    the handshake (a peer restarting), which it may."""

    def __init__(self, why: str, *, configuration: bool = True) -> None:
        super().__init__(why)
        self.configuration = configuration


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where one side's certificate, key and trusted CA live (any may be absent)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert, self.key, self.ca) if p is not None)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A listening side: presents ``cert``; with ``ca``, requires a certificate from every
    caller that chains to it (etcd's --client-cert-auth)."""
    if files.cert is None or files.key is None:
        raise TlsConfigError("a TLS port needs both a certificate and its key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    # No TLS 1.3 session tickets: raftd never resumes a session, and tickets would be
    # bytes written to a caller that may never read (a peer link is one-way).
    context.num_tickets = 0
    _load_chain(context, files.cert, files.key)
    if files.ca is not None:
        _load_ca(context, files.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(files: TlsFiles, *, check_hostname: bool = True) -> ssl.SSLContext:
    """A dialling side: trusts ``ca`` only (or the system's CAs without one) and presents
    ``cert`` when given. ``check_hostname=False`` is for the members' peer links, which
    check the member's name in the certificate themselves (``certificate_names``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(context)
    context.check_hostname = check_hostname
    if files.ca is not None:
        _load_ca(context, files.ca)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if (files.cert is None) != (files.key is None):
        raise TlsConfigError("a client certificate needs its key, and a key its certificate")
    if files.cert is not None and files.key is not None:
        _load_chain(context, files.cert, files.key)
    return context


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = MIN_VERSION
    # TlsStream answers post-handshake messages only from its reading task: no TLS 1.2
    # renegotiation, which would need the writer to read.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    for path in (cert, key):  # OpenSSL's error would not say which of the two
        _check_readable(path)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"{cert} and {key} are not a PEM certificate and its private key ({exc.reason})"
        ) from None


def _check_readable(path: Path) -> None:
    try:
        path.open("rb").close()
    except FileNotFoundError:
        raise TlsConfigError(f"cannot read {path}: no such file") from None
    except OSError as exc:
        raise TlsConfigError(f"cannot read {path}: {(exc.strerror or str(exc)).lower()}") from None


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    _check_readable(ca)
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"{ca} holds no PEM CA certificate ({exc.reason})") from None


class TlsStream(trio.abc.Stream):
    """TLS over a trio stream, for one reading task and one writing task at a time (the
    framed streams' use). A refused handshake sends OpenSSL's alert before failing, so
    the other side learns why; a post-handshake message that needs an answer (a TLS 1.3
    key update) is answered from the reading task, in order with the writer's records."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.transport_stream = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side,
            server_hostname=server_hostname,
        )  # fmt: skip
        self._send_lock = trio.Lock()
        self._handshook = False
        # Plain TCP underneath: read and written through its descriptor (RawSocket).
        self._raw = raw_socket_of(transport)
        self._unsent = b""  # records ``write_now`` could not hand to the socket at once

    async def do_handshake(self) -> None:
        """Raises ``trio.BrokenResourceError`` from OpenSSL's error when it fails."""
        while True:
            try:
                self._ssl.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as exc:
                await self._send_alert()
                raise trio.BrokenResourceError(str(exc)) from exc
            await self._flush()
            if done:
                self._handshook = True
                return
            await self._refill(during_handshake=True)

    def getpeercert(self) -> dict[str, object] | None:
        cert = self._ssl.getpeercert()
        return dict(cert) if cert else None

    def version(self) -> str | None:
        """The protocol the handshake negotiated (``"TLSv1.3"``, ``"TLSv1.2"``); None
        before the handshake is done."""
        return self._ssl.version()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Plaintext; b"" at the end of the stream (with or without a close_notify)."""
        if not self._handshook:
            raise trio.BrokenResourceError("receive before the TLS handshake")
        while True:
            try:
                data = self._ssl.read(max_bytes or RECEIVE_BYTES)
            except ssl.SSLWantReadError:
                if self._outgoing.pending:
                    await self._flush()
                if not await self._refill(during_handshake=False):
                    return b""
                continue
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            if self._outgoing.pending:  # an answer the read produced (a key update)
                await self._flush()
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self._handshook:
            raise trio.BrokenResourceError("send before the TLS handshake")
        view = memoryview(data)
        try:
            while view:
                written = self._ssl.write(view)
                view = view[written:]
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        await self._flush()

    def write_now(self, data: bytes) -> int:
        """Encrypt ``data`` and write what the socket takes at once, without a scheduling
        point: all of ``data`` is taken (the records the socket did not take wait in
        ``unsent`` and go first at the next send, which the caller must make soon), or
        none, 0, when that cannot be done here (mid-handshake, another write under way)."""
        raw = self._raw
        if (
            raw is None
            or not self._handshook
            or self._send_lock.locked()
            or self._unsent
            or self._outgoing.pending
        ):
            return 0
        view = memoryview(data)
        try:
            while view:
                view = view[self._ssl.write(view) :]
        except ssl.SSLError:
            return 0  # a broken session: the next ordinary send says so
        records = self._outgoing.read()
        self._unsent = records[raw.write_now(records) :]
        return len(data)

    @property
    def unsent(self) -> bool:
        return bool(self._unsent)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()

    async def _flush(self) -> None:
        """Send what OpenSSL wrote, in order: the BIO is read only with the lock held."""
        if not self._send_lock.locked():
            self._send_lock.acquire_nowait()  # the common case costs no trip to the scheduler
        else:
            await self._send_lock.acquire()
        try:
            pending = self._outgoing.read()
            if self._unsent:  # what write_now left goes first
                pending, self._unsent = self._unsent + pending, b""
            if pending:
                await (self._raw or self.transport_stream).send_all(pending)
        finally:
            self._send_lock.release()

    async def _refill(self, *, during_handshake: bool) -> bool:
        """Feed OpenSSL the next bytes; False at the end of the stream."""
        data = await (self._raw or self.transport_stream).receive_some(REFILL_BYTES)
        if not data:
            if during_handshake:
                raise trio.BrokenResourceError("closed during the handshake") from ssl.SSLEOFError(
                    ssl.SSL_ERROR_EOF, "UNEXPECTED_EOF_WHILE_READING"
                )
            return False
        self._incoming.write(data)
        return True

    async def _send_alert(self) -> None:
        """Deliver the alert OpenSSL wrote when it refused the handshake, then read what the
        other side still sends until it closes (a moment at most): closing on unread bytes
        resets the connection, and in TLS 1.3 the client has finished its half and written
        its requests by then, so it would see a reset instead of the reason."""
        alert = self._outgoing.read()
        if alert:
            await last_words(self.transport_stream, alert)


async def last_words(stream: trio.abc.Stream, data: bytes) -> None:
    """Send ``data``, then read and drop what the other side still sends until it closes,
    all within ``LAST_WORDS_S`` and ignoring a broken connection: closing with unread bytes
    resets the connection, which can discard ``data`` before the other side reads it."""
    with (
        trio.move_on_after(LAST_WORDS_S),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await stream.send_all(data)
        while await stream.receive_some(DRAIN_BYTES):
            pass


def wrap(
    tcp: trio.abc.Stream,
    context: ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
) -> TlsStream:
    return TlsStream(tcp, context, server_side=server_side, server_hostname=server_hostname)


async def handshake(stream: TlsStream, *, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Complete the handshake within ``timeout_s``, or raise ``TlsFailure`` saying why."""
    try:
        with trio.fail_after(timeout_s):
            await stream.do_handshake()
    except trio.TooSlowError:
        raise TlsFailure(f"no TLS handshake within {timeout_s:g} s", configuration=False) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        raise TlsFailure(explain(exc), configuration=_disagreement(cause)) from exc


def _disagreement(cause: BaseException | None) -> bool:
    """Whether a failed handshake was a refusal (either side's) rather than a lost link."""
    if isinstance(cause, ssl.SSLCertVerificationError):
        return True
    if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError):
        return (cause.reason or "") not in _LOST_LINK_REASONS
    return False


def peer_certificate(stream: TlsStream) -> dict[str, object] | None:
    with contextlib.suppress(ValueError):
        return stream.getpeercert()
    return None


def certificate_names(cert: dict[str, object] | None) -> frozenset[str]:
    """The DNS names a certificate (``SSLSocket.getpeercert()``'s dict) was issued for: its
    subjectAltName DNS entries and its subject's common name."""
    if not cert:
        return frozenset()
    names: set[str] = set()
    for kind, value in cert.get("subjectAltName", ()):  # type: ignore[attr-defined]
        if kind == "DNS":
            names.add(value)
    for rdn in cert.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                names.add(value)
    return frozenset(names)


def looks_like_tls(first: bytes) -> bool:
    """Whether a connection's first bytes are a TLS handshake record."""
    return (
        len(first) >= 1
        and first[0] == _HANDSHAKE_RECORD
        and (len(first) < 2 or first[1] == _RECORD_MAJOR_VERSION)
    )


def frame_length_is_tls(length: int) -> bool:
    """Whether a frame length read on a plaintext port is really the start of a TLS record
    (type 22, version 3.x): a TLS client on a port without TLS."""
    return length >> 24 == _HANDSHAKE_RECORD and (length >> 16) & 0xFF == _RECORD_MAJOR_VERSION


def explain(exc: BaseException) -> str:
    """OpenSSL's reason for a failed handshake, as a sentence about the other side."""
    cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    if isinstance(cause, ssl.SSLEOFError):
        return "the connection closed during the TLS handshake"
    if isinstance(cause, ssl.SSLCertVerificationError):
        code = cause.verify_code
        if code in _UNTRUSTED_ISSUER:
            return "its certificate is not signed by a CA we trust (check the CA file)"
        if code == _EXPIRED:
            return "its certificate has expired"
        if code == _NOT_YET_VALID:
            return "its certificate is not valid yet (check the clocks)"
        if code in _NAME_MISMATCH:
            return f"its certificate is not issued for this address ({cause.verify_message})"
        return f"its certificate was refused: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        return _explain_reason(cause.reason or "", str(cause))
    if isinstance(cause, OSError):
        return f"{(cause.strerror or str(cause)).lower()} during the TLS handshake"
    return str(exc) or type(exc).__name__


def _explain_reason(reason: str, text: str) -> str:
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return "it does not speak TLS on this port (a member without TLS?)"
    if reason in ("UNEXPECTED_EOF_WHILE_READING", "EOF_OCCURRED_IN_VIOLATION_OF_PROTOCOL"):
        return "the connection closed during the TLS handshake"
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
        return "it requires a client certificate, and none was given"
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":  # said by the side that requires one
        return "it presented no certificate, and one is required"
    if reason == "TLSV1_ALERT_UNKNOWN_CA":
        return "it does not trust the CA that signed our certificate"
    if reason == "SSLV3_ALERT_CERTIFICATE_EXPIRED":
        return "it says our certificate has expired"
    if reason in ("SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN"):
        return "it refused our certificate"
    if reason in ("HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "NO_SHARED_CIPHER"):
        return f"it is not a TLS client we can talk to ({reason.lower()})"
    if reason.startswith("TLSV1_ALERT_PROTOCOL_VERSION") or reason.endswith("PROTOCOL_VERSION"):
        return "no TLS version in common (TLS 1.2 is the minimum)"
    return f"TLS failed: {reason.lower() or text}"


def is_handshake_refusal(exc: BaseException) -> bool:
    """Whether a read failed because the other side rejected the handshake (a TLS alert).
    In TLS 1.3 a client learns that its certificate was refused only at its first read,
    after its requests were written; a refused handshake means none of them were read."""
    cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    return isinstance(cause, ssl.SSLError) and "ALERT" in (cause.reason or "")
