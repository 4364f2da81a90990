"""A closed-loop load generator for a raftd cluster: the library behind ``raftctl bench``.

Closed loop: each of ``clients`` workers sends one request, waits for the whole reply,
records the latency and sends the next, so the offered load adapts to the cluster and the
numbers answer "how fast is it with N callers", never "how long is the queue we built".

What is measured, and why this way:

* **The window.** After an untimed prefill (for ops that read or compare), the workers run
  ``warmup_s`` unmeasured (connections warm, the leader's batches reach their steady size),
  then ``duration_s`` measured. An operation belongs to the window when it *starts* inside
  it; no worker starts one after the window, and the ones still in flight finish and count.
  With a closed loop, the few operations that start inside and end after the window stand
  in for the few that started before it and ended inside, so ``ops / duration_s`` is the
  throughput without cutting any latency short (cancelling the stragglers would hide
  exactly the slowest requests).
* **Latency** is ``time.perf_counter()`` from before the client call to after it returned
  the whole reply: the client library's own work, redirects and retries included, as an
  application would see it. Latencies are kept exactly, one double each in an
  ``array('d')`` (8 bytes per operation: a million operations take 8 MB), and the
  percentiles are exact nearest-rank values of that list: each reported figure is a
  latency some request really had, not an interpolation or a histogram bucket.
* **Errors** are counted by kind, ``<class>:<code>`` (``unknown_outcome:timeout``,
  ``unavailable:no_leader``, ``refused:too_stale``, ...); a failed operation adds no
  latency sample. A cas that did not swap and a get that found nothing are answers, not
  errors: they count as operations and are reported apart (``not_swapped``, ``not_found``).
* **cas** is one ``CasRequest`` round trip, the same write path as a set plus the
  comparison. Its expected value is the bench's last-known value of the key (from the
  prefill, from this run's own successful writes, or from the current value a failed cas
  returns), shared by all workers, so it swaps unless another worker wrote the key in
  between or an earlier write's outcome was unknown; the table corrects itself on the next
  attempt.

Connections. Workers share ``connections`` ``Client`` objects, each with its own pipelined
connection to the leader (worker ``w`` uses client ``w % connections``). Everything on this
side runs on one trio thread, so I expected one shared connection to be fastest (fewer
system calls, more requests per ``recv`` on both sides). On this 2-core machine it was the
slowest: against three members, 64 workers on 1 connection made about 2,600 linearizable
gets/s and 4 connections about 5,000 (16 workers: 1,900 against 4,500); sets gained less
(64 workers: about 2,700 against 3,500 with 4) and the figures were noisy; 8 and 16
connections were no better than 4. The likely cause is on the member's side: its reader
takes one request per scheduler pass per connection (it waits on the in-flight limit before
it reads the next frame), so K connections let K requests a pass into Raft's batches. Hence
the default, ``default_connections``: 4 (fewer with fewer workers), and never more than
``SERVER_IN_FLIGHT_PER_CONNECTION`` workers on one connection, the most a member answers at
once per connection. Each client's endpoint list is rotated by its number, so stale reads
(which go to the first endpoint) spread over the members.
"""

from __future__ import annotations

import math
import random
import ssl
import time
from array import array
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Final

import trio
from opentelemetry import trace

from cli.client import Client, ClientError, Unavailable, UnknownOutcome
from wire import api as wire_api

__all__ = [
    "DEFAULT_MIX",
    "OPS",
    "BenchConfig",
    "BenchResult",
    "LatencySummary",
    "PrefillError",
    "Progress",
    "TimelinePoint",
    "default_connections",
    "error_kind",
    "key_name",
    "parse_mix",
    "percentile",
    "run_bench",
    "summarize",
]

OPS: Final = ("set", "get", "cas", "mixed")
BASIC_OPS: Final = ("set", "get", "cas")
DEFAULT_MIX: Final[tuple[tuple[str, int], ...]] = (("get", 50), ("set", 30), ("cas", 20))
KEY_DIGITS: Final = 15  # "k" + 15 digits: every key is 16 bytes
MAX_KEYS: Final = 10**KEY_DIGITS
# The members' own limit on a value (bench values are ASCII: bytes are characters).
MAX_VALUE_BYTES: Final = wire_api.MAX_VALUE_BYTES
# raftd's MAX_IN_FLIGHT_PER_CONNECTION: requests past it wait in the server's reader.
SERVER_IN_FLIGHT_PER_CONNECTION: Final = 128
DEFAULT_CONNECTIONS: Final = 4
PREFILL_IN_FLIGHT_PER_CONNECTION: Final = 64
PERCENTILES: Final = (("p50_ms", 50.0), ("p90_ms", 90.0), ("p99_ms", 99.0), ("p999_ms", 99.9))

# Outcome codes an operation returns: answers that are not errors, reported apart.
_OK: Final = 0
_NOT_SWAPPED: Final = 1
_NOT_FOUND: Final = 2


def key_name(index: int) -> str:
    """Key ``index`` of the bench's key space: 16 bytes, e.g. ``k000000000000042``."""
    return f"k{index:0{KEY_DIGITS}d}"


def default_connections(clients: int) -> int:
    """``DEFAULT_CONNECTIONS`` (measured fastest, see the module doc), at most one per worker,
    and enough that no connection carries more than the member serves at once."""
    fewest = math.ceil(clients / SERVER_IN_FLIGHT_PER_CONNECTION)
    return max(1, min(clients, DEFAULT_CONNECTIONS), fewest)


def parse_mix(text: str) -> tuple[tuple[str, int], ...]:
    """``get=50,set=30,cas=20`` to weights; ``ValueError`` with a message for people.

    Weights are relative (they need not add up to 100); an op left out is never chosen.
    """
    weights: dict[str, int] = {}
    for item in text.split(","):
        name, sep, number = item.strip().partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{item.strip()!r} is not OP=WEIGHT (e.g. get=50,set=30,cas=20)")
        if name not in BASIC_OPS:
            raise ValueError(f"unknown op {name!r} in the mix: choose from {', '.join(BASIC_OPS)}")
        if name in weights:
            raise ValueError(f"{name} appears twice in the mix")
        number = number.strip()
        if not (number.isascii() and number.isdigit()):
            raise ValueError(f"the weight of {name} must be a whole number, not {number!r}")
        weights[name] = int(number)
    if not any(weights.values()):
        raise ValueError("the mix needs at least one op with a weight above zero")
    return tuple((name, weight) for name, weight in weights.items() if weight > 0)


# --------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """One run's settings; ``validate`` says what is wrong in words a user can act on."""

    endpoints: tuple[str, ...]
    op: str = "set"
    clients: int = 16
    connections: int | None = None  # None: default_connections(clients)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    mix: tuple[tuple[str, int], ...] = DEFAULT_MIX
    value_size: int = 16
    keys: int = 10_000
    max_staleness_s: float | None = None
    timeout_s: float = 5.0
    seed: int = 0
    trace_requests: bool = False

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(problems[0])

    def problems(self) -> list[str]:
        found: list[str] = []
        if self.op not in OPS:
            found.append(f"unknown op {self.op!r}: choose from {', '.join(OPS)}")
        if self.clients < 1:
            found.append(f"--clients must be at least 1, not {self.clients}")
        if self.connections is not None and not 1 <= self.connections <= max(self.clients, 1):
            found.append(f"--connections must be from 1 to --clients, not {self.connections}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            found.append(f"--duration must be more than zero seconds, not {self.duration_s}")
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            found.append(f"--warmup must be zero or more seconds, not {self.warmup_s}")
        if not 0 <= self.value_size <= MAX_VALUE_BYTES:
            found.append(f"--value-size must be from 0 to {MAX_VALUE_BYTES}, not {self.value_size}")
        if not 1 <= self.keys <= MAX_KEYS:
            found.append(f"--keys must be from 1 to {MAX_KEYS}, not {self.keys}")
        staleness = self.max_staleness_s
        if staleness is not None and not (math.isfinite(staleness) and staleness >= 0):
            found.append(f"--max-staleness must be zero or more seconds, not {staleness}")
        if staleness is not None and "get" not in self.ops_used:
            found.append("--max-staleness applies to gets: use it with --op get or --op mixed")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            found.append(f"--timeout must be more than zero seconds, not {self.timeout_s}")
        return found

    @property
    def ops_used(self) -> tuple[str, ...]:
        if self.op == "mixed":
            return tuple(name for name, _ in self.mix)
        return (self.op,)

    @property
    def prefill(self) -> bool:
        """Reads and compares need every key to exist; pure sets start from nothing."""
        return any(op in ("get", "cas") for op in self.ops_used)

    @property
    def effective_connections(self) -> int:
        if self.connections is not None:
            return self.connections
        return default_connections(self.clients)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["endpoints"] = list(self.endpoints)
        body["connections"] = self.effective_connections
        body["mix"] = dict(self.mix) if self.op == "mixed" else None
        return body

    def describe(self) -> str:
        what = self.op
        if self.op == "mixed":
            what = "mixed " + ",".join(f"{name}={weight}" for name, weight in self.mix)
        if self.max_staleness_s is not None:
            what += f" (gets at most {self.max_staleness_s:g} s stale)"
        conns = self.effective_connections
        return (
            f"{what}: {self.clients} client{_s(self.clients)} over {conns} connection{_s(conns)},"
            f" {self.value_size}-byte values, {self.keys} keys,"
            f" {self.duration_s:g} s after {self.warmup_s:g} s warm-up"
        )


def _s(n: int) -> str:
    return "" if n == 1 else "s"


# -------------------------------------------------------------------- results


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ascending ``ordered`` (non-empty): the
    smallest value with at least p% of the values at or below it, so always one of them.

    The rank is computed with exact fractions: in floating point 99.9% of 1000 is a hair
    over 999 and would round up to the maximum.
    """
    if not ordered:
        raise ValueError("no values")
    if not 0 <= p <= 100:
        raise ValueError(f"a percentile is from 0 to 100, not {p}")
    rank = math.ceil(Fraction(str(p)) * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Milliseconds; None where there was no sample."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    mean_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            name: _ms(value) if name != "count" else value for name, value in asdict(self).items()
        }


def summarize(latencies_s: Sequence[float]) -> LatencySummary:
    """Exact percentiles of latencies given in seconds."""
    if not latencies_s:
        return LatencySummary(0, None, None, None, None, None, None)
    ordered = sorted(latencies_s)
    p50, p90, p99, p999 = (percentile(ordered, p) * 1000 for _, p in PERCENTILES)
    mean = math.fsum(ordered) / len(ordered) * 1000
    return LatencySummary(len(ordered), p50, p90, p99, p999, ordered[-1] * 1000, mean)


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """One second of the window (the last may be shorter: ``span_s``)."""

    t_s: int
    span_s: float
    ops: int
    errors: int

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.span_s

    def to_json(self) -> dict[str, Any]:
        return {
            "t_s": self.t_s,
            "ops": self.ops,
            "ops_per_s": round(self.ops_per_s, 1),
            "errors": self.errors,
        }


@dataclass(frozen=True)
class BenchResult:
    config: BenchConfig
    duration_s: float
    latency: LatencySummary
    by_op: dict[str, LatencySummary]
    errors: dict[str, int]
    not_swapped: int
    not_found: int
    timeline: list[TimelinePoint]
    prefill_keys: int
    prefill_s: float
    # Every measured latency in seconds, in completion order: for plots, not for JSON.
    latencies_s: array[float] = field(repr=False)

    @property
    def ops(self) -> int:
        return self.latency.count

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.duration_s

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        """The ``--output json`` object: flat headline figures, then the details."""
        return {
            "ops": self.ops,
            "ops_per_s": round(self.ops_per_s, 1),
            "duration_s": self.duration_s,
            **{name: _ms(getattr(self.latency, name)) for name, _ in PERCENTILES},
            "max_ms": _ms(self.latency.max_ms),
            "mean_ms": _ms(self.latency.mean_ms),
            "errors": dict(sorted(self.errors.items())),
            "errors_total": self.errors_total,
            "not_swapped": self.not_swapped,
            "not_found": self.not_found,
            "by_op": {op: s.to_json() for op, s in self.by_op.items()},
            "timeline": [point.to_json() for point in self.timeline],
            "prefill": {"keys": self.prefill_keys, "seconds": round(self.prefill_s, 3)},
            "config": self.config.to_json(),
        }

    def to_text(self) -> str:
        """The summary for people, on stdout."""
        lat = self.latency
        lines = [
            self.config.describe(),
            f"ops          {self.ops}  ({self.ops_per_s:,.1f} ops/s)",
        ]
        if lat.count:
            figures = "  ".join(
                f"{label} {_fmt_ms(value)}"
                for label, value in (
                    ("p50", lat.p50_ms),
                    ("p90", lat.p90_ms),
                    ("p99", lat.p99_ms),
                    ("p99.9", lat.p999_ms),
                    ("max", lat.max_ms),
                )
            )
            lines.append(f"latency ms   {figures}")
        if len(self.by_op) > 1:
            for op, summary in self.by_op.items():
                lines.append(
                    f"  {op:<4} {summary.count:>9} ops  p50 {_fmt_ms(summary.p50_ms)}"
                    f"  p99 {_fmt_ms(summary.p99_ms)}"
                )
        if self.errors:
            listed = ", ".join(f"{kind} {n}" for kind, n in sorted(self.errors.items()))
            lines.append(f"errors       {self.errors_total}: {listed}")
        else:
            lines.append("errors       none")
        if "cas" in self.config.ops_used:
            lines.append(f"not swapped  {self.not_swapped} (cas answers, not errors)")
        if self.not_found:
            lines.append(f"not found    {self.not_found} (get answers, not errors)")
        return "\n".join(lines)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def error_kind(exc: ClientError) -> str:
    """``unknown_outcome:timeout``, ``unavailable:no_leader``, ``refused:too_stale``..."""
    if isinstance(exc, UnknownOutcome):
        return f"unknown_outcome:{exc.code}"
    if isinstance(exc, Unavailable):
        return f"unavailable:{exc.code}"
    return f"refused:{exc.code}"


# ------------------------------------------------------------------- progress


@dataclass(frozen=True, slots=True)
class Progress:
    """What a progress display shows; ``phase`` is ``connect``, ``prefill``, ``warmup`` or
    ``measure``."""

    phase: str
    elapsed_s: float
    total_s: float
    ops_per_s: float
    errors: int
    prefilled: int = 0
    prefill_total: int = 0

    def line(self) -> str:
        if self.phase == "connect":
            return "connecting"
        if self.phase == "prefill":
            return (
                f"prefill {self.prefilled}/{self.prefill_total} keys  {self.ops_per_s:,.0f} ops/s"
            )
        label = "warm-up" if self.phase == "warmup" else "measure"
        return (
            f"{label} {self.elapsed_s:5.1f}/{self.total_s:g} s  {self.ops_per_s:9,.0f} ops/s"
            f"  errors {self.errors}"
        )


ProgressSink = Callable[[Progress], None]


class PrefillError(Exception):
    """The prefill (or the first request) failed: the cluster cannot run this bench."""

    def __init__(self, error: ClientError) -> None:
        super().__init__(error.message)
        self.error = error


# --------------------------------------------------------------------- the run


class _Values:
    """Values of exactly ``size`` ASCII bytes, distinct until the counter outgrows them."""

    __slots__ = ("_n", "_pad", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._pad = "v" * size
        self._n = 0

    def next(self) -> str:
        self._n += 1
        if not self._size:
            return ""
        return (self._pad + str(self._n))[-self._size :]


Operation = Callable[[Client, int], Coroutine[Any, Any, int]]


class _Bench:
    """One run: the shared state of its workers. Single-threaded (trio), so the counters
    and the last-known-value table need no locks."""

    def __init__(self, config: BenchConfig, progress: ProgressSink | None) -> None:
        self.config = config
        self.progress = progress
        self.values = _Values(config.value_size)
        self.known: dict[int, str | None] = {}
        buckets = math.ceil(config.duration_s)
        self.timeline_ops = [0] * buckets
        self.timeline_errors = [0] * buckets
        self.latencies: array[float] = array("d")
        self.kinds = array("B")  # index into BASIC_OPS, parallel to latencies
        self.errors: dict[str, int] = {}
        self.outcomes = [0, 0, 0]  # by outcome code
        self.completed = 0  # every answered operation, warm-up included: for progress
        self.failed = 0
        self.prefilled = 0
        self.phase = "connect"
        self.started = 0.0
        self.window_start = math.inf
        self.window_end = math.inf
        self._ops: dict[str, Operation] = {"set": self._set, "get": self._get, "cas": self._cas}
        self._staleness = config.max_staleness_s

    # -- operations: each returns an outcome code; ClientError is the caller's to count

    async def _set(self, client: Client, index: int) -> int:
        value = self.values.next()
        await client.set(key_name(index), value)
        self.known[index] = value
        return _OK

    async def _get(self, client: Client, index: int) -> int:
        reply = await client.get(key_name(index), max_staleness_s=self._staleness)
        return _OK if reply.found else _NOT_FOUND

    async def _cas(self, client: Client, index: int) -> int:
        value = self.values.next()
        reply = await client.cas(key_name(index), self.known.get(index), value)
        if reply.ok:
            self.known[index] = value
            return _OK
        self.known[index] = reply.value if reply.found else None
        return _NOT_SWAPPED

    def _picker(self, rng: random.Random) -> Callable[[], tuple[int, Operation]]:
        """The next op: a constant for one op, a weighted draw for a mix."""
        entries = [(BASIC_OPS.index(name), self._ops[name]) for name in self.config.ops_used]
        if self.config.op != "mixed":
            only = entries[0]
            return lambda: only
        weights = dict(self.config.mix)
        total = sum(weights.values())
        bounds: list[tuple[float, tuple[int, Operation]]] = []
        running = 0
        for entry, name in zip(entries, self.config.ops_used, strict=True):
            running += weights[name]
            bounds.append((running / total, entry))
        draw = rng.random

        def pick() -> tuple[int, Operation]:
            r = draw()
            for bound, entry in bounds:
                if r < bound:
                    return entry
            return bounds[-1][1]

        return pick

    # -- phases

    async def preflight(self, clients: list[Client]) -> ClientError | None:
        """One request per client before anything is timed: connects each to the leader
        and turns an unreachable cluster or a refused value into one clear error."""
        failure: list[ClientError] = []
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(self._fill, client, iter((0,)), failure, nursery)
        return failure[0] if failure else None

    async def prefill(self, clients: list[Client]) -> ClientError | None:
        """Writes every key once, many in flight per connection; not timed."""
        cursor = iter(range(self.config.keys))
        failure: list[ClientError] = []
        self.prefilled = 0
        self.phase = "prefill"
        in_flight = min(PREFILL_IN_FLIGHT_PER_CONNECTION, self.config.keys)
        async with trio.open_nursery() as nursery:
            for client in clients:
                for _ in range(in_flight):
                    nursery.start_soon(self._fill, client, cursor, failure, nursery)
        return failure[0] if failure else None

    async def _fill(
        self,
        client: Client,
        cursor: Iterator[int],
        failure: list[ClientError],
        nursery: trio.Nursery,
    ) -> None:
        """Sets the keys ``cursor`` yields (shared with other tasks) until it runs out;
        the first error stops every task of the phase."""
        for index in cursor:
            value = self.values.next()
            try:
                await client.set(key_name(index), value)
            except ClientError as exc:
                failure.append(exc)
                nursery.cancel_scope.cancel()
                return
            self.known[index] = value
            self.prefilled += 1
            self.completed += 1

    async def measure(self, clients: list[Client]) -> None:
        self.started = time.perf_counter()
        self.window_start = self.started + self.config.warmup_s
        self.window_end = self.window_start + self.config.duration_s
        self.phase = "warmup" if self.config.warmup_s > 0 else "measure"
        async with trio.open_nursery() as nursery:
            for w in range(self.config.clients):
                rng = random.Random(f"{self.config.seed}/{w}")
                nursery.start_soon(self._worker, clients[w % len(clients)], rng)

    async def _worker(self, client: Client, rng: random.Random) -> None:
        """The hot loop: everything it touches per request is a local."""
        perf = time.perf_counter
        window_start, window_end = self.window_start, self.window_end
        keys = self.config.keys
        draw = rng.random
        pick = self._picker(rng)
        record_latency = self.latencies.append
        record_kind = self.kinds.append
        timeline = self.timeline_ops
        outcomes = self.outcomes
        while True:
            start = perf()
            if start >= window_end:
                return
            kind, operation = pick()
            try:
                outcome = await operation(client, int(draw() * keys))
            except ClientError as exc:
                self.failed += 1
                if start >= window_start:
                    self._count_error(exc, start)
                continue
            end = perf()
            self.completed += 1
            if start >= window_start:
                record_latency(end - start)
                record_kind(kind)
                timeline[int(start - window_start)] += 1
                if outcome:
                    outcomes[outcome] += 1

    def _count_error(self, exc: ClientError, start: float) -> None:
        kind = error_kind(exc)
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.timeline_errors[int(start - self.window_start)] += 1

    # -- progress

    async def report_progress(self, interval_s: float) -> None:
        if self.progress is None:
            return
        last_t, last_done = time.perf_counter(), 0
        while True:
            await trio.sleep(interval_s)
            now = time.perf_counter()
            done = self.completed
            rate = (done - last_done) / (now - last_t) if now > last_t else 0.0
            last_t, last_done = now, done
            self.progress(self._snapshot(now, rate))

    def _snapshot(self, now: float, rate: float) -> Progress:
        config = self.config
        if self.phase in ("connect", "prefill"):
            return Progress(self.phase, 0.0, 0.0, rate, 0, self.prefilled, config.keys)
        if now < self.window_start:
            self.phase = "warmup"
            return Progress("warmup", now - self.started, config.warmup_s, rate, self.failed)
        self.phase = "measure"
        elapsed = min(now - self.window_start, config.duration_s)
        errors = sum(self.errors.values())
        return Progress("measure", elapsed, config.duration_s, rate, errors)

    # -- the result

    def result(self, prefill_s: float) -> BenchResult:
        config = self.config
        by_op: dict[str, LatencySummary] = {}
        for code, name in enumerate(BASIC_OPS):
            if name in config.ops_used:
                samples = [
                    lat for lat, k in zip(self.latencies, self.kinds, strict=True) if k == code
                ]
                by_op[name] = summarize(samples)
        timeline = [
            TimelinePoint(
                t_s=i,
                span_s=min(1.0, config.duration_s - i),
                ops=self.timeline_ops[i],
                errors=self.timeline_errors[i],
            )
            for i in range(len(self.timeline_ops))
        ]
        return BenchResult(
            config=config,
            duration_s=config.duration_s,
            latency=summarize(self.latencies),
            by_op=by_op,
            errors=dict(self.errors),
            not_swapped=self.outcomes[_NOT_SWAPPED],
            not_found=self.outcomes[_NOT_FOUND],
            timeline=timeline,
            prefill_keys=config.keys if config.prefill else 0,
            prefill_s=prefill_s,
            latencies_s=self.latencies,
        )


async def run_bench(
    config: BenchConfig,
    *,
    tracer: trace.Tracer | None = None,
    progress: ProgressSink | None = None,
    progress_interval_s: float = 0.5,
    tls: ssl.SSLContext | None = None,
) -> BenchResult:
    """Runs one bench against a live cluster and returns what it measured.

    Requests create no spans unless ``tracer`` is given (``raftctl bench
    --trace-requests``): a span per request costs the client more than encoding it does,
    and the point is to measure the server. Raises ``PrefillError`` if the first requests
    or the prefill fail (an unreachable cluster, a refused value), ``ValueError`` for an
    invalid configuration.
    """
    config.validate()
    bench = _Bench(config, progress)
    per_client = math.ceil(config.clients / config.effective_connections)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                Client(
                    _rotated(config.endpoints, i),
                    timeout_s=config.timeout_s,
                    write_sessions=max(per_client, PREFILL_IN_FLIGHT_PER_CONNECTION),
                    tracer=tracer if tracer is not None else trace.NoOpTracer(),
                    tls=tls,
                )
            )
            for i in range(config.effective_connections)
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bench.report_progress, progress_interval_s)
            failure = await bench.preflight(clients)
            prefill_started = time.perf_counter()
            if failure is None and config.prefill:
                failure = await bench.prefill(clients)
            prefill_s = time.perf_counter() - prefill_started
            if failure is None:
                await bench.measure(clients)
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise PrefillError(failure)
    return bench.result(prefill_s)


def _rotated(endpoints: Sequence[str], by: int) -> list[str]:
    by %= len(endpoints)
    return [*endpoints[by:], *endpoints[:by]]
