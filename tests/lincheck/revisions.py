"""Revisions checked against a history: every revision a read reports is the one its value
was written at, and revisions grow with real time.

Linearizability (tests/lincheck) says values are right; this says the revisions beside
them are. The history's writes carry the revision the store gave them (``"revision"`` in
their ``meta``, on a set or a swapping cas that returned), its reads the mod revision of
what they read (``"mod_revision"`` in ``meta``, 0 for an absent key). Since every written
value is unique:

1. a read of value v reports the revision v's write was given;
2. a read of an absent key reports 0;
3. a write that returned before another was called has the smaller revision (a revision
   is a position in the one order every member applies).
"""

from __future__ import annotations

import bisect
from typing import Any

__all__ = ["check_revisions"]


def check_revisions(ops: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    written: dict[Any, int] = {}
    writes: list[tuple[int, int, int, Any]] = []  # (return, call, revision, value)
    for op in ops:
        revision = (op.get("meta") or {}).get("revision")
        if op.get("op") in ("set", "cas") and revision is not None and "return" in op:
            written[op["value"]] = revision
            writes.append((op["return"], op["call"], revision, op["value"]))
    for op in ops:
        reported = (op.get("meta") or {}).get("mod_revision")
        if op.get("op") != "get" or reported is None:
            continue
        output = op.get("output")
        if output is None:
            if reported != 0:
                problems.append(f"{op['key']} read absent with mod revision {reported}")
        elif output in written and written[output] != reported:
            problems.append(
                f"{op['key']} read {output!r} at mod revision {reported}, but that value "
                f"was written at revision {written[output]}"
            )
    writes.sort()
    returns = [w[0] for w in writes]
    highest_before: list[int] = []  # the largest revision among writes[:i+1]
    for _, _, revision, _ in writes:
        highest_before.append(max(revision, highest_before[-1] if highest_before else 0))
    for _, call, revision, value in writes:
        done_before = bisect.bisect_left(returns, call)  # writes that returned before call
        if done_before and highest_before[done_before - 1] >= revision:
            problems.append(
                f"the write of {value!r} got revision {revision}, not above "
                f"{highest_before[done_before - 1]} of a write that had already returned"
            )
    return problems
