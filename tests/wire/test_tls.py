"""wire.tls: contexts, real handshakes over memory streams, and the sentences for each
way a handshake fails."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trio.testing

from cli.raftctl import _tls_context, build_parser
from raftd import certs
from raftd.config import TlsSettings
from raftd.runtime.tls import Contexts, build_contexts
from wire.api import CLIENT_REGISTRY, GetReply
from wire.codec import Header
from wire.stream import BatchedSender, FramedStream, TurnWrites
from wire.tls import (
    TlsConfigError,
    TlsFailure,
    TlsFiles,
    TlsStream,
    certificate_names,
    client_context,
    explain,
    frame_length_is_tls,
    handshake,
    looks_like_tls,
    peer_certificate,
    server_context,
    wrap,
)


def write(tmp: Path, name: str, pair: tuple[bytes, bytes]) -> TlsFiles:
    cert, key = tmp / f"{name}.pem", tmp / f"{name}-key.pem"
    cert.write_bytes(pair[0])
    key.write_bytes(pair[1])
    return TlsFiles(cert, key)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    """A CA, a member n1 (for 127.0.0.1 and localhost), a client, and trouble."""
    ca = certs.new_authority()
    other = certs.new_authority("another CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "other-ca.pem").write_bytes(other.cert_pem)
    past = datetime.now(UTC) - timedelta(days=1)
    hosts = ["127.0.0.1", "localhost"]
    files = {
        "n1": write(tmp_path, "n1", certs.issue(ca, "n1", names=hosts)),
        "client": write(tmp_path, "client", certs.issue(ca, "client")),
        "expired": write(tmp_path, "expired", certs.issue(ca, "n1", names=hosts, not_after=past)),
        "stranger": write(tmp_path, "stranger", certs.issue(other, "n1", names=hosts)),
    }
    files["ca"] = TlsFiles(ca=tmp_path / "ca.pem")
    files["other-ca"] = TlsFiles(ca=tmp_path / "other-ca.pem")
    return files


def server_files(pki: dict[str, TlsFiles], name: str, *, require_client: bool) -> TlsFiles:
    own = pki[name]
    return TlsFiles(own.cert, own.key, pki["ca"].ca if require_client else None)


async def shake(
    server: TlsFiles, client: TlsFiles, hostname: str = "127.0.0.1"
) -> tuple[BaseException | None, BaseException | None, frozenset[str]]:
    """Both ends of one handshake over memory; what each raised, and the names in the
    server's certificate as the client saw them."""
    left, right = trio.testing.memory_stream_pair()
    s = wrap(left, server_context(server), server_side=True)
    c = wrap(right, client_context(client), server_hostname=hostname)
    failures: dict[str, BaseException | None] = {"server": None, "client": None}
    names: frozenset[str] = frozenset()

    async def side(which: str, stream: TlsStream) -> None:
        nonlocal names
        try:
            await handshake(stream, timeout_s=5)
            if which == "client":
                names = certificate_names(peer_certificate(stream))
                await stream.send_all(b"ping")  # TLS 1.3: a refusal arrives at the next read
                await stream.receive_some(10)
            else:
                await stream.send_all(await stream.receive_some(10))
        except (TlsFailure, trio.BrokenResourceError) as exc:
            failures[which] = exc
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "server", s)
        nursery.start_soon(side, "client", c)
    return failures["server"], failures["client"], names


def client_files(pki: dict[str, TlsFiles], name: str | None, ca: str = "ca") -> TlsFiles:
    own = pki[name] if name else TlsFiles()
    return TlsFiles(own.cert, own.key, pki[ca].ca)


async def test_a_good_handshake_shows_the_names_the_certificate_holds(
    pki: dict[str, TlsFiles],
) -> None:
    server, client, names = await shake(
        server_files(pki, "n1", require_client=True), client_files(pki, "client")
    )
    assert (server, client) == (None, None)
    assert {"n1", "localhost"} <= names


@pytest.mark.parametrize(
    ("server_name", "client_name", "ca", "hostname", "client_says", "server_says"),
    [
        ("stranger", "client", "ca", "127.0.0.1", "not signed by a CA we trust", None),
        ("expired", "client", "ca", "127.0.0.1", "its certificate has expired", None),
        ("n1", "client", "ca", "127.0.0.2", "not issued for this address", None),
        ("n1", None, "ca", "127.0.0.1", "requires a client certificate", "certificate"),
        ("n1", "stranger", "ca", "127.0.0.1", "does not trust the CA", "not signed by a CA"),
        ("n1", "expired", "ca", "127.0.0.1", "says our certificate has expired", "expired"),
    ],
)
async def test_each_refusal_is_said_in_words_on_both_sides(
    pki: dict[str, TlsFiles],
    server_name: str,
    client_name: str | None,
    ca: str,
    hostname: str,
    client_says: str,
    server_says: str | None,
) -> None:
    server, client, _ = await shake(
        server_files(pki, server_name, require_client=True),
        client_files(pki, client_name, ca),
        hostname,
    )
    assert client is not None
    assert client_says in (str(client) if isinstance(client, TlsFailure) else explain(client))
    if server_says is not None:
        assert server is not None and server_says in str(server)


@pytest.mark.parametrize(
    ("answer", "says", "misconfigured"),
    [
        # A plaintext server answers a ClientHello with plaintext (raftd's do, on purpose).
        (b"\x00\x00\x00\x10not tls at all!!", "does not speak TLS", True),
        # One that goes away mid-handshake is a member restarting, not a mistake.
        (None, "closed during the TLS handshake", False),
    ],
)
async def test_a_handshake_that_meets_no_tls_says_which_way(
    pki: dict[str, TlsFiles], answer: bytes | None, says: str, misconfigured: bool
) -> None:
    left, right = trio.testing.memory_stream_pair()
    client = wrap(right, client_context(client_files(pki, "client")), server_hostname="x")

    async def server() -> None:
        await left.receive_some(100)
        if answer is None:
            await left.aclose()
        else:
            await left.send_all(answer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        with pytest.raises(TlsFailure, match=says) as caught:
            await handshake(client, timeout_s=5)
    assert caught.value.configuration is misconfigured


def member_and_raftctl_contexts(pki: dict[str, TlsFiles]) -> tuple[Contexts, ssl.SSLContext]:
    """n1's contexts as ``raftd run`` builds them (mutual TLS on both ports), and raftctl's
    from its flags."""
    own = TlsFiles(pki["n1"].cert, pki["n1"].key, pki["ca"].ca)
    member = build_contexts(TlsSettings(peer=own, client=own))
    client = pki["client"]
    flags = ["--cacert", str(pki["ca"].ca), "--cert", str(client.cert), "--key", str(client.key)]
    raftctl = _tls_context(build_parser().parse_args([*flags, "status"]), {})
    assert raftctl is not None
    return member, raftctl


def test_every_context_accepts_tls_1_2_at_least_and_is_not_capped_below_1_3(
    pki: dict[str, TlsFiles],
) -> None:
    member, raftctl = member_and_raftctl_contexts(pki)
    contexts = {
        "peer port": member.peer_server,
        "peer links dialled": member.peer_client,
        "client port": member.client_server,
        "forwarding": member.proxy_client,
        "raftctl": raftctl,
    }
    for which, context in contexts.items():
        assert context is not None, which
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2, which
        assert context.maximum_version in (
            ssl.TLSVersion.MAXIMUM_SUPPORTED,
            ssl.TLSVersion.TLSv1_3,
        ), which


async def negotiated(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str
) -> tuple[str | None, str | None]:
    """The protocol each side of one handshake over memory settled on."""
    left, right = trio.testing.memory_stream_pair()
    s = wrap(left, server, server_side=True)
    c = wrap(right, client, server_hostname=hostname)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake, s)
        nursery.start_soon(handshake, c)
    return s.version(), c.version()


async def test_members_and_raftctl_negotiate_tls_1_3_and_still_accept_1_2(
    pki: dict[str, TlsFiles],
) -> None:
    member, raftctl = member_and_raftctl_contexts(pki)
    assert member.client_server is not None and member.peer_server is not None
    assert member.peer_client is not None
    assert await negotiated(member.client_server, raftctl, "127.0.0.1") == ("TLSv1.3",) * 2
    assert await negotiated(member.peer_server, member.peer_client, "n1") == ("TLSv1.3",) * 2
    # A caller whose OpenSSL stops at TLS 1.2 is still served, at 1.2.
    raftctl.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await negotiated(member.client_server, raftctl, "127.0.0.1") == ("TLSv1.2",) * 2


def test_a_tls_record_is_recognised_in_first_bytes_and_as_a_frame_length() -> None:
    hello = b"\x16\x03\x01\x02\x00"
    assert looks_like_tls(hello) and looks_like_tls(hello[:1])
    assert not looks_like_tls(b"\x00\x00\x00\x10") and not looks_like_tls(b"")
    assert frame_length_is_tls(int.from_bytes(hello[:4], "big"))
    assert not frame_length_is_tls(16) and not frame_length_is_tls(0x17030100)


def test_unusable_files_name_themselves(tmp_path: Path, pki: dict[str, TlsFiles]) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(TlsConfigError, match=f"cannot read {missing}: no such file"):
        server_context(TlsFiles(missing, pki["n1"].key))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TlsConfigError, match="not a PEM certificate and its private key"):
        server_context(TlsFiles(garbage, pki["n1"].key))
    with pytest.raises(TlsConfigError, match="holds no PEM CA certificate"):
        client_context(TlsFiles(ca=garbage))
    with pytest.raises(TlsConfigError, match="needs its key"):
        client_context(TlsFiles(cert=pki["client"].cert, ca=pki["ca"].ca))
    with pytest.raises(TlsConfigError, match="both a certificate and its key"):
        server_context(TlsFiles(cert=pki["n1"].cert))


async def connected_pair(pki: dict[str, TlsFiles]) -> tuple[TlsStream, TlsStream]:
    """A server and a client TlsStream over a real socket pair, handshake done."""
    left, right = trio.socket.socketpair()
    server = wrap(
        trio.SocketStream(left), server_context(server_files(pki, "n1", require_client=True)),
        server_side=True,
    )  # fmt: skip
    client = wrap(
        trio.SocketStream(right), client_context(client_files(pki, "client")),
        server_hostname="localhost",
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake, server)
        nursery.start_soon(handshake, client)
    return server, client


async def test_megabytes_cross_in_both_directions_while_each_side_also_reads(
    pki: dict[str, TlsFiles],
) -> None:
    """Larger than a TLS record, a socket buffer and a read: written whole, read whole, with
    a reader and a writer busy on each stream at once (a member's peer links)."""
    server, client = await connected_pair(pki)
    payload = bytes(range(256)) * 12_000  # 3 MB
    got: dict[str, bytearray] = {"server": bytearray(), "client": bytearray()}

    async def read(name: str, stream: TlsStream) -> None:
        while len(got[name]) < len(payload):
            chunk = await stream.receive_some(65536)
            assert chunk, f"{name} saw the end of the stream early"
            got[name] += chunk

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, "server", server)
        nursery.start_soon(read, "client", client)
        nursery.start_soon(client.send_all, payload)
        nursery.start_soon(server.send_all, memoryview(payload))
    assert got["server"] == payload and got["client"] == payload


async def test_the_end_of_the_stream_is_an_empty_read_and_no_io_before_the_handshake(
    pki: dict[str, TlsFiles],
) -> None:
    server, client = await connected_pair(pki)
    await client.send_all(b"last words")
    await client.aclose()  # no close_notify: the frames above TLS detect a cut message
    assert await server.receive_some(100) == b"last words"
    assert await server.receive_some(100) == b""
    left, _ = trio.socket.socketpair()
    context = client_context(client_files(pki, "client"))
    fresh = wrap(trio.SocketStream(left), context, server_hostname="localhost")
    with pytest.raises(trio.BrokenResourceError, match="before the TLS handshake"):
        await fresh.send_all(b"x")
    with pytest.raises(trio.BrokenResourceError, match="before the TLS handshake"):
        await fresh.receive_some(1)


async def test_write_now_takes_everything_and_leaves_what_the_socket_refused_for_the_next_send(
    pki: dict[str, TlsFiles],
) -> None:
    """The loop's write without waiting, over TLS: the plaintext is taken whole (it is
    encrypted at once), the records the socket did not take go first at the next send,
    and the peer reads every byte once, in order."""
    server, client = await connected_pair(pki)
    assert client.write_now(b"small") == 5 and not client.unsent
    assert await server.receive_some(100) == b"small"
    payload = bytes(range(256)) * 12_000  # 3 MB: more than the socket buffers
    got = bytearray()

    async def read() -> None:
        while len(got) < len(payload) + 4:
            chunk = await server.receive_some(65536)
            assert chunk
            got.extend(chunk)

    assert client.write_now(payload) == len(payload)
    assert client.unsent
    assert client.write_now(b"more") == 0  # nothing overtakes the records left over
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await client.send_all(b"tail")
    assert bytes(got) == payload + b"tail"
    assert not client.unsent


async def test_write_now_declines_before_the_handshake(pki: dict[str, TlsFiles]) -> None:
    left, _ = trio.socket.socketpair()
    stream = wrap(trio.SocketStream(left), client_context(client_files(pki, "client")))
    assert stream.write_now(b"x") == 0


async def test_replies_the_loop_writes_over_tls_all_arrive(pki: dict[str, TlsFiles]) -> None:
    """A BatchedSender over TLS: the turn's flush writes the replies; records the socket
    did not take leave with the sender task's next write."""
    server, client = await connected_pair(pki)
    ours, theirs = FramedStream(server, CLIENT_REGISTRY), FramedStream(client, CLIENT_REGISTRY)
    turn = TurnWrites()
    sent: list[int] = []
    sender = BatchedSender(ours, sent.append, turn)
    big = GetReply(True, "v" * (4 << 20), "n1")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            turn.open()
            for request_id, reply in ((1, big), (2, GetReply(True, "v", "n1"))):
                sender.expect()
                sender.queue(ours.encode(Header("GetReply", request_id), reply))
            turn.close()
            assert sent == [2]
            first, second = await theirs.receive(), await theirs.receive()
            sender.close()
    assert first == (Header("GetReply", 1), big)
    assert second is not None and second[0].request_id == 2
