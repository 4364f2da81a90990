"""raftctl lease, lock and elect: what people run consensus for.

``lock`` runs a command while holding a lock and hands it the fencing token; ``elect``
campaigns for a name and says who leads as that changes; ``lease`` grants, renews and
revokes the leases both are built on (``cli.recipes`` has the algorithms).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import trio

from cli import recipes
from cli.arguments import check_key_forms, count, key_range
from cli.client import Client, ClientError
from cli.output import EXIT_FAILED, EXIT_OK, Output
from raftd.kv import MAX_LEASE_TTL_S
from wire.api import KeyValue, WatchEvent

ENV_TOKEN = "RAFTCTL_LOCK_TOKEN"
ENV_KEY = "RAFTCTL_LOCK_KEY"
ENV_LEASE = "RAFTCTL_LOCK_LEASE"
DEFAULT_TTL_S = 10
# The status of a command killed by signal N, as a shell reports it.
SIGNALLED_BASE = 128
EXIT_NOT_RUN = 127  # the command could not be started (not found, not executable)

LEASE_DESCRIPTION = """\
lease grant TTL: a new lease that lives TTL seconds unless kept alive; prints its id.
  Attach keys to it with raftctl set KEY VALUE --lease ID: they are deleted when it ends.
lease keepalive ID: renew it every TTL/3 seconds until interrupted (--once: renew once);
  exits 1 as soon as the lease has expired or was revoked.
lease revoke ID: end it now and delete its keys.
Only the leader decides that a lease expired (its clock, not the members'); a new leader
gives every lease a full TTL, so a leader change never expires a lease kept alive."""

LOCK_DESCRIPTION = f"""\
Wait for the lock NAME, run COMMAND while holding it, release it when COMMAND exits,
and exit with COMMAND's status. The lock is kept by a lease renewed every TTL/3
seconds: if raftctl dies, the lock is released when the lease expires (after --ttl).
Waiters are served in the order they asked.

COMMAND gets the fencing token in ${ENV_TOKEN}: a number larger than any earlier
holder's. A holder can be paused (a GC pause, a stopped VM) past its TTL and lose the
lock without knowing it; a store it writes to that refuses tokens older than the
largest it has seen is safe anyway (docs/locking.md). ${ENV_KEY} and ${ENV_LEASE} name
the lock's key and lease. If the lease is lost while COMMAND runs, COMMAND is stopped
(SIGTERM) and raftctl exits 1.

Put -- before COMMAND: raftctl lock NAME -- COMMAND [ARG ...]"""

WATCH_DESCRIPTION = """\
Print every change to KEY (or to the keys under --prefix) as the cluster applies it,
until interrupted: "put KEY VALUE (revision N)" and "delete KEY (revision N)" lines
(with --output json: one object per line). --from-revision R starts with the changes at
revision R (e.g. one after the revision a get returned), so nothing between a read and
its watch is missed. The watch follows the cluster: when its member fails it resumes on
another from the last revision it printed, without losing or repeating a change. Members
keep the last 10000 changes; asking for older ones exits 1 with "compacted"."""

ELECT_DESCRIPTION = """\
Campaign to lead NAME with VALUE (e.g. this process's address) and print the leader's
value each time it changes, one line each (with --output json: one object per line).
Once elected, hold the leadership until interrupted (Ctrl-C or SIGTERM), then resign so
the next candidate leads at once. A candidate that dies loses its leadership when its
lease expires (after --ttl)."""


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register lease, lock and elect with ``command(name, summary, description)``."""
    lease = command(
        "lease",
        "grant, keep alive or revoke a lease",
        LEASE_DESCRIPTION,
        usage="raftctl lease [-h] [options] (grant TTL | keepalive ID [--once] | revoke ID)",
    )
    lease.add_argument("action", choices=("grant", "keepalive", "revoke"), help="what to do")
    lease.add_argument("number", metavar="TTL|ID", help="grant: seconds; otherwise the lease id")
    lease.add_argument("--once", action="store_true", help="keepalive: renew once and exit")
    lease.set_defaults(command_parser=lease)

    lock = command(
        "lock",
        "run a command while holding a lock",
        LOCK_DESCRIPTION,
        usage="raftctl lock [-h] [options] NAME [--ttl SECONDS] -- COMMAND [ARG ...]",
    )
    lock.add_argument("name", metavar="NAME", help="the lock (a key prefix)")
    _add_ttl(lock)
    lock.add_argument("argv", metavar="COMMAND", nargs=argparse.REMAINDER, help="what to run")
    lock.set_defaults(command_parser=lock)

    watch = command(
        "watch",
        "print changes to a key or a prefix as they happen",
        WATCH_DESCRIPTION,
        usage="raftctl watch [-h] [options] (KEY | --prefix P) [--from-revision R]",
    )
    watch.add_argument("key", metavar="KEY", nargs="?", help="the key to watch")
    watch.add_argument("--prefix", metavar="P", help="every key that starts with P")
    watch.add_argument(
        "--from-revision",
        metavar="R",
        type=count("--from-revision", minimum=1),
        default=0,
        help="start from the changes at revision R (default: from now)",
    )
    watch.set_defaults(command_parser=watch)

    elect = command("elect", "campaign for leadership and follow it", ELECT_DESCRIPTION)
    elect.add_argument("name", metavar="NAME", help="the election (a key prefix)")
    elect.add_argument("value", metavar="VALUE", help="what this candidate announces")
    _add_ttl(elect)


def _add_ttl(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ttl",
        metavar="SECONDS",
        type=_ttl,
        default=DEFAULT_TTL_S,
        help=f"the lease's time to live (default: {DEFAULT_TTL_S})",
    )


_ttl = count("a TTL", minimum=1, maximum=MAX_LEASE_TTL_S)
_lease_id = count("a lease id", minimum=1)


def check(args: argparse.Namespace) -> None:
    """What argparse cannot check argument by argument; errors through the command's
    parser, so they carry its usage line."""
    parser = args.command_parser
    if args.command == "lease":
        kind = _ttl if args.action == "grant" else _lease_id
        args.number = _parsed(parser, kind, args.number)
        if args.once and args.action != "keepalive":
            parser.error("--once is for lease keepalive")
    elif args.command == "watch":
        check_key_forms(args)
    elif args.command == "lock":
        # argparse hands everything after NAME over as COMMAND, --ttl included.
        argv = list(args.argv)
        options, command = (
            (argv[: argv.index("--")], argv[argv.index("--") + 1 :])
            if ("--" in argv)
            else ([], argv)
        )
        while options:
            flag = options.pop(0)
            name, _, inline = flag.partition("=")
            if name != "--ttl" or not (inline or options):
                parser.error(f"{flag}: only --ttl SECONDS may come between NAME and --")
            args.ttl = _parsed(parser, _ttl, inline or options.pop(0))
        if not command:
            parser.error("no COMMAND to run: raftctl lock NAME -- COMMAND [ARG ...]")
        args.argv = command


def _parsed(parser: argparse.ArgumentParser, kind: Callable[[str], int], text: str) -> int:
    try:
        return kind(text)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))


async def lease(client: Client, args: argparse.Namespace, output: Output) -> int:
    if args.action == "grant":
        granted = await client.lease_grant(args.number)
        output.result({"lease": granted.lease, "ttl_s": granted.ttl_s}, str(granted.lease))
        return EXIT_OK
    if args.action == "revoke":
        revoked = await client.lease_revoke(args.number)
        output.result(
            {"lease": args.number, "revoked": revoked.ok, "keys_deleted": revoked.count},
            f"revoked; {revoked.count} keys deleted" if revoked.ok else "no such lease",
        )
        return EXIT_OK if revoked.ok else EXIT_FAILED
    renewed = await client.lease_keepalive(args.number)
    output.result(
        {"lease": renewed.lease, "ttl_s": renewed.ttl_s}, f"kept alive for {renewed.ttl_s} s"
    )
    if args.once:
        return EXIT_OK
    lost = trio.Event()
    await recipes.keep_alive(client, args.number, renewed.ttl_s, lost.set)
    output.failure(f"lease {args.number} expired or was revoked")
    return EXIT_FAILED


async def lock(client: Client, args: argparse.Namespace, output: Output) -> int:
    owner = f"{socket.gethostname()}:{os.getpid()}"

    def waiting(holder: KeyValue) -> None:
        output.note(
            f"waiting: {args.name} is held by {holder.value} (token {holder.create_revision})"
        )

    status: int | None = None
    token = 0
    try:
        async with recipes.hold(client, args.name, owner, args.ttl, waiting=waiting) as (
            held,
            scope,
        ):
            token = held.token
            output.note(f"acquired {args.name} (fencing token {token})")
            env = dict(os.environ)
            env.update({ENV_TOKEN: str(token), ENV_KEY: held.key, ENV_LEASE: str(held.lease)})
            with scope:
                try:
                    finished = await trio.run_process(args.argv, env=env, check=False)
                except OSError as exc:
                    output.failure(f"cannot run {args.argv[0]!r}: {exc.strerror or exc}")
                    return EXIT_NOT_RUN
                status = finished.returncode
    except recipes.LeaseLost as exc:
        output.failure(f"lost the lock {args.name} ({exc}); the command was stopped")
        return EXIT_FAILED
    code = status if status is not None and status >= 0 else SIGNALLED_BASE - (status or 0)
    output.result({"lock": args.name, "token": token, "status": code}, None)
    return code


async def elect(client: Client, args: argparse.Namespace, output: Output) -> int:
    def announce(leader: KeyValue) -> None:
        output.result(_leader_json(args.name, leader), leader.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            _stop_on_signal, nursery.cancel_scope, output, f"resigning from {args.name}"
        )
        try:
            async with recipes.hold(client, args.name, args.value, args.ttl, waiting=announce) as (
                held,
                scope,
            ):
                announce(KeyValue(held.key, args.value, held.token, held.token, held.lease))
                with scope:
                    await trio.sleep_forever()
        except recipes.LeaseLost as exc:
            output.failure(f"lost the leadership of {args.name} ({exc})")
            return EXIT_FAILED
    return EXIT_OK


async def watch(client: Client, args: argparse.Namespace, output: Output) -> int:
    start, end = key_range(args.key, args.prefix)
    code = EXIT_OK
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope, output, None)
        try:
            changes = client.watch(start, end, start_revision=args.from_revision)
            async with contextlib.aclosing(changes) as events:
                async for event in events:
                    output.result(_event_json(event), _event_text(event))
                    output.out.flush()
        except ClientError as exc:
            code = output.error(exc, write=False)
        nursery.cancel_scope.cancel()
    return code


def _event_text(event: WatchEvent) -> str:
    if event.value is None:
        return f"delete {event.key} (revision {event.revision})"
    return f"put {event.key} {event.value} (revision {event.revision})"


def _event_json(event: WatchEvent) -> dict[str, Any]:
    return {
        "type": "delete" if event.value is None else "put",
        "key": event.key,
        "value": event.value,
        "revision": event.revision,
        "create_revision": event.create_revision,
        "mod_revision": event.mod_revision,
        "lease": event.lease,
    }


async def _stop_on_signal(scope: trio.CancelScope, output: Output, note: str | None) -> None:
    """Ctrl-C or SIGTERM ends a campaign or a watch as an answer, not as an interruption:
    it is how they are meant to end (a campaign's lease is revoked on the way out)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if note is not None:
                output.note(note)
            scope.cancel()
            return


def _leader_json(name: str, leader: KeyValue) -> dict[str, Any]:
    return {
        "election": name,
        "leader": leader.value,
        "key": leader.key,
        "token": leader.create_revision,
    }


__all__ = ["add_commands", "check", "elect", "lease", "lock", "watch"]
