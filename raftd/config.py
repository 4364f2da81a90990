"""A member's configuration: parsed once, validated up front, then immutable.

Every mistake here (a malformed address, a node missing from its own cluster) is a
``ConfigError`` with a message for people; ``raftd`` turns it into exit status 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from raftd.core import NodeId
from raftd.storage.identity import bootstrap_ids
from wire.tls import TlsFiles

# What a member may be called: it is a file name (certificates), a label and a log field.
MEMBER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ConfigError(ValueError):
    """The configuration cannot work; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(text: str, *, what: str = "address") -> Address:
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what} {text!r} must look like HOST:PORT, e.g. 127.0.0.1:7001")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{what} {text!r}: the port must be a number from 1 to 65535")
    return Address(host.strip("[]"), int(port_text))


def parse_cluster(text: str) -> dict[str, Address]:
    """``n1=127.0.0.1:7101,n2=...`` into names and peer addresses, in the given order."""
    members: dict[str, Address] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, address = item.partition("=")
        if not sep or not MEMBER_NAME.fullmatch(name):
            raise ConfigError(
                f"cluster member {item!r} must look like NAME=HOST:PORT "
                "(names: letters, digits, '-', '_', '.')"
            )
        if name in members:
            raise ConfigError(f"cluster member {name!r} is listed twice")
        members[name] = parse_address(address, what=f"peer address of {name}")
    if not members:
        raise ConfigError("--cluster lists no members")
    return members


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What ``raftd run`` was given: files per port, None for a plaintext port."""

    peer: TlsFiles | None = None
    client: TlsFiles | None = None

    @property
    def enabled(self) -> bool:
        return self.peer is not None or self.client is not None

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for files in (self.peer, self.client) if files for p in files.paths)

    def proxy_files(self) -> TlsFiles | None:
        """How this member calls the leader's client port when it forwards a request: with
        its own client certificate, trusting the client CA (else the peer CA, which signed
        the members' certificates when one CA serves both)."""
        if self.client is None:
            return None
        ca = self.client.ca or (self.peer.ca if self.peer else None)
        return TlsFiles(self.client.cert, self.client.key, ca)


def settings_from_flags(
    *,
    peer_cert: str | None,
    peer_key: str | None,
    peer_ca: str | None,
    client_cert: str | None,
    client_key: str | None,
    client_ca: str | None,
) -> TlsSettings:
    """Check the flags go together; the files are read later, by ``Credentials``."""
    peer_given = [f for f in (peer_cert, peer_key, peer_ca) if f]
    if peer_given and len(peer_given) != 3:
        raise ConfigError(
            "peer TLS is mutual: give all of --peer-cert, --peer-key and --peer-ca (or none)"
        )
    if bool(client_cert) != bool(client_key):
        raise ConfigError("give --client-cert and --client-key together")
    if client_ca and not client_cert:
        raise ConfigError(
            "--client-ca (require client certificates) needs TLS on the client port: "
            "give --client-cert and --client-key too"
        )
    peer = None
    if peer_cert and peer_key and peer_ca:
        peer = TlsFiles(Path(peer_cert), Path(peer_key), Path(peer_ca))
    client = None
    if client_cert and client_key:
        ca = Path(client_ca) if client_ca else None
        client = TlsFiles(Path(client_cert), Path(client_key), ca)
    return TlsSettings(peer, client)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    members: dict[str, Address]
    client_addr: Address
    data_dir: Path
    metrics_addr: Address | None = None
    forward: bool = False
    cluster_id: str = "raftd"
    tick_seconds: float = 0.05
    election_timeout_ticks: int = 10
    heartbeat_interval_ticks: int = 2
    request_timeout_s: float = 5.0
    # Hostile-input bounds (see runtime/gate.py): a frame begun must finish in this long,
    # and the client port takes at most this many connections at once.
    frame_timeout_s: float = 5.0
    max_client_connections: int = 1024
    # Log compaction: a snapshot once this many entries, or this many bytes of entry data,
    # were applied since the last one (0: never by that measure), keeping the last
    # ``snapshot_keep_entries`` entries for followers only slightly behind (etcd keeps 5,000).
    snapshot_entries: int = 10_000
    snapshot_bytes: int = 64 * 1024 * 1024
    snapshot_keep_entries: int = 5_000
    wal_segment_bytes: int = 64 * 1024 * 1024
    test_mutations: frozenset[str] = frozenset()  # deliberate bugs, see runtime/mutations
    # Every member's id as stored in the data directory (raftd.storage.identity); None
    # before the directory was opened, when they are what a bootstrap would assign.
    ids: dict[str, NodeId] | None = None
    # False for a member that joined an existing cluster: it has no configuration of its
    # own until the log gives it one (``ids`` then names only itself and who added it).
    bootstrap: bool = True
    join: bool = False  # --join: wait to be added rather than bootstrap a new cluster
    tls: TlsSettings = TlsSettings()  # plaintext ports unless given certificates
    # What other members hand out as this member's client address (redirects, forwarding)
    # when clients reach it by another name than the one it listens on.
    advertise_client_addr: Address | None = None

    def __post_init__(self) -> None:
        if self.name not in self.members:
            listed = ", ".join(self.members)
            raise ConfigError(f"--id {self.name!r} is not in --cluster (members: {listed})")
        if self.tick_seconds <= 0:
            raise ConfigError("the tick length must be positive")
        if self.frame_timeout_s <= 0:
            raise ConfigError("the frame timeout must be positive")
        if self.max_client_connections < 1:
            raise ConfigError("the client connection limit must be at least 1")
        if min(self.snapshot_entries, self.snapshot_bytes, self.snapshot_keep_entries) < 0:
            raise ConfigError("snapshot thresholds and the kept entries cannot be negative")
        if self.wal_segment_bytes < 1:
            raise ConfigError("the log segment size must be positive")
        if self.ids is not None and (
            self.name not in self.ids or not set(self.ids) <= set(self.members)
        ):
            raise ConfigError(f"stored member ids {self.ids} do not match --cluster")

    @property
    def node_ids(self) -> dict[str, NodeId]:
        """Names to the core's integer ids, as stored in the data directory."""
        return dict(self.ids) if self.ids is not None else bootstrap_ids(self.members)

    @property
    def node_id(self) -> NodeId:
        return self.node_ids[self.name]

    @property
    def bootstrap_voters(self) -> tuple[NodeId, ...]:
        """The voters the core starts with while its log holds no configuration."""
        return tuple(sorted(self.node_ids.values())) if self.bootstrap else ()

    @property
    def names(self) -> dict[NodeId, str]:
        return {node_id: name for name, node_id in self.node_ids.items()}

    @property
    def advertised_client_addr(self) -> Address:
        return self.advertise_client_addr or self.client_addr

    @property
    def peer_addr(self) -> Address:
        return self.members[self.name]
