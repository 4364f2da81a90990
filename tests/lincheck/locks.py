"""A lock checker: from a history of lock users, did fencing tokens keep the resource safe?

A lock built on leases cannot stop a paused holder from acting after its lease expired
(Kleppmann, "How to do distributed locking"): two holders of the same lock can overlap in
real time, and that alone is not a bug. What must hold is what fencing tokens promise:

1. **Tokens grow.** Each acquisition of a lock has its own token, and an acquisition that
   finished before another began has the smaller token.
2. **The resource saw holders in token order.** Writes the protected resource accepted carry
   tokens that never go down in real time (a write that returned before another was called
   has a token no larger), and a write it refused carried a token smaller than one it had
   already accepted (or was accepting at the same time).
3. **Overlaps were fenced.** When holders overlapped, every write by the older holder made
   after the resource accepted one from the newer holder was refused: the writes a fenced
   store rejects. (Before the newer holder's first write the resource cannot know, and the
   older holder's write is the last it takes from it.)

History lines (JSON, one per operation, times in ns of one monotonic clock)::

    {"client": "c1", "op": "acquire", "lock": "L", "token": 41, "call": ..., "return": ...}
    {"client": "c1", "op": "write", "lock": "L", "token": 41, "accepted": true, ...}
    (``"accepted": null`` when the writer never learned the verdict)
    {"client": "c1", "op": "release", "lock": "L", "token": 41, "call": ..., "return": ...}

Overlaps are counted, not reported as problems: the nemesis pauses holders on purpose and
must see overlaps happen to show the tokens catching them.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LockCheck", "check_locks", "main"]


@dataclass(frozen=True, slots=True)
class _Op:
    client: str
    op: str
    lock: str
    token: int
    call: int
    ret: int
    accepted: bool | None = False  # None: unknown (a timeout)


@dataclass(slots=True)
class LockCheck:
    problems: list[str] = field(default_factory=list)
    acquisitions: int = 0
    overlaps: int = 0  # holds that a newer holder of the same lock overlapped in real time
    fenced: int = 0  # writes refused for an old token

    @property
    def ok(self) -> bool:
        return not self.problems


def _parse(row: dict[str, Any]) -> _Op:
    return _Op(
        str(row["client"]),
        str(row["op"]),
        str(row["lock"]),
        int(row["token"]),
        int(row["call"]),
        int(row["return"]),
        None if row.get("accepted") is None else bool(row["accepted"]),
    )


def check_locks(rows: list[dict[str, Any]]) -> LockCheck:
    result = LockCheck()
    by_lock: dict[str, list[_Op]] = defaultdict(list)
    for row in rows:
        op = _parse(row)
        by_lock[op.lock].append(op)
    for lock, ops in sorted(by_lock.items()):
        _check_lock(lock, ops, result)
    return result


def _check_lock(lock: str, ops: list[_Op], result: LockCheck) -> None:
    acquired = sorted((o for o in ops if o.op == "acquire"), key=lambda o: o.ret)
    released = {o.token: o for o in ops if o.op == "release"}
    writes = sorted((o for o in ops if o.op == "write"), key=lambda o: o.call)
    result.acquisitions += len(acquired)
    seen: dict[int, _Op] = {}
    for op in acquired:
        if op.token in seen:
            result.problems.append(
                f"{lock}: token {op.token} given to {seen[op.token].client} and {op.client}"
            )
        seen[op.token] = op
    for earlier in acquired:
        for later in acquired:
            if earlier.ret < later.call and earlier.token >= later.token:
                result.problems.append(
                    f"{lock}: {later.client} acquired after {earlier.client} had, with a "
                    f"token {later.token} not larger than {earlier.token}"
                )
    # Real-time holds: from acquiring until the holder let go (or forever, if it never did).
    holds = [(a, released[a.token].call if a.token in released else None) for a in acquired]
    for i, (older, older_end) in enumerate(holds):
        overlapped = False
        for newer, _ in holds[i + 1 :]:
            if newer.token > older.token and (older_end is None or older_end > newer.ret):
                overlapped = True
                newer_taken = min(
                    (w.ret for w in writes if w.token == newer.token and w.accepted is True),
                    default=None,
                )
                late = [
                    w
                    for w in writes
                    if w.token == older.token
                    and newer_taken is not None
                    and w.call > newer_taken
                    and w.accepted is True
                ]
                for write in late:
                    result.problems.append(
                        f"{lock}: {write.client}'s write with token {older.token} was accepted "
                        f"after {newer.client}'s with token {newer.token}"
                    )
        result.overlaps += overlapped
    accepted = [w for w in writes if w.accepted is True]
    maybe = [w for w in writes if w.accepted is not False]  # may justify a refusal
    for before in accepted:
        for after in accepted:
            if before.ret < after.call and before.token > after.token:
                result.problems.append(
                    f"{lock}: the resource accepted token {after.token} after token "
                    f"{before.token}: its writes went back in token order"
                )
    for write in writes:
        if write.accepted is not False:
            continue
        if any(a.token > write.token and a.call < write.ret for a in maybe):
            result.fenced += 1
        else:
            result.problems.append(
                f"{lock}: a write with token {write.token} was refused though no larger "
                "token had been accepted"
            )


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.lincheck.locks HISTORY.jsonl``: prints the verdict, exits 1 on a
    problem."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.lincheck.locks HISTORY.jsonl", file=sys.stderr)
        return 2
    lines = Path(args[0]).read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    result = check_locks([r for r in rows if r.get("op") in ("acquire", "release", "write")])
    print(
        f"locks: {'safe' if result.ok else 'UNSAFE'}: {result.acquisitions} acquisitions, "
        f"{result.overlaps} overlapping holds, {result.fenced} writes fenced off"
    )
    for problem in result.problems[:20]:
        print(f"  {problem}")
    return 0 if result.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
