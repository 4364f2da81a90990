"""``raftd run`` (one member) and ``raftd cluster`` (several local members, for the demo).

Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the member cannot run
(corrupt log, port in use), 2 for configuration mistakes.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import structlog
import trio

from observability.logs import configure_logging, node_fields
from observability.metrics import RaftMetrics, driver_health, driver_state, serve_metrics
from observability.sampling import PER_MINUTE_ENV, RATIO_ENV, RaftdSampler
from observability.tracing import TracingHandle, setup_tracing
from raftd import certs, restore, version
from raftd.config import (
    ConfigError,
    NodeConfig,
    parse_address,
    parse_cluster,
    settings_from_flags,
)
from raftd.core import DurableState, HardState
from raftd.runtime import mutations
from raftd.runtime.chaos import Chaos, ChaosConfig
from raftd.runtime.clients import ClientServer
from raftd.runtime.driver import Driver, MemberRemoved
from raftd.runtime.join import Invitation, wait_for_invitation
from raftd.runtime.listen import start_listening
from raftd.runtime.peers import PeerTransport
from raftd.runtime.roster import configuration_in, member_names
from raftd.runtime.tls import Credentials
from raftd.storage import SnapshotStorage, StorageError, WalStorage, identity
from raftd.storage.fs import OsFileSystem
from raftd.storage.identity import IdentityMismatch
from raftd.storage.wal import DataDirLocked

log = structlog.get_logger("raftd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _env_default(flag: str, default: str | None = None) -> str | None:
    return os.environ.get("RAFTD_" + flag.upper().replace("-", "_"), default)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _at_least_zero(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftd",
        description="A Raft key-value store built to be watched through distributed tracing.",
        epilog="Every flag of 'raftd run' can also be set as RAFTD_<FLAG> in the environment, "
        "e.g. RAFTD_CLIENT_ADDR=127.0.0.1:7001. Exit status: 0 clean shutdown, 1 the member "
        "could not run, 2 configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"raftd {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run one member of a cluster",
        description="Run one member. --cluster lists every member's peer address, this "
        "member's own included.",
    )
    run.add_argument("--id", default=_env_default("id"), help="this member's name, e.g. n1")
    run.add_argument(
        "--cluster",
        default=_env_default("cluster"),
        help="every member as NAME=HOST:PORT, comma-separated (peer addresses)",
    )
    run.add_argument(
        "--client-addr",
        default=_env_default("client_addr"),
        help="HOST:PORT to listen on for clients (a host name or an address, 0.0.0.0 for all)",
    )
    run.add_argument(
        "--advertise-client-addr",
        default=_env_default("advertise_client_addr"),
        metavar="HOST:PORT",
        help="the client address other members hand out in redirects, when clients reach "
        "this member by another name than --client-addr (default: --client-addr)",
    )
    run.add_argument("--data-dir", default=_env_default("data_dir"), help="where the log lives")
    run.add_argument(
        "--metrics-addr",
        default=_env_default("metrics_addr"),
        help="HOST:PORT for Prometheus /metrics (off when unset)",
    )
    run.add_argument(
        "--forward",
        action="store_true",
        default=_env_default("forward", "") not in ("", "0", "false", "no"),
        help="relay requests to the leader instead of redirecting clients",
    )
    run.add_argument(
        "--join",
        action="store_true",
        default=_env_default("join", "") not in ("", "0", "false", "no"),
        help="join an existing cluster (after raftctl member add) instead of bootstrapping a "
        "new one: with an empty --data-dir, wait to be sent the log; ignored once joined",
    )
    run.add_argument(
        "--cluster-id",
        default=_env_default("cluster_id", "raftd"),
        help="peers from another cluster id are refused (default: raftd)",
    )
    run.add_argument(
        "--tick-ms",
        type=_positive(float),
        # A string default goes through ``type`` too: a bad RAFTD_TICK_MS is a usage error.
        default=_env_default("tick_ms", "50"),
        help="length of a Raft tick; election timeout is 10-20 ticks (default 50 ms)",
    )
    run.add_argument(
        "--frame-timeout",
        type=_positive(float),
        default=_env_default("frame_timeout", "5"),
        metavar="SECONDS",
        help="close a connection that begins a frame and does not finish it within this "
        "long (default 5); idle connections between frames are kept",
    )
    run.add_argument(
        "--max-client-connections",
        type=_positive(int),
        default=_env_default("max_client_connections", "1024"),
        metavar="N",
        help="refuse client connections beyond this many at once, with a reply that says "
        "so (default 1024)",
    )
    run.add_argument(
        "--snapshot-entries",
        type=_at_least_zero,
        default=_env_default("snapshot_entries", "10000"),
        metavar="N",
        help="take a snapshot and compact the log once N entries were applied since the last "
        "(default 10000; 0: never by count)",
    )
    run.add_argument(
        "--snapshot-mb",
        type=_at_least_zero,
        default=_env_default("snapshot_mb", "64"),
        metavar="MB",
        help="or once this many MiB of entry data were applied since the last (default 64; "
        "0: never by size)",
    )
    run.add_argument(
        "--snapshot-keep",
        type=_at_least_zero,
        default=_env_default("snapshot_keep", "5000"),
        metavar="N",
        help="entries kept in the log below a snapshot, for followers slightly behind "
        "(default 5000)",
    )
    run.add_argument(
        "--wal-segment-mb",
        type=_positive(int),
        default=_env_default("wal_segment_mb", "64"),
        metavar="MB",
        help="size at which the log starts a new segment file; whole segments are deleted "
        "once a snapshot covers them (default 64)",
    )
    tls = run.add_argument_group(
        "TLS",
        "Plaintext unless given certificates (raftd certs makes a set for development; "
        "docs/security.md). SIGHUP, or a change to the files, reloads them for new "
        "connections.",
    )
    for flag, what in (
        ("peer-cert", "this member's certificate for its peer links (PEM; names the member)"),
        ("peer-key", "its private key"),
        ("peer-ca", "the CA every member's peer certificate must chain to"),
        ("client-cert", "the certificate the client port presents (PEM)"),
        ("client-key", "its private key"),
        (
            "client-ca",
            "require a client certificate that chains to this CA from every client",
        ),
    ):
        tls.add_argument(
            "--" + flag, default=_env_default(flag.replace("-", "_")), metavar="FILE", help=what
        )
    run.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default=_env_default("log_format", "auto"),
        help="auto (default): console on a terminal, JSON lines elsewhere",
    )
    run.add_argument("--log-level", default=_env_default("log_level", "info"))

    restore.add_parser(commands)
    certs.add_parser(commands)

    cluster = commands.add_parser(
        "cluster",
        help="run N local members as separate processes (the demo)",
        description="Start N members on 127.0.0.1 (member i: clients on 7000+i, peers on "
        "7100+i, metrics on 9100+i), merge their logs, and stop them all on Ctrl-C. Data is "
        "kept in --data-dir for the next start.",
    )
    cluster.add_argument("--nodes", type=int, default=3, help="how many members (default 3)")
    cluster.add_argument("--data-dir", default=".raftd", help="parent data directory")
    cluster.add_argument("--forward", action="store_true", help="members proxy to the leader")
    cluster.add_argument(
        "--demo", action="store_true", help="run a short scripted raftctl session once up"
    )
    cluster.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS on every port, with development certificates made once in "
        "DATA_DIR/tls (raftd certs); raftctl then needs the --cacert/--cert/--key it prints",
    )
    cluster.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="add this to every port, to run a second cluster beside the first (default 0)",
    )
    return parser


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> NodeConfig:
    missing = [
        flag for flag in ("id", "cluster", "client_addr", "data_dir") if not getattr(args, flag)
    ]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise ConfigError(f"missing {flags} (or the RAFTD_ environment variables)")
    return NodeConfig(
        name=args.id,
        members=parse_cluster(args.cluster),
        client_addr=parse_address(args.client_addr, what="--client-addr"),
        advertise_client_addr=parse_address(
            args.advertise_client_addr, what="--advertise-client-addr"
        )
        if args.advertise_client_addr
        else None,
        data_dir=Path(args.data_dir),
        metrics_addr=parse_address(args.metrics_addr, what="--metrics-addr")
        if args.metrics_addr
        else None,
        forward=args.forward,
        join=args.join,
        cluster_id=args.cluster_id,
        tick_seconds=args.tick_ms / 1000,
        frame_timeout_s=args.frame_timeout,
        max_client_connections=int(args.max_client_connections),
        snapshot_entries=int(args.snapshot_entries),
        snapshot_bytes=int(args.snapshot_mb) * 1024 * 1024,
        snapshot_keep_entries=int(args.snapshot_keep),
        wal_segment_bytes=int(args.wal_segment_mb) * 1024 * 1024,
        test_mutations=mutations.from_env(environ),
        tls=settings_from_flags(
            peer_cert=args.peer_cert,
            peer_key=args.peer_key,
            peer_ca=args.peer_ca,
            client_cert=args.client_cert,
            client_key=args.client_key,
            client_ca=args.client_ca,
        ),
    )


@dataclass
class Observability:
    """What a member reports through: one tracing pipeline, one metrics registry, chaos."""

    tracing: TracingHandle
    metrics: RaftMetrics
    chaos: Chaos | None
    sampler: RaftdSampler | None = None


# The traces this member recorded in the last minute, so a restart does not forget them.
TRACE_WINDOW_JOURNAL = "trace-window"

# Young-generation collections every 50,000 allocations instead of 700.
GC_THRESHOLDS = (50_000, 20, 100)


def _tune_garbage_collection() -> None:
    """A member allocates a few dozen short-lived objects per request and keeps every log
    entry; with the default thresholds the cyclic collector ran every 700 allocations and
    kept walking a growing heap (in a py-spy profile at 64 clients it looked like 16% of
    the leader's time, charged to whichever line allocated). Raising the young threshold
    and freezing what the start-up left (the replayed log) cut the leader's CPU per write
    by about a tenth; the objects here rarely form cycles, and the ones that do are still
    collected, only later."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(
    config: NodeConfig,
    storage: SnapshotStorage,
    observe: Observability,
    credentials: Credentials | None = None,
) -> None:
    """Run one member until SIGINT or SIGTERM."""
    client_addrs: dict[str, str] = {}
    tracer = observe.tracing.tracer("raftd")
    metrics = observe.metrics
    driver = Driver(
        config,
        storage,
        lambda msg, parent, span, lag: peers.send(msg, parent, span, lag),
        client_addrs=client_addrs,
        tracer=tracer,
        metrics=metrics,
    )
    _tune_garbage_collection()
    peers = PeerTransport(
        config,
        driver.deliver,
        client_addrs,
        chaos=observe.chaos,
        metrics=metrics,
        trace_room=observe.sampler,
        roster=driver.roster,
        credentials=credentials,
        turn=driver.turn_writes,
    )
    clients = ClientServer(config, driver, tracer=tracer, metrics=metrics, credentials=credentials)
    metrics.bind_state(driver_state(driver))
    metrics.bind_span_counts(lambda: (observe.tracing.exported_spans, observe.tracing.failed_spans))
    if observe.sampler is not None:
        sampler = observe.sampler
        metrics.bind_trace_budget(lambda: (sampler.window.parts_refused, sampler.room()))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope, driver)
            if credentials is not None:
                nursery.start_soon(credentials.keep_fresh)
            await nursery.start(driver.run)
            await nursery.start(peers.run)
            await nursery.start(clients.run)
            if config.metrics_addr is not None:
                address = config.metrics_addr
                health = driver_health(driver)
                start_listening(address, "metrics", lambda: serve_metrics(address, metrics, health))
            log.info(
                "raftd ready",
                clients=str(config.client_addr),
                advertised=str(config.advertised_client_addr),
                peers=str(config.peer_addr),
                metrics=str(config.metrics_addr) if config.metrics_addr else "off",
                data_dir=str(config.data_dir),
                traces=observe.tracing.description,
                tls=_tls_description(config),
            )
    finally:
        driver.fail_everything("the member is shutting down")


def _tls_description(config: NodeConfig) -> str:
    tls = config.tls
    if not tls.enabled:
        return "off"
    peer = "mutual TLS" if tls.peer else "plaintext"
    client = "off"
    if tls.client is not None:
        client = "TLS, client certificates required" if tls.client.ca else "TLS"
    return f"peers: {peer}; clients: {client}"


async def _cancel_on_signal(scope: trio.CancelScope, driver: Driver) -> None:
    """SIGTERM (a service manager, a rolling restart) first hands a leader's leadership
    to a follower, so the cluster need not wait out an election timeout; SIGINT (Ctrl-C,
    which a terminal sends to every member of a local cluster at once) stops at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("shutting down", signal=signal.Signals(signum).name)
            if signum == signal.SIGTERM:
                outcome = await driver.hand_over()
                if outcome is not None:
                    log.info(outcome)
            scope.cancel()
            return


def run_member(args: argparse.Namespace) -> int:
    metrics = RaftMetrics()
    try:
        configure_logging(fmt=args.log_format, level=args.log_level)
        config = config_from_args(args)
        node_fields["node"] = config.name
        chaos_config = ChaosConfig.from_env(os.environ)
        sampler = RaftdSampler.from_env(os.environ, on_decision=metrics.sampler_decision)
        tracing = setup_tracing(
            "raftd", config.name, file_path=config.data_dir / "traces.jsonl", sampler=sampler
        )
        credentials = Credentials(config.tls, metrics) if config.tls.enabled else None
    except (ConfigError, ValueError) as exc:
        print(f"raftd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for ignored in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        if os.environ.get(ignored, "").strip():
            log.warning(
                f"{ignored} is set but ignored: a member always samples with its own "
                f"sampler; set {RATIO_ENV} and {PER_MINUTE_ENV} instead",
                value=os.environ[ignored],
            )
    if config.advertised_client_addr.host in WILDCARD_HOSTS:
        log.warning(
            "the client address handed out in redirects is a wildcard, which sends a "
            "redirected client to itself: give --advertise-client-addr",
            client_addr=str(config.client_addr),
        )
    if config.test_mutations:
        log.critical(
            "DELIBERATE BUGS ENABLED: this member is unsafe by design (a test run)",
            mutations=sorted(config.test_mutations),
        )
    chaos = Chaos(chaos_config) if chaos_config.enabled else None
    if chaos is not None:
        log.warning(chaos.config.describe(), **chaos.config.as_attributes())
    try:
        wal = WalStorage.open(
            config.data_dir,
            logger=lambda line: log.warning(line),
            segment_bytes=config.wal_segment_bytes,
            cluster_id=config.cluster_id,
        )
    except DataDirLocked as exc:
        print(f"raftd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StorageError, OSError) as exc:
        print(f"raftd: cannot open the data directory: {exc}", file=sys.stderr)
        return EXIT_FAILED
    # SIGHUP reloads certificates once serving; until then it must not end the process.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    try:
        joined = _join_if_asked(config, wal, credentials)
    except IdentityMismatch as exc:
        wal.close()
        print(f"raftd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # waiting to be added: the peer port is in use
        wal.close()
        print(f"raftd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if joined is None:
        wal.close()
        log.info("stopped before being added")
        return EXIT_OK
    try:
        config = _with_stored_identity(joined, wal)
    except IdentityMismatch as exc:
        wal.close()
        print(f"raftd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StorageError, OSError) as exc:
        wal.close()
        print(f"raftd: cannot open the data directory: {exc}", file=sys.stderr)
        return EXIT_FAILED
    sampler.window.open_journal(config.data_dir / TRACE_WINDOW_JOURNAL)
    storage: SnapshotStorage = wal
    if "ack-before-fsync" in config.test_mutations:
        storage = mutations.LazySyncStorage(storage)
    if chaos is not None and chaos.config.fsync_enabled:
        storage = chaos.wrap_storage(storage)
    status = EXIT_OK
    # serve() handles SIGINT/SIGTERM while it runs (ignored since the log opened); once it
    # has returned, a second signal (Ctrl-C reaches a whole process group) must not
    # interrupt closing the log.
    try:
        observe = Observability(tracing, metrics, chaos, sampler)
        trio.run(serve, config, storage, observe, credentials)
    except* MemberRemoved as removed:
        for leaf in _leaves(removed):
            print(f"raftd: {leaf}", file=sys.stderr)
    except* StorageError as group:
        for error in _leaves(group):
            print(f"raftd: storage failed, stopping to protect the data: {error}", file=sys.stderr)
        status = EXIT_FAILED
    except* OSError as os_errors:
        for os_error in _leaves(os_errors):
            print(f"raftd: {os_error}", file=sys.stderr)
        status = EXIT_FAILED
    finally:
        wal.close()
        tracing.shutdown()  # flushes what the batch processor still holds
    if status == EXIT_OK:
        log.info("stopped cleanly")
    return status


def _has_history(state: DurableState) -> bool:
    return state.hard_state != HardState() or bool(state.entries) or state.snapshot is not None


def _join_if_asked(
    config: NodeConfig, wal: WalStorage, credentials: Credentials | None
) -> NodeConfig | None:
    """With --join and a new data directory, wait until the cluster sends this member
    its first message (raftd.runtime.join) and record the id it was given. None: stopped
    by a signal first."""
    fs = OsFileSystem()
    if not config.join or identity.load(fs, config.data_dir) is not None:
        return config  # not joining, or joined already (the flag is then ignored)
    if _has_history(wal.load()):
        raise IdentityMismatch(
            f"--join needs an empty data directory; {config.data_dir} holds a log already"
        )
    try:
        invitation = trio.run(_wait_for_invitation, config, credentials)
    except BaseExceptionGroup as group:  # the peer port in use, named by open_listeners
        errors = [e for e in _leaves(group) if isinstance(e, OSError)]
        if not errors:
            raise
        raise errors[0] from None
    if invitation is None:
        return None
    ids = {config.name: invitation.member_id, invitation.sender: invitation.sender_id}
    identity.record_joined(fs, config.data_dir, config.cluster_id, ids, config.name)
    return config


async def _wait_for_invitation(
    config: NodeConfig, credentials: Credentials | None
) -> Invitation | None:
    found: list[Invitation] = []
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            found.append(await wait_for_invitation(config, credentials))
            nursery.cancel_scope.cancel()

        nursery.start_soon(wait)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return found[0] if found else None


def _with_stored_identity(config: NodeConfig, wal: WalStorage) -> NodeConfig:
    """``config`` with the member ids its data directory holds (raftd.storage.identity),
    after checking the flags against them and the configuration in the log."""
    state = wal.load()
    configured = configuration_in(state)
    members = member_names(configured)
    stored, line = identity.reconcile(
        OsFileSystem(),
        config.data_dir,
        name=config.name,
        cluster_id=config.cluster_id,
        names=config.members,
        has_history=_has_history(state),
        configured=None if members is None else members.values(),
    )
    if line is not None:
        log.info(line, ids=stored.ids)
    if stored.removed_at is not None:
        raise IdentityMismatch(
            f"{config.name} (id {stored.ids[config.name]}) was removed from the cluster (the "
            f"configuration at index {stored.removed_at}): it cannot serve again. To bring "
            "this machine back, empty its data directory, run raftctl member add and start "
            "it with --join"
        )
    return replace(config, ids=stored.ids, bootstrap=stored.bootstrap)


E = TypeVar("E", bound=BaseException)


def _leaves(group: BaseExceptionGroup[E]) -> list[E]:
    """The errors themselves: ``except*`` keeps the nesting of nurseries inside nurseries,
    and printing a nested group says only "Exceptions from Trio nursery"."""
    leaves: list[E] = []
    for error in group.exceptions:
        leaves += _leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return leaves


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_member(args)
    if args.command == "restore":
        return restore.run_restore(args)
    if args.command == "certs":
        return certs.run_certs(args)
    from raftd.cluster import run_cluster

    return run_cluster(args)


if __name__ == "__main__":
    sys.exit(main())
