"""raftctl: the command line for a raftd cluster.

Made for people and for scripts at once: text output carries only the answer on stdout (a
``get`` prints the bare value), notes and errors go to stderr, ``--output json`` prints
exactly one JSON object, and the exit code separates "the cluster said no" (1) from "we do
not know what happened" (3), which is the difference a script must not get wrong before
retrying a write.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TextIO

import trio
from opentelemetry import trace

from cli import backup, benchplot, coordination
from cli import trace as trace_command
from cli.arguments import check_key_forms, key_range
from cli.arguments import count as _count
from cli.bench import (
    DEFAULT_CONNECTIONS,
    DEFAULT_MIX,
    MAX_KEYS,
    OPS,
    SERVER_IN_FLIGHT_PER_CONNECTION,
    BenchConfig,
    PrefillError,
    Progress,
    parse_mix,
    run_bench,
)
from cli.client import (
    DEFAULT_TIMEOUT_S,
    Client,
    ClientError,
    MemberStatus,
    parse_endpoint,
)
from cli.output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    PROG,
    Output,
)
from observability.tracing import TracingHandle, setup_tracing
from raftd import version
from wire.api import MAX_KEY_BYTES, MAX_VALUE_BYTES, MemberChangeRequest
from wire.tls import TlsFiles, client_context

ENV_ENDPOINTS = "RAFTCTL_ENDPOINTS"
ENV_TRACE_FILE = "RAFTCTL_TRACE_FILE"
ENV_CACERT, ENV_CERT, ENV_KEY = "RAFTCTL_CACERT", "RAFTCTL_CERT", "RAFTCTL_KEY"
DEFAULT_ENDPOINTS = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"

BENCH_GC_THRESHOLDS = (50_000, 20, 100)

EPILOG = f"""\
exit codes:
  0  success
  1  a definite failure: the key was not found (get, delete), cas did not swap,
     or a member refused the request (e.g. too_stale, bad_request), or a key or
     value is over its limit (too_large; checked before sending)
  2  usage or configuration error (bad arguments, bad endpoint, bad timeout)
  3  outcome unknown, or the cluster could not be reached in time: a write may or
     may not have happened (the message says which)

With --output json an error is {{"error": {{"code", "message", "definite"}}}};
"definite": false means a write may or may not have happened.

environment:
  {ENV_ENDPOINTS}  default for --endpoints (the flag wins)
  {ENV_CACERT}, {ENV_CERT}, {ENV_KEY}  defaults for --cacert, --cert, --key

TLS: with --cacert (or --cert/--key) raftctl speaks TLS and checks each member's
certificate against the host in its address; see docs/security.md.

Put -- before a key or value that starts with '-'.

Keys are at most {MAX_KEY_BYTES} bytes and values at most {MAX_VALUE_BYTES} bytes (1 MiB), in UTF-8.
"""


class _UsageError(Exception):
    """Argument errors as a value, so main() returns 2 instead of exiting the process."""


class _Parser(argparse.ArgumentParser):
    """argparse writing to injected streams (tests, embedding) and not calling exit on
    usage errors; ``--help`` still raises ``SystemExit(0)`` like any argparse tool."""

    def __init__(self, *args: Any, out: TextIO, err: TextIO, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self._out = out
        self._err = err

    def print_help(self, file: Any = None) -> None:
        super().print_help(self._out if file is None else file)

    def print_usage(self, file: Any = None) -> None:
        super().print_usage(self._out if file is None else file)

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.format_usage()}{self.prog}: error: {message}\n")


class _Version(argparse.Action):
    """``--version``: to the parser's own stdout (argparse's writes to sys.stdout)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        out = parser._out if isinstance(parser, _Parser) else sys.stdout
        out.write(f"{PROG} {version()}\n")
        raise SystemExit(0)


def _seconds(what: str, *, allow_zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = "zero or more" if allow_zero else "more than zero"
            raise argparse.ArgumentTypeError(f"{what} must be {bound} seconds, not {text!r}")
        return value

    return parse


def _mix(text: str) -> tuple[tuple[str, int], ...]:
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--mix: {exc}") from None


_DEFAULT_MIX_TEXT = ",".join(f"{name}={weight}" for name, weight in DEFAULT_MIX)

BENCH_DESCRIPTION = """\
A closed-loop load generator: --clients workers each send one request, wait for
the whole reply, record its latency and send the next. After an untimed prefill
(for get, cas and mixed: every key is written once) and --warmup seconds, the
operations started in the next --duration seconds are measured. Prints ops/s,
latency percentiles (exact, nearest-rank, from every measured request), errors
by kind, and with --output json one object with a per-second timeline.

ops:
  set    write a fresh value of --value-size bytes to a random key
  get    read a random key: linearizable from the leader, or with
         --max-staleness from any member within that bound
  cas    one compare-and-swap round trip: expect the bench's last-known value
         of the key (from the prefill, its own writes, or the current value a
         failed cas returned), swap in a fresh value. A cas that does not swap
         is an answer, counted as not_swapped, not as an error
  mixed  each request picks get, set or cas by --mix weights

Keys are k000000000000000 ... (16 bytes each). Latency is measured around the
client library call, so redirects and retries count; --timeout bounds each
request, and one that runs out counts as an error. Requests create no trace
spans (the bench measures the server, not span export) unless --trace-requests.
"""

BENCH_EPILOG = f"""\
exit codes:
  0  the bench ran and at least one operation succeeded (errors during the run
     are counted and reported, not fatal)
  1  the cluster refused the first request (e.g. the value is too large)
  2  usage or configuration error (bad arguments, --plot without matplotlib)
  3  the cluster could not be reached, or no operation succeeded in the window
130  interrupted (nothing is printed)

Progress (elapsed, ops/s, errors) goes to stderr while it is a terminal;
stdout holds only the result.

environment:
  {ENV_ENDPOINTS}  default for --endpoints (the flag wins)
  {ENV_CACERT}, {ENV_CERT}, {ENV_KEY}  defaults for --cacert, --cert, --key

TLS: with --cacert (or --cert/--key) raftctl speaks TLS and checks each member's
certificate against the host in its address; see docs/security.md.
  {ENV_TRACE_FILE}, OTEL_*  where spans go, with --trace-requests only
"""


def _add_bench_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument(
        "--op",
        choices=OPS,
        default="set",
        help="what each request does (default: set; see ops above)",
    )
    bench.add_argument(
        "--clients",
        metavar="N",
        type=_count("--clients", minimum=1),
        default=16,
        help="concurrent closed-loop workers (default: 16)",
    )
    bench.add_argument(
        "--connections",
        metavar="K",
        type=_count("--connections", minimum=1),
        default=None,
        help=f"spread the workers over K client connections (default: {DEFAULT_CONNECTIONS}, or"
        f" one per client if fewer, and at least one per {SERVER_IN_FLIGHT_PER_CONNECTION}"
        " clients: on 2 cores 4 connections made up to twice the ops/s of 1, more made no"
        " difference)",
    )
    bench.add_argument(
        "--duration",
        metavar="SECONDS",
        type=_seconds("--duration", allow_zero=False),
        default=10.0,
        help="length of the measured window (default: 10)",
    )
    bench.add_argument(
        "--warmup",
        metavar="SECONDS",
        type=_seconds("--warmup", allow_zero=True),
        default=2.0,
        help="run this long unmeasured first (default: 2)",
    )
    bench.add_argument(
        "--mix",
        metavar="OP=WEIGHT,...",
        type=_mix,
        default=None,
        help=f"relative weights of get, set and cas for --op mixed (default: {_DEFAULT_MIX_TEXT})",
    )
    bench.add_argument(
        "--value-size",
        metavar="BYTES",
        type=_count("--value-size", minimum=0, maximum=MAX_VALUE_BYTES),
        default=16,
        help="size of every written value (default: 16)",
    )
    bench.add_argument(
        "--keys",
        metavar="N",
        type=_count("--keys", minimum=1, maximum=MAX_KEYS),
        default=10_000,
        help="size of the key space, chosen uniformly at random (default: 10000)",
    )
    bench.add_argument(
        "--max-staleness",
        metavar="SECONDS",
        type=_seconds("--max-staleness", allow_zero=True),
        default=None,
        help="make gets stale reads with this bound, served by any member (get and mixed)",
    )
    bench.add_argument(
        "--seed",
        metavar="N",
        type=_count("--seed", minimum=0),
        default=0,
        help="seed of the key and op choices, for repeatable runs (default: 0)",
    )
    bench.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also draw the latency distribution and the throughput over time to this PNG"
        " (needs matplotlib: pip install 'raftd[bench]')",
    )
    bench.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress line on stderr, even on a terminal",
    )
    bench.add_argument(
        "--trace-requests",
        action="store_true",
        help="create client spans for every request (off by default: it slows the client)",
    )


def build_parser(out: TextIO | None = None, err: TextIO | None = None) -> argparse.ArgumentParser:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    streams: dict[str, Any] = {"out": out, "err": err}

    # The global options are accepted after the command too ("raftctl get k --output json"),
    # with SUPPRESS defaults there so they never overwrite what came before the command.
    def add_globals(parser: argparse.ArgumentParser, *, top: bool) -> None:
        def default(value: object) -> object:
            return value if top else argparse.SUPPRESS

        parser.add_argument(
            "--endpoints",
            metavar="HOST:PORT,...",
            default=default(None),
            help=f"client addresses of the members, comma-separated (default: ${ENV_ENDPOINTS}"
            f" or {DEFAULT_ENDPOINTS})",
        )
        parser.add_argument(
            "--timeout",
            metavar="SECONDS",
            type=_seconds("--timeout", allow_zero=False),
            default=default(DEFAULT_TIMEOUT_S),
            help="give up after this long, redirects and retries included"
            f" (default: {DEFAULT_TIMEOUT_S:g})",
        )
        for flag, what in (
            ("--cacert", "connect with TLS, trusting this CA's certificates (PEM)"),
            ("--cert", "client certificate to present, for members that require one (PEM)"),
            ("--key", "the client certificate's private key (PEM)"),
        ):
            # dest apart from the commands' own KEY argument
            dest = "tls_" + flag.lstrip("-")
            parser.add_argument(flag, dest=dest, metavar="FILE", default=default(None), help=what)
        parser.add_argument(
            "--output",
            choices=("text", "json"),
            default=default("text"),
            help="text for people, json for scripts: exactly one object on stdout (default: text)",
        )

    parser = _Parser(
        prog=PROG,
        description="Read, write and inspect a raftd cluster.",
        epilog=EPILOG,
        **streams,
    )
    add_globals(parser, top=True)
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str, **kwargs: Any) -> _Parser:
        sub: _Parser = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **streams,
            **kwargs,
        )
        add_globals(sub, top=False)
        return sub

    get = command(
        "get",
        "print a key's value, or the keys of a range",
        "Print KEY's value alone on stdout. Linearizable (served by the leader) unless\n"
        "--max-staleness is given; then any member that heard from the leader within that\n"
        "many seconds may answer from its own copy, and a note on stderr says so.\n"
        "A missing key exits 1. With --output json the key's create and mod revisions\n"
        "and the revision the read was served at come too.\n"
        "Ranges: --prefix P, or --from A [--to B] (B itself excluded), print KEY<TAB>VALUE\n"
        "lines in key order. Without --limit every key is fetched, page by page (each page\n"
        "read at its own revision); with --limit N at most N, and a note says how to ask\n"
        "for the next page (--after, the last key shown).",
        usage=f"{PROG} get [-h] [options] (KEY | --prefix P | --from A [--to B]) "
        "[--after K] [--limit N] [--max-staleness S]",
    )
    get.add_argument("key", metavar="KEY", nargs="?", help="the key to read")
    get.add_argument("--prefix", metavar="P", help="every key that starts with P")
    get.add_argument("--from", dest="start", metavar="A", help="keys from A on")
    get.add_argument("--to", dest="end", metavar="B", help="with --from: keys before B")
    get.add_argument(
        "--after", metavar="K", help="ranges: only keys after K (the next page after K)"
    )
    get.add_argument(
        "--limit",
        metavar="N",
        type=_count("--limit", minimum=1),
        default=None,
        help="ranges: at most N keys",
    )
    get.set_defaults(command_parser=get)
    get.add_argument(
        "--max-staleness",
        metavar="SECONDS",
        type=_seconds("--max-staleness", allow_zero=True),
        default=None,
        help="accept a value at most this old, from any member",
    )

    set_ = command(
        "set",
        "set a key",
        "Set KEY to VALUE; prints OK. A VALUE of - is read from standard input, exactly as\n"
        "it comes (a trailing newline included): the way to write a value too large for the\n"
        "command line, e.g. raftctl set config - < config.json",
    )
    set_.add_argument("key", metavar="KEY", help="the key to write")
    set_.add_argument("value", metavar="VALUE", help="its new value, or - for standard input")
    set_.add_argument(
        "--lease",
        metavar="ID",
        type=_count("--lease", minimum=1),
        default=0,
        help="attach the key to this lease: it is deleted when the lease ends",
    )

    cas = command(
        "cas",
        "compare and swap",
        "Set KEY to NEW only if it currently holds EXPECTED (or, with --absent, only if it\n"
        "does not exist; with --revision R, only if it was last modified at revision R,\n"
        "as get --output json shows). Prints 'swapped', or why not and exits 1. One of\n"
        "EXPECTED and NEW may be -, read from standard input as it comes.",
        usage=f"{PROG} cas [-h] [options] KEY (EXPECTED | --absent | --revision R) NEW",
    )
    cas.add_argument("key", metavar="KEY", help="the key to swap")
    cas.add_argument(
        "values", metavar="EXPECTED NEW", nargs="+", help="EXPECTED, NEW; only NEW with --absent"
    )
    cas.add_argument("--absent", action="store_true", help="swap only if KEY does not exist")
    cas.add_argument(
        "--revision",
        metavar="R",
        type=_count("--revision", minimum=0),
        default=None,
        help="swap only if KEY's mod revision is R (0: only if it does not exist)",
    )
    cas.add_argument(
        "--lease",
        metavar="ID",
        type=_count("--lease", minimum=1),
        default=0,
        help="attach the key to this lease when it swaps",
    )
    # argparse cannot say "one or two positionals depending on a flag"; main() checks, and
    # reports through this parser so the message carries the cas usage line.
    cas.set_defaults(command_parser=cas)

    delete = command(
        "delete",
        "delete a key, or every key with a prefix",
        "Delete KEY; a key that did not exist exits 1. With --prefix P, delete every key\n"
        "that starts with P (at one revision) and print how many there were.",
        usage=f"{PROG} delete [-h] [options] (KEY | --prefix P)",
    )
    delete.add_argument("key", metavar="KEY", nargs="?", help="the key to delete")
    delete.add_argument("--prefix", metavar="P", help="every key that starts with P")
    delete.set_defaults(command_parser=delete)

    command(
        "status",
        "show every member's view",
        "Ask every endpoint for its own view (role, term, leader, commit and applied\n"
        "indexes). Exits 0 if at least one member answered, 3 if none did.",
    )

    member = command(
        "member",
        "list, add, promote or remove members",
        "member list: every member of the configuration in force, as the leader sees it:\n"
        "name, id, voter or learner, peer and client addresses, the last log index the\n"
        "leader knows it holds (match), how many entries it is behind (lag), and seconds\n"
        "since the leader last heard from it.\n"
        "member add NAME --peer-addr HOST:PORT --client-addr HOST:PORT [--learner]: add a\n"
        "member (a new id is assigned); then start it with raftd run --id NAME --join and\n"
        "an empty --data-dir. A learner gets the log but does not vote; add large members\n"
        "as learners and promote them once caught up.\n"
        "member promote NAME: make a learner a voter (refused until it has caught up).\n"
        "member remove NAME: remove a member; it stops serving once the change commits.\n"
        "Changes go one at a time; each returns once committed.",
        usage=f"{PROG} member [-h] [options] (list | add NAME --peer-addr HOST:PORT "
        "--client-addr HOST:PORT [--learner] | promote NAME | remove NAME)",
    )
    member.add_argument("action", choices=("list", "add", "promote", "remove"), help="what to do")
    member.add_argument("name", metavar="NAME", nargs="?", help="the member (not for list)")
    member.add_argument("--peer-addr", metavar="HOST:PORT", help="add: its peer address")
    member.add_argument("--client-addr", metavar="HOST:PORT", help="add: its client address")
    member.add_argument("--learner", action="store_true", help="add: as a non-voting learner")
    member.set_defaults(command_parser=member)

    move = command(
        "move-leader",
        "hand the leadership to another member",
        "Ask the leader to hand its leadership to NAME (a member's name, as in raftctl\n"
        "status): it stops taking writes, brings NAME's log up to date and tells it to\n"
        "campaign at once, so the cluster changes leader without waiting for an election\n"
        "timeout (writes meanwhile are retried by clients). Prints the new leader and term.\n"
        "Exits 1 if the transfer failed (the leader is then unchanged), e.g. because NAME\n"
        "is down or did not catch up within an election timeout.",
    )
    move.add_argument("name", metavar="NAME", help="the member that should lead")

    coordination.add_commands(command)

    snapshot = command(
        "snapshot",
        "back up the store",
        "snapshot save FILE: fetch a consistent snapshot of the whole store from the leader\n"
        "(every write acknowledged before the request is in it) and write it to FILE, whole\n"
        "or not at all. `raftd restore --snapshot FILE ...` seeds the members of a new\n"
        "cluster from it.",
    )
    snapshot.add_argument("action", choices=("save",), help="save: write a backup to FILE")
    snapshot.add_argument("file", metavar="FILE", type=Path, help="where the backup goes")

    bench = command(
        "bench",
        "measure throughput and latency under load",
        BENCH_DESCRIPTION,
    )
    bench.epilog = BENCH_EPILOG
    _add_bench_arguments(bench)
    bench.set_defaults(command_parser=bench)

    # Not command(): trace reads local files, so the cluster options and exit codes of the
    # other commands would only mislead in its help.
    trace_parser: _Parser = commands.add_parser(
        "trace",
        help="show a trace from the local trace files",
        description=trace_command.DESCRIPTION,
        epilog=trace_command.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **streams,
    )
    trace_command.add_arguments(trace_parser)
    return parser


def parse_endpoints(text: str, *, source: str) -> list[str]:
    """The comma-separated list, validated; ``ValueError`` names where it came from."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError(f"{source} lists no endpoints")
    for item in items:
        if not item:
            raise ValueError(f"{source} {text!r} has an empty entry")
        try:
            parse_endpoint(item)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    return list(dict.fromkeys(items))


# ------------------------------------------------------------------- output


# ----------------------------------------------------------------- commands


async def _get(client: Client, args: argparse.Namespace, output: Output) -> int:
    if args.key is None:
        return await _range(client, args, output)
    reply = await client.get(args.key, max_staleness_s=args.max_staleness)
    output.result(
        {
            "key": args.key,
            "value": reply.value,
            "found": reply.found,
            "stale": reply.stale,
            "max_age_s": reply.max_age_s,
            "served_by": reply.served_by,
            "revision": reply.revision,
            "create_revision": reply.create_revision,
            "mod_revision": reply.mod_revision,
            "lease": reply.lease,
        },
        reply.value if reply.found else None,
    )
    if reply.stale:
        age = "" if reply.max_age_s is None else f": at most {reply.max_age_s:.2f} s old"
        output.note(f"stale read from {reply.served_by}{age}")
    if not reply.found:
        output.note(f"key {args.key!r} not found")
        return EXIT_FAILED
    return EXIT_OK


def _range_bounds(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.prefix is not None:
        start, end = key_range(None, args.prefix)
    else:
        start, end = args.start, args.end
    if args.after is not None:
        start = max(start, args.after + "\0")
    return start, end


async def _range(client: Client, args: argparse.Namespace, output: Output) -> int:
    start, end = _range_bounds(args)
    found = await client.range_all(
        start, end, limit=args.limit or 0, max_staleness_s=args.max_staleness
    )
    items, more = found.items, found.more
    following = items[-1].key if more and items else None
    output.result(
        {
            "items": [
                {
                    "key": i.key,
                    "value": i.value,
                    "create_revision": i.create_revision,
                    "mod_revision": i.mod_revision,
                    "lease": i.lease,
                }
                for i in items
            ],
            "count": len(items),
            "revision": found.revision,
            "more": more,
            "next": following,
        },
        "\n".join(f"{i.key}\t{i.value}" for i in items) if items else None,
    )
    if following is not None:
        output.note(f"{len(items)} keys shown; more follow: continue with --after {following!r}")
    elif not items:
        output.note("no keys in the range")
    return EXIT_OK


async def _member(client: Client, args: argparse.Namespace, output: Output) -> int:
    if args.action != "list":
        request = MemberChangeRequest(
            args.action, args.name, args.peer_addr, args.client_addr, args.learner
        )
        changed = await client.change_members(request)
        done = {"add": "added", "promote": "promoted", "remove": "removed"}[args.action]
        text = f"{done} {changed.name} (id {changed.id}) at index {changed.index}"
        if args.action == "add":
            text += (
                f"; start it with: raftd run --id {changed.name} --join --client-addr "
                f"{args.client_addr} --data-dir EMPTY_DIR --cluster ... (every member's "
                f"peer address, {changed.name}={args.peer_addr} included)"
            )
        output.result(
            {"action": args.action, "name": changed.name, "id": changed.id,
             "index": changed.index},
            text,
        )  # fmt: skip
        return EXIT_OK
    reply = await client.member_list()
    rows = [
        [
            m.name,
            str(m.id),
            m.role,
            m.peer_addr or "-",
            m.client_addr or "-",
            str(m.match_index),
            str(m.lag),
            "-" if m.last_contact_s is None else f"{m.last_contact_s:.2f}s",
        ]
        for m in reply.members
    ]
    header = ["NAME", "ID", "ROLE", "PEER", "CLIENT", "MATCH", "LAG", "CONTACT"]
    lines = _table(header, rows, [""] * len(rows))
    lines.append(f"leader {reply.leader}, term {reply.term}")
    output.result(
        {
            "leader": reply.leader,
            "term": reply.term,
            "members": [
                {
                    "name": m.name,
                    "id": m.id,
                    "role": m.role,
                    "peer_addr": m.peer_addr,
                    "client_addr": m.client_addr,
                    "match_index": m.match_index,
                    "lag": m.lag,
                    "last_contact_s": m.last_contact_s,
                }
                for m in reply.members
            ],
        },
        "\n".join(lines),
    )
    return EXIT_OK


async def _move_leader(client: Client, args: argparse.Namespace, output: Output) -> int:
    started = time.monotonic()
    reply = await client.move_leader(args.name)
    took = time.monotonic() - started
    if reply.previous == reply.leader:
        text = f"{reply.leader} already leads (term {reply.term})"
    else:
        text = f"leadership moved from {reply.previous} to {reply.leader} (term {reply.term})"
    output.result(
        {
            "leader": reply.leader,
            "previous": reply.previous,
            "term": reply.term,
            "seconds": round(took, 3),
        },
        text,
    )
    return EXIT_OK


async def _set(client: Client, args: argparse.Namespace, output: Output) -> int:
    reply = await client.set(args.key, args.value, lease=args.lease)
    output.result({"key": args.key, "value": args.value, "ok": True, "index": reply.index}, "OK")
    return EXIT_OK


async def _cas(client: Client, args: argparse.Namespace, output: Output) -> int:
    expected: str | None
    if args.absent or args.revision is not None:
        (new,) = args.values
        expected = None
    else:
        expected, new = args.values
    reply = await client.cas(args.key, expected, new, mod_revision=args.revision, lease=args.lease)
    if reply.ok:
        text = "swapped"
    elif reply.found:
        text = f"not swapped: current value is {reply.value!r}"
    else:
        text = "not swapped: key is absent"
    output.result(
        {
            "key": args.key,
            "swapped": reply.ok,
            "value": reply.value,
            "found": reply.found,
            "index": reply.index,
        },
        text,
    )
    return EXIT_OK if reply.ok else EXIT_FAILED


async def _delete(client: Client, args: argparse.Namespace, output: Output) -> int:
    if args.key is None:
        ranged = await client.delete_range(*key_range(None, args.prefix))
        output.result(
            {"prefix": args.prefix, "deleted": ranged.count, "index": ranged.index},
            f"deleted {ranged.count} keys",
        )
        return EXIT_OK
    reply = await client.delete(args.key)
    output.result(
        {"key": args.key, "deleted": reply.ok, "index": reply.index},
        "deleted" if reply.ok else "not deleted: key is absent",
    )
    return EXIT_OK if reply.ok else EXIT_FAILED


async def _status(client: Client, args: argparse.Namespace, output: Output) -> int:
    members = await client.status_all()
    answered = any(member.ok for member in members)
    obj: dict[str, Any] = {"members": [_member_json(member) for member in members]}
    if not answered:
        obj["error"] = {
            "code": "unreachable",
            "message": "no member answered",
            "definite": True,
        }
    output.result(obj, _status_table(members))
    if not answered:
        output.note("no member answered")
        return EXIT_UNKNOWN
    return EXIT_OK


def _member_json(member: MemberStatus) -> dict[str, Any]:
    if member.reply is None:
        assert member.error is not None
        error = member.error
        return {
            "endpoint": member.endpoint,
            "error": {"code": error.code, "message": error.message, "definite": error.definite},
        }
    reply = member.reply
    return {
        "endpoint": member.endpoint,
        "id": reply.node,
        "role": reply.role,
        "term": reply.term,
        "leader": reply.leader,
        "commit_index": reply.commit_index,
        "last_applied": reply.last_applied,
        "last_index": reply.last_index,
        "client_addr": reply.client_addr,
        "leader_addr": reply.leader_addr,
    }


def _status_table(members: list[MemberStatus]) -> str:
    header = ["ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED"]
    rows: list[list[str]] = []
    reasons: list[str] = []
    for member in members:
        reply = member.reply
        if reply is None:
            assert member.error is not None
            rows.append([member.endpoint, "-", "unreachable", "-", "-", "-", "-"])
            reason = member.error.message
            for prefix in (f"cannot reach {member.endpoint}: ", f"{member.endpoint}: "):
                reason = reason.removeprefix(prefix)
            reasons.append(f"({reason})")
        else:
            rows.append(
                [
                    member.endpoint,
                    reply.node,
                    reply.role,
                    str(reply.term),
                    reply.leader or "-",
                    str(reply.commit_index),
                    str(reply.last_applied),
                ]
            )
            reasons.append("")
    return "\n".join(_table(header, rows, reasons))


def _check_cas(args: argparse.Namespace) -> None:
    if args.absent and args.revision is not None:
        args.command_parser.error(
            "--absent and --revision do not go together (--revision 0 is absent)"
        )
    one = args.absent or args.revision is not None
    if len(args.values) != (1 if one else 2):
        form = (
            "KEY --absent NEW"
            if args.absent
            else "KEY --revision R NEW"
            if one
            else "KEY EXPECTED NEW"
        )
        args.command_parser.error(f"expected {form}")


def _check_member(args: argparse.Namespace) -> None:
    if args.action == "list":
        if args.name is not None:
            args.command_parser.error("member list takes no NAME")
        return
    if args.name is None:
        args.command_parser.error(f"member {args.action} needs NAME")
    adding = args.action == "add"
    if adding and not (args.peer_addr and args.client_addr):
        args.command_parser.error("member add needs --peer-addr and --client-addr")
    if not adding and (args.peer_addr or args.client_addr or args.learner):
        args.command_parser.error("--peer-addr, --client-addr and --learner are for member add")
    for flag, value in (("--peer-addr", args.peer_addr), ("--client-addr", args.client_addr)):
        if value is not None:
            try:
                parse_endpoint(value)
            except ValueError as exc:
                args.command_parser.error(f"{flag}: {exc}")


def _table(header: list[str], rows: list[list[str]], notes: list[str]) -> list[str]:
    """Columns padded to their widest cell; each row's note (if any) after the last."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip()]
    for row, note in zip(rows, notes, strict=True):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        lines.append("  ".join([*cells, note]).rstrip())
    return lines


_COMMANDS: dict[str, Callable[[Client, argparse.Namespace, Output], Awaitable[int]]] = {
    "get": _get,
    "set": _set,
    "cas": _cas,
    "delete": _delete,
    "status": _status,
    "move-leader": _move_leader,
    "member": _member,
    "lease": coordination.lease,
    "lock": coordination.lock,
    "elect": coordination.elect,
    "watch": coordination.watch,
}
_WRITES = frozenset({"set", "cas", "delete", "lease"})


async def _snapshot(args: argparse.Namespace, endpoints: list[str], output: Output) -> int:
    try:
        fetched = await backup.fetch(endpoints, args.timeout, args.tls)
        size = backup.write_file(args.file, fetched)
    except ClientError as exc:
        return output.error(exc, write=False)
    meta = fetched.snapshot.meta
    output.result(
        {
            "file": str(args.file),
            "index": meta.index,
            "term": meta.term,
            "bytes": size,
            "cluster_id": fetched.cluster_id,
            "served_by": fetched.served_by,
        },
        f"saved the snapshot at index {meta.index} ({size} bytes, cluster "
        f"{fetched.cluster_id!r}) to {args.file}",
    )
    return EXIT_OK


async def _run(
    args: argparse.Namespace, endpoints: list[str], output: Output, tracer: trace.Tracer
) -> int:
    if args.command == "snapshot":
        return await _snapshot(args, endpoints, output)
    # raftctl's root span: the trace of a write starts here and continues in the members.
    with tracer.start_as_current_span(
        f"raftctl {args.command}", attributes={"raftctl.endpoints": len(endpoints)}
    ) as root:
        async with Client(endpoints, timeout_s=args.timeout, tracer=tracer, tls=args.tls) as client:
            try:
                return await _COMMANDS[args.command](client, args, output)
            except ClientError as exc:
                root.set_attribute("raftctl.error_code", exc.code)
                root.set_attribute("raftctl.definite", exc.definite)
                return output.error(exc, write=args.command in _WRITES)


# -------------------------------------------------------------------- bench


def _only_interrupts(exc: BaseException) -> bool:
    """Ctrl-C, possibly wrapped in a group by a nursery it interrupted."""
    if isinstance(exc, BaseExceptionGroup):
        interrupted, rest = exc.split(KeyboardInterrupt)
        return interrupted is not None and rest is None
    return isinstance(exc, KeyboardInterrupt)


def _bench_config(args: argparse.Namespace, endpoints: list[str]) -> BenchConfig:
    return BenchConfig(
        endpoints=tuple(endpoints),
        op=args.op,
        clients=args.clients,
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
        mix=args.mix if args.mix is not None else DEFAULT_MIX,
        value_size=args.value_size,
        keys=args.keys,
        max_staleness_s=args.max_staleness,
        timeout_s=args.timeout,
        seed=args.seed,
        trace_requests=args.trace_requests,
    )


def _check_bench(args: argparse.Namespace) -> None:
    """What argparse cannot see option by option; reported with the bench usage line."""
    parser = args.command_parser
    if args.mix is not None and args.op != "mixed":
        parser.error("--mix applies only to --op mixed")
    problems = _bench_config(args, []).problems()
    if problems:
        parser.error(problems[0])


class _ProgressLine:
    """One self-overwriting line on a terminal's stderr; nothing at all elsewhere, so logs
    and pipes never fill with carriage returns."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self.shown = False

    def __call__(self, progress: Progress) -> None:
        self._err.write(f"\r{PROG} bench: {progress.line()}\x1b[K")
        self._err.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self._err.write("\r\x1b[K")
            self._err.flush()
            self.shown = False


def _bench_main(
    args: argparse.Namespace, endpoints: list[str], output: Output, env: Mapping[str, str]
) -> int:
    config = _bench_config(args, endpoints)
    if args.plot is not None:
        # Before the run, not after it: a missing library should not cost a whole bench.
        problem = benchplot.check_target(Path(args.plot))
        if problem is not None:
            output.failure(f"--plot: {problem}")
            return EXIT_USAGE
    tracing: TracingHandle | None = None
    if args.trace_requests:
        try:
            tracing = _setup_tracing(env)
        except ValueError as exc:
            output.failure(f"tracing: {exc}")
            return EXIT_USAGE
    progress = _ProgressLine(output.err)
    show_progress = not args.no_progress and output.err.isatty()
    # The load generator competes with the members for the same cores: the cyclic garbage
    # collector running every 700 allocations cost it about a tenth of its CPU per request.
    thresholds = gc.get_threshold()
    gc.set_threshold(*BENCH_GC_THRESHOLDS)
    try:
        result = trio.run(
            partial(
                run_bench,
                config,
                tracer=tracing.tracer("raftctl") if tracing is not None else None,
                progress=progress if show_progress else None,
                tls=args.tls,
            )
        )
    except PrefillError as exc:
        progress.clear()
        return output.error(exc.error, write=True)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        if not _only_interrupts(exc):
            raise
        progress.clear()
        output.failure("interrupted")
        return EXIT_INTERRUPTED
    finally:
        gc.set_threshold(*thresholds)
        if tracing is not None:
            tracing.shutdown()
    progress.clear()
    code = EXIT_OK
    plot_error: str | None = None
    if args.plot is not None:
        plot_error = benchplot.plot(result, Path(args.plot))
    output.result(result.to_json(), result.to_text())
    if plot_error is not None:
        output.failure(f"--plot: {plot_error}")
        code = EXIT_USAGE
    if result.ops == 0:
        output.failure("no operation succeeded in the measured window")
        code = EXIT_UNKNOWN
    return code


def _tls_context(args: argparse.Namespace, env: Mapping[str, str]) -> ssl.SSLContext | None:
    """TLS when any of the three files is given (flag, else environment); ``ValueError``
    (``TlsConfigError``) naming the file that cannot be used."""
    files = {
        name: getattr(args, f"tls_{name}", None) or env.get(variable, "").strip() or None
        for name, variable in (("cacert", ENV_CACERT), ("cert", ENV_CERT), ("key", ENV_KEY))
    }
    if not any(files.values()):
        return None
    cacert, cert, key = (Path(p) if p else None for p in files.values())
    return client_context(TlsFiles(cert, key, cacert))


def _setup_tracing(env: Mapping[str, str]) -> TracingHandle:
    """Spans go where OTEL_* says, else to RAFTCTL_TRACE_FILE, else nowhere."""
    trace_file = env.get(ENV_TRACE_FILE, "").strip()
    return setup_tracing(
        "raftctl",
        f"{socket.gethostname()}-{os.getpid()}",
        file_path=Path(trace_file) if trace_file else None,
        environ=env,
    )


STDIN_VALUE = "-"


def _values_from_stdin(args: argparse.Namespace, stdin: TextIO) -> None:
    """Replace a value given as ``-`` by standard input, read whole and kept exact."""
    slots: list[int]
    if args.command == "set":
        slots = [0] if args.value == STDIN_VALUE else []
    elif args.command == "cas":
        slots = [i for i, value in enumerate(args.values) if value == STDIN_VALUE]
    else:
        return
    if not slots:
        return
    if len(slots) > 1:
        raise _UsageError(f"{PROG} cas: error: only one of EXPECTED and NEW can be - (stdin)\n")
    if stdin.isatty():
        raise _UsageError(
            f"{PROG} {args.command}: error: the value is - (standard input), but standard "
            "input is a terminal; pipe or redirect the value in\n"
        )
    try:
        value = stdin.buffer.read().decode() if hasattr(stdin, "buffer") else stdin.read()
    except UnicodeDecodeError:
        raise _UsageError(
            f"{PROG} {args.command}: error: the value on standard input is not UTF-8 text\n"
        ) from None
    if args.command == "set":
        args.value = value
    else:
        args.values[slots[0]] = value


def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
) -> int:
    """The whole tool; returns the exit code. Streams and environment are parameters so
    tests and embedders can run it without touching process-wide state."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    env = environ if environ is not None else os.environ
    parser = build_parser(out, err)
    try:
        args = parser.parse_args(argv)
        if args.command == "cas":
            _check_cas(args)
        if args.command in ("get", "delete"):
            check_key_forms(args)
        if args.command in ("lease", "lock", "watch"):
            coordination.check(args)
        _values_from_stdin(args, stdin if stdin is not None else sys.stdin)
        if args.command == "bench":
            _check_bench(args)
        if args.command == "member":
            _check_member(args)
    except _UsageError as exc:
        err.write(str(exc))
        return EXIT_USAGE
    if args.command == "trace":
        # Before endpoints and tracing: it contacts no member, and spans of its own would be
        # written into the files it is reading.
        return trace_command.run(args, out, err)
    if args.endpoints is not None:
        source, text = "--endpoints", args.endpoints
    elif env.get(ENV_ENDPOINTS, "").strip():
        source, text = ENV_ENDPOINTS, env[ENV_ENDPOINTS]
    else:
        source, text = "default endpoints", DEFAULT_ENDPOINTS
    output = Output(out, err, json=args.output == "json")
    try:
        endpoints = parse_endpoints(text, source=source)
        args.tls = _tls_context(args, env)
    except ValueError as exc:
        if output.json:
            body = {"code": "usage", "message": str(exc), "definite": True}
            out.write(json.dumps({"error": body}) + "\n")
        else:
            err.write(f"{PROG}: {exc}\n")
        return EXIT_USAGE
    if args.command == "bench":
        return _bench_main(args, endpoints, output, env)
    try:
        tracing = _setup_tracing(env)
    except ValueError as exc:
        err.write(f"{PROG}: tracing: {exc}\n")
        return EXIT_USAGE
    try:
        return trio.run(_run, args, endpoints, output, tracing.tracer("raftctl"))
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # Ctrl-C may arrive inside a nursery (status asks members concurrently), and then
        # comes wrapped in a group.
        if not _only_interrupts(exc):
            raise
        consequence = "; a write may or may not have happened" if args.command in _WRITES else ""
        err.write(f"{PROG}: interrupted{consequence}\n")
        return EXIT_INTERRUPTED
    finally:
        tracing.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
