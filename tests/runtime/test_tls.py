"""A member's TLS credentials: which flags go together, and reloading without ever
being left with no certificate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from observability.metrics import RaftMetrics
from raftd import certs
from raftd.config import ConfigError, TlsSettings, settings_from_flags
from raftd.runtime.tls import Credentials
from wire.tls import TlsConfigError, TlsFiles


def flags(**given: str) -> dict[str, str | None]:
    names = ("peer_cert", "peer_key", "peer_ca", "client_cert", "client_key", "client_ca")
    return {name: given.get(name) for name in names}


def test_peer_tls_is_all_three_files_or_none() -> None:
    assert settings_from_flags(**flags()) == TlsSettings()
    with pytest.raises(ConfigError, match="peer TLS is mutual"):
        settings_from_flags(**flags(peer_cert="a.pem", peer_key="a-key.pem"))
    with pytest.raises(ConfigError, match="--client-cert and --client-key together"):
        settings_from_flags(**flags(client_cert="a.pem"))
    with pytest.raises(ConfigError, match="needs TLS on the client port"):
        settings_from_flags(**flags(client_ca="ca.pem"))
    both = settings_from_flags(
        **flags(peer_cert="n1.pem", peer_key="k", peer_ca="ca", client_cert="c", client_key="ck")
    )
    assert both.peer == TlsFiles(Path("n1.pem"), Path("k"), Path("ca"))
    assert both.client == TlsFiles(Path("c"), Path("ck"), None)


def test_forwarding_trusts_the_client_ca_else_the_peer_ca() -> None:
    peer = TlsFiles(Path("n1.pem"), Path("n1-key.pem"), Path("peer-ca.pem"))
    client = TlsFiles(Path("c.pem"), Path("c-key.pem"), None)
    assert TlsSettings(peer, client).proxy_files() == TlsFiles(
        Path("c.pem"), Path("c-key.pem"), Path("peer-ca.pem")
    )
    with_ca = TlsFiles(Path("c.pem"), Path("c-key.pem"), Path("client-ca.pem"))
    assert TlsSettings(peer, with_ca).proxy_files() == with_ca
    assert TlsSettings(peer, None).proxy_files() is None


def settings_for(out: Path) -> TlsSettings:
    files = TlsFiles(out / "n1.pem", out / "n1-key.pem", out / "ca.pem")
    return TlsSettings(peer=files, client=files)


def reissue(out: Path) -> None:
    """A new certificate for n1 in place of the old one (same CA), as a renewal does."""
    certs.write_bundle(out, ["n1"], force=True)


def test_a_reload_swaps_in_new_certificates_and_a_broken_file_keeps_the_old(
    tmp_path: Path,
) -> None:
    certs.write_bundle(tmp_path, ["n1"])
    metrics = RaftMetrics()
    credentials = Credentials(settings_for(tmp_path), metrics)
    expiry = "raftd_tls_certificate_expiry_timestamp_seconds"
    assert metrics.registry.get_sample_value(expiry, {"port": "peer"})
    first = credentials.current
    assert not credentials.changed_on_disk()

    reissue(tmp_path)
    assert credentials.changed_on_disk()
    assert credentials.reload("test")
    assert credentials.current is not first and not credentials.changed_on_disk()

    good = credentials.current
    (tmp_path / "n1.pem").write_text("half a certificate")
    assert not credentials.reload("test")
    assert credentials.current is good  # still serving with the previous ones
    reloads = "raftd_tls_reloads_total"
    assert metrics.registry.get_sample_value(reloads, {"outcome": "ok"}) == 1
    assert metrics.registry.get_sample_value(reloads, {"outcome": "failed"}) == 1


def test_a_member_does_not_start_on_unusable_files(tmp_path: Path) -> None:
    certs.write_bundle(tmp_path, ["n1"])
    os.remove(tmp_path / "n1-key.pem")
    with pytest.raises(TlsConfigError, match=r"n1-key\.pem"):
        Credentials(settings_for(tmp_path))
