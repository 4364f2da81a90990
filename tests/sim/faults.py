"""Fault rates for one simulated run, drawn from the seed itself (swarm testing).

Giving every seed its own mix of faults, some switched off entirely, finds more bugs than one
fixed mix: a bug that needs long quiet stretches between crashes is never found at a high
crash rate, and one that needs heavy message loss is never found at a low one.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

TICK_UNITS = 10  # simulated time units per tick; message delays are in units


@dataclass(frozen=True, slots=True)
class FaultPlan:
    nodes: int
    election_timeout_ticks: int
    heartbeat_interval_ticks: int
    pre_vote: bool
    check_quorum: bool
    max_entries_per_append: int
    max_inflight_appends: int
    safety_ticks: int
    liveness_ticks: int
    drop_rate: float
    duplicate_rate: float
    min_delay_units: int
    max_delay_units: int
    partition_rate: float  # chance per tick that the partition changes
    one_way_share: float  # of partitions, the share that cut links in one direction only
    crash_rate: float  # chance per tick, per running node, of a crash
    leader_crash_share: float  # of crashes, the share aimed at a leader
    buggify_rate: float  # chance that a leader crashes right after winning or committing
    crash_in_ready_share: float  # of crashes, the share that strike between persist and send
    unsynced_crash_share: float  # of those, the share that strike before the fsync
    restart_after_ticks: tuple[int, int]
    propose_rate: float  # chance per tick that a client proposes a command
    read_rate: float  # chance per tick that a client asks a leader for a linearizable read

    @classmethod
    def draw(cls, rng: random.Random, *, nodes: int | None = None) -> FaultPlan:
        def maybe(rate: float, enabled: float = 0.7) -> float:
            return rate if rng.random() < enabled else 0.0

        election_timeout = rng.randint(8, 14)
        min_delay = rng.randint(1, 5)
        return cls(
            nodes=nodes if nodes is not None else rng.randint(3, 5),
            election_timeout_ticks=election_timeout,
            heartbeat_interval_ticks=rng.randint(1, 3),
            # The product defaults, but not always: the core must be safe either way.
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            max_entries_per_append=rng.choice((1, 1, 2, 3, 64, 256)),
            max_inflight_appends=rng.choice((1, 2, 8, 64)),
            safety_ticks=rng.randint(300, 700),
            liveness_ticks=400,
            drop_rate=maybe(rng.uniform(0.0, 0.3)),
            duplicate_rate=maybe(rng.uniform(0.0, 0.1), 0.5),
            min_delay_units=min_delay,
            max_delay_units=min_delay + rng.choice((2, 10, 30, 60)),
            partition_rate=maybe(rng.uniform(0.0, 0.05)),
            one_way_share=rng.uniform(0.0, 0.5),
            crash_rate=maybe(rng.uniform(0.0, 0.02)),
            leader_crash_share=rng.uniform(0.0, 0.8),
            buggify_rate=maybe(rng.uniform(0.05, 0.3), 0.8),
            crash_in_ready_share=rng.uniform(0.0, 0.6),
            unsynced_crash_share=rng.uniform(0.0, 0.5),
            restart_after_ticks=(1, rng.randint(5, 60)),
            propose_rate=rng.uniform(0.1, 0.9),
            read_rate=rng.uniform(0.0, 0.5),
        )

    @classmethod
    def calm(cls, nodes: int = 3) -> FaultPlan:
        """No faults at all: for the demo and for sanity checks."""
        return cls(
            nodes=nodes,
            election_timeout_ticks=10,
            heartbeat_interval_ticks=2,
            pre_vote=True,
            check_quorum=True,
            max_entries_per_append=256,
            max_inflight_appends=64,
            safety_ticks=200,
            liveness_ticks=200,
            drop_rate=0.0,
            duplicate_rate=0.0,
            min_delay_units=2,
            max_delay_units=6,
            partition_rate=0.0,
            one_way_share=0.0,
            crash_rate=0.0,
            leader_crash_share=0.0,
            buggify_rate=0.0,
            crash_in_ready_share=0.0,
            unsynced_crash_share=0.0,
            restart_after_ticks=(10, 20),
            propose_rate=0.2,
            read_rate=0.0,
        )

    def describe(self) -> str:
        parts = []
        for key, value in asdict(self).items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            parts.append(f"{key}={shown}".replace(" ", ""))
        return " ".join(parts)
