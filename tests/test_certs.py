"""``raftd certs``: the bundle is checked by the verifier that will meet it, Python's ``ssl``
(OpenSSL), in real handshakes over memory BIOs, not by reading the certificates back."""

from __future__ import annotations

import argparse
import re
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from raftd import certs

MEMBERS = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs") / "bundle"
    certs.write_bundle(out, MEMBERS)
    return out


def server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """Both sides of a TLS handshake, shuttling the bytes by hand; raises what either side
    raises. The client then reads, which is where TLS 1.3 tells it its certificate was
    refused, and the server writes one byte so that the read has something to return."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(client_in, client_out, server_hostname=hostname)
    tls_server = server.wrap_bio(server_in, server_out, server_side=True)
    client_done = server_done = False
    for _ in range(10):
        if not client_done:
            try:
                tls_client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        if not server_done:
            try:
                tls_server.do_handshake()
                server_done = True
                tls_server.write(b"!")
            except ssl.SSLWantReadError:
                pass
        client_in.write(server_out.read())
        if client_done and server_done:
            assert tls_client.read(1) == b"!"
            return
    raise AssertionError("the handshake did not finish")


def member_files(out: Path, name: str) -> tuple[Path, Path]:
    return out / f"{name}.pem", out / f"{name}-key.pem"


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_bundle_holds_every_file_with_keys_readable_by_the_owner_only(bundle: Path) -> None:
    names = ["ca", *MEMBERS, "client"]
    expected = {f"{name}{suffix}.pem" for name in names for suffix in ("", "-key")}
    assert {path.name for path in bundle.iterdir()} == expected
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    for name in names:
        assert stat.S_IMODE((bundle / f"{name}-key.pem").stat().st_mode) == 0o600
        assert (bundle / f"{name}-key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_the_certificates_have_the_extensions_tls_needs(bundle: Path) -> None:
    ca = load(bundle / "ca.pem")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    n1 = load(bundle / "n1.pem")
    assert n1.extensions.get_extension_for_class(x509.BasicConstraints).critical
    assert not n1.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(n1.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    san = n1.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(name.value) for name in san] == ["n1", "localhost", "127.0.0.1", "::1"]
    client = load(bundle / "client.pem")
    client_san = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert client_san.get_values_for_type(x509.DNSName) == ["client"]


@pytest.mark.parametrize("member", MEMBERS)
@pytest.mark.parametrize("hostname", ["127.0.0.1", "::1", "localhost", "member"])
def test_each_member_and_the_client_complete_a_mutual_handshake(
    bundle: Path, member: str, hostname: str
) -> None:
    ca = bundle / "ca.pem"
    server = server_context(*member_files(bundle, member), ca)
    client = client_context(ca, *member_files(bundle, "client"))
    handshake(server, client, member if hostname == "member" else hostname)


def test_a_member_certificate_also_serves_as_a_client_certificate(bundle: Path) -> None:
    ca = bundle / "ca.pem"
    server = server_context(*member_files(bundle, "n1"), ca)
    handshake(server, client_context(ca, *member_files(bundle, "n2")), "n1")


def test_a_member_certificate_is_not_valid_for_another_member(bundle: Path) -> None:
    ca = bundle / "ca.pem"
    server = server_context(*member_files(bundle, "n1"), ca)
    client = client_context(ca, *member_files(bundle, "client"))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(server, client, "n2")


def test_an_expired_certificate_is_refused(bundle: Path, tmp_path: Path) -> None:
    authority = certs.load_authority(bundle / "ca.pem", bundle / "ca-key.pem")
    now = datetime.now(UTC)
    cert, key = write_pair(
        tmp_path,
        "old",
        *certs.issue(
            authority,
            "old",
            names=["127.0.0.1"],
            not_before=now - timedelta(days=30),
            not_after=now - timedelta(days=1),
        ),
    )
    server = server_context(cert, key, bundle / "ca.pem")
    client = client_context(bundle / "ca.pem", *member_files(bundle, "client"))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        handshake(server, client, "127.0.0.1")


def test_only_not_after_in_the_past_still_makes_an_expired_certificate(bundle: Path) -> None:
    authority = certs.load_authority(bundle / "ca.pem", bundle / "ca-key.pem")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    cert_pem, _ = certs.issue(authority, "old", days=7, not_after=yesterday)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.not_valid_after_utc == yesterday.replace(microsecond=0)
    assert cert.not_valid_before_utc == (yesterday - timedelta(days=7)).replace(microsecond=0)


def test_certificates_of_another_ca_are_refused_both_ways(bundle: Path, tmp_path: Path) -> None:
    stranger = certs.new_authority("another CA")
    cert, key = write_pair(tmp_path, "n1", *certs.issue(stranger, "n1", names=["127.0.0.1"]))
    ca = bundle / "ca.pem"
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(server_context(cert, key, ca), client_context(ca), "n1")
    server = server_context(*member_files(bundle, "n1"), ca)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(server, client_context(ca, cert, key), "n1")  # refused by the server


def test_a_second_bundle_reuses_the_ca_and_refuses_existing_member_files(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    certs.write_bundle(out, ["n1", "n2"])
    ca_pem = (out / "ca.pem").read_bytes()
    n1_pem = (out / "n1.pem").read_bytes()
    written = certs.write_bundle(out, ["n3"])
    assert written == [out / "n3.pem", out / "n3-key.pem"]  # the client pair is kept as is
    assert (out / "ca.pem").read_bytes() == ca_pem
    handshake(
        server_context(*member_files(out, "n3"), out / "ca.pem"),
        client_context(out / "ca.pem", *member_files(out, "client")),
        "n3",
    )
    with pytest.raises(
        certs.CertsError, match=r"n1\.pem, .*n1-key\.pem already exist; pass --force"
    ):
        certs.write_bundle(out, ["n1", "n4"])
    assert (out / "n1.pem").read_bytes() == n1_pem
    assert not (out / "n4.pem").exists()  # nothing is written when anything is refused
    written = certs.write_bundle(out, ["n1"], force=True)
    assert out / "n1.pem" in written and out / "client.pem" in written
    assert (out / "n1.pem").read_bytes() != n1_pem
    assert (out / "ca.pem").read_bytes() == ca_pem


def test_a_client_pair_from_another_ca_is_refused_without_force(tmp_path: Path) -> None:
    certs.write_bundle(tmp_path, ["n1"])
    (tmp_path / "ca.pem").unlink()
    (tmp_path / "ca-key.pem").unlink()
    with pytest.raises(certs.CertsError, match=r"client\.pem.*pass --force"):
        certs.write_bundle(tmp_path, ["n2"])


def test_half_a_ca_is_an_error(tmp_path: Path) -> None:
    certs.write_bundle(tmp_path, ["n1"])
    (tmp_path / "ca-key.pem").unlink()
    with pytest.raises(certs.CertsError, match=r"ca\.pem exists but .*ca-key\.pem does not"):
        certs.write_bundle(tmp_path, ["n2"])


def test_load_authority_explains_unusable_files(tmp_path: Path) -> None:
    authority = certs.new_authority()
    cert, key = write_pair(tmp_path, "ca", authority.cert_pem, authority.key_pem)
    assert certs.load_authority(cert, key) == authority
    with pytest.raises(certs.CertsError, match=r"cannot read .*missing\.pem"):
        certs.load_authority(tmp_path / "missing.pem", key)
    (tmp_path / "junk.pem").write_bytes(b"not a certificate")
    with pytest.raises(certs.CertsError, match=r"junk\.pem is not a PEM certificate"):
        certs.load_authority(tmp_path / "junk.pem", key)
    with pytest.raises(certs.CertsError, match=r"junk\.pem is not a PEM private key"):
        certs.load_authority(cert, tmp_path / "junk.pem")
    other = certs.new_authority()
    (tmp_path / "other-key.pem").write_bytes(other.key_pem)
    with pytest.raises(certs.CertsError, match=r"other-key\.pem is not the key of"):
        certs.load_authority(cert, tmp_path / "other-key.pem")
    leaf, leaf_key = write_pair(tmp_path, "leaf", *certs.issue(authority, "leaf"))
    with pytest.raises(certs.CertsError, match=r"leaf\.pem is not a CA certificate"):
        certs.load_authority(leaf, leaf_key)


def test_alt_names_are_typed_and_not_repeated() -> None:
    authority = certs.new_authority()
    cert_pem, _ = certs.issue(
        authority, "n1", names=["n1", "N1", "10.0.0.1", "10.0.0.1", "[::1]", "db.example"]
    )
    san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["n1", "db.example"]
    assert [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)] == ["10.0.0.1", "::1"]
    with pytest.raises(certs.CertsError, match="neither a DNS name nor an IP address"):
        certs.issue(authority, "n1", names=["host:7001"])
    with pytest.raises(certs.CertsError, match="timezone-aware"):
        certs.issue(authority, "n1", not_after=datetime(2030, 1, 1))


@pytest.mark.parametrize(
    ("members", "client", "message"),
    [
        (["n1", "../n2"], "client", "member name '../n2' must be"),
        (["n1", "n1"], "client", "listed twice"),
        (["ca"], "client", "which is the CA's"),
        (["n1"], "n1", "client 'n1' would write n1.pem"),
        (["n1", "N1"], "client", "member 'N1' would write N1.pem"),
    ],
)
def test_names_that_would_clash_as_files_are_refused(
    tmp_path: Path, members: list[str], client: str, message: str
) -> None:
    with pytest.raises(certs.CertsError, match=re.escape(message)):
        certs.write_bundle(tmp_path / "out", members, client=client)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def cli() -> Iterator[argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="raftd")
    certs.add_parser(parser.add_subparsers(dest="command", required=True))
    yield parser


def run(cli: argparse.ArgumentParser, *argv: str) -> int:
    return certs.run_certs(cli.parse_args(["certs", *argv]))


def test_the_command_writes_the_bundle_and_says_how_to_use_it(
    cli: argparse.ArgumentParser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tls"
    assert run(cli, "--out", str(out), "--members", "n1,n2", "--hosts", "db1,10.1.2.3") == 0
    stdout = capsys.readouterr().out
    for name in ("ca.pem", "ca-key.pem", "n1.pem", "n2-key.pem", "client.pem", "client-key.pem"):
        assert f"wrote {out / name}\n" in stdout
    assert f"--peer-cert {out / 'n1.pem'} --peer-key {out / 'n1-key.pem'}" in stdout
    assert f"raftctl --cacert {out / 'ca.pem'} --cert {out / 'client.pem'}" in stdout
    san = load(out / "n2.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(name.value) for name in san.value] == ["n2", "db1", "10.1.2.3"]

    assert run(cli, "--out", str(out), "--members", "n2") == 1
    assert capsys.readouterr().err == (
        f"raftd certs: {out / 'n2.pem'}, {out / 'n2-key.pem'} already exist; "
        "pass --force to replace them\n"
    )
    assert run(cli, "--out", str(out), "--members", "n2", "--force") == 0
    assert f"used the existing CA in {out}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--members", "n1,n 2"], "member name 'n 2' must be"),
        (["--members", "n1", "--days", "0"], "--days must be a positive number of days, not 0"),
        (["--members", ","], "--members names no member"),
        (["--members", "n1", "--hosts", "https://db1"], "--hosts entry 'https://db1'"),
        (["--members", "n1", "--client-name", "n1"], "client 'n1' would write n1.pem"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(
    cli: argparse.ArgumentParser,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert run(cli, "--out", str(tmp_path / "out"), *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("raftd certs: ") and message in err
    assert not (tmp_path / "out").exists()


def test_an_unreadable_ca_exits_1(
    cli: argparse.ArgumentParser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ca.pem").write_text("garbage")
    (tmp_path / "ca-key.pem").write_text("garbage")
    assert run(cli, "--out", str(tmp_path), "--members", "n1") == 1
    assert "ca.pem is not a PEM certificate" in capsys.readouterr().err


def write_pair(directory: Path, name: str, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    cert, key = member_files(directory, name)
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    return cert, key
