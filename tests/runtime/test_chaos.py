"""Chaos: the settings parse strictly, the faults come at the rates asked for, and a failed fsync
loses nothing that was acknowledged.

Rates are checked over 20k decisions from a fixed seed, so the bounds are wide (about five
standard deviations) yet the run itself is the same every time. Delays run on trio's autojump
clock: the tests assert the virtual times at which things arrive without waiting for them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from raftd.config import ConfigError
from raftd.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from raftd.runtime.chaos import (
    ATTR_DELAY_MS,
    ATTR_DROPPED,
    ATTR_FSYNC_DELAY_MS,
    ATTR_FSYNC_FAILED,
    DELAY,
    DROP,
    ENV_DELAY_MS,
    ENV_DELAY_PERCENT,
    ENV_DROP_PERCENT,
    ENV_FSYNC_DELAY_MS,
    ENV_FSYNC_FAIL_PERCENT,
    ENV_SEED,
    FSYNC_DELAY,
    FSYNC_FAIL,
    PASS,
    Chaos,
    ChaosConfig,
    ChaosStorage,
    DelayLine,
    InjectedFsyncFailure,
    Verdict,
)
from raftd.storage import MemoryStorage, Storage, StorageError, WalStorage

N = 20_000

MESSAGES: tuple[Message, ...] = (
    RequestVote(term=2, src=1, dst=2, last_log_index=5, last_log_term=1),
    RequestVoteResponse(term=2, src=2, dst=1, vote_granted=True),
    AppendEntries(
        term=2, src=1, dst=2, prev_log_index=5, prev_log_term=1, entries=(), leader_commit=5
    ),
    AppendEntriesResponse(term=2, src=2, dst=1, success=True, match_index=5),
    Heartbeat(term=2, src=1, dst=2, leader_commit=5),
    HeartbeatResponse(term=2, src=2, dst=1),
)
MESSAGE_KINDS = {type(m).__name__ for m in MESSAGES}


def messages(n: int = N) -> Iterator[Message]:
    for i in range(n):
        yield MESSAGES[i % len(MESSAGES)]


def verdicts(chaos: Chaos, n: int = N) -> list[Verdict]:
    return [chaos.decide(m) for m in messages(n)]


def entries(first: int, last: int, term: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(index=i, term=term, data=b"x%d" % i) for i in range(first, last + 1))


# ------------------------------------------------------------------ configuration


def test_an_empty_environment_injects_nothing() -> None:
    config = ChaosConfig.from_env({"PATH": "/bin", "RAFTD_ID": "n1"})
    assert config == ChaosConfig()
    assert not config.enabled
    assert not config.messages_enabled
    assert not config.fsync_enabled
    assert config.describe() == "chaos: off"


def test_empty_values_count_as_unset() -> None:
    env = {ENV_DROP_PERCENT: "", ENV_DELAY_PERCENT: " ", ENV_DELAY_MS: "", ENV_SEED: ""}
    assert ChaosConfig.from_env(env) == ChaosConfig()


def test_a_full_environment_is_read_and_announced() -> None:
    config = ChaosConfig.from_env(
        {
            ENV_DROP_PERCENT: "10",
            ENV_DELAY_PERCENT: "20",
            ENV_DELAY_MS: "20-200",
            ENV_FSYNC_DELAY_MS: "5",
            ENV_FSYNC_FAIL_PERCENT: "0",
            ENV_SEED: "42",
        }
    )
    assert config == ChaosConfig(
        drop_percent=10.0,
        delay_percent=20.0,
        delay_ms=(20.0, 200.0),
        fsync_delay_ms=(5.0, 5.0),
        fsync_fail_percent=0.0,
        seed=42,
    )
    assert config.enabled and config.messages_enabled and config.fsync_enabled
    assert config.describe() == (
        "chaos: drop 10% of Raft messages, delay 20% by 20-200 ms, fsync +5 ms, "
        "fsync fails 0%, seed 42"
    )
    assert config.as_attributes() == {
        "chaos.drop_percent": 10.0,
        "chaos.delay_percent": 20.0,
        "chaos.delay_ms_min": 20.0,
        "chaos.delay_ms_max": 200.0,
        "chaos.fsync_delay_ms_min": 5.0,
        "chaos.fsync_delay_ms_max": 5.0,
        "chaos.fsync_fail_percent": 0.0,
        "chaos.seed": 42,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50", (50.0, 50.0)),
        ("20-200", (20.0, 200.0)),
        (" 20 - 200 ", (20.0, 200.0)),
        ("0.5-1.5", (0.5, 1.5)),
        ("7-7", (7.0, 7.0)),
        ("0", (0.0, 0.0)),
    ],
)
def test_millisecond_syntax(text: str, expected: tuple[float, float]) -> None:
    config = ChaosConfig.from_env({ENV_FSYNC_DELAY_MS: text})
    assert config.fsync_delay_ms == expected
    config = ChaosConfig.from_env({ENV_DELAY_PERCENT: "1", ENV_DELAY_MS: text})
    assert config.delay_ms == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("0", 0.0), ("2.5", 2.5), ("100", 100.0), ("10%", 10.0), (".5", 0.5)]
)
def test_percent_syntax(text: str, expected: float) -> None:
    assert ChaosConfig.from_env({ENV_DROP_PERCENT: text}).drop_percent == expected
    assert ChaosConfig.from_env({ENV_FSYNC_FAIL_PERCENT: text}).fsync_fail_percent == expected


@pytest.mark.parametrize(("text", "expected"), [("42", 42), ("-3", -3), ("0", 0)])
def test_seed_syntax(text: str, expected: int) -> None:
    assert ChaosConfig.from_env({ENV_SEED: text}).seed == expected


@pytest.mark.parametrize(
    ("env", "variable", "syntax"),
    [
        ({ENV_DROP_PERCENT: "lots"}, ENV_DROP_PERCENT, "0 to 100"),
        ({ENV_DROP_PERCENT: "150"}, ENV_DROP_PERCENT, "0 to 100"),
        ({ENV_DROP_PERCENT: "-5"}, ENV_DROP_PERCENT, "0 to 100"),
        ({ENV_DROP_PERCENT: "nan"}, ENV_DROP_PERCENT, "0 to 100"),
        ({ENV_DELAY_PERCENT: "101", ENV_DELAY_MS: "5"}, ENV_DELAY_PERCENT, "0 to 100"),
        ({ENV_FSYNC_FAIL_PERCENT: "1e1"}, ENV_FSYNC_FAIL_PERCENT, "0 to 100"),
        ({ENV_DELAY_PERCENT: "5", ENV_DELAY_MS: "200-20"}, ENV_DELAY_MS, "MIN <= MAX"),
        ({ENV_DELAY_PERCENT: "5", ENV_DELAY_MS: "-5"}, ENV_DELAY_MS, "non-negative"),
        ({ENV_DELAY_PERCENT: "5", ENV_DELAY_MS: "20-"}, ENV_DELAY_MS, "MIN-MAX"),
        ({ENV_DELAY_PERCENT: "5", ENV_DELAY_MS: "20ms"}, ENV_DELAY_MS, "MIN-MAX"),
        ({ENV_FSYNC_DELAY_MS: "slow"}, ENV_FSYNC_DELAY_MS, "non-negative"),
        ({ENV_FSYNC_DELAY_MS: "9-1"}, ENV_FSYNC_DELAY_MS, "MIN <= MAX"),
        ({ENV_SEED: "4.2"}, ENV_SEED, "integer"),
        ({ENV_SEED: "abc"}, ENV_SEED, "integer"),
        ({ENV_DELAY_PERCENT: "20"}, ENV_DELAY_MS, "needs both"),
        ({ENV_DELAY_MS: "20-200"}, ENV_DELAY_PERCENT, "needs both"),
        ({"RAFTD_CHAOS_DROP_PERCNT": "10"}, "RAFTD_CHAOS_DROP_PERCNT", ENV_DROP_PERCENT),
    ],
)
def test_bad_settings_name_the_variable_and_the_syntax(
    env: Mapping[str, str], variable: str, syntax: str
) -> None:
    with pytest.raises(ValueError) as refused:
        ChaosConfig.from_env(env)
    assert isinstance(refused.value, ConfigError)  # so `raftd run` exits with status 2
    assert variable in str(refused.value)
    assert syntax in str(refused.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop_percent": 100.5},
        {"delay_percent": -1.0},
        {"fsync_fail_percent": float("nan")},
        {"delay_ms": (5.0, 1.0)},
        {"fsync_delay_ms": (-1.0, 1.0)},
        {"delay_ms": (0.0, float("inf"))},
    ],
)
def test_a_config_built_in_code_is_checked_too(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ChaosConfig(**kwargs)  # type: ignore[arg-type]


def test_attributes_leave_out_a_missing_seed() -> None:
    attributes = ChaosConfig(drop_percent=1.0).as_attributes()
    assert "chaos.seed" not in attributes
    assert attributes["chaos.drop_percent"] == 1.0


# ------------------------------------------------------------------ message decisions


def test_drop_and_delay_come_at_the_rates_asked_for() -> None:
    chaos = Chaos(ChaosConfig(drop_percent=10, delay_percent=20, delay_ms=(20, 200), seed=42))
    results = verdicts(chaos)
    dropped = sum(v.drop for v in results)
    delayed = sum(v.delay_s > 0 for v in results)
    assert 1_800 <= dropped <= 2_200  # 10% of 20k, sd 42
    # "Delay that share of the others": 20% of the ~18k not dropped, sd 54.
    assert 3_300 <= delayed <= 3_900
    assert abs(delayed / (N - dropped) - 0.20) < 0.015


def test_the_same_seed_gives_the_same_faults() -> None:
    config = ChaosConfig(drop_percent=30, delay_percent=30, delay_ms=(1, 100), seed=7)
    assert verdicts(Chaos(config)) == verdicts(Chaos(config))
    other = ChaosConfig(drop_percent=30, delay_percent=30, delay_ms=(1, 100), seed=8)
    assert verdicts(Chaos(config)) != verdicts(Chaos(other))


def test_an_unseeded_run_announces_the_seed_it_drew_so_it_can_be_replayed() -> None:
    config = ChaosConfig(drop_percent=30, delay_percent=30, delay_ms=(1, 100))
    first = Chaos(config)
    assert first.config.seed is not None
    assert f"seed {first.config.seed}" in first.config.describe()
    assert first.config.as_attributes()["chaos.seed"] == first.config.seed
    replay = Chaos(replace(config, seed=first.config.seed))
    assert verdicts(first, 2_000) == verdicts(replay, 2_000)


def test_dropped_messages_are_never_also_delayed() -> None:
    # Every message that survives the drop is delayed, so the two sets must split the whole.
    chaos = Chaos(ChaosConfig(drop_percent=50, delay_percent=100, delay_ms=(1, 2), seed=1))
    results = verdicts(chaos)
    assert all(v.delay_s == 0 for v in results if v.drop)
    assert all(v.delay_s > 0 for v in results if not v.drop)
    assert chaos.counts[DROP] + chaos.counts[DELAY] == N


def test_delays_stay_inside_the_range_and_cover_it() -> None:
    chaos = Chaos(ChaosConfig(delay_percent=100, delay_ms=(20, 200), seed=3))
    delays = [v.delay_s for v in verdicts(chaos)]
    assert all(0.020 <= d <= 0.200 for d in delays)
    assert min(delays) < 0.025 and max(delays) > 0.195


def test_a_single_delay_value_is_used_exactly() -> None:
    chaos = Chaos(ChaosConfig(delay_percent=100, delay_ms=(50, 50), seed=3))
    assert {v.delay_s for v in verdicts(chaos, 100)} == {0.05}


def test_a_zero_millisecond_delay_is_no_chaos_at_all() -> None:
    config = ChaosConfig(delay_percent=50, delay_ms=(0, 0), seed=1)
    assert not config.messages_enabled
    chaos = Chaos(config)
    assert all(v is PASS for v in verdicts(chaos, 100))
    assert chaos.counts_by_kind()[DELAY] == 0


def test_every_raft_message_kind_is_subject_to_chaos() -> None:
    chaos = Chaos(ChaosConfig(drop_percent=100, seed=0))
    assert all(v.drop for v in verdicts(chaos, 60))
    assert {name for _, name in chaos.by_message} == MESSAGE_KINDS


def test_faults_are_counted_by_kind_and_by_message() -> None:
    chaos = Chaos(ChaosConfig(drop_percent=25, delay_percent=25, delay_ms=(1, 1), seed=5))
    assert chaos.counts_by_kind() == {DROP: 0, DELAY: 0, FSYNC_DELAY: 0, FSYNC_FAIL: 0}
    results = verdicts(chaos, 6_000)
    kinds = chaos.counts_by_kind()
    assert kinds[DROP] == sum(v.drop for v in results)
    assert kinds[DELAY] == sum(v.delay_s > 0 for v in results)
    assert kinds[FSYNC_DELAY] == kinds[FSYNC_FAIL] == 0
    per_message = chaos.counts_by_message()
    assert set(per_message) <= {(k, m) for k in (DROP, DELAY) for m in MESSAGE_KINDS}
    assert sum(c for (k, _), c in per_message.items() if k == DROP) == kinds[DROP]
    assert sum(c for (k, _), c in per_message.items() if k == DELAY) == kinds[DELAY]
    # 6k messages in an even cycle: each kind sees about a sixth of the drops.
    for name in MESSAGE_KINDS:
        assert 150 <= per_message[DROP, name] <= 350


def test_without_message_chaos_decide_passes_and_draws_nothing() -> None:
    rng = random.Random(9)
    chaos = Chaos(ChaosConfig(fsync_fail_percent=50), rng=rng)
    state = rng.getstate()
    assert all(v is PASS for v in verdicts(chaos, 100))
    assert rng.getstate() == state
    assert chaos.counts_by_kind()[DROP] == 0


def test_verdicts_mark_only_the_spans_chaos_touched() -> None:
    assert PASS.span_attributes() == {}
    assert Verdict(drop=True, delay_s=0.0).span_attributes() == {ATTR_DROPPED: True}
    assert Verdict(drop=False, delay_s=0.125).span_attributes() == {ATTR_DELAY_MS: 125.0}


@given(
    drop=st.floats(0, 100),
    delay=st.floats(0, 100),
    low=st.floats(0, 1_000),
    width=st.floats(0, 1_000),
    seed=st.integers(),
)
def test_every_verdict_is_consistent_with_its_config(
    drop: float, delay: float, low: float, width: float, seed: int
) -> None:
    config = ChaosConfig(
        drop_percent=drop, delay_percent=delay, delay_ms=(low, low + width), seed=seed
    )
    for verdict in verdicts(Chaos(config), 50):
        assert not (verdict.drop and verdict.delay_s > 0)
        if verdict.delay_s > 0:
            assert low / 1000 <= verdict.delay_s <= (low + width) / 1000
        if drop == 0:
            assert not verdict.drop
        if delay == 0:
            assert verdict.delay_s == 0


# ------------------------------------------------------------------ the disk


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def test_chaos_storage_is_a_storage() -> None:
    storage: Storage = Chaos(ChaosConfig(seed=0)).wrap_storage(MemoryStorage())
    assert isinstance(storage, ChaosStorage)


def test_a_slow_disk_sleeps_before_syncing() -> None:
    sleep = RecordingSleep()
    inner = MemoryStorage()
    chaos = Chaos(ChaosConfig(fsync_delay_ms=(5, 5), seed=0))
    storage = chaos.wrap_storage(inner, sleep=sleep)
    storage.append(entries(1, 3))
    storage.sync()
    assert sleep.calls == [0.005]
    assert storage.last_sync_delay_s == 0.005
    assert not storage.last_sync_failed
    assert storage.sync_attributes() == {ATTR_FSYNC_DELAY_MS: 5.0}
    assert inner.load().entries == entries(1, 3)
    assert chaos.counts_by_kind()[FSYNC_DELAY] == 1


def test_a_slow_disk_draws_its_delay_from_the_range() -> None:
    sleep = RecordingSleep()
    storage = Chaos(ChaosConfig(fsync_delay_ms=(1, 10), seed=4)).wrap_storage(
        MemoryStorage(), sleep=sleep
    )
    for _ in range(500):
        storage.sync()
    assert all(0.001 <= s <= 0.010 for s in sleep.calls)
    assert len(set(sleep.calls)) > 100


def test_a_failing_fsync_stops_before_anything_becomes_durable() -> None:
    sleep = RecordingSleep()
    inner = MemoryStorage()
    chaos = Chaos(ChaosConfig(fsync_fail_percent=100, seed=0))
    storage = chaos.wrap_storage(inner, sleep=sleep)
    storage.set_hard_state(HardState(current_term=3, voted_for=2))
    storage.append(entries(1, 4, term=3))
    with pytest.raises(InjectedFsyncFailure) as failed:
        storage.sync()
    assert isinstance(failed.value, StorageError)  # the runtime fail-stops on StorageError
    assert ENV_FSYNC_FAIL_PERCENT in str(failed.value)
    assert "fail-stop" in str(failed.value)
    assert inner.sync_count == 0
    durable = inner.load()
    assert durable.entries == ()
    assert durable.hard_state == HardState()
    assert sleep.calls == []
    assert storage.last_sync_failed
    assert storage.sync_attributes() == {ATTR_FSYNC_FAILED: True}
    assert chaos.counts_by_kind()[FSYNC_FAIL] == 1


def test_after_a_failed_fsync_the_storage_refuses_everything() -> None:
    inner = MemoryStorage()
    storage = Chaos(ChaosConfig(fsync_fail_percent=100, seed=0)).wrap_storage(inner)
    with pytest.raises(InjectedFsyncFailure):
        storage.sync()
    with pytest.raises(InjectedFsyncFailure):
        storage.append(entries(1, 1))
    with pytest.raises(InjectedFsyncFailure):
        storage.set_hard_state(HardState(current_term=1))
    with pytest.raises(InjectedFsyncFailure):
        storage.sync()
    with pytest.raises(InjectedFsyncFailure):
        storage.load()
    assert inner.sync_count == 0


def test_a_slow_failing_disk_is_slow_first() -> None:
    sleep = RecordingSleep()
    chaos = Chaos(ChaosConfig(fsync_delay_ms=(8, 8), fsync_fail_percent=100, seed=0))
    wrapped = chaos.wrap_storage(MemoryStorage(), sleep=sleep)
    with pytest.raises(InjectedFsyncFailure):
        wrapped.sync()
    assert sleep.calls == [0.008]
    assert wrapped.sync_attributes() == {ATTR_FSYNC_DELAY_MS: 8.0, ATTR_FSYNC_FAILED: True}


def test_a_healthy_disk_passes_straight_through() -> None:
    sleep = RecordingSleep()
    inner = MemoryStorage()
    storage = Chaos(ChaosConfig(fsync_fail_percent=0, seed=0)).wrap_storage(inner, sleep=sleep)
    storage.set_hard_state(HardState(current_term=2, voted_for=1))
    storage.append(entries(1, 5, term=2))
    storage.sync()
    assert sleep.calls == []
    assert inner.sync_count == 1
    assert storage.load() == inner.load()
    assert storage.load().entries == entries(1, 5, term=2)
    assert storage.load().hard_state == HardState(current_term=2, voted_for=1)
    assert storage.sync_attributes() == {}


def test_fsync_failures_come_at_the_rate_asked_for() -> None:
    chaos = Chaos(ChaosConfig(fsync_fail_percent=5, seed=11))
    failures = sum(chaos.decide_fsync().fail for _ in range(N))
    assert 800 <= failures <= 1_200  # 5% of 20k, sd 31
    assert chaos.counts_by_kind()[FSYNC_FAIL] == failures


def test_disk_decisions_do_not_shift_message_decisions() -> None:
    # The fsync worker thread draws whenever the disk is used; the message faults must not
    # depend on how those draws interleave with them.
    config = ChaosConfig(
        drop_percent=20, delay_percent=20, delay_ms=(1, 9), fsync_fail_percent=50, seed=2
    )
    quiet = Chaos(config)
    busy = Chaos(config)
    expected = verdicts(quiet, 500)
    interleaved = []
    for msg in messages(500):
        busy.decide_fsync()
        interleaved.append(busy.decide(msg))
    assert interleaved == expected


def test_close_is_passed_through_when_the_wrapped_storage_has_it(tmp_path: Path) -> None:
    Chaos(ChaosConfig(seed=0)).wrap_storage(MemoryStorage()).close()  # no close: a no-op
    wal = WalStorage.open(tmp_path)
    Chaos(ChaosConfig(seed=0)).wrap_storage(wal).close()
    WalStorage.open(tmp_path).close()  # the data directory lock was released


def test_a_failed_fsync_on_the_wal_loses_only_what_was_never_acknowledged(
    tmp_path: Path,
) -> None:
    wal = WalStorage.open(tmp_path)
    healthy = Chaos(ChaosConfig(seed=0)).wrap_storage(wal)
    healthy.set_hard_state(HardState(current_term=1, voted_for=1))
    healthy.append(entries(1, 3))
    healthy.sync()  # acknowledged from here on
    failing = Chaos(ChaosConfig(fsync_fail_percent=100, seed=0)).wrap_storage(wal)
    failing.set_hard_state(HardState(current_term=2, voted_for=2))
    failing.append(entries(4, 6, term=2))
    with pytest.raises(InjectedFsyncFailure):
        failing.sync()
    failing.close()
    with WalStorage.open(tmp_path) as restarted:
        durable = restarted.load()
    assert durable.entries == entries(1, 3)
    assert durable.hard_state == HardState(current_term=1, voted_for=1)


# ------------------------------------------------------------------ the delay line


class Arrivals:
    def __init__(self) -> None:
        self.log: list[tuple[str, float]] = []

    def __call__(self, item: str) -> None:
        self.log.append((item, trio.current_time()))

    @property
    def items(self) -> list[str]:
        return [item for item, _ in self.log]


async def test_items_arrive_in_due_time_order(autojump_clock: trio.testing.MockClock) -> None:
    arrivals = Arrivals()
    line: DelayLine[str] = DelayLine(arrivals)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(line.run)
        line.put("c", 3.0)
        line.put("a", 1.0)
        line.put("b", 2.0)
        line.put("a2", 1.0)  # same due time as "a": after it, in the order put
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert arrivals.items == ["a", "a2", "b", "c"]
    assert [t - start for _, t in arrivals.log] == pytest.approx([1.0, 1.0, 2.0, 3.0])
    assert len(line) == 0


async def test_an_earlier_item_put_later_still_arrives_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    arrivals = Arrivals()
    line: DelayLine[str] = DelayLine(arrivals)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(line.run)
        line.put("late", 10.0)
        await trio.sleep(2)  # the run task is now waiting for "late"
        line.put("early", 1.0)
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert arrivals.items == ["early", "late"]
    assert [t - start for _, t in arrivals.log] == pytest.approx([3.0, 10.0])


async def test_a_zero_delay_arrives_without_the_clock_moving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    arrivals = Arrivals()
    line: DelayLine[str] = DelayLine(arrivals)
    async with trio.open_nursery() as nursery:
        await nursery.start(line.run)
        line.put("slow", 5.0)
        start = trio.current_time()
        line.put("now", 0.0)
        line.put("also now", -1.0)  # a negative delay is no delay, not a jump the queue
        await trio.testing.wait_all_tasks_blocked()
        assert arrivals.log == [("now", start), ("also now", start)]
        nursery.cancel_scope.cancel()


async def test_items_put_before_run_wait_for_it(autojump_clock: trio.testing.MockClock) -> None:
    arrivals = Arrivals()
    line: DelayLine[str] = DelayLine(arrivals)
    line.put("x", 1.0)
    line.put("y", 0.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(line.run)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert arrivals.items == ["y", "x"]


async def test_a_full_line_drops_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    arrivals = Arrivals()
    line: DelayLine[str] = DelayLine(arrivals, capacity=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(line.run)
        accepted = [line.put(f"m{i}", 1.0 + i) for i in range(5)]
        assert accepted == [True, True, True, False, False]
        assert line.dropped_overflow == 2
        assert len(line) == 3
        await trio.sleep(10)
        assert line.put("after", 0.5)  # room again once the line has drained
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert arrivals.items == ["m0", "m1", "m2", "after"]
    assert line.dropped_overflow == 2


async def test_a_send_that_puts_back_does_not_starve_other_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[int] = []

    def send(n: int) -> None:
        seen.append(n)
        if n < 1_000:
            line.put(n + 1, 0.0)

    line: DelayLine[int] = DelayLine(send)
    progressed = trio.Event()

    async def other() -> None:
        await trio.sleep(0)
        progressed.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(line.run)
        line.put(0, 0.0)
        nursery.start_soon(other)
        await progressed.wait()
        # Had the line sent everything that came due while sending, the other task would
        # only have run after the whole chain of 1000.
        assert len(seen) < 1_000
        nursery.cancel_scope.cancel()


def test_a_delay_line_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="capacity"):
        DelayLine[str](lambda item: None, capacity=0)


async def test_chaos_verdicts_drive_the_delay_line(autojump_clock: trio.testing.MockClock) -> None:
    # The wiring the transport is meant to do, end to end on virtual time.
    chaos = Chaos(ChaosConfig(drop_percent=10, delay_percent=50, delay_ms=(10, 100), seed=42))
    sent: list[tuple[int, float]] = []
    start = trio.current_time()

    def enqueue(item: tuple[int, Message]) -> None:
        sent.append((item[0], trio.current_time() - start))

    line: DelayLine[tuple[int, Message]] = DelayLine(enqueue)
    due: dict[int, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(line.run)
        for i, msg in enumerate(messages(1_000)):
            verdict = chaos.decide(msg)
            if verdict.drop:
                continue
            due[i] = verdict.delay_s
            if verdict.delay_s > 0:
                line.put((i, msg), verdict.delay_s)
            else:
                enqueue((i, msg))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert len(sent) == len(due) == 1_000 - chaos.counts[DROP]
    for i, at in sent:
        assert at == pytest.approx(due[i])
    assert [at for _, at in sent] == sorted(at for _, at in sent)
