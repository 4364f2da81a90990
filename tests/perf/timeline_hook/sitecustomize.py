"""Loaded by every Python process ``python -m tests.perf.timeline`` starts (through
PYTHONPATH): wraps the few functions a write passes through on every member and in the
bench client so each records when it ran, and writes the marks to a file per process.

Nothing here is loaded by raftd itself; without ``RAFTD_TIMELINE_DIR`` it does nothing.
The clock is CLOCK_MONOTONIC (``time.perf_counter_ns``), the same in every process of the
machine, so the files merge into one timeline.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

_DIR = os.environ.get("RAFTD_TIMELINE_DIR", "")
_START_NS = int(os.environ.get("RAFTD_TIMELINE_START_NS", "0"))
_END_NS = int(os.environ.get("RAFTD_TIMELINE_END_NS", "0"))
_marks: list[tuple[int, str]] = []
_written = False


def mark(tag: str) -> None:
    global _written
    now = time.perf_counter_ns()
    if now < _START_NS or _written:
        return
    if now <= _END_NS:
        _marks.append((now, tag))
        return
    _written = True
    with open(os.path.join(_DIR, f"{os.getpid()}.txt"), "w") as out:
        out.writelines(f"{t} {g}\n" for t, g in _marks)


def _before(owner: Any, name: str, tag: Callable[..., str | None]) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        label = tag(*args, **kwargs)
        if label is not None:
            mark(label)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _around_async(owner: Any, name: str, first: str, last: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(first)
        try:
            return await original(*args, **kwargs)
        finally:
            mark(last)

    setattr(owner, name, wrapper)


def _around(owner: Any, name: str, first: str, last: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(first)
        try:
            return original(*args, **kwargs)
        finally:
            mark(last)

    setattr(owner, name, wrapper)


def _install() -> None:
    from raftd.runtime import driver
    from wire import stream

    # FramedStream.receive calls the name in its module: the wrapper replaces it there.
    name = "decode_payload"
    decode = getattr(stream, name)

    def decode_payload(payload: Any) -> Any:
        header, body = decode(payload)
        mark(f"rx:{header.kind}")
        return header, body

    setattr(stream, name, decode_payload)
    _before(stream.FramedStream, "encode", lambda self, header, message: f"enc:{header.kind}")
    _before(stream.FramedStream, "write_now", lambda self, data: "written")
    _before(stream.RawSocket, "send_all", lambda self, data: "written")
    _before(driver.Driver, "_propose", lambda self, write: "propose")
    _around_async(driver.Driver, "_sync", "fsync", "fsynced")
    # Finer marks, for --window-ms: a message handed to the loop, the loop's turn and
    # step, staging, the sync's start in its thread, and the system calls themselves.
    from raftd.storage import fs, wal

    _before(driver.Driver, "deliver", lambda self, *args, **kwargs: "deliver")
    _before(stream.TurnWrites, "open", lambda self: "turn")
    _before(driver.Driver, "_step", lambda self, inbound: "step")
    _before(driver.Driver, "_apply", lambda self, ready: "apply")
    _around(driver, "stage_ready", "stage", "staged")
    _before(wal.WalStorage, "sync", lambda self: "wal.sync")
    _around(fs._OsFile, "append", "os.write", "os.written")
    _around(fs._OsFile, "sync", "os.fsync", "os.fsynced")


if _DIR:
    _install()
