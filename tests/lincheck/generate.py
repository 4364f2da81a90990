"""Histories that are linearizable by construction, for testing and timing the checker.

A real register per key is simulated: every operation gets an interval from a client that
issues one request at a time, and a linearization point inside that interval (or, for an
unknown write that took effect, anywhere after its call). Applying the operations in the order
of their points gives the answers, so the recorded history has a valid linearization whatever
the overlaps, and the checker must find one.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from tests.lincheck.history import Json, Operation, OpKind, Outcome


@dataclass(slots=True)
class _Draft:
    client: int
    seq: int
    op: OpKind
    key: str
    call: int
    ret: int
    outcome: Outcome
    point: int | None  # None: never took effect
    value: Json = None
    expected: Json = None
    output: Json = None
    ok: bool | None = None


def linearizable_history(
    count: int,
    *,
    seed: int = 0,
    keys: int = 10,
    clients: int = 8,
    unknown_rate: float = 0.01,
    fail_rate: float = 0.01,
) -> list[Operation]:
    """`count` operations, ordered by call time, with unique written values "<client>-<seq>"."""
    rng = random.Random(seed)
    names = [f"k{index}" for index in range(keys)]
    ready = [(rng.randrange(20), client) for client in range(clients)]
    heapq.heapify(ready)
    drafts: list[_Draft] = []
    for seq in range(count):
        free_at, client = heapq.heappop(ready)
        call = free_at + rng.randrange(10)  # equal timestamps happen: the clock is coarse
        # Mostly short requests, now and then one stuck behind an election.
        duration = rng.randrange(1, 60) if rng.random() < 0.95 else rng.randrange(60, 600)
        ret = call + duration
        roll = rng.random()
        op: OpKind = "get" if roll < 0.5 else "set" if roll < 0.8 else "cas"
        outcome: Outcome = "ok"
        point: int | None = rng.randint(call, ret)
        roll = rng.random()
        if roll < unknown_rate:
            outcome = "unknown"
            # A timed-out write may land long after the client gave up, or never.
            point = call + rng.randrange(2000) if op != "get" and rng.random() < 0.5 else None
        elif roll < unknown_rate + fail_rate:
            outcome, point = "fail", None
        drafts.append(_Draft(client, seq, op, rng.choice(names), call, ret, outcome, point))
        heapq.heappush(ready, (ret, client))

    registers: dict[str, Json] = {}
    history: dict[str, list[Json]] = {name: [] for name in names}
    for draft in drafts:
        if draft.op != "get":
            draft.value = f"{draft.client}-{draft.seq}"
    applied = sorted((d for d in drafts if d.point is not None), key=lambda d: (d.point, d.seq))
    for draft in applied:
        current = registers.get(draft.key)
        if draft.op == "get":
            draft.output = current
            continue
        if draft.op == "cas":
            # Mostly the value in place, so that swaps succeed; else a stale or absent one.
            written = history[draft.key]
            if rng.random() < 0.7 or not written:
                draft.expected = current
            else:
                draft.expected = rng.choice([None, *written[-3:]])
            draft.ok = draft.expected == current
            if not draft.ok:
                continue
        registers[draft.key] = draft.value
        history[draft.key].append(draft.value)
    for draft in drafts:
        if draft.op == "cas" and draft.point is None:
            draft.expected = rng.choice([None, *history[draft.key][-2:]])

    return [
        Operation(
            client=d.client,
            op=d.op,
            key=d.key,
            call=d.call,
            ret=None if d.outcome == "unknown" else d.ret,
            value=d.value,
            expected=d.expected,
            output=d.output,
            ok=d.ok if d.outcome == "ok" else None,
            outcome=d.outcome,
            meta={"seq": d.seq},
        )
        for d in drafts
    ]
