"""The simulator itself: deterministic, quiet on a correct core, loud on a broken one."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from raftd.core import Config, Entry, Membership, RaftNode
from raftd.storage.pagecache import PageCacheStorage
from tests.core.network import Network
from tests.sim.__main__ import main
from tests.sim.checker import SafetyChecker, Violation
from tests.sim.faults import FaultPlan
from tests.sim.mutations import MUTATIONS
from tests.sim.simulator import RunResult, SimStorage, Simulation
from tests.sim.sizes import MAX_COMMAND_BYTES, ValueSizes


def run(seed: int, mutation: str | None = None) -> RunResult:
    plan = FaultPlan.draw(random.Random(seed))
    if mutation is None:
        return Simulation(seed, plan).run()
    m = MUTATIONS[mutation]
    return Simulation(
        seed, plan, node_factory=m.node_factory, storage_factory=m.storage_factory
    ).run()


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_same_seed_replays_to_the_same_digest(seed: int) -> None:
    first, second = run(seed), run(seed)
    assert first.digest == second.digest
    assert (first.events, first.messages, first.ticks) == (
        second.events,
        second.messages,
        second.ticks,
    )


def test_different_seeds_tell_different_stories() -> None:
    digests = {run(seed).digest for seed in range(10)}
    assert len(digests) == 10


def test_seeds_really_exercise_faults() -> None:
    """A simulator that never crashes anything proves nothing: check the swarm's reach."""
    results = [run(seed) for seed in range(40)]
    assert all(r.ok for r in results), [r.violation for r in results if not r.ok]
    assert sum(r.crashes for r in results) > 50
    assert sum(r.committed for r in results) > 1000
    assert {r.plan.nodes for r in results} == {3, 4, 5}
    assert any(r.plan.drop_rate > 0.1 for r in results)
    assert any(r.plan.partition_rate > 0 for r in results)


def test_cli_prints_the_summary_last(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "3", "--start", "10"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "3 seeds, 0 violations"


def test_cli_replays_one_seed_with_a_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "5", "--trace"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[2].startswith("SEED=5")
    assert any("BecameLeader" in line for line in out)
    assert out[-1].startswith("SEED=5 digest=")


def test_a_violation_prints_its_seed_and_the_replay_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--seeds", "20", "--mutation", "no-log-check-vote", "--stop-on-violation"]
    assert main(args) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    failed = re.fullmatch(r"SEED=(\d+) VIOLATION .+", lines[-3])
    assert failed, lines
    seed = failed.group(1)
    assert lines[-2].strip() == (
        f"replay: python -m tests.sim --seed {seed} --trace --mutation no-log-check-vote"
    )
    assert lines[-1] == f"{int(seed) + 1} seeds, 1 violations"


@pytest.mark.parametrize(
    ("mutation", "within"),
    [
        ("no-log-check-vote", 20),
        ("early-self-count", 200),
        ("snapshot-ignores-term", 60),
        ("learners-count", 60),
        ("unconfirmed-read", 300),
        ("forget-vote", 400),
        ("old-term-commit", 600),
    ],
)
def test_known_bugs_are_caught(mutation: str, within: int) -> None:
    """Teeth: each re-introduced bug produces a violation within a bounded number of seeds."""
    for seed in range(within):
        result = run(seed, mutation)
        if not result.ok:
            assert result.violation is not None
            return
    pytest.fail(f"{mutation} survived {within} seeds")


def test_checker_flags_two_leaders_in_one_term() -> None:
    """Two clusters that never talk each elect a leader in term 1: seen as one, a violation."""
    checker = SafetyChecker()
    one, other = Network(3), Network(3)
    one.elect(1)
    other.elect(2)
    checker.node_state(one.nodes[1])
    with pytest.raises(Violation, match="election safety"):
        checker.node_state(other.nodes[2])


def test_checker_flags_diverging_logs_and_applies() -> None:
    checker = SafetyChecker()
    checker.proposed |= {b"a", b"b"}
    checker.applied(1, Entry(1, 1, b"a"))
    with pytest.raises(Violation, match="state machine safety"):
        checker.applied(2, Entry(1, 1, b"b"))
    with pytest.raises(Violation, match="no client proposed"):
        checker.applied(1, Entry(2, 1, b"zzz"))
    checker.vote_granted(1, 4, 2)
    with pytest.raises(Violation, match="double vote"):
        checker.vote_granted(1, 4, 3)


def _unbounded_appends(config: Config, rng: random.Random, storage: SimStorage) -> RaftNode:
    """The core before AppendEntries were bounded by bytes: 256 entries, whatever their size."""
    return RaftNode(replace(config, max_bytes_per_append=1 << 40), rng, storage.load())


def test_appends_bounded_only_by_entry_count_are_caught_with_large_values() -> None:
    """With values near the maximum and a lagging follower, the old core built AppendEntries
    that no frame can carry; the simulator holds every message against the real frame limit."""
    large = ValueSizes("large", 0.5, MAX_COMMAND_BYTES)
    caught = []
    for seed in range(12):
        plan = FaultPlan.draw(random.Random(seed))
        result = Simulation(seed, plan, node_factory=_unbounded_appends, value_sizes=large).run()
        if result.violation and "frame limit" in result.violation:
            caught.append(seed)
    assert caught, "no seed built an oversized AppendEntries"
    for seed in caught[:2]:
        plan = FaultPlan.draw(random.Random(seed))
        assert Simulation(seed, plan, value_sizes=large).run().ok  # the bounded core is fine


def test_a_seed_with_the_page_cache_disk_recovers_from_its_crashes() -> None:
    """Seeds that draw the WAL on the page-cache disk crash through it and stay safe."""
    chosen = [s for s in range(40) if isinstance(Simulation(s).storages[1], PageCacheStorage)]
    assert chosen
    results = [Simulation(seed).run() for seed in chosen[:6]]
    assert all(r.ok for r in results), [r.violation for r in results]
    assert sum(r.crashes for r in results) > 0


def test_checker_flags_a_committed_change_of_two_voters_at_once() -> None:
    """Majorities of {1, 2, 3} and {1, 4, 5} need not overlap: {2, 3} and {4, 5}."""
    checker = SafetyChecker()
    checker.configuration_committed(7, Membership((1, 2, 3)), Membership((1, 2, 3, 4)))
    with pytest.raises(Violation, match="need not overlap"):
        checker.configuration_committed(9, Membership((1, 2, 3)), Membership((1, 4, 5)))
