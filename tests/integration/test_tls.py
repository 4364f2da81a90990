"""Mutual TLS against real members: who gets in, who is turned away and what each side
says, certificates rotated under load, and traces that still cross every member."""

from __future__ import annotations

import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
from cryptography import x509

from cli.client import Client, ClientError, open_stream
from raftd import certs
from raftd.core import Heartbeat
from tests.integration import test_traces
from tests.integration.harness import ROOT, Cluster, metric, running
from wire.api import PEER_REGISTRY, Hello, MemberChangeRequest
from wire.codec import Header
from wire.stream import FramedStream
from wire.tls import TlsFailure, TlsFiles, TlsStream, client_context, handshake, wrap

DEADLINE_S = 30.0


@pytest.fixture
async def tls_cluster(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path / "members", 3, tls=True)
    cluster.serve_metrics()
    async with running(cluster, nursery) as started:
        yield started


async def raftctl(
    endpoints: list[str], *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """raftctl's exit status and its stderr, with only the given TLS settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAFTCTL_", "OTEL_"))}
    result = await trio.run_process(
        [sys.executable, "-m", "cli", "--endpoints", ",".join(endpoints), "--timeout", "5", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env={**clean, **(env or {})},
    )
    return result.returncode, result.stderr.decode()


def issue(out: Path, authority: certs.Authority, name: str, **kwargs: object) -> TlsFiles:
    """A certificate and key for ``name`` in ``out`` (``kwargs`` as for ``certs.issue``)."""
    out.mkdir(parents=True, exist_ok=True)
    cert, key = certs.issue(authority, name, **kwargs)  # type: ignore[arg-type]
    (out / f"{name}.pem").write_bytes(cert)
    (out / f"{name}-key.pem").write_bytes(key)
    return TlsFiles(out / f"{name}.pem", out / f"{name}-key.pem")


def authority_of(cluster: Cluster) -> certs.Authority:
    assert cluster.tls_dir is not None
    return certs.load_authority(cluster.tls_dir / certs.CA_CERT, cluster.tls_dir / certs.CA_KEY)


YESTERDAY = datetime.now(UTC) - timedelta(days=1)
HOSTS = ["127.0.0.1", "localhost"]


async def test_raftctl_with_each_wrong_credential_is_refused_in_words(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = tls_cluster
    good = cluster.client_files
    ok = {"RAFTCTL_CACERT": str(good.ca), "RAFTCTL_CERT": str(good.cert)}
    ok["RAFTCTL_KEY"] = str(good.key)
    assert await raftctl(cluster.endpoints, "set", "k", "v", env=ok) == (0, "")
    # The member's certificate names localhost too: the host checked is the one dialled.
    by_name = [e.replace("127.0.0.1", "localhost") for e in cluster.endpoints]
    assert await raftctl(by_name, "get", "k", env=ok) == (0, "")

    other = certs.new_authority("someone else's CA")
    (tmp_path / "other-ca.pem").write_bytes(other.cert_pem)
    stranger = issue(tmp_path, other, "client")
    expired = issue(tmp_path / "expired", authority_of(cluster), "client", not_after=YESTERDAY)
    cases = {
        "requires TLS": {},
        "not signed by a CA we trust": {**ok, "RAFTCTL_CACERT": str(tmp_path / "other-ca.pem")},
        "requires a client certificate": {"RAFTCTL_CACERT": str(good.ca)},
        "does not trust the CA that signed our certificate": {
            **ok,
            "RAFTCTL_CERT": str(stranger.cert),
            "RAFTCTL_KEY": str(stranger.key),
        },
        "says our certificate has expired": {
            **ok,
            "RAFTCTL_CERT": str(expired.cert),
            "RAFTCTL_KEY": str(expired.key),
        },
    }
    for says, env in cases.items():
        started = trio.current_time()
        code, err = await raftctl(cluster.endpoints, "set", "k", "w", env=env)
        assert code == 1 and says in err, (says, err)
        assert "Traceback" not in err
        # A definite refusal, at once: waiting out the deadline would only hide it.
        assert trio.current_time() - started < 5, err
    code, err = await raftctl(cluster.endpoints, "--cert", str(good.cert), "get", "k", env=ok)
    assert code == 0, err  # the flag's certificate with the environment's key: a pair
    code, err = await raftctl(cluster.endpoints, "--key", str(tmp_path / "none.pem"), "get", "k")
    assert code == 2 and "needs its key" in err, err

    async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
        assert (await client.get("k")).value == "v"  # nothing above was written
    text = await cluster.scrape("n1")
    closed = 'raftd_connections_closed_by_member_total{port="client",reason="%s"}'
    assert metric(text, closed % "tls_handshake") >= 3
    assert metric(text, closed % "tls_mismatch") >= 1
    assert metric(text, 'raftd_tls_certificate_expiry_timestamp_seconds{port="peer"}') > 0


async def test_tls_and_plaintext_sides_tell_each_other_apart(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A raftctl with TLS facing a member without it, and members whose certificates are
    expired or do not name the address they are reached at."""
    plain = Cluster(tmp_path / "plain", 1, tls=False)
    async with running(plain, nursery):
        bundle = tmp_path / "bundle"
        certs.write_bundle(bundle, ["n1"])
        code, err = await raftctl(plain.endpoints, "--cacert", str(bundle / "ca.pem"), "get", "k")
        assert code == 1 and "does not speak TLS on this port" in err, err
        assert "a TLS client on a port without TLS" in plain.log_text("n1")

    secure = Cluster(tmp_path / "secure", 1, tls=True)
    assert secure.tls_dir is not None
    env = secure.raftctl_env
    wrong_name = issue(tmp_path / "wrong", authority_of(secure), "n1")  # no 127.0.0.1 in it
    expired = issue(tmp_path / "old", authority_of(secure), "n1", names=HOSTS, not_after=YESTERDAY)
    for files, says in (
        (wrong_name, "not issued for this address"),
        (expired, "its certificate has expired"),
    ):
        member = secure.members["n1"]
        member.extra_args = ["--client-cert", str(files.cert), "--client-key", str(files.key)]
        await secure.start_member("n1")
        try:
            with trio.fail_after(DEADLINE_S):
                while "raftd ready" not in secure.log_text("n1"):
                    await trio.sleep(0.05)
            code, err = await raftctl(secure.endpoints, "get", "k", env=env)
            assert code == 1 and says in err, err
        finally:
            await secure.shutdown()
        member.log_path.write_text("")


async def test_members_refuse_peers_whose_certificates_do_not_prove_who_they_are(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = tls_cluster
    assert cluster.tls_dir is not None
    d = cluster.tls_dir
    other = certs.new_authority("another cluster's CA")
    (tmp_path / "other-ca.pem").write_bytes(other.cert_pem)
    stranger = issue(tmp_path / "stranger", other, "n3", names=HOSTS)
    expired = issue(
        tmp_path / "expired", authority_of(cluster), "n3", names=HOSTS, not_after=YESTERDAY
    )

    def peer_flags(files: TlsFiles, ca: Path) -> list[str]:
        return ["--peer-cert", str(files.cert), "--peer-key", str(files.key), "--peer-ca", str(ca)]

    n2_files = TlsFiles(d / "n2.pem", d / "n2-key.pem")
    cases: list[tuple[str, list[str], str, str]] = [
        # (what, n3's flags, what n1 logs, what n3 logs)
        (
            "a certificate from another CA",
            peer_flags(stranger, tmp_path / "other-ca.pem"),
            "its certificate is not signed by a CA we trust",
            "its certificate is not signed by a CA we trust",
        ),
        (
            "n2's valid certificate",
            peer_flags(n2_files, d / "ca.pem"),
            "says it is 'n3', but its certificate is issued for localhost, n2",
            "raftd ready",
        ),
        (
            "an expired certificate",
            peer_flags(expired, d / "ca.pem"),
            "",  # n1 said "TLS handshake failed" for the first case: summarized for 10 s
            "it says our certificate has expired",
        ),
        (
            "no TLS at all",
            ["--peer-cert", "", "--peer-key", "", "--peer-ca", ""],
            "a plaintext caller on a TLS port",
            "a TLS caller on a port without TLS",
        ),
    ]
    for what, flags, n1_says, n3_says in cases:
        await cluster.kill("n3")
        n1_log_from = len(cluster.log_text("n1"))
        cluster.members["n3"].log_path.write_text("")
        cluster.members["n3"].extra_args[2:] = flags  # after --metrics-addr ADDRESS
        await cluster.start_member("n3")
        async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
            written = await client.set("during", what)
        with trio.fail_after(DEADLINE_S):
            while n1_says not in cluster.log_text("n1")[n1_log_from:] or (
                n3_says not in cluster.log_text("n3")
            ):
                await trio.sleep(0.05)
        leader = await cluster.wait_for_leader(among=["n1", "n2"])
        statuses = await cluster.statuses(["n3", leader])
        assert statuses[leader].last_applied >= written.index
        if "n3" in statuses:  # a member on the wrong certificates learns nothing new
            assert statuses["n3"].last_applied < written.index, what
    text = await cluster.scrape("n1")
    closed = 'raftd_connections_closed_by_member_total{port="peer",reason="%s"}'
    for reason in ("tls_handshake", "identity", "tls_mismatch"):
        assert metric(text, closed % reason) >= 1, reason

    await cluster.kill("n3")
    del cluster.members["n3"].extra_args[2:]
    await cluster.start_member("n3")
    await cluster.wait_applied("n3", written.index, timeout_s=DEADLINE_S)


async def serial_served(cluster: Cluster, name: str) -> int:
    stream = await open_stream(cluster.members[name].client_addr, cluster.client_tls)
    try:
        link = stream.stream
        assert isinstance(link, TlsStream)
        cert = link.getpeercert()
        assert cert is not None
        return int(str(cert["serialNumber"]), 16)
    finally:
        await stream.aclose()


async def peer_serial_served(cluster: Cluster, name: str) -> int:
    """The serial of the certificate ``name`` presents on its peer port (dialled with
    raftctl's certificate, from the same CA: enough for the handshake, not for a Hello)."""
    link = await dial_tls(cluster.members[name].peer_port, cluster.client_files, name)
    try:
        cert = link.getpeercert()
        assert cert is not None
        return int(str(cert["serialNumber"]), 16)
    finally:
        await link.aclose()


def serial_on_disk(cluster: Cluster, name: str) -> int:
    assert cluster.tls_dir is not None
    pem = (cluster.tls_dir / f"{name}.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).serial_number


async def test_certificates_rotate_on_sighup_and_on_change_without_downtime(
    tls_cluster: Cluster,
) -> None:
    cluster = tls_cluster
    assert cluster.tls_dir is not None
    member = cluster.members["n1"]
    assert member.process is not None
    original = serial_on_disk(cluster, "n1")
    assert await serial_served(cluster, "n1") == original
    assert await peer_serial_served(cluster, "n1") == original
    failures: list[str] = []
    writes = 0
    stop = trio.Event()

    async def writer() -> None:
        nonlocal writes
        async with Client(cluster.endpoints, tls=cluster.client_tls, timeout_s=10) as client:
            while not stop.is_set():
                try:
                    await client.set("rotating", str(writes))
                    writes += 1
                except ClientError as exc:
                    failures.append(str(exc))

    async def wait_for_log(text: str, count: int) -> None:
        with trio.fail_after(DEADLINE_S):
            while cluster.log_text("n1").count(text) < count:
                await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        certs.write_bundle(cluster.tls_dir, ["n1"], force=True)
        renewed = serial_on_disk(cluster, "n1")
        member.process.send_signal(signal.SIGHUP)
        await wait_for_log('"why": "SIGHUP"', 1)
        assert await serial_served(cluster, "n1") == renewed != original
        assert await peer_serial_served(cluster, "n1") == renewed  # the peer port too

        # No signal this time: the member notices the files changed.
        certs.write_bundle(cluster.tls_dir, ["n1"], force=True)
        again = serial_on_disk(cluster, "n1")
        await wait_for_log('"why": "the files changed"', 1)
        assert await serial_served(cluster, "n1") == again
        assert await peer_serial_served(cluster, "n1") == again

        # A broken certificate is not taken: the member keeps serving the last good one.
        (cluster.tls_dir / "n1.pem").write_text("-----BEGIN CERTIFICATE-----\ncut short")
        member.process.send_signal(signal.SIGHUP)
        await wait_for_log("TLS reload failed", 1)
        assert await serial_served(cluster, "n1") == again
        before = writes
        with trio.fail_after(DEADLINE_S):
            while writes < before + 20:
                await trio.sleep(0.05)
        stop.set()
    assert failures == [] and writes > 20
    text = await cluster.scrape("n1")
    assert metric(text, 'raftd_tls_reloads_total{outcome="ok"}') == 2
    assert metric(text, 'raftd_tls_reloads_total{outcome="failed"}') >= 1


async def test_a_write_is_one_trace_across_every_member_over_tls(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    await test_traces.test_a_client_write_is_one_trace_across_the_client_and_every_member(
        tls_cluster, tmp_path
    )


async def test_a_forwarded_request_crosses_tls_twice_in_one_trace(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    await test_traces.test_a_forwarded_request_shows_the_proxy_hop_in_the_same_trace(
        tls_cluster, tmp_path
    )


def test_the_client_context_refuses_tls_older_than_1_2(tmp_path: Path) -> None:
    certs.write_bundle(tmp_path, ["n1"])
    context = client_context(TlsFiles(ca=tmp_path / "ca.pem"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_a_member_joins_over_mutual_tls_and_an_impostor_cannot_invite_it(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """--join under TLS: the joiner waits for a member of --cluster whose certificate names
    it; a caller with a certificate from another CA cannot get past the handshake."""
    cluster = Cluster(tmp_path / "members", 3, tls=True)
    async with running(cluster, nursery):
        async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
            await client.set("before", "n4")
        n4 = await cluster.add_member("n4", nursery)
        await cluster.start_member("n4")
        with trio.fail_after(DEADLINE_S):
            while "waiting to be added" not in cluster.log_text("n4"):
                await trio.sleep(0.05)
        # An impostor speaks first: TLS with a certificate for n1 from another CA.
        other = certs.new_authority("an impostor's CA")
        (tmp_path / "other-ca.pem").write_bytes(other.cert_pem)
        impostor = issue(tmp_path / "impostor", other, "n1", names=HOSTS)
        context = client_context(TlsFiles(impostor.cert, impostor.key, tmp_path / "other-ca.pem"))
        tcp = await trio.open_tcp_stream("127.0.0.1", n4.peer_port)
        with pytest.raises(TlsFailure):
            await handshake(wrap(tcp, context, server_hostname="n4"), timeout_s=5)
        await tcp.aclose()
        # Another, with a valid certificate of the cluster's CA (raftctl's), claiming to be
        # n1 and inviting n4 as id 9: its certificate does not name n1, so n4 ignores it.
        link = await dial_tls(n4.peer_port, cluster.client_files, "n4")
        stream = FramedStream(link, PEER_REGISTRY)
        await stream.send(Header("Hello"), Hello("raftd", "n1", "127.0.0.1:1"))
        await stream.send(Header("Heartbeat"), Heartbeat(1, 1, 9, 0))
        with trio.fail_after(DEADLINE_S):
            while "certificate does not name it" not in cluster.log_text("n4"):
                await trio.sleep(0.05)
        await stream.aclose()
        async with Client(cluster.endpoints, tls=cluster.client_tls) as client:
            await client.change_members(
                MemberChangeRequest("add", "n4", n4.peer_addr, n4.client_addr, True)
            )
            written = await client.set("after", "n4")
        await cluster.wait_applied("n4", written.index, timeout_s=DEADLINE_S)
    log = cluster.log_text("n4")
    assert "refused a peer connection" in log and "added to the cluster" in log
    assert '"id": 9' not in log  # the impostor's invitation was not taken


async def dial_tls(port: int, files: TlsFiles, name: str) -> TlsStream:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    link = wrap(tcp, client_context(files), server_hostname=name)
    await handshake(link, timeout_s=5)
    return link


async def test_a_member_refuses_to_start_on_unusable_tls_files(tmp_path: Path) -> None:
    certs.write_bundle(tmp_path / "certs", ["n1"])
    base = [sys.executable, "-m", "raftd", "run", "--id", "n1", "--cluster", "n1=127.0.0.1:1",
            "--client-addr", "127.0.0.1:2", "--data-dir", str(tmp_path / "data")]  # fmt: skip
    cases = {
        "cannot read": ["--client-cert", str(tmp_path / "none.pem"), "--client-key", "k.pem"],
        "peer TLS is mutual": ["--peer-cert", str(tmp_path / "certs" / "n1.pem")],
        "not a PEM certificate and its private key": [
            "--client-cert", str(tmp_path / "certs" / "n1.pem"),
            "--client-key", str(tmp_path / "certs" / "ca.pem"),
        ],
    }  # fmt: skip
    for says, flags in cases.items():
        done = await trio.run_process(
            [*base, *flags], capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT
        )
        err = done.stderr.decode()
        assert done.returncode == 2 and says in err and "Traceback" not in err, (says, err)
    assert not (tmp_path / "data" / "member.json").exists()  # refused before touching it


def test_raftd_certs_is_a_command_of_raftd(tmp_path: Path) -> None:
    from raftd.main import main

    assert main(["certs", "--out", str(tmp_path / "c"), "--members", "a,b"]) == 0
    assert {p.name for p in (tmp_path / "c").iterdir()} >= {"ca.pem", "a.pem", "b-key.pem"}
