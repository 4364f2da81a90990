"""Fault injection you can see: lost and late Raft messages, a slow disk, a failing disk.

Chaos exists to be watched, so every fault it injects leaves a trace of itself: the settings
are announced once at start (``ChaosConfig.describe``), each injected fault is counted by kind
for the metrics (``Chaos.counts_by_kind``), and the verdicts carry the span attributes
(``chaos.dropped``, ``chaos.delay_ms``, ``chaos.fsync_delay_ms``, ``chaos.fsync_failed``)
that mark the spans they affected. A trace that shows a slow commit can then tell an injected
delay from a real one.

Every Raft message kind is subject to drop and delay, heartbeats and their responses
included: the paper's heartbeats *are* empty AppendEntries, raftd only sends them as their
own kind (as etcd does), and exempting them would leave the failure detector, the part of
Raft most sensitive to a lossy network, untested.

Decisions come from a seeded ``random.Random``, one stream for messages and one for the disk,
so the fsync worker thread never shifts the message decisions: the same seed and the same
sequence of messages give the same faults. Without a seed one is drawn and announced, so any
run can be replayed.

Wiring, for the runtime (a sketch; ``enqueue`` is the transport's undisturbed send)::

    chaos = Chaos(ChaosConfig.from_env(os.environ))
    log.info(chaos.config.describe(), **chaos.config.as_attributes())
    storage = chaos.wrap_storage(WalStorage.open(...))    # the driver syncs it as before
    line = DelayLine(enqueue)                             # nursery.start(line.run)

    def send(msg):
        verdict = chaos.decide(msg)
        span.set_attributes(verdict.span_attributes())
        if verdict.drop:
            return
        if verdict.delay_s > 0:
            line.put(msg, verdict.delay_s)
        else:
            enqueue(msg)
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Generic, TypeVar

import trio

from raftd.config import ConfigError
from raftd.core.types import DurableState, Entry, HardState, Message, Snapshot
from raftd.storage.base import SnapshotStorage, StorageError

ENV_DROP_PERCENT: Final = "RAFTD_CHAOS_DROP_PERCENT"
ENV_DELAY_PERCENT: Final = "RAFTD_CHAOS_DELAY_PERCENT"
ENV_DELAY_MS: Final = "RAFTD_CHAOS_DELAY_MS"
ENV_FSYNC_DELAY_MS: Final = "RAFTD_CHAOS_FSYNC_DELAY_MS"
ENV_FSYNC_FAIL_PERCENT: Final = "RAFTD_CHAOS_FSYNC_FAIL_PERCENT"
ENV_SEED: Final = "RAFTD_CHAOS_SEED"
ENV_PREFIX: Final = "RAFTD_CHAOS_"
ENV_VARS: Final = (
    ENV_DROP_PERCENT,
    ENV_DELAY_PERCENT,
    ENV_DELAY_MS,
    ENV_FSYNC_DELAY_MS,
    ENV_FSYNC_FAIL_PERCENT,
    ENV_SEED,
)

# Counter keys: the metrics export them as a label, so they are a fixed, small set.
DROP: Final = "drop"
DELAY: Final = "delay"
FSYNC_DELAY: Final = "fsync_delay"
FSYNC_FAIL: Final = "fsync_fail"
KINDS: Final = (DROP, DELAY, FSYNC_DELAY, FSYNC_FAIL)

ATTR_DROPPED: Final = "chaos.dropped"
ATTR_DELAY_MS: Final = "chaos.delay_ms"
ATTR_FSYNC_DELAY_MS: Final = "chaos.fsync_delay_ms"
ATTR_FSYNC_FAILED: Final = "chaos.fsync_failed"

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PERCENT_RE = re.compile(rf"({_NUMBER})\s*%?")
_MS_RE = re.compile(rf"({_NUMBER})(?:\s*-\s*({_NUMBER}))?")
_SEED_RE = re.compile(r"[+-]?\d+")

_PERCENT_SYNTAX = "a number from 0 to 100, e.g. 10 or 2.5"
_MS_SYNTAX = (
    "milliseconds as one non-negative number (50) or a range MIN-MAX with MIN <= MAX (20-200)"
)


def _check_percent(name: str, value: float) -> None:
    if not (0.0 <= value <= 100.0):
        raise ConfigError(f"{name} must be {_PERCENT_SYNTAX}, got {value!r}")


def _check_ms(name: str, value: tuple[float, float]) -> None:
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or low > high:
        raise ConfigError(f"{name} must be {_MS_SYNTAX}, got {value!r}")


def _parse_percent(name: str, text: str) -> float:
    match = _PERCENT_RE.fullmatch(text)
    if match is None:
        raise ConfigError(f"{name}={text!r}: expected {_PERCENT_SYNTAX}")
    value = float(match.group(1))
    if value > 100.0:
        raise ConfigError(f"{name}={text!r}: expected {_PERCENT_SYNTAX}")
    return value


def _parse_ms(name: str, text: str) -> tuple[float, float]:
    match = _MS_RE.fullmatch(text)
    if match is None:
        raise ConfigError(f"{name}={text!r}: expected {_MS_SYNTAX}")
    low = float(match.group(1))
    high = float(match.group(2)) if match.group(2) is not None else low
    if low > high:
        raise ConfigError(f"{name}={text!r}: the range is backwards; expected {_MS_SYNTAX}")
    return (low, high)


def _format_number(value: float) -> str:
    return f"{value:g}"


def _format_ms(value: tuple[float, float]) -> str:
    low, high = value
    if low == high:
        return _format_number(low)
    return f"{_format_number(low)}-{_format_number(high)}"


@dataclass(frozen=True)
class ChaosConfig:
    """What faults to inject. The defaults inject none, so a plain ``ChaosConfig()`` is off."""

    drop_percent: float = 0.0
    delay_percent: float = 0.0
    delay_ms: tuple[float, float] = (0.0, 0.0)
    fsync_delay_ms: tuple[float, float] = (0.0, 0.0)
    fsync_fail_percent: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        # Checked here too, not only in from_env, because tests and the simulator build
        # configs directly, and a 150% drop rate should fail there as loudly as from the shell.
        _check_percent("drop_percent", self.drop_percent)
        _check_percent("delay_percent", self.delay_percent)
        _check_percent("fsync_fail_percent", self.fsync_fail_percent)
        _check_ms("delay_ms", self.delay_ms)
        _check_ms("fsync_delay_ms", self.fsync_delay_ms)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ChaosConfig:
        """Read the RAFTD_CHAOS_* variables; unset or empty ones inject nothing.

        Raises ConfigError (a ValueError) naming the variable and the syntax it accepts. An
        unknown RAFTD_CHAOS_* name is an error rather than ignored, because a misspelt
        variable would otherwise run the experiment without the chaos and look like a pass.
        """
        unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in ENV_VARS)
        if unknown:
            raise ConfigError(
                f"unknown chaos variable {', '.join(unknown)}; known: {', '.join(ENV_VARS)}"
            )

        def get(name: str) -> str | None:
            text = environ.get(name, "").strip()
            return text or None

        drop = get(ENV_DROP_PERCENT)
        delay_percent = get(ENV_DELAY_PERCENT)
        delay_ms = get(ENV_DELAY_MS)
        fsync_delay = get(ENV_FSYNC_DELAY_MS)
        fsync_fail = get(ENV_FSYNC_FAIL_PERCENT)
        seed = get(ENV_SEED)
        # Half a delay setting is refused: guessing the missing half would inject something
        # nobody asked for, and ignoring it would inject nothing while the user waits for it.
        if (delay_percent is None) != (delay_ms is None):
            given, missing = (
                (ENV_DELAY_PERCENT, ENV_DELAY_MS)
                if delay_ms is None
                else (ENV_DELAY_MS, ENV_DELAY_PERCENT)
            )
            raise ConfigError(
                f"{given} is set but {missing} is not; message delay needs both "
                f"({ENV_DELAY_PERCENT}: {_PERCENT_SYNTAX}; {ENV_DELAY_MS}: {_MS_SYNTAX})"
            )
        if seed is not None and _SEED_RE.fullmatch(seed) is None:
            raise ConfigError(f"{ENV_SEED}={seed!r}: expected an integer, e.g. 42")
        return cls(
            drop_percent=_parse_percent(ENV_DROP_PERCENT, drop) if drop else 0.0,
            delay_percent=(
                _parse_percent(ENV_DELAY_PERCENT, delay_percent) if delay_percent else 0.0
            ),
            delay_ms=_parse_ms(ENV_DELAY_MS, delay_ms) if delay_ms else (0.0, 0.0),
            fsync_delay_ms=(
                _parse_ms(ENV_FSYNC_DELAY_MS, fsync_delay) if fsync_delay else (0.0, 0.0)
            ),
            fsync_fail_percent=(
                _parse_percent(ENV_FSYNC_FAIL_PERCENT, fsync_fail) if fsync_fail else 0.0
            ),
            seed=int(seed) if seed is not None else None,
        )

    @property
    def messages_enabled(self) -> bool:
        """Whether the transport needs to ask at all; off, it can skip ``decide`` entirely."""
        return self.drop_percent > 0 or self._delays_messages

    @property
    def _delays_messages(self) -> bool:
        # A share delayed by 0 ms changes nothing, and counting it would report delays
        # that never happened.
        return self.delay_percent > 0 and self.delay_ms[1] > 0

    @property
    def fsync_enabled(self) -> bool:
        """Whether wrapping the storage would change anything."""
        return self.fsync_delay_ms[1] > 0 or self.fsync_fail_percent > 0

    @property
    def enabled(self) -> bool:
        return self.messages_enabled or self.fsync_enabled

    def describe(self) -> str:
        """One line for the start-up log, so nobody mistakes an injected fault for a bug."""
        if not self.enabled:
            return "chaos: off"
        seed = "none" if self.seed is None else str(self.seed)
        return (
            f"chaos: drop {_format_number(self.drop_percent)}% of Raft messages, "
            f"delay {_format_number(self.delay_percent)}% by {_format_ms(self.delay_ms)} ms, "
            f"fsync +{_format_ms(self.fsync_delay_ms)} ms, "
            f"fsync fails {_format_number(self.fsync_fail_percent)}%, seed {seed}"
        )

    def as_attributes(self) -> dict[str, str | float | int]:
        """The settings as flat span/log attributes; OpenTelemetry takes no tuples or None."""
        attributes: dict[str, str | float | int] = {
            "chaos.drop_percent": self.drop_percent,
            "chaos.delay_percent": self.delay_percent,
            "chaos.delay_ms_min": self.delay_ms[0],
            "chaos.delay_ms_max": self.delay_ms[1],
            "chaos.fsync_delay_ms_min": self.fsync_delay_ms[0],
            "chaos.fsync_delay_ms_max": self.fsync_delay_ms[1],
            "chaos.fsync_fail_percent": self.fsync_fail_percent,
        }
        if self.seed is not None:
            attributes["chaos.seed"] = self.seed
        return attributes


@dataclass(frozen=True, slots=True)
class Verdict:
    """What chaos does to one message. A dropped message is never also delayed."""

    drop: bool
    delay_s: float

    def span_attributes(self) -> dict[str, bool | float]:
        """Empty for an untouched message, so spans only carry chaos where chaos happened."""
        if self.drop:
            return {ATTR_DROPPED: True}
        if self.delay_s > 0:
            return {ATTR_DELAY_MS: self.delay_s * 1000.0}
        return {}


PASS: Final = Verdict(drop=False, delay_s=0.0)


@dataclass(frozen=True, slots=True)
class FsyncVerdict:
    """What chaos does to one fsync: the delay comes first, a failing disk is slow too."""

    delay_s: float
    fail: bool


class Chaos:
    """Decides, message by message and fsync by fsync, which faults to inject, and counts them.

    ``counts`` and ``by_message`` are updated from the trio thread (messages) and the fsync
    worker thread (disk), and read by the metrics exporter thread: read them through
    ``counts_by_kind``/``counts_by_message``, which copy under the lock.
    """

    def __init__(self, config: ChaosConfig, rng: random.Random | None = None) -> None:
        if rng is None:
            if config.seed is None:
                # Drawn here and written into the config so describe() announces it: a run
                # that found something can be replayed with RAFTD_CHAOS_SEED.
                config = replace(config, seed=random.SystemRandom().randrange(2**63))
            rng = random.Random(config.seed)
        self.config = config
        self.rng = rng
        # Split off once, so the disk's draws in the worker thread never interleave with the
        # message draws and the message faults stay a function of the seed alone.
        self.fsync_rng = random.Random(rng.getrandbits(64))
        self.counts: collections.Counter[str] = collections.Counter()
        self.by_message: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()

    def decide(self, msg: Message) -> Verdict:
        config = self.config
        if not config.messages_enabled:
            return PASS
        if config.drop_percent > 0 and self.rng.random() * 100.0 < config.drop_percent:
            self._count(DROP, type(msg).__name__)
            return Verdict(drop=True, delay_s=0.0)
        if config._delays_messages and self.rng.random() * 100.0 < config.delay_percent:
            low, high = config.delay_ms
            self._count(DELAY, type(msg).__name__)
            return Verdict(drop=False, delay_s=self.rng.uniform(low, high) / 1000.0)
        return PASS

    def decide_fsync(self) -> FsyncVerdict:
        config = self.config
        delay_s = 0.0
        low, high = config.fsync_delay_ms
        if high > 0:
            delay_s = self.fsync_rng.uniform(low, high) / 1000.0
            self._count(FSYNC_DELAY)
        fail = (
            config.fsync_fail_percent > 0
            and self.fsync_rng.random() * 100.0 < config.fsync_fail_percent
        )
        if fail:
            self._count(FSYNC_FAIL)
        return FsyncVerdict(delay_s=delay_s, fail=fail)

    def wrap_storage(
        self, storage: SnapshotStorage, *, sleep: Callable[[float], None] = time.sleep
    ) -> ChaosStorage:
        return ChaosStorage(storage, self, sleep=sleep)

    def counts_by_kind(self) -> dict[str, int]:
        """Every kind, zeros included, so the metric series exist before the first fault."""
        with self._lock:
            return {kind: self.counts[kind] for kind in KINDS}

    def counts_by_message(self) -> dict[tuple[str, str], int]:
        """(chaos kind, message class name) pairs: at most 2 x 6 labels."""
        with self._lock:
            return dict(self.by_message)

    def _count(self, kind: str, message: str | None = None) -> None:
        with self._lock:
            self.counts[kind] += 1
            if message is not None:
                self.by_message[kind, message] += 1


class InjectedFsyncFailure(StorageError):
    """An fsync that chaos made fail. A StorageError, so the runtime fail-stops on it as it
    would on a real disk error, and the exit message says it was injected."""


class ChaosStorage:
    """Any Storage behind a slow or failing disk.

    ``sync`` runs in the driver's worker thread, so the delay is a blocking sleep: that is
    what a slow fsync looks like to the runtime. A failure is raised *before* the wrapped
    ``sync``, so nothing staged since the last good sync becomes durable, and since the
    runtime only acknowledges after ``sync`` returns, nothing lost was ever acknowledged.
    Like WalStorage after a failed fsync, the instance then refuses all further use: a disk
    that failed an fsync cannot be trusted with a retry, only with a restart.
    """

    def __init__(
        self, inner: SnapshotStorage, chaos: Chaos, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.inner = inner
        self.chaos = chaos
        self._sleep = sleep
        self._failed: str | None = None
        # Set by each sync for the span around it; read after the worker thread returns.
        self.last_sync_delay_s = 0.0
        self.last_sync_failed = False

    def load(self) -> DurableState:
        self._check_usable()
        return self.inner.load()

    def append(self, entries: Sequence[Entry]) -> None:
        self._check_usable()
        self.inner.append(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._check_usable()
        self.inner.set_hard_state(hard_state)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self._check_usable()
        self.inner.install_snapshot(snapshot)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._check_usable()
        self.inner.save_snapshot(snapshot)

    def compact(self, index: int) -> None:
        self._check_usable()
        self.inner.compact(index)

    def sync(self) -> None:
        self._check_usable()
        verdict = self.chaos.decide_fsync()
        self.last_sync_delay_s = verdict.delay_s
        self.last_sync_failed = verdict.fail
        if verdict.delay_s > 0:
            self._sleep(verdict.delay_s)
        if verdict.fail:
            self._failed = (
                f"injected fsync failure ({ENV_FSYNC_FAIL_PERCENT}="
                f"{_format_number(self.chaos.config.fsync_fail_percent)}): the writes staged "
                "since the last sync were not made durable and were never acknowledged; "
                "the node must stop (fail-stop) and restart from what is on disk"
            )
            raise InjectedFsyncFailure(self._failed)
        self.inner.sync()

    def sync_attributes(self) -> dict[str, bool | float]:
        """Span attributes of the last sync; empty when chaos left it alone."""
        attributes: dict[str, bool | float] = {}
        if self.last_sync_delay_s > 0:
            attributes[ATTR_FSYNC_DELAY_MS] = self.last_sync_delay_s * 1000.0
        if self.last_sync_failed:
            attributes[ATTR_FSYNC_FAILED] = True
        return attributes

    def close(self) -> None:
        """Passed through when the wrapped storage has one (WalStorage does, memory does not)."""
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise InjectedFsyncFailure(self._failed)


T = TypeVar("T")


@dataclass(order=True)
class _Pending(Generic[T]):
    due: float
    seq: int
    item: T = field(compare=False)


class DelayLine(Generic[T]):
    """Hands each item to ``send`` once its delay has passed, from one task and one heap.

    One task rather than one per message keeps a burst of delayed messages cheap and keeps
    them inside the caller's nursery. Items leave in due-time order, and items due at the
    same moment leave in the order they were put, so a zero delay never overtakes anything
    already due. ``send`` is called from the ``run`` task and must not block or raise (a
    transport's non-blocking enqueue). Pending items are discarded when ``run`` is cancelled:
    a message still in flight at shutdown is as lost as one on the wire.
    """

    def __init__(self, send: Callable[[T], None], *, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._send = send
        self.capacity = capacity
        self.dropped_overflow = 0
        self._heap: list[_Pending[T]] = []
        self._seq = itertools.count()
        self._wakeup = trio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, item: T, delay_s: float) -> bool:
        """Schedule ``item``; False when the line is full and the item was dropped instead.

        A full line drops rather than blocks, because ``put`` is called on the send path and
        a network that is holding too much loses packets; the count makes the loss visible.
        """
        if len(self._heap) >= self.capacity:
            self.dropped_overflow += 1
            return False
        pending = _Pending(trio.current_time() + max(delay_s, 0.0), next(self._seq), item)
        heapq.heappush(self._heap, pending)
        if self._heap[0] is pending:
            self._wakeup.set()
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        heap = self._heap
        while True:
            # A fresh event before looking at the heap, so a put() after this point wakes us.
            self._wakeup = trio.Event()
            if not heap:
                await self._wakeup.wait()
                continue
            now = trio.current_time()
            if heap[0].due > now:
                with trio.move_on_at(heap[0].due):
                    await self._wakeup.wait()
                continue
            # Taken out before any is sent: a send that puts straight back with no delay
            # would otherwise keep this loop busy forever and starve every other task.
            due: list[T] = []
            while heap and heap[0].due <= now:
                due.append(heapq.heappop(heap).item)
            for item in due:
                self._send(item)
            await trio.lowlevel.checkpoint()
