"""``raftd certs``: a CA and the certificates a TLS cluster needs, for development and tests.

Turning TLS on should not start with an afternoon of ``openssl`` incantations, nor with
certificates that only almost work (a missing clientAuth usage, a SAN without the member's
name, a key type an old client refuses). This module makes a small CA and, per member, one
certificate that serves everywhere a member speaks TLS, plus one client certificate for
raftctl, with choices that are safe and unsurprising: ECDSA P-256 keys signed with SHA-256,
a CA that can sign leaf certificates only (path length 0), leaf lifetimes of 825 days (the
longest that every mainstream TLS stack still accepts), validity starting five minutes in
the past so a slightly slow clock does not reject a certificate made a moment ago, and the
extensions that OpenSSL's strict verification asks for (key identifiers, critical basic
constraints and key usage).

It is not a certificate authority for production: there the certificates should come from
the organisation's own CA, with its own revocation, rotation and key custody. Keys are
written unencrypted (a member has to read its key unattended), protected by file modes only.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftd.config import MEMBER_NAME

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca-key.pem"
CA_DAYS: Final = 3650
LEAF_DAYS: Final = 825
DEFAULT_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
# A certificate made now is presented at once, possibly to a member whose clock is behind.
CLOCK_SKEW: Final = timedelta(minutes=5)
_KEY_MODE: Final = 0o600
_CERT_MODE: Final = 0o644
_DIR_MODE: Final = 0o700
# Loose on purpose (wildcards, underscores, trailing dots all occur in practice): the point is
# to catch a port, a URL or a space typed where a host name belongs, which would otherwise
# give a certificate that matches nothing.
_DNS_NAME = re.compile(r"[A-Za-z0-9_.*-]{1,253}")
_ISSUER_KEY_TYPES: Final = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


class CertsError(Exception):
    """A certificate cannot be made or written; the message says what to change."""


@dataclass(frozen=True)
class Authority:
    """A CA as the PEM bytes that are written to and read from disk.

    Constructing one checks that the key belongs to the certificate and that the certificate
    is a CA still valid, so an ``Authority`` never signs certificates nobody would accept.
    """

    cert_pem: bytes
    key_pem: bytes
    certificate: x509.Certificate = field(init=False, repr=False, compare=False)
    private_key: CertificateIssuerPrivateKeyTypes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        certificate, key = _parse_authority(
            self.cert_pem, self.key_pem, cert_name="the CA certificate", key_name="the CA key"
        )
        object.__setattr__(self, "certificate", certificate)
        object.__setattr__(self, "private_key", key)


def new_authority(common_name: str = "raftd development CA", *, days: int = CA_DAYS) -> Authority:
    """A fresh self-signed CA. Ten years by default: replacing a CA means reissuing every
    certificate and redistributing ``ca.pem``, which a development setup should not need."""
    _check_days(days)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        # path_length=0: a stolen development CA key can sign leaves, not further CAs.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def load_authority(cert_path: Path, key_path: Path) -> Authority:
    """The CA written by an earlier run, so that certificates issued now (a member added
    later) are trusted by everyone already holding its ``ca.pem``."""
    cert_pem = _read(cert_path)
    key_pem = _read(key_path)
    # Parsed here first so that a problem names the file it is in.
    _parse_authority(cert_pem, key_pem, cert_name=str(cert_path), key_name=str(key_path))
    return Authority(cert_pem, key_pem)


def issue(
    authority: Authority,
    common_name: str,
    *,
    names: Sequence[str] = (),
    days: int = LEAF_DAYS,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[bytes, bytes]:
    """A new key and a certificate for it signed by ``authority``: ``(cert_pem, key_pem)``.

    Both serverAuth and clientAuth: a member uses one certificate for its peer port in both
    directions, for its client port, and when it forwards a request to the leader. The
    common name is also the first subjectAltName, because verifiers ignore the CN whenever
    SANs are present. ``not_before``/``not_after`` (timezone-aware) replace the validity
    window, which is how tests make certificates that have expired or are not valid yet;
    without ``not_after`` a certificate never outlives its CA, which would make it fail on
    a date nobody expects.
    """
    _check_days(days)
    alt_names = _alt_names([common_name, *names])
    subject = _name(common_name)
    ca = authority.certificate
    now = datetime.now(UTC)
    start = now - CLOCK_SKEW if not_before is None else _utc(not_before, "not_before")
    if not_after is None:
        end = min((now if not_before is None else start) + timedelta(days=days), _ca_end(ca))
    else:
        end = _utc(not_after, "not_after")
        if not_before is None and end <= start:
            start = end - timedelta(days=days)
    if end <= start:
        raise CertsError(f"the certificate would never be valid: not_after {end} <= {start}")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(authority), critical=False)
        .sign(authority.private_key, _signing_hash(authority.private_key))
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write_bundle(
    out: Path,
    members: Sequence[str],
    *,
    hosts: Sequence[str] = (),
    client: str = "client",
    days: int = LEAF_DAYS,
    force: bool = False,
) -> list[Path]:
    """Everything a TLS cluster needs, in ``out``; returns the files written.

    An existing CA in ``out`` is reused rather than replaced, so running again with new
    members extends the cluster instead of splitting it into two trust domains. Member and
    client files are never silently replaced (they may be deployed already); ``force``
    replaces them. An existing client pair issued by this CA and still valid is kept as it
    is, so adding a member does not need ``force`` just because raftctl's certificate is
    there. Everything is issued before anything is written, and each file is written
    atomically, so a failure leaves no half-written bundle behind.
    """
    _check_days(days)
    _check_bundle_names(members, client)
    hosts = tuple(hosts) or DEFAULT_HOSTS
    for host in hosts:
        _alt_name(host)
    if out.exists() and not out.is_dir():
        raise CertsError(f"{out} exists and is not a directory")
    ca_cert, ca_key = out / CA_CERT, out / CA_KEY
    authority: Authority | None = None
    if ca_cert.exists() and ca_key.exists():
        authority = load_authority(ca_cert, ca_key)
    elif ca_cert.exists() or ca_key.exists():
        present, missing = (ca_cert, ca_key) if ca_cert.exists() else (ca_key, ca_cert)
        raise CertsError(
            f"{present} exists but {missing} does not: restore {missing.name}, or move "
            f"{present.name} aside to make a new CA (and reissue every certificate)"
        )

    client_files = _pair(out, client)
    keep_client = (
        not force and authority is not None and _still_good(*client_files, authority, client)
    )
    targets = [path for member in members for path in _pair(out, member)]
    if not keep_client:
        targets += client_files
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        them = "it" if len(existing) == 1 else "them"
        raise CertsError(
            f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}"
            f"; pass --force to replace {them}"
        )

    files: list[tuple[Path, bytes, int]] = []
    if authority is None:
        authority = new_authority()
        files += [(ca_cert, authority.cert_pem, _CERT_MODE), (ca_key, authority.key_pem, _KEY_MODE)]
    for member in members:
        cert_pem, key_pem = issue(authority, member, names=hosts, days=days)
        files += [(out / f"{member}.pem", cert_pem, _CERT_MODE)]
        files += [(out / f"{member}-key.pem", key_pem, _KEY_MODE)]
    if not keep_client:
        cert_pem, key_pem = issue(authority, client, days=days)
        files += [(client_files[0], cert_pem, _CERT_MODE), (client_files[1], key_pem, _KEY_MODE)]

    _make_dir(out)
    for path, content, mode in files:
        _write_atomically(path, content, mode)
    _sync_dir(out)
    return [path for path, _, _ in files]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser(
        "certs",
        help="write a development CA and TLS certificates for members and raftctl",
        description="Write into DIR a CA (ca.pem, ca-key.pem), a certificate and key per "
        "member (NAME.pem, NAME-key.pem: for its peer and client ports, server and client "
        "side) and one for raftctl (client.pem, client-key.pem). A CA already in DIR is "
        "reused, so running again with new --members adds them to the same cluster. Existing "
        "member or client files are replaced only with --force. For development and tests: "
        "production certificates should come from your organisation's CA. Exit status: 0 "
        "written, 1 the files cannot be read or written, 2 usage.",
    )
    certs.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="where to write (created 0700)"
    )
    certs.add_argument(
        "--members",
        required=True,
        metavar="N1,N2,...",
        help="the member names, as in --cluster; each name is in its own certificate",
    )
    certs.add_argument(
        "--hosts",
        metavar="H1,H2,...",
        help="DNS names and IP addresses the members are reached at, in every member "
        f"certificate (default {','.join(DEFAULT_HOSTS)})",
    )
    certs.add_argument(
        "--client-name",
        default="client",
        metavar="NAME",
        help="raftctl's certificate name (default client)",
    )
    certs.add_argument(
        "--days",
        type=int,
        default=LEAF_DAYS,
        metavar="N",
        help=f"member and client certificate lifetime (default {LEAF_DAYS})",
    )
    certs.add_argument(
        "--force", action="store_true", help="replace existing member and client files"
    )


def run_certs(args: argparse.Namespace) -> int:
    members = _split(args.members)
    if not members:
        return _fail("--members names no member", EXIT_USAGE)
    hosts = list(DEFAULT_HOSTS) if args.hosts is None else _split(args.hosts)
    if not hosts:
        return _fail("--hosts names no host", EXIT_USAGE)
    if args.days < 1:
        return _fail(f"--days must be a positive number of days, not {args.days}", EXIT_USAGE)
    out: Path = args.out
    try:
        _check_bundle_names(members, args.client_name)
        for host in hosts:
            _alt_name(host, what="--hosts entry")
    except CertsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        written = write_bundle(
            out,
            members,
            hosts=hosts,
            client=args.client_name,
            days=args.days,
            force=args.force,
        )
    except CertsError as exc:
        return _fail(str(exc), EXIT_FAILED)
    for path in written:
        print(f"wrote {path}")
    if out / CA_CERT not in written:
        print(f"used the existing CA in {out}")
    first = members[0]
    cert, key = _pair(out, first)
    client_cert, client_key = _pair(out, args.client_name)
    ca = out / CA_CERT
    print(
        f"start {first} (likewise the others) with: raftd run --id {first} ... "
        f"--peer-cert {cert} --peer-key {key} --peer-ca {ca} "
        f"--client-cert {cert} --client-key {key} --client-ca {ca}"
    )
    print(
        f"and use raftctl with: raftctl --cacert {ca} --cert {client_cert} --key {client_key} ..."
    )
    return EXIT_OK


def _parse_authority(
    cert_pem: bytes, key_pem: bytes, *, cert_name: str, key_name: str
) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise CertsError(f"{cert_name} is not a PEM certificate") from None
    key = _load_key(key_pem, key_name)
    if not isinstance(key, _ISSUER_KEY_TYPES):
        raise CertsError(f"{key_name} is a {type(key).__name__}, which cannot sign certificates")
    if _public_der(key) != certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertsError(f"{key_name} is not the key of {cert_name}")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        is_ca = constraints.value.ca
    except (x509.ExtensionNotFound, ValueError):
        is_ca = False
    if not is_ca:
        raise CertsError(f"{cert_name} is not a CA certificate (no basicConstraints CA:TRUE)")
    end = _ca_end(certificate)
    if end <= datetime.now(UTC):
        raise CertsError(f"{cert_name} expired on {end:%Y-%m-%d}; make a new CA")
    return certificate, key


def _load_key(key_pem: bytes, key_name: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertsError(f"{key_name} is encrypted; raftd certs needs it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertsError(f"{key_name} is not a PEM private key") from None


def _still_good(cert: Path, key: Path, authority: Authority, name: str) -> bool:
    """Whether an existing certificate and key are one this run would have issued anyway:
    signed by ``authority``, for ``name``, with its key, and valid for a while yet."""
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        certificate.verify_directly_issued_by(authority.certificate)
        private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
        common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (OSError, ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    if not isinstance(private_key, _ISSUER_KEY_TYPES):
        return False
    return (
        [attribute.value for attribute in common_names] == [name]
        and _public_der(private_key)
        == certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        and certificate.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)
    )


def _public_der(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_bundle_names(members: Sequence[str], client: str) -> None:
    """Names become file names: refuse what is not a member name (so no path can escape
    ``out``) and any two names that would write the same file (``ca`` would overwrite the
    CA; ``n1`` and ``N1`` are one file on a case-insensitive file system)."""
    if not members:
        raise CertsError("no members given")
    owners: dict[str, str] = {CA_CERT: "the CA", CA_KEY: "the CA"}
    listed: set[str] = set()
    for role, name in [*(("member", member) for member in members), ("client", client)]:
        if not MEMBER_NAME.fullmatch(name):
            raise CertsError(
                f"{role} name {name!r} must be 1 to 64 letters, digits, '-', '_' or '.'"
            )
        if role == "member" and name in listed:
            raise CertsError(f"member {name!r} is listed twice")
        listed.add(name)
        for file in (f"{name}.pem", f"{name}-key.pem"):
            owner = owners.get(file.lower())
            if owner is not None:
                raise CertsError(f"{role} {name!r} would write {file}, which is {owner}'s")
            owners[file.lower()] = f"{role} {name!r}"


def _alt_names(entries: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        name = _alt_name(entry)
        if isinstance(name, x509.IPAddress):
            identity = ("ip", str(name.value))
        else:
            identity = ("dns", str(name.value).lower().rstrip("."))
        if identity not in seen:
            seen.add(identity)
            names.append(name)
    return names


def _alt_name(entry: str, *, what: str = "name") -> x509.GeneralName:
    """An IP address where the entry is one (a certificate for ``127.0.0.1`` must carry it as
    an IP: verifiers do not match an IP against a DNS entry), a DNS name otherwise."""
    host = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    with contextlib.suppress(ValueError):
        return x509.IPAddress(ipaddress.ip_address(host))
    if not _DNS_NAME.fullmatch(host):
        raise CertsError(f"{what} {entry!r} is neither a DNS name nor an IP address")
    return x509.DNSName(host)


def _name(common_name: str) -> x509.Name:
    try:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    except ValueError as exc:
        raise CertsError(f"common name {common_name!r}: {exc}") from None


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,  # ECDSA keys sign; (EC)DHE does the key exchange
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_identifier(authority: Authority) -> x509.AuthorityKeyIdentifier:
    """Matches the CA's own subjectKeyIdentifier where it has one (a CA brought from
    elsewhere may compute it differently), which is how verifiers pick the issuer."""
    try:
        ski = authority.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            authority.private_key.public_key()
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _signing_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519 and Ed448 hash internally and refuse a separate digest.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca_end(certificate: x509.Certificate) -> datetime:
    return certificate.not_valid_after_utc


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CertsError(f"{what} must be timezone-aware (e.g. datetime.now(UTC)), not naive")
    return moment.astimezone(UTC)


def _check_days(days: int) -> None:
    if days < 1:
        raise CertsError(f"the lifetime must be a positive number of days, not {days}")


def _pair(out: Path, name: str) -> tuple[Path, Path]:
    return out / f"{name}.pem", out / f"{name}-key.pem"


def _split(text: str) -> list[str]:
    return [part for part in (item.strip() for item in text.split(",")) if part]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertsError(f"cannot read {path}: {exc.strerror or exc}") from None


def _make_dir(out: Path) -> None:
    if out.is_dir():
        return
    try:
        out.mkdir(parents=True, mode=_DIR_MODE)
        out.chmod(_DIR_MODE)  # mkdir's mode is filtered through the umask
    except OSError as exc:
        raise CertsError(f"cannot create {out}: {exc.strerror or exc}") from None


def _write_atomically(path: Path, content: bytes, mode: int) -> None:
    """Write under a temporary name in the same directory, fsync, rename: a crash leaves the
    old file or the new one, never a truncated key. The temporary file is created 0600, so
    a key is never readable by others, not even for a moment."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CertsError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise CertsError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def _sync_dir(path: Path) -> None:
    """Make the new names themselves survive a power cut, not only the files' bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _fail(message: str, status: int) -> int:
    print(f"raftd certs: {message}", file=sys.stderr)
    return status
