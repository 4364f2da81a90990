"""The client-history format (docs/testing.md): reading, validating, writing.

Validation is strict on purpose: a history the checker misreads yields a verdict that means
nothing, so anything the format does not define (an unknown field, a float timestamp, an `ok`
`get` without `output`) is refused with its line number instead of being guessed at.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None
OpKind = Literal["get", "set", "cas"]
Outcome = Literal["ok", "unknown", "fail"]

OP_KINDS: tuple[OpKind, ...] = ("get", "set", "cas")
OUTCOMES: tuple[Outcome, ...] = ("ok", "unknown", "fail")
REQUIRED = ("client", "op", "key", "call")
# A get served under a staleness bound (``get --max-staleness``) records it here, in ns; such
# reads are not linearizable by design and are checked by their own pass (staleness.py).
STALENESS = "max_staleness_ns"
FIELDS = frozenset(
    (*REQUIRED, "value", "expected", "output", "ok", "return", "outcome", "meta", STALENESS),
)


class MalformedHistory(Exception):
    """The input is not a history; `line` is 1-based (0 when the operation was built in memory)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `true` is no timestamp and no client id.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Operation:
    """One logical client operation. `None` stands for JSON null, which for a register means
    "absent": the format cannot tell a stored null from a missing key, so neither does the model.
    `ret` is the file's `return` (a keyword in Python)."""

    client: int | str
    op: OpKind
    key: str
    call: int
    ret: int | None = None
    value: Json = None
    expected: Json = None
    output: Json = None
    ok: bool | None = None
    outcome: Outcome = "ok"
    meta: Json = None
    line: int = 0
    max_staleness_ns: int | None = None

    @property
    def stale(self) -> bool:
        return self.max_staleness_ns is not None

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise MalformedHistory(self.line, problem)

    def _problem(self) -> str | None:
        # In-memory callers (the nemesis harness) bypass the parser, so the invariants the
        # search relies on are enforced here rather than only when reading files.
        if not (_is_int(self.client) or isinstance(self.client, str)):
            return "client must be an int or a string"
        if self.op not in OP_KINDS:
            return f"unknown op {self.op!r} (expected get, set or cas)"
        if not isinstance(self.key, str):
            return "key must be a string"
        if self.outcome not in OUTCOMES:
            return f"unknown outcome {self.outcome!r} (expected ok, unknown or fail)"
        if not _is_int(self.call):
            return "call must be an integer (ns)"
        if self.ret is not None:
            if not _is_int(self.ret):
                return "return must be an integer (ns)"
            if self.ret < self.call:
                return f"return {self.ret} is before call {self.call}"
        elif self.outcome != "unknown":
            return f"an operation with outcome {self.outcome!r} needs a return time"
        if self.op == "cas" and self.outcome == "ok" and not isinstance(self.ok, bool):
            return "a completed cas needs a boolean ok"
        if self.ok is not None and not isinstance(self.ok, bool):
            return "ok must be a boolean"
        if self.max_staleness_ns is not None:
            if self.op != "get":
                return f"{STALENESS} belongs on a get only"
            if not _is_int(self.max_staleness_ns) or self.max_staleness_ns < 0:
                return f"{STALENESS} must be a non-negative integer (ns)"
        return None

    def describe(self) -> str:
        """One line a person can match against the history file when hunting a violation."""
        if self.op == "get":
            what = f"get -> {show(self.output)}" if self.outcome == "ok" else "get"
        elif self.op == "set":
            what = f"set {show(self.value)}"
        else:
            what = f"cas {show(self.expected)} -> {show(self.value)}"
            if self.outcome == "ok":
                what += f" ok={'true' if self.ok else 'false'}"
        end = "inf" if self.ret is None or self.outcome == "unknown" else str(self.ret)
        where = f" (line {self.line})" if self.line else ""
        outcome = "" if self.outcome == "ok" else f" {self.outcome}"
        return f"client {show(self.client)} {what}{outcome} [{self.call}, {end}]{where}"


def show(value: Json) -> str:
    return "absent" if value is None else compact(value)


def compact(value: Json) -> str:
    """The comparison form the format prescribes: 1 and "1" differ, key order does not matter."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _reject_constant(name: str) -> Json:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} overflows a double")
    return number


def _unique_keys(pairs: list[tuple[str, Json]]) -> dict[str, Json]:
    # json.loads would silently keep the last of two "output" fields: a recorder bug to report.
    result: dict[str, Json] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate field {name!r}")
        result[name] = value
    return result


def parse_line(text: str, line: int) -> Operation | None:
    """None for comments and blank lines, so that the caller keeps counting lines as the file
    does: the line number is what a person looks up when a history is refused."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    try:
        raw = json.loads(
            stripped,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise MalformedHistory(line, f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedHistory(line, "expected a JSON object")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise MalformedHistory(line, f"unknown field {unknown[0]!r} (free data goes in meta)")
    for name in REQUIRED:
        if name not in raw:
            raise MalformedHistory(line, f"missing required field {name!r}")
    op, outcome = raw["op"], raw.get("outcome", "ok")
    if op not in OP_KINDS:
        raise MalformedHistory(line, f"unknown op {op!r} (expected get, set or cas)")
    if outcome not in OUTCOMES:
        raise MalformedHistory(line, f"unknown outcome {outcome!r} (expected ok, unknown or fail)")
    if op in ("set", "cas") and "value" not in raw:
        raise MalformedHistory(line, f"a {op} needs a value")
    if op == "cas" and "expected" not in raw:
        # Absent and null differ in the file; guessing "null" could invent a violation.
        raise MalformedHistory(line, 'a cas needs expected (null: "the key must be absent")')
    if op == "get" and outcome == "ok" and "output" not in raw:
        raise MalformedHistory(line, "a completed get needs an output (null: the key was absent)")
    if "return" not in raw and outcome != "unknown":
        raise MalformedHistory(line, "missing return (required unless outcome is unknown)")
    ret = raw.get("return")
    if ret is None and "return" in raw:
        raise MalformedHistory(line, "return must be an integer (ns); omit it if unknown")
    if STALENESS in raw and raw[STALENESS] is None:
        raise MalformedHistory(line, f"{STALENESS} must be an integer (ns); omit it if unbounded")
    ok = raw.get("ok")
    if "ok" in raw and not isinstance(ok, bool):
        raise MalformedHistory(line, "ok must be a boolean")
    client, key, call = raw["client"], raw["key"], raw["call"]
    if not (_is_int(client) or isinstance(client, str)):
        raise MalformedHistory(line, "client must be an int or a string")
    if not isinstance(key, str):
        raise MalformedHistory(line, "key must be a string")
    if not _is_int(call):
        raise MalformedHistory(line, "call must be an integer (ns)")
    if ret is not None and not _is_int(ret):
        raise MalformedHistory(line, "return must be an integer (ns)")
    return Operation(
        client=client,
        op=op,
        key=key,
        call=call,
        ret=ret,
        value=raw.get("value"),
        expected=raw.get("expected"),
        output=raw.get("output"),
        ok=ok,
        outcome=outcome,
        meta=raw.get("meta"),
        line=line,
        max_staleness_ns=raw.get(STALENESS),
    )


def parse_history(lines: Iterable[str | bytes]) -> list[Operation]:
    ops: list[Operation] = []
    for number, text in enumerate(lines, start=1):
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedHistory(number, f"not UTF-8: {exc.reason}") from None
        operation = parse_line(text, number)
        if operation is not None:
            ops.append(operation)
    return ops


def load_history(path: str | Path) -> list[Operation]:
    """Stdin for "-", so that a recorder can pipe straight in. An unreadable file raises
    OSError, not MalformedHistory: there is no line to blame."""
    if str(path) == "-":
        return parse_history(sys.stdin.buffer)
    with open(path, "rb") as handle:
        return parse_history(handle)


def to_json(op: Operation) -> dict[str, Json]:
    """Fields that do not apply are left out, not written as null: in this format a null
    `output` or `expected` means "absent", so a stray one would say something."""
    raw: dict[str, Json] = {"client": op.client, "op": op.op, "key": op.key}
    if op.op in ("set", "cas"):
        if op.op == "cas":
            raw["expected"] = op.expected
        raw["value"] = op.value
    if op.op == "get" and op.outcome == "ok":
        raw["output"] = op.output
    if op.ok is not None:
        raw["ok"] = op.ok
    raw["call"] = op.call
    if op.ret is not None:
        raw["return"] = op.ret
    if op.outcome != "ok":
        raw["outcome"] = op.outcome
    if op.max_staleness_ns is not None:
        raw[STALENESS] = op.max_staleness_ns
    if op.meta is not None:
        raw["meta"] = op.meta
    return raw


def dump_history(ops: Sequence[Operation], header: Sequence[str] = ()) -> str:
    comments = "".join(f"# {text}\n" for text in header)
    # Not compact(): field order is kept so the lines read like the hand-made samples.
    lines = (json.dumps(to_json(op), separators=(",", ":"), ensure_ascii=False) for op in ops)
    return comments + "".join(line + "\n" for line in lines)
