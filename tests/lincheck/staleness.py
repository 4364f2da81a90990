"""The staleness pass: each bounded-staleness read returned a value the register held at
some instant within [call - bound, return].

Stale reads (``get`` with ``max_staleness_ns``) are not linearizable by design, so the
linearizability search leaves them out and this pass checks the promise they do make.
The rule, per key, for an ok stale read r with bound b and window [r.call - b, r.ret]:

* the value None (absent) is acceptable unless some write definitely completed before
  the window opened (``w.return < r.call - b``): registers start absent and no operation
  here removes a key;
* a value v is acceptable if some write w of v (a set, or a cas that succeeded, whether
  its outcome is ok or unknown) was called before the window closed (``w.call <=
  r.return``) and was not definitely overwritten before the window opened: there is no
  write w2 that completed ok, started after w returned, and returned before
  ``r.call - b`` (``w.return < w2.call`` and ``w2.return < r.call - b``). A write whose
  outcome is unknown has no return, so it is never known to be overwritten.

This is sound (a value it refuses cannot have been current anywhere in the window, since
w2 certainly took effect after w and before the window) and conservative: it does not
use the linearization the other pass found, so a read that is wrong only under every
linearization of the writes may pass. Failed writes never wrote; a cas that did not swap
wrote nothing.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from tests.lincheck.history import Json, Operation, compact


@dataclass(frozen=True, slots=True)
class StalenessResult:
    verified: int  # ok stale reads whose value was current within their window
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self) -> list[str]:
        if self.ok:
            return [f"staleness: {self.verified} stale reads within their bound"]
        lines = [f"staleness: {len(self.violations)} stale reads beyond their bound"]
        lines.extend(f"  {violation}" for violation in self.violations[:10])
        return lines


def _wrote(op: Operation) -> bool:
    """Could ``op`` have changed the register (taken effect)?"""
    if op.op == "set":
        return op.outcome != "fail"
    if op.op == "cas":
        return op.outcome == "unknown" or (op.outcome == "ok" and op.ok is True)
    return False


def _key(value: Json) -> str:
    return compact(value)


class _KeyWrites:
    def __init__(self, writes: Sequence[Operation]) -> None:
        self.by_value: dict[str, list[Operation]] = defaultdict(list)
        for write in writes:
            self.by_value[_key(write.value)].append(write)
        definite = sorted(
            (w for w in writes if w.outcome == "ok" and w.ret is not None), key=lambda w: w.call
        )
        self._calls = [w.call for w in definite]
        # _suffix_min_ret[i]: the earliest return among definite writes called at or after
        # the i-th smallest call.
        self._suffix_min_ret = [math.inf] * (len(definite) + 1)
        for i in range(len(definite) - 1, -1, -1):
            ret = definite[i].ret
            assert ret is not None
            self._suffix_min_ret[i] = min(ret, self._suffix_min_ret[i + 1])
        self.first_return = self._suffix_min_ret[0]

    def overwritten_before(self, write: Operation, instant: int) -> bool:
        """Did some ok write start after ``write`` returned and return before ``instant``?"""
        if write.ret is None or write.outcome == "unknown":
            return False
        start = bisect.bisect_right(self._calls, write.ret)
        return self._suffix_min_ret[start] < instant


def check_staleness(ops: Sequence[Operation]) -> StalenessResult:
    writes: dict[str, list[Operation]] = defaultdict(list)
    reads: list[Operation] = []
    for op in ops:
        if _wrote(op):
            writes[op.key].append(op)
        elif op.stale and op.op == "get" and op.outcome == "ok":
            reads.append(op)
    tables = {key: _KeyWrites(key_writes) for key, key_writes in writes.items()}
    empty = _KeyWrites(())
    violations: list[str] = []
    for read in reads:
        assert read.max_staleness_ns is not None and read.ret is not None
        opens = read.call - read.max_staleness_ns
        table = tables.get(read.key, empty)
        if read.output is None:
            fine = not table.first_return < opens
        else:
            fine = any(
                w.call <= read.ret and not table.overwritten_before(w, opens)
                for w in table.by_value.get(_key(read.output), ())
            )
        if not fine:
            violations.append(
                f"{read.describe()} within {read.max_staleness_ns} ns: that value was not "
                f"current at any instant of [{opens}, {read.ret}]"
            )
    return StalenessResult(len(reads) - len(violations), tuple(violations))
