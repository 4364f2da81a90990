"""A lock user for the nemesis: a process of its own, so the nemesis can pause it whole
(SIGSTOP), keepalives and all, the way a garbage-collection pause or a stopped VM does.

It takes the lock again and again (cli.recipes, as raftctl lock does), and while holding
it writes to a *fenced resource*: the key ``fenced/LOCK``, whose value starts with the
largest token it has accepted. A write reads that value and swaps in its own only if its
token is not smaller (a cas on the mod revision, so two writers cannot both pass the
check); a smaller token is refused. Each acquisition, write (accepted, refused or unknown)
and release goes to its history file as it happens (tests/lincheck/locks.py's format).

    python -m tests.nemesis.lockuser NAME HISTORY --endpoints A,B,C [--ttl 2] [--tls DIR]
        [--unfenced]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import trio

from cli import recipes
from cli.client import Client, ClientError
from wire.tls import TlsFiles, client_context

LOCK = "nemesis-lock"
RESOURCE = f"fenced/{LOCK}"


async def fenced_write(
    client: Client, token: int, note: str, *, fenced: bool = True
) -> bool | None:
    """True if the resource took the write, False if it refused the token, None if the
    answer was lost (a timeout: it may have been taken). ``fenced`` False is a resource
    that ignores tokens: the deliberate bug the lock checker must catch."""
    try:
        while True:
            current = await client.get(RESOURCE)
            largest = int(current.value.split(":", 1)[0]) if current.value else 0
            if token < largest and fenced:
                return False
            swapped = await client.cas(
                RESOURCE, None, f"{token}:{note}", mod_revision=current.mod_revision
            )
            if swapped.ok:
                return True
    except ClientError:
        return None


async def use_the_lock(
    name: str, out: TextIO, client: Client, ttl_s: int, *, fenced: bool = True
) -> None:
    rng = random.Random(name)
    rounds = 0

    def record(op: str, token: int, call: int, **extra: Any) -> None:
        row = {"client": name, "op": op, "lock": LOCK, "token": token, "call": call,
               "return": time.monotonic_ns(), **extra}  # fmt: skip
        out.write(json.dumps(row) + "\n")
        out.flush()

    while True:
        rounds += 1
        call = time.monotonic_ns()
        token = 0
        released = False
        try:
            async with recipes.hold(client, LOCK, name, ttl_s) as (held, scope):
                token = held.token
                record("acquire", token, call)
                with scope:
                    # Some work before the first write: the moment the nemesis pauses a
                    # holder in, so that a write is certain to follow its wake-up.
                    await trio.sleep(rng.uniform(0.1, 0.3))
                    for n in range(rng.randint(1, 3)):
                        started = time.monotonic_ns()
                        # A write under way is not abandoned when the lease turns out lost
                        # (no real client takes back a request in flight): after a pause,
                        # it reaches the resource with a token that is no longer the newest.
                        with trio.CancelScope(shield=True):
                            verdict = await fenced_write(
                                client, token, f"{name}-{rounds}-{n}", fenced=fenced
                            )
                            record("write", token, started, accepted=verdict)
                        await trio.sleep(rng.uniform(0.05, 0.3))
                # Done with the lock as soon as the writes are: recorded before the lease
                # is revoked (the next holder may start the moment it is).
                record("release", token, time.monotonic_ns())
                released = True
        except (recipes.LeaseLost, ClientError):
            if token and not released:
                record("release", token, time.monotonic_ns(), lost=True)
            await trio.sleep(0.2)
        await trio.sleep(rng.uniform(0.0, 0.2))


async def main_async(args: argparse.Namespace) -> None:
    tls = None
    if args.tls is not None:
        tls_dir = Path(args.tls)
        tls = client_context(
            TlsFiles(tls_dir / "client.pem", tls_dir / "client-key.pem", tls_dir / "ca.pem")
        )
    endpoints = args.endpoints.split(",")
    with Path(args.history).open("a") as out:
        async with Client(endpoints, timeout_s=3.0, attempt_timeout_s=0.5, tls=tls) as client:
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        partial(use_the_lock, fenced=not args.unfenced),
                        args.name,
                        out,
                        client,
                        args.ttl,
                    )
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.nemesis.lockuser")
    parser.add_argument("name")
    parser.add_argument("history")
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--ttl", type=int, default=2)
    parser.add_argument("--tls", default=None, help="a directory with ca.pem, client.pem, ...")
    parser.add_argument(
        "--unfenced", action="store_true", help="the resource ignores tokens (a deliberate bug)"
    )
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
