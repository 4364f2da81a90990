"""Linearizability of a key-value history: Wing & Gong's search with Lowe's memoization, per key.

Why per key: a register per key is a P-compositional model (Herlihy & Wing), so the history is
linearizable iff each key's sub-history is, and the search, exponential in the worst case, only
ever faces one key's concurrency at a time.

Why this search (porcupine's `checkSingle`): events sit in a doubly linked list in time order;
the search walks it, linearizes ("lifts") the first pending call the model accepts, restarts
from the head, and backtracks when it meets the return of an operation it could not place.
Lowe's cache of (set of placed operations, register value) prunes every configuration already
explored, which is what makes 50,000-operation histories tractable. Written as a loop, not
recursion, because the stack is as deep as the history.

Equal timestamps: intervals are closed. At an equal time, calls sort before returns, as in
porcupine, so an operation returning at t and one called at t count as concurrent and may be
ordered either way. One monotonic clock cannot say which came first at the same reading, and a
checker must never report a violation the clock does not prove.

Outcomes: `fail` operations and `unknown` gets are dropped. An `unknown` write has no return
event (its return is +infinity) and is never required: the search succeeds once every
definite (`ok`) operation is placed, so an unknown write may take effect late or not at all.
An unknown cas placed at all is placed as a successful swap; a failed comparison changes
nothing and so is the same as never happening.

Unknown writes whose value nobody observes are dropped before the search (see
`_unobserved`): each one left in doubles the configurations the cache has to tell apart.
"""

from __future__ import annotations

import gc
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tests.lincheck.history import Json, Operation, compact

Verdict = Literal["linearizable", "not linearizable", "unknown"]
State = str | None  # the register: compact JSON text of its value, None when absent

FIRST_LINES: dict[Verdict, str] = {
    "linearizable": "linearizable",
    "not linearizable": "not linearizable",
    "unknown": "unknown (checker timed out)",
}
EXIT_CODES: dict[Verdict, int] = {"linearizable": 0, "not linearizable": 1, "unknown": 2}

# How the model steps each searched operation. An unknown cas steps like a successful one.
_GET, _SET, _CAS, _CAS_FALSE, _BLIND = range(5)
# The state of the register holding any value no operation reads or compares against.
# Not JSON (compact JSON escapes control characters), so it equals no encoded value.
_UNSEEN = "\x00unseen"
_PREFIX_SHOWN = 4  # placed operations shown before the one that could not be placed
_OVERLAP_SHOWN = 8
_HINTS_SHOWN = 3
_CLOCK_EVERY = 0xFFF  # search steps between two looks at the clock (a few ms)


def encode(value: Json) -> State:
    """JSON null is "absent": a get cannot tell a stored null from a missing key."""
    return None if value is None else compact(value)


def show_state(state: State) -> str:
    if state == _UNSEEN:
        return "a value no operation reads (see the last write placed)"
    return "absent" if state is None else state


@dataclass(frozen=True, slots=True)
class KeyFailure:
    """Where the search for one key got furthest before every ordering failed. The longest
    valid prefix is the best explanation available: beyond it, no order of the pending
    operations is consistent with the register."""

    key: str
    searched: int  # operations of this key that entered the search
    placed: int  # definite operations in the longest valid prefix
    definite: int  # definite (ok) operations of this key
    stuck: Operation  # its return came before any valid order could place it
    state: State  # the register after the longest valid prefix
    prefix: tuple[Operation, ...]  # the last operations of that prefix, in order
    overlapping: tuple[Operation, ...]  # searched operations concurrent with `stuck`
    more_overlapping: int
    hints: tuple[str, ...]

    def report(self) -> list[str]:
        lines = [
            f"key {json.dumps(self.key)}: no valid order of its {self.searched} operations; "
            f"the longest valid prefix places {self.placed} of {self.definite} definite ones",
            f"  cannot place: {self.stuck.describe()}",
            f"  register after the prefix: {show_state(self.state)}",
        ]
        if self.prefix:
            lines.append("  end of the prefix:")
            lines.extend(f"    {op.describe()}" for op in self.prefix)
        if self.overlapping:
            lines.append("  concurrent with it:")
            lines.extend(f"    {op.describe()}" for op in self.overlapping)
            if self.more_overlapping:
                lines.append(f"    ... and {self.more_overlapping} more")
        lines.extend(f"  hint: {hint}" for hint in self.hints)
        return lines


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    operations: int  # in the history
    searched: int  # after dropping fail, unknown get, and unobserved unknown writes
    dropped_fail: int
    dropped_unknown_get: int
    dropped_unobserved: int
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
    state: State
    prefix: tuple[int, ...]


class _TimedOut(Exception):
    pass


@dataclass(slots=True)
class _Plan:
    """One key's operations as the search sees them, in id order: the definite ones by call
    time (so the placed set stays a narrow window above the lowest unplaced id), then the
    unknown writes each tracked on its own, then the blind ones: unknown sets nobody observes,
    by call time."""

    ops: list[Operation]
    definite: int
    individual: int
    observed: set[State]
    dropped_fail: int
    dropped_get: int
    dropped_unobserved: int


def _plan(key_ops: Sequence[Operation]) -> _Plan:
    definite = sorted(
        (op for op in key_ops if op.outcome == "ok"), key=lambda op: (op.call, op.ret)
    )
    unknown_writes = [op for op in key_ops if op.outcome == "unknown" and op.op != "get"]
    observed: set[State] = {encode(op.output) for op in definite if op.op == "get"}
    observed.update(encode(op.expected) for op in key_ops if op.op == "cas")
    refusals = [op for op in definite if op.op == "cas" and not op.ok]
    kept = [op for op in unknown_writes if not _unobserved(op, observed, refusals)]
    individual = [op for op in kept if op.op == "cas" or encode(op.value) in observed]
    blind = sorted(
        (op for op in kept if op.op == "set" and encode(op.value) not in observed),
        key=lambda op: op.call,
    )
    return _Plan(
        ops=definite + individual + blind,
        definite=len(definite),
        individual=len(individual),
        observed=observed,
        dropped_fail=sum(1 for op in key_ops if op.outcome == "fail"),
        dropped_get=sum(1 for op in key_ops if op.outcome == "unknown" and op.op == "get"),
        dropped_unobserved=len(unknown_writes) - len(kept),
    )


def _step_kinds(plan: _Plan) -> list[int]:
    kinds = []
    for index, op in enumerate(plan.ops):
        if index >= plan.definite + plan.individual:
            kinds.append(_BLIND)
        elif op.op == "get":
            kinds.append(_GET)
        elif op.op == "set":
            kinds.append(_SET)
        else:
            kinds.append(_CAS if op.outcome == "unknown" or op.ok else _CAS_FALSE)
    return kinds


def _search(plan: _Plan, deadline: float | None) -> _Found | None:
    """None when every definite operation can be placed. Raises _TimedOut past the deadline.

    Two reductions keep the configurations few, both by dominance (a configuration with a
    solution whenever another has one may replace it):
    - a definite get or refused cas that the register accepts is placed at once and nothing
      else is tried from that configuration: it changes nothing wherever it goes, so any valid
      order from there can have it moved to the front;
    - an unknown write is never placed where it changes nothing, and blind writes (unknown
      sets nobody observes) are interchangeable once called, so only the earliest unplaced one
      is tried, and only when nothing else could be placed before the next return.
    """
    definite = plan.definite
    if definite == 0:
        return None
    ops = plan.ops
    blind_base = definite + plan.individual
    blind_total = len(ops) - blind_base
    kinds = _step_kinds(plan)
    first = [encode(op.output if op.op == "get" else op.expected) for op in ops]
    # A written value nobody reads or compares against behaves exactly like any other such
    # value, so they all become one state and the cache merges what only they told apart.
    second = [encode(op.value) for op in ops]
    second = [_UNSEEN if value not in plan.observed else value for value in second]

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
    partner = [0] * (size + 2)  # a call's return event; 0 for unknown writes
    call_event = [0] * len(ops)
    for position, (_, kind, index) in enumerate(events, start=1):
        event_op[position] = index
        if kind == 0:
            is_call[position] = True
            call_event[index] = position
        else:
            partner[call_event[index]] = position
    # Blind writes stay out of the list: walking past hundreds of them at every step would
    # cost more than the search itself. Their call positions say when each becomes callable.
    blind_call = [call_event[index] for index in range(blind_base, len(ops))]
    nxt = [tail] * (size + 2)
    prv = [head] * (size + 2)
    last = head
    for position in range(1, size + 1):
        if not (is_call[position] and event_op[position] >= blind_base):
            nxt[last] = position
            prv[position] = last
            last = position
    nxt[last] = tail
    prv[tail] = last

    # Placed definite ops are (low, window): every id below `low` is placed, bit i of `window`
    # says whether id low + i is. Placed unknown writes are the bits of `maybe`, except blind
    # ones, placed in call order and so counted by `blind`. All stay small integers, so cache
    # keys hash in constant time whatever the history's length.
    low = window = maybe = blind = 0
    state: State = None
    remaining = definite
    cache: set[tuple[int, int, int, int, State]] = set()
    # (call event or 0 for a blind write, the configuration before, exhausted)
    stack: list[tuple[int, int, int, int, int, State, bool]] = []
    best = _Found(-1, 0, None, ())
    steps = 0
    fresh = True  # a configuration just entered: look for an operation to place at once
    entry = head
    while True:
        steps += 1
        if steps & _CLOCK_EVERY == 0 and deadline is not None and time.monotonic() > deadline:
            raise _TimedOut
        chosen = -1
        exhausted = False  # once `chosen` is tried, this configuration has no other choice
        after = state
        if fresh:
            fresh = False
            scan = nxt[head]
            while is_call[scan]:
                index = event_op[scan]
                if index < definite:
                    kind = kinds[index]
                    if kind == _GET:
                        hit = state == first[index]
                    elif kind == _CAS_FALSE:
                        hit = state != first[index]
                    else:
                        # A write of the value in place is no no-op: moved later, it would
                        # overwrite whatever came in between.
                        hit = False
                    if hit:
                        chosen, entry, exhausted = index, scan, True
                        break
                scan = nxt[scan]
            if chosen < 0:
                entry = nxt[head]
                continue
        elif is_call[entry]:
            index = event_op[entry]
            kind = kinds[index]
            if kind == _GET:
                accepted = state == first[index]
            elif kind == _SET:
                accepted = True
                after = second[index]
            elif kind == _CAS:
                accepted = state == first[index]
                after = second[index]
            else:
                accepted = state != first[index]
            if not accepted or (after == state and index >= definite):
                entry = nxt[entry]
                continue
            chosen = index
        elif entry == tail:
            return None  # unreachable while definite operations remain; kept for safety
        else:
            placed = definite - remaining
            if placed > best.placed:
                prefix = tuple(event_op[frame[0]] for frame in stack[-_PREFIX_SHOWN:] if frame[0])
                best = _Found(placed, event_op[entry], state, prefix)
            if blind < blind_total and blind_call[blind] < entry and state != _UNSEEN:
                chosen, entry, exhausted, after = blind_base + blind, 0, True, _UNSEEN

        if chosen >= 0:
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
            configuration = (new_low, new_window, new_maybe, new_blind, after)
            if configuration not in cache:
                cache.add(configuration)
                stack.append((entry, low, window, maybe, blind, state, exhausted))
                low, window, maybe, blind, state = configuration
                if entry:
                    if chosen < definite:
                        remaining -= 1
                        if remaining == 0:
                            return None
                    before, behind = prv[entry], nxt[entry]
                    nxt[before] = behind
                    prv[behind] = before
                    answer = partner[entry]
                    if answer:
                        before, behind = prv[answer], nxt[answer]
                        nxt[before] = behind
                        prv[behind] = before
                fresh = True
                continue
            if not exhausted:
                entry = nxt[entry]
                continue

        # This configuration has nothing left to try: back to the last one that has.
        while True:
            if not stack:
                return best
            entry, low, window, maybe, blind, state, exhausted = stack.pop()
            if entry:
                if event_op[entry] < definite:
                    remaining += 1
                answer = partner[entry]
                if answer:
                    nxt[prv[answer]] = answer
                    prv[nxt[answer]] = answer
                nxt[prv[entry]] = entry
                prv[nxt[entry]] = entry
            if not exhausted:
                entry = nxt[entry]
                break


_WRITES_NOTHING = ""  # no compact JSON text is empty, so this never equals a value


def _writes(op: Operation) -> State:
    if op.op == "set" or (op.op == "cas" and (op.outcome != "ok" or op.ok)):
        return encode(op.value)
    return _WRITES_NOTHING


def _unobserved(op: Operation, observed: set[State], refusals: Sequence[Operation]) -> bool:
    """Whether an unknown write can be dropped without changing the verdict.

    Take any valid order that places it. The operation right after it sees its value: a get
    would read it and a cas would compare against it, both excluded by `observed`, and a
    refused cas could owe its refusal to it, excluded by `refusals`. So the next operation is a
    write, or there is none, and the order without it is just as valid. Conversely an unknown
    write is never required. Writers of a value nobody looks at are typical of a partition:
    every timed-out write lands here."""
    return encode(op.value) not in observed and all(
        refusal.ret is not None and refusal.ret < op.call for refusal in refusals
    )


def _hints(ops: Sequence[Operation], searched: Sequence[Operation]) -> tuple[str, ...]:
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
            for other in ops
            if other.op != "get" and encode(other.value) == needed and other is not op
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
    # Definite operations first: unknown writes overlap everything after their call.
    overlapping = [
        op
        for op in searched
        if op is not stuck and op.call <= end and (op.ret is None or op.ret >= stuck.call)
    ]
    overlapping.sort(key=lambda op: (op.outcome != "ok", op.call))
    return KeyFailure(
        key=key,
        searched=len(searched),
        placed=found.placed,
        definite=plan.definite,
        stuck=stuck,
        state=found.state,
        prefix=tuple(searched[index] for index in found.prefix),
        overlapping=tuple(overlapping[:_OVERLAP_SHOWN]),
        more_overlapping=max(0, len(overlapping) - _OVERLAP_SHOWN),
        hints=_hints(key_ops, searched),
    )


def check_history(ops: Sequence[Operation], timeout_s: float | None = 60.0) -> CheckResult:
    """The verdict on a whole history. `timeout_s` None means no limit; past the limit the
    verdict is "unknown", unless an already checked key is not linearizable."""
    began = time.monotonic()
    deadline = None if timeout_s is None else began + timeout_s
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
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
