"""Linearizability of a key-value history: Wing & Gong's search with Lowe's memoization, per key.

Why per key: a register per key is a P-compositional model (Herlihy & Wing), so the history is
linearizable iff each key's sub-history is, and the search, exponential in the worst case, only
ever faces one key's concurrency at a time.

Why this search (porcupine's `checkSingle`): events sit in a doubly linked list in time order;
the search walks it, linearizes ("lifts") a pending call the model accepts, restarts from the
head, and backtracks when it meets the return of an operation it could not place. Lowe's cache
of configurations (set of placed operations, register value) keeps it from exploring any
twice. Written as a loop, not recursion: the stack is as deep as the history. Plain, that
search takes minutes to reject a 50,000-operation history with one bad read (it must exhaust
every order of everything before it); `_search` adds the reductions that make it seconds,
each argued where it is made, and the randomized comparison with a brute-force checker in
test_lincheck.py is what keeps them honest.

Equal timestamps: intervals are closed. At an equal time, calls sort before returns, as in
porcupine, so an operation returning at t and one called at t count as concurrent and may be
ordered either way. One monotonic clock cannot say which came first at the same reading, and a
checker must never report a violation the clock does not prove.

Outcomes: `fail` operations and `unknown` gets are dropped. An `unknown` write has no return
event (its return is +infinity) and is never required: the search succeeds once every
definite (`ok`) operation is placed, so an unknown write may take effect late or not at all.
An unknown cas placed at all is placed as a successful swap: a failed comparison changes
nothing, the same as never happening.
"""

from __future__ import annotations

import gc
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tests.lincheck.history import Json, Operation, compact, show

Verdict = Literal["linearizable", "not linearizable", "unknown"]
State = str | None  # a register value as compared: compact JSON text, None when absent

FIRST_LINES: dict[Verdict, str] = {
    "linearizable": "linearizable",
    "not linearizable": "not linearizable",
    "unknown": "unknown (checker timed out)",
}
EXIT_CODES: dict[Verdict, int] = {"linearizable": 0, "not linearizable": 1, "unknown": 2}

# How the model steps each searched operation. An unknown cas steps like a successful one.
_GET, _SET, _CAS, _CAS_FALSE = range(4)
# The search numbers register values; these two are fixed. UNSEEN stands for every value no
# operation reads or compares against: they all behave alike, so they are one state.
_ABSENT, _UNSEEN = 0, 1
UNSEEN_TEXT = "a value nobody reads (see the last write placed)"
_PREFIX_SHOWN = 4  # placed operations shown before the one that could not be placed
_OVERLAP_SHOWN = 8
_HINTS_SHOWN = 3
_CLOCK_EVERY = 0xFFF  # search steps between two looks at the clock (a few ms)


def encode(value: Json) -> State:
    """JSON null is "absent": a get cannot tell a stored null from a missing key."""
    return None if value is None else compact(value)


@dataclass(frozen=True, slots=True)
class KeyFailure:
    """Where the search for one key got furthest before every order failed: the longest
    valid prefix found, and the operation no continuation of it could place in time."""

    key: str
    searched: int  # operations of this key that entered the search
    placed: int  # definite operations in the longest valid prefix
    definite: int  # definite (ok) operations of this key
    stuck: Operation  # its return came before any valid order could place it
    state: str  # the register after the longest valid prefix, as shown
    blocker: Operation | None  # still needs that value, which `stuck` would overwrite for good
    prefix: tuple[Operation, ...]  # the last operations of that prefix, in order
    overlapping: tuple[Operation, ...]  # definite operations concurrent with `stuck`
    more_overlapping: int
    pending_unknown: int  # unknown writes called before `stuck` returned
    hints: tuple[str, ...]

    def report(self) -> list[str]:
        lines = [
            f"key {json.dumps(self.key)}: no valid order of its {self.searched} operations; "
            f"the longest valid prefix places {self.placed} of {self.definite} definite ones",
            f"  cannot place: {self.stuck.describe()}",
            f"  register after the prefix: {self.state}",
        ]
        if self.blocker is not None:
            lines.append(
                f"  placing it would overwrite {self.state} for good, yet "
                f"{self.blocker.describe()} still needs it"
            )
        if self.prefix:
            lines.append("  end of the prefix:")
            lines.extend(f"    {op.describe()}" for op in self.prefix)
        if self.overlapping:
            lines.append("  concurrent with it:")
            lines.extend(f"    {op.describe()}" for op in self.overlapping)
            if self.more_overlapping:
                lines.append(f"    ... and {self.more_overlapping} more")
        if self.pending_unknown:
            lines.append(f"  unknown writes that could have taken effect: {self.pending_unknown}")
        lines.extend(f"  hint: {hint}" for hint in self.hints)
        return lines


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    operations: int  # in the history
    searched: int  # in the keys checked, after dropping what cannot matter
    dropped_fail: int
    dropped_unknown_get: int
    dropped_unobserved: int  # unknown writes proven irrelevant (`_irrelevant`)
    keys: int
    keys_checked: int
    elapsed_s: float
    failures: tuple[KeyFailure, ...] = ()
    timed_out_key: str | None = None

    @property
    def first_line(self) -> str:
        return FIRST_LINES[self.verdict]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def failed_keys(self) -> tuple[str, ...]:
        return tuple(failure.key for failure in self.failures)

    def report(self) -> list[str]:
        """The first line is the contract (`first_line`); the rest is for the person debugging."""
        lines = [self.first_line]
        for failure in self.failures:
            lines.extend(failure.report())
        if self.timed_out_key is not None:
            lines.append(
                f"timed out after {self.elapsed_s:.3f} s on key {json.dumps(self.timed_out_key)}"
                f"; {self.keys_checked} of {self.keys} keys were checked"
            )
        dropped = (
            f"dropped {self.dropped_fail} failed, {self.dropped_unknown_get} unknown gets, "
            f"{self.dropped_unobserved} unknown writes nobody observed"
        )
        lines.append(
            f"checked {self.searched} of {self.operations} operations on "
            f"{self.keys_checked} of {self.keys} keys in {self.elapsed_s:.3f} s ({dropped})"
        )
        return lines


@dataclass(frozen=True, slots=True)
class _Found:
    """The deepest dead end of one key's search."""

    placed: int
    stuck: int
    state: str
    prefix: tuple[int, ...]
    blocker: int  # -1 when none


class _TimedOut(Exception):
    pass


@dataclass(slots=True)
class _Plan:
    """One key's operations as the search sees them, numbered in this order, each group by
    call time: the definite ones (so the placed set stays a narrow window above the lowest
    unplaced id), the revealing unknown writes (someone reads or compares against their
    value), the hidden unknown cas (nobody does), the blind unknown sets (nobody does)."""

    ops: list[Operation]
    definite: int
    revealing: int
    hidden: int
    observed: set[State]
    dropped_fail: int
    dropped_get: int
    dropped_unobserved: int


def _irrelevant(op: Operation, observed: set[State], refusals: Sequence[Operation]) -> bool:
    """Whether an unknown write can be dropped without changing the verdict.

    Take any valid order that places it. The operation right after it sees its value: a get
    would read it and a cas would compare against it, both excluded by `observed`, and a
    refused cas could owe its refusal to it, excluded by `refusals`. So the next operation is a
    write, or there is none, and the order without it is just as valid. Conversely an unknown
    write is never required."""
    return encode(op.value) not in observed and all(
        refusal.ret is not None and refusal.ret < op.call for refusal in refusals
    )


def _plan(key_ops: Sequence[Operation]) -> _Plan:
    definite = sorted(
        (op for op in key_ops if op.outcome == "ok"), key=lambda op: (op.call, op.ret)
    )
    unknown_writes = [op for op in key_ops if op.outcome == "unknown" and op.op != "get"]
    observed: set[State] = {encode(op.output) for op in definite if op.op == "get"}
    observed.update(encode(op.expected) for op in key_ops if op.op == "cas")
    refusals = [op for op in definite if op.op == "cas" and not op.ok]
    kept = sorted(
        (op for op in unknown_writes if not _irrelevant(op, observed, refusals)),
        key=lambda op: op.call,
    )
    revealing = [op for op in kept if encode(op.value) in observed]
    hidden = [op for op in kept if op.op == "cas" and encode(op.value) not in observed]
    blind = [op for op in kept if op.op == "set" and encode(op.value) not in observed]
    return _Plan(
        ops=definite + revealing + hidden + blind,
        definite=len(definite),
        revealing=len(revealing),
        hidden=len(hidden),
        observed=observed,
        dropped_fail=sum(1 for op in key_ops if op.outcome == "fail"),
        dropped_get=sum(1 for op in key_ops if op.outcome == "unknown" and op.op == "get"),
        dropped_unobserved=len(unknown_writes) - len(kept),
    )


def _step_kind(op: Operation) -> int:
    if op.op == "get":
        return _GET
    if op.op == "set":
        return _SET
    return _CAS if op.outcome == "unknown" or op.ok else _CAS_FALSE


def _search(plan: _Plan, deadline: float | None) -> _Found | None:
    """None when every definite operation can be placed. Raises _TimedOut past the deadline.

    On top of porcupine's search, these reductions keep the configurations few. Most hold by
    dominance: a configuration may stand for another when it has a valid continuation
    whenever the other has one.
    - A definite get or refused cas the register accepts is placed at once, and nothing else
      is tried from that configuration: it changes nothing wherever it goes, so any valid order
      from there can have it moved to the front.
    - A write is not placed over a value some unplaced definite operation still needs (a get
      of it, a cas expecting it) when no unplaced operation writes that value again: that
      operation could never be placed.
    - Configurations known to fail are kept, and prune any configuration that differs only by
      more unknown writes placed (anything it could do, the failed one could have done).
    - The operation whose return comes first is tried first: it is the likeliest to have
      taken effect first, where porcupine's walk starts with the earliest call.
    - Unknown writes are only tried once no definite operation can be placed before the next
      return, and never where they change nothing: they are what a stuck search needs, and
      walking past hundreds of them at every step would cost more than the search.
    - Of the unknown writes of values nobody observes, only one is tried per configuration:
      the earliest callable hidden cas whose expected value is in place (all such are
      interchangeable from then on), or else the earliest callable blind set (interchangeable
      too, and more useful kept than a cas).
    """
    definite = plan.definite
    if definite == 0:
        return None
    ops = plan.ops
    count = len(ops)
    hidden_base = definite + plan.revealing
    blind_base = hidden_base + plan.hidden
    blind_total = count - blind_base

    # Register values as small integers: cheaper to compare, hash and count than JSON text.
    numbers: dict[State, int] = {None: _ABSENT}
    texts: list[str] = ["absent", UNSEEN_TEXT]

    def number(text: State) -> int:
        found = numbers.get(text)
        if found is None:
            found = numbers[text] = len(texts)
            texts.append(str(text))
        return found

    kinds = [_step_kind(op) for op in ops]
    first = [  # what a get must read, what a cas compares against
        number(encode(op.output if op.op == "get" else op.expected)) if op.op != "set" else 0
        for op in ops
    ]
    second = []  # what a set or cas writes
    for op in ops:
        written = encode(op.value)
        second.append(number(written) if written in plan.observed else _UNSEEN)
    need = [
        first[index] if index < definite and kinds[index] in (_GET, _CAS) else -1
        for index in range(count)
    ]
    writes = [second[index] if kinds[index] in (_SET, _CAS) else -1 for index in range(count)]
    needs = [0] * len(texts)  # per value: unplaced definite operations that need it in place
    writers = [0] * len(texts)  # per value: unplaced operations that write it
    for index in range(count):
        if need[index] >= 0:
            needs[need[index]] += 1
        if writes[index] >= 0:
            writers[writes[index]] += 1
    # Hidden cas by expected value, each group in call order, with the mask of their bits.
    groups: dict[int, tuple[list[int], int]] = {}
    for index in range(hidden_base, blind_base):
        members, mask = groups.get(first[index], ([], 0))
        members.append(index)
        groups[first[index]] = (members, mask | 1 << (index - definite))

    events: list[tuple[int, int, int]] = []  # (time, 0 call / 1 return, op)
    for index, op in enumerate(ops):
        events.append((op.call, 0, index))
        if index < definite:
            assert op.ret is not None
            events.append((op.ret, 1, index))
    events.sort()
    size = len(events)
    head, tail = 0, size + 1
    event_op = [0] * (size + 2)
    is_call = [False] * (size + 2)
    partner = [0] * (size + 2)  # a call's return event
    call_event = [0] * count
    for position, (_, kind, index) in enumerate(events, start=1):
        event_op[position] = index
        if kind == 0:
            is_call[position] = True
            call_event[index] = position
        else:
            partner[call_event[index]] = position
    # Only definite operations are linked: an unknown write is callable at a return event
    # when its call event comes earlier.
    nxt = [tail] * (size + 2)
    prv = [head] * (size + 2)
    last = head
    for position in range(1, size + 1):
        if event_op[position] < definite:
            nxt[last] = position
            prv[position] = last
            last = position
    nxt[last] = tail
    prv[tail] = last

    # Placed definite ops are (low, window): every id below `low` is placed, bit i of `window`
    # says whether id low + i is. Placed unknown writes are the bits of `maybe` (id - definite),
    # except blind ones, placed in call order and so counted by `blind`. All stay small
    # integers, so cache keys hash in constant time whatever the history's length.
    low = window = maybe = blind = 0
    state = _ABSENT
    remaining = definite
    # Lowe's cache, of configurations known to fail: their search finished without placing
    # every definite operation. Only finished ones may prune, which is what allows pruning
    # by dominance: (maybe, blind) pairs are compared, not just looked up.
    failed: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    # A frame saves a configuration and how to resume it: the walk's entry (cursor -1), the
    # walk from the head (cursor -2), or the next unknown write to try at a return event.
    # `chosen` is what was placed from it; `exhausted`, that nothing else is left to try.
    stack: list[tuple[int, int, int, int, int, int, int, int, bool]] = []
    best = (-1, 0, 0, 0, 0, 0, 0)  # (placed, stuck op, configuration) at the deepest dead end
    best_prefix: tuple[int, ...] = ()
    steps = 0
    fresh = True  # a configuration just entered: look for an operation to place at once
    entry, cursor = head, -1
    while True:
        steps += 1
        if steps & _CLOCK_EVERY == 0 and deadline is not None and time.monotonic() > deadline:
            raise _TimedOut
        chosen = -1
        exhausted = False
        after = state
        if fresh:
            fresh = False
            entry, cursor = nxt[head], -1
            scan = entry
            while is_call[scan]:
                index = event_op[scan]
                kind = kinds[index]
                if (kind == _GET and state == first[index]) or (
                    kind == _CAS_FALSE and state != first[index]
                ):
                    chosen, entry, exhausted = index, scan, True
                    break
                scan = nxt[scan]
            if chosen < 0 and scan != tail:
                index = event_op[scan]
                kind = kinds[index]
                if kind == _SET or (kind == _CAS and state == first[index]):
                    chosen, after, entry, cursor = index, second[index], call_event[index], -2
            if chosen < 0:
                continue
        elif cursor < 0 and is_call[entry]:
            index = event_op[entry]
            kind = kinds[index]
            if kind == _SET or (kind == _CAS and state == first[index]):
                chosen, after = index, second[index]
            else:
                # Gets and refusals the register accepts were placed on entering it.
                entry = nxt[entry]
                continue
        elif cursor < 0 and entry == tail:
            return None  # unreachable while definite operations remain; kept for safety
        else:
            if cursor < 0:
                placed = definite - remaining
                if placed > best[0]:
                    best = (placed, event_op[entry], state, low, window, maybe, blind)
                    best_prefix = tuple(frame[2] for frame in stack[-_PREFIX_SHOWN:])
                cursor = definite
            while cursor < hidden_base and call_event[cursor] < entry:
                index = cursor
                cursor += 1
                if maybe >> (index - definite) & 1:
                    continue
                if kinds[index] == _SET or state == first[index]:
                    after = second[index]
                    if after != state:
                        chosen = index
                        break
            if chosen < 0 and state != _UNSEEN:
                exhausted, after = True, _UNSEEN
                group = groups.get(state)
                if group is not None:
                    members, mask = group
                    rank = (maybe & mask).bit_count()
                    if rank < len(members) and call_event[members[rank]] < entry:
                        chosen = members[rank]
                if chosen < 0 and blind < blind_total and call_event[blind_base + blind] < entry:
                    chosen = blind_base + blind

        if chosen >= 0 and (
            after == state or needs[state] - (need[chosen] == state) <= 0 or writers[state] > 0
        ):
            new_low, new_window, new_maybe, new_blind = low, window, maybe, blind
            if chosen < definite:
                new_window = window | (1 << (chosen - low))
                if chosen == low:
                    shift = (new_window ^ (new_window + 1)).bit_length() - 1
                    new_window >>= shift
                    new_low = low + shift
            elif chosen < blind_base:
                new_maybe = maybe | (1 << (chosen - definite))
            else:
                new_blind = blind + 1
            known = failed.get((new_low, new_window, after))
            if known is None or not any(
                not (placed_maybe & ~new_maybe) and placed_blind <= new_blind
                for placed_maybe, placed_blind in known
            ):
                stack.append((entry, cursor, chosen, low, window, maybe, blind, state, exhausted))
                low, window, maybe, blind, state = new_low, new_window, new_maybe, new_blind, after
                if need[chosen] >= 0:
                    needs[need[chosen]] -= 1
                if writes[chosen] >= 0:
                    writers[writes[chosen]] -= 1
                if chosen < definite:
                    remaining -= 1
                    if remaining == 0:
                        return None
                    before, behind = prv[entry], nxt[entry]
                    nxt[before] = behind
                    prv[behind] = before
                    answer = partner[entry]
                    before, behind = prv[answer], nxt[answer]
                    nxt[before] = behind
                    prv[behind] = before
                fresh = True
                continue
        if chosen >= 0 and not exhausted:
            if cursor == -2:
                entry, cursor = nxt[head], -1
            elif cursor < 0:
                entry = nxt[entry]
            continue

        # This configuration has nothing left to try: back to the last one that has.
        while True:
            failed.setdefault((low, window, state), []).append((maybe, blind))
            if not stack:
                placed, stuck, at, low, window, maybe, blind = best
                blocker = _blocker(
                    plan, stuck, at, (low, window, maybe, blind), first, need, writes
                )
                return _Found(placed, stuck, texts[at], best_prefix, blocker)
            entry, cursor, chosen, low, window, maybe, blind, state, exhausted = stack.pop()
            if need[chosen] >= 0:
                needs[need[chosen]] += 1
            if writes[chosen] >= 0:
                writers[writes[chosen]] += 1
            if chosen < definite:
                remaining += 1
                answer = partner[entry]
                nxt[prv[answer]] = answer
                prv[nxt[answer]] = answer
                nxt[prv[entry]] = entry
                prv[nxt[entry]] = entry
            if not exhausted:
                if cursor == -2:
                    entry, cursor = nxt[head], -1
                elif cursor < 0:
                    entry = nxt[entry]
                break


def _blocker(
    plan: _Plan,
    stuck: int,
    state: int,
    configuration: tuple[int, int, int, int],
    first: list[int],
    need: list[int],
    writes: list[int],
) -> int:
    """The unplaced definite operation that kept `stuck`, a write, from being placed at the
    deepest dead end, because it needs the value there and nothing left writes it; or -1."""
    low, window, maybe, blind = configuration
    definite = plan.definite
    blind_base = definite + plan.revealing + plan.hidden
    op = plan.ops[stuck]
    if op.op == "get" or (op.op == "cas" and (not op.ok or first[stuck] != state)):
        return -1  # not a write the register would accept there
    if writes[stuck] == state:
        return -1  # it would not change the value

    def unplaced(index: int) -> bool:
        if index < definite:
            return index >= low and not window >> (index - low) & 1
        if index < blind_base:
            return not maybe >> (index - definite) & 1
        return index - blind_base >= blind

    others = [index for index in range(len(plan.ops)) if index != stuck and unplaced(index)]
    if any(writes[index] == state for index in others):
        return -1
    return next((index for index in others if need[index] == state), -1)


_WRITES_NOTHING = ""  # no compact JSON text is empty, so this never equals a value


def _writes(op: Operation) -> State:
    if op.op == "set" or (op.op == "cas" and (op.outcome != "ok" or op.ok)):
        return encode(op.value)
    return _WRITES_NOTHING


def _hints(key_ops: Sequence[Operation], searched: Sequence[Operation]) -> tuple[str, ...]:
    """Reads of a value no searched operation writes: the commonest bug, named directly."""
    writers = {_writes(op) for op in searched}
    hints: list[str] = []
    for op in searched:
        if op.outcome != "ok":
            continue
        if op.op == "get" and op.output is not None:
            needed = encode(op.output)
        elif op.op == "cas" and op.expected is not None:
            needed = encode(op.expected)
        else:
            continue
        if needed in writers:
            continue
        culprits = [
            other
            for other in key_ops
            if other.op != "get" and other is not op and encode(other.value) == needed
        ]
        text = f"{op.describe()} sees {needed}, which no operation that may have happened writes"
        if culprits:
            text += f"; written only by {culprits[0].describe()}"
        hints.append(text)
        if len(hints) == _HINTS_SHOWN:
            break
    return tuple(hints)


def _failure(key: str, key_ops: Sequence[Operation], plan: _Plan, found: _Found) -> KeyFailure:
    searched = plan.ops
    stuck = searched[found.stuck]
    end = stuck.ret if stuck.ret is not None else stuck.call
    overlapping = [
        op
        for op in searched[: plan.definite]
        if op is not stuck and op.call <= end and op.ret is not None and op.ret >= stuck.call
    ]
    state = found.state
    prefix = tuple(searched[index] for index in found.prefix)
    if state == UNSEEN_TEXT:
        # The search let every value nobody reads be one; the path it took says which one.
        written = [op for op in prefix if op.op == "set" or (op.op == "cas" and op.ok is not False)]
        if written:
            state = f"{show(written[-1].value)} (nobody reads it)"
    return KeyFailure(
        key=key,
        searched=len(searched),
        placed=found.placed,
        definite=plan.definite,
        stuck=stuck,
        state=state,
        blocker=None if found.blocker < 0 else searched[found.blocker],
        prefix=prefix,
        overlapping=tuple(overlapping[:_OVERLAP_SHOWN]),
        more_overlapping=max(0, len(overlapping) - _OVERLAP_SHOWN),
        pending_unknown=sum(1 for op in searched[plan.definite :] if op.call <= end),
        hints=_hints(key_ops, searched),
    )


def check_history(ops: Sequence[Operation], timeout_s: float | None = 60.0) -> CheckResult:
    """The verdict on a whole history. `timeout_s` None means no limit; past the limit the
    verdict is "unknown", unless an already checked key is not linearizable."""
    began = time.monotonic()
    deadline = None if timeout_s is None else began + timeout_s
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if not op.stale:  # bounded-staleness reads have their own pass (staleness.py)
            by_key[op.key].append(op)

    dropped_fail = dropped_get = dropped_unobserved = searched = checked = 0
    failures: list[KeyFailure] = []
    timed_out: str | None = None
    # Small keys first: with a deadline, the most keys get a definite answer.
    for key in sorted(by_key, key=lambda k: (len(by_key[k]), k)):
        key_ops = by_key[key]
        plan = _plan(key_ops)
        dropped_fail += plan.dropped_fail
        dropped_get += plan.dropped_get
        dropped_unobserved += plan.dropped_unobserved
        # The cache holds millions of tuples the cyclic collector would scan again and again
        # for nothing (they hold no cycles): seconds on a large history, and late timeouts.
        collecting = gc.isenabled()
        gc.disable()
        try:
            if deadline is not None and time.monotonic() > deadline:
                raise _TimedOut
            found = _search(plan, deadline)
        except _TimedOut:
            timed_out = key
            break
        finally:
            if collecting:
                gc.enable()
        checked += 1
        searched += len(plan.ops)
        if found is not None:
            failures.append(_failure(key, key_ops, plan, found))

    verdict: Verdict
    if failures:
        verdict = "not linearizable"
    elif timed_out is not None:
        verdict = "unknown"
    else:
        verdict = "linearizable"
    return CheckResult(
        verdict=verdict,
        operations=len(ops),
        searched=searched,
        dropped_fail=dropped_fail,
        dropped_unknown_get=dropped_get,
        dropped_unobserved=dropped_unobserved,
        keys=len(by_key),
        keys_checked=checked,
        elapsed_s=time.monotonic() - began,
        failures=tuple(failures),
        timed_out_key=timed_out,
    )
