"""The checker against hand-made cases, a brute-force oracle, and the clock (the sample
histories are test_samples.py's).

A linearizability checker that says "linearizable" too easily hides every bug the nemesis runs
are meant to find, and one that says "not linearizable" too easily is soon ignored, so both
directions are pinned: by hand for the classic anomalies, and at random against an oracle too
slow for real histories but simple enough to trust.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lincheck import (
    CheckResult,
    MalformedHistory,
    Operation,
    check_history,
    dump_history,
    load_history,
    parse_history,
)
from tests.lincheck.__main__ import main
from tests.lincheck.checker import encode
from tests.lincheck.generate import linearizable_history
from tests.lincheck.history import Json, OpKind, Outcome

REPO = Path(__file__).resolve().parents[2]


def history(text: str) -> list[Operation]:
    return parse_history(line for line in text.strip().splitlines())


def verdict(text: str) -> str:
    return check_history(history(text), timeout_s=10).verdict


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.lincheck", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- hand-made cases -------------------------------------------------------------------------

STALE_READ = """
{"client":1,"op":"set","key":"x","value":"old","call":0,"return":10}
{"client":1,"op":"set","key":"x","value":"new","call":20,"return":30}
{"client":2,"op":"get","key":"x","output":"old","call":40,"return":50}
"""

HARD_KEY_SETS = 40


def hard_history(key: str = "h") -> list[Operation]:
    """Exponential for this search: forty concurrent writes nobody reads, then two reads that
    no order of them can explain, which it only learns after trying the 2**38 subsets."""
    ops = [
        Operation(client=n, op="set", key=key, value=f"w{n}", call=0, ret=100)
        for n in range(HARD_KEY_SETS)
    ]
    ops.append(Operation(client=0, op="get", key=key, output="w0", call=200, ret=210))
    ops.append(Operation(client=0, op="get", key=key, output="w1", call=220, ret=230))
    return ops


# (name, history, verdict). Lines are short on purpose: a line of JSON is one operation.
CASES = [
    ("stale read", STALE_READ, "not linearizable"),
    (
        "lost acknowledged write",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":2,"op":"get","key":"x","output":"a","call":20,"return":30}
    {"client":2,"op":"get","key":"x","output":null,"call":40,"return":50}
    """,
        "not linearizable",
    ),
    (
        "double cas success",
        """
    {"client":1,"op":"set","key":"l","value":"f","call":0,"return":10}
    {"client":2,"op":"cas","key":"l","expected":"f","value":"c2","ok":true,"call":20,"return":60}
    {"client":3,"op":"cas","key":"l","expected":"f","value":"c3","ok":true,"call":25,"return":65}
    """,
        "not linearizable",
    ),
    (
        "concurrent cas, one wins",
        """
    {"client":1,"op":"set","key":"l","value":"f","call":0,"return":10}
    {"client":2,"op":"cas","key":"l","expected":"f","value":"c2","ok":false,"call":20,"return":60}
    {"client":3,"op":"cas","key":"l","expected":"f","value":"c3","ok":true,"call":25,"return":65}
    {"client":2,"op":"get","key":"l","output":"c3","call":70,"return":80}
    """,
        "linearizable",
    ),
    (
        "concurrent cas, the loser then swaps from the winner's value",
        """
    {"client":2,"op":"cas","key":"l","expected":null,"value":"c2","ok":true,"call":20,"return":60}
    {"client":3,"op":"cas","key":"l","expected":null,"value":"c3","ok":false,"call":25,"return":65}
    {"client":3,"op":"cas","key":"l","expected":"c2","value":"c3","ok":true,"call":70,"return":75}
    """,
        "linearizable",
    ),
    (
        "duplicate reapplied",
        """
    {"client":1,"op":"set","key":"x","value":"1","call":0,"return":10}
    {"client":2,"op":"set","key":"x","value":"2","call":20,"return":30}
    {"client":3,"op":"get","key":"x","output":"2","call":40,"return":50}
    {"client":3,"op":"get","key":"x","output":"1","call":60,"return":70}
    """,
        "not linearizable",
    ),
    (
        "unknown write visible late",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":2,"op":"set","key":"x","value":"b","call":20,"outcome":"unknown"}
    {"client":3,"op":"get","key":"x","output":"a","call":6000,"return":6010}
    {"client":3,"op":"get","key":"x","output":"b","call":7000,"return":7010}
    """,
        "linearizable",
    ),
    (
        "unknown write that never happened",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":2,"op":"set","key":"x","value":"b","call":20,"return":30,"outcome":"unknown"}
    {"client":3,"op":"get","key":"x","output":"a","call":40,"return":50}
    """,
        "linearizable",
    ),
    (
        "unknown write visible before its call",
        """
    {"client":1,"op":"get","key":"x","output":"b","call":0,"return":10}
    {"client":2,"op":"set","key":"x","value":"b","call":20,"outcome":"unknown"}
    """,
        "not linearizable",
    ),
    (
        "failed write visible",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":2,"op":"set","key":"x","value":"b","call":20,"return":30,"outcome":"fail"}
    {"client":3,"op":"get","key":"x","output":"b","call":40,"return":50}
    """,
        "not linearizable",
    ),
    (
        "an unknown get tells nothing",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":3,"op":"get","key":"x","output":"zzz","call":40,"return":50,"outcome":"unknown"}
    """,
        "linearizable",
    ),
    (
        "an unknown cas takes effect only if its comparison holds",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":2,"op":"cas","key":"x","expected":"z","value":"b","call":20,"outcome":"unknown"}
    {"client":3,"op":"get","key":"x","output":"b","call":40,"return":50}
    """,
        "not linearizable",
    ),
    (
        "a refusal explained by an unknown write nobody read",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":2,"op":"set","key":"x","value":"b","call":20,"outcome":"unknown"}
    {"client":3,"op":"cas","key":"x","expected":"a","value":"c","ok":false,"call":30,"return":40}
    {"client":1,"op":"set","key":"x","value":"d","call":50,"return":60}
    {"client":3,"op":"get","key":"x","output":"d","call":70,"return":80}
    """,
        "linearizable",
    ),
    (
        "a refusal nothing explains",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":3,"op":"cas","key":"x","expected":"a","value":"c","ok":false,"call":30,"return":40}
    {"client":1,"op":"set","key":"x","value":"d","call":50,"return":60}
    """,
        "not linearizable",
    ),
    (
        "values compare as JSON text: 1 is not '1'",
        """
    {"client":1,"op":"set","key":"x","value":1,"call":0,"return":10}
    {"client":2,"op":"get","key":"x","output":"1","call":20,"return":30}
    """,
        "not linearizable",
    ),
    (
        "objects compare whatever their key order",
        """
    {"client":1,"op":"set","key":"x","value":{"a":1,"b":[2]},"call":0,"return":10}
    {"client":2,"op":"get","key":"x","output":{"b":[2],"a":1},"call":20,"return":30}
    """,
        "linearizable",
    ),
    (
        "a written null reads as absent",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":1,"op":"set","key":"x","value":null,"call":20,"return":30}
    {"client":2,"op":"cas","key":"x","expected":null,"value":"b","ok":true,"call":40,"return":50}
    """,
        "linearizable",
    ),
    (
        "keys are independent registers",
        """
    {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
    {"client":2,"op":"get","key":"y","output":null,"call":20,"return":30}
    {"client":2,"op":"get","key":"x","output":"a","call":40,"return":50}
    """,
        "linearizable",
    ),
    (
        "equal timestamps are concurrent: a return at t, a call at t",
        """
    {"client":1,"op":"set","key":"x","value":"old","call":0,"return":10}
    {"client":1,"op":"set","key":"x","value":"new","call":20,"return":30}
    {"client":2,"op":"get","key":"x","output":"old","call":30,"return":50}
    """,
        "linearizable",
    ),
    (
        "one nanosecond apart they are ordered",
        """
    {"client":1,"op":"set","key":"x","value":"old","call":0,"return":10}
    {"client":1,"op":"set","key":"x","value":"new","call":20,"return":30}
    {"client":2,"op":"get","key":"x","output":"old","call":31,"return":50}
    """,
        "not linearizable",
    ),
    ("an empty history", "# nothing happened", "linearizable"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [pytest.param(text, verdict, id=name) for name, text, verdict in CASES]
)
def test_hand_made_case(text: str, expected: str) -> None:
    assert verdict(text) == expected


def test_a_violation_names_the_key_and_the_operations() -> None:
    result = check_history(history(STALE_READ), timeout_s=10)
    assert result.failed_keys == ("x",)
    report = "\n".join(result.report())
    assert report.splitlines()[0] == "not linearizable"
    assert 'key "x"' in report
    # The write of "new" cannot go anywhere: the read of "old" after it still needs "old".
    assert 'cannot place: client 1 set "new" [20, 30] (line 2)' in report
    assert 'register after the prefix: "old"' in report
    assert 'yet client 2 get -> "old" [40, 50] (line 3) still needs it' in report
    assert "checked 3 of 3 operations on 1 of 1 keys" in report


def test_a_read_of_a_failed_write_is_pointed_at() -> None:
    result = check_history(
        history("""
        {"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}
        {"client":2,"op":"set","key":"x","value":"b","call":20,"return":30,"outcome":"fail"}
        {"client":3,"op":"get","key":"x","output":"b","call":40,"return":50}
        """),
        timeout_s=10,
    )
    (failure,) = result.failures
    assert any('written only by client 2 set "b" fail' in hint for hint in failure.hints)


def test_every_failing_key_is_named() -> None:
    ops = history(STALE_READ)
    ops += [dataclasses.replace(op, key="y") for op in ops]
    ops += history('{"client":9,"op":"set","key":"z","value":1,"call":0,"return":1}')
    result = check_history(ops, timeout_s=10)
    assert result.verdict == "not linearizable"
    assert result.failed_keys == ("x", "y")
    assert (result.keys, result.keys_checked) == (3, 3)


# --- a brute-force oracle --------------------------------------------------------------------


def oracle(ops: Sequence[Operation]) -> bool:
    """Every order of every subset of unknown writes, with real semantics for an unknown cas;
    memoized on (placed, value) only, which is safe because nothing else affects the future."""
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        if op.outcome == "ok" or (op.outcome == "unknown" and op.op != "get"):
            by_key.setdefault(op.key, []).append(op)
    return all(_oracle_key(key_ops) for key_ops in by_key.values())


def _oracle_key(ops: list[Operation]) -> bool:
    ends = [op.ret if op.outcome == "ok" and op.ret is not None else None for op in ops]
    required = sum(1 << index for index, op in enumerate(ops) if op.outcome == "ok")
    seen: set[tuple[int, str | None]] = set()

    def extend(placed: int, value: str | None) -> bool:
        if placed & required == required:
            return True
        if (placed, value) in seen:
            return False
        seen.add((placed, value))
        pending = [index for index in range(len(ops)) if not placed >> index & 1]
        for index in pending:
            op = ops[index]
            if any(
                (end := ends[other]) is not None and end < op.call
                for other in pending
                if other != index
            ):
                continue  # something still pending returned before this was called
            if op.op == "get":
                if encode(op.output) != value:
                    continue
                after = value
            elif op.op == "set":
                after = encode(op.value)
            else:
                matches = encode(op.expected) == value
                if op.outcome == "ok" and matches != op.ok:
                    continue
                after = encode(op.value) if matches else value
            if extend(placed | 1 << index, after):
                return True
        return False

    return extend(0, None)


POOL: list[Json] = ["a", "b", 1, "1", None]
# Drawn from, so weighted by repetition: mostly definite answers, a fair share of doubt.
OUTCOME_DRAWS: list[Outcome] = ["ok", "ok", "ok", "unknown", "unknown", "fail"]
OP_DRAWS: list[OpKind] = ["get", "set", "cas"]


@dataclasses.dataclass
class Draft:
    client: int
    op: OpKind
    key: str
    call: int
    ret: int
    outcome: Outcome
    point: int
    applies: bool
    value: Json
    expected: Json
    output: Json
    ok: bool

    def build(self) -> Operation:
        return Operation(
            client=self.client,
            op=self.op,
            key=self.key,
            call=self.call,
            ret=None if self.outcome == "unknown" else self.ret,
            value=self.value if self.op != "get" else None,
            expected=self.expected if self.op == "cas" else None,
            output=self.output if self.op == "get" else None,
            ok=self.ok if self.op == "cas" and self.outcome == "ok" else None,
            outcome=self.outcome,
        )


def simulate(drafts: list[Draft], choose_expected: list[bool]) -> None:
    """Answers from a real register, applied in the order of the drawn points: linearizable
    by construction, unless the drafts are mutated afterwards."""
    registers: dict[str, Json] = {}
    order = sorted(range(len(drafts)), key=lambda index: (drafts[index].point, index))
    for index in order:
        draft = drafts[index]
        if not draft.applies:
            continue
        current = registers.get(draft.key)
        if draft.op == "get":
            draft.output = current
        elif draft.op == "set":
            registers[draft.key] = draft.value
        else:
            if choose_expected[index]:
                draft.expected = current
            draft.ok = encode(draft.expected) == encode(current)
            if draft.ok:
                registers[draft.key] = draft.value


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    count = draw(st.integers(1, 8))
    drafts: list[Draft] = []
    for client in range(count):
        call = draw(st.integers(0, 20))
        ret = call + draw(st.integers(0, 10))
        outcome = draw(st.sampled_from(OUTCOME_DRAWS))
        point = draw(st.integers(call, ret + (15 if outcome == "unknown" else 0)))
        drafts.append(
            Draft(
                client=client,
                op=draw(st.sampled_from(OP_DRAWS)),
                key=draw(st.sampled_from(["x", "x", "x", "y"])),
                call=call,
                ret=ret,
                outcome=outcome,
                point=point,
                applies=outcome == "ok" or (outcome == "unknown" and draw(st.booleans())),
                value=draw(st.sampled_from([*POOL, f"v{client}"])),
                expected=draw(st.sampled_from(POOL)),
                output=draw(st.sampled_from(POOL)),
                ok=draw(st.booleans()),
            )
        )
    if draw(st.booleans()):
        simulate(drafts, [draw(st.booleans()) for _ in drafts])
    return [draft.build() for draft in drafts]


@settings(
    max_examples=600,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(small_histories())
def test_agrees_with_the_oracle_on_small_histories(ops: list[Operation]) -> None:
    expected = "linearizable" if oracle(ops) else "not linearizable"
    assert check_history(ops, timeout_s=10).verdict == expected, dump_history(ops)


def random_history(rng: random.Random) -> list[Operation]:
    """Like small_histories, with unique written values and more unknown writes and refusals:
    where the search's shortcuts (values nobody reads, interchangeable unknown writes) fire."""
    drafts: list[Draft] = []
    for client in range(rng.randint(2, 11)):
        call = rng.randrange(30)
        ret = call + rng.randrange(12)
        outcome = rng.choice(OUTCOME_DRAWS)
        op = rng.choice([*OP_DRAWS, "cas"])
        drafts.append(
            Draft(
                client=client,
                op=op,
                key="x",
                call=call,
                ret=ret,
                outcome=outcome,
                point=rng.randint(call, ret + (20 if outcome == "unknown" else 0)),
                applies=outcome == "ok" or (outcome == "unknown" and rng.random() < 0.5),
                value=f"v{client}",
                expected=rng.choice([None, *(f"v{n}" for n in range(client))]),
                output=None,
                ok=False,
            )
        )
    simulate(drafts, [rng.random() < 0.6 for _ in drafts])
    if rng.random() < 0.8:  # a mutation, often making it not linearizable
        victim = rng.choice(drafts)
        if victim.op == "get":
            victim.output = rng.choice([None, *(draft.value for draft in drafts)])
        elif victim.op == "cas":
            victim.ok = not victim.ok
        else:
            victim.call, victim.ret = victim.call + 15, victim.ret + 15
    return [draft.build() for draft in drafts]


def test_agrees_with_the_oracle_on_random_histories() -> None:
    rng = random.Random(20240601)
    verdicts = {"linearizable": 0, "not linearizable": 0}
    for _ in range(6000):
        ops = random_history(rng)
        expected = "linearizable" if oracle(ops) else "not linearizable"
        got = check_history(ops, timeout_s=10).verdict
        assert got == expected, dump_history(ops)
        verdicts[got] += 1
    # Both answers must be well represented, or the comparison proves little.
    assert min(verdicts.values()) > 1000, verdicts


@pytest.mark.parametrize(
    ("keys", "clients", "unknown_rate", "fail_rate"),
    [(1, 2, 0.01, 0.01), (1, 16, 0.1, 0.01), (3, 6, 0.3, 0.1)],
)
def test_simulated_histories_are_linearizable(
    keys: int, clients: int, unknown_rate: float, fail_rate: float
) -> None:
    for seed in range(5):
        ops = linearizable_history(
            2000,
            seed=seed,
            keys=keys,
            clients=clients,
            unknown_rate=unknown_rate,
            fail_rate=fail_rate,
        )
        result = check_history(ops, timeout_s=60)
        assert result.verdict == "linearizable", "\n".join(result.report())


# --- size and time ---------------------------------------------------------------------------

FIFTY_THOUSAND = 50_000


def timed_check(ops: Sequence[Operation]) -> tuple[CheckResult, float]:
    began = time.perf_counter()
    result = check_history(ops, timeout_s=60)
    return result, time.perf_counter() - began


def test_fifty_thousand_operations_in_seconds(tmp_path: Path) -> None:
    ops = linearizable_history(FIFTY_THOUSAND, seed=1)
    path = tmp_path / "history.jsonl"
    path.write_text(dump_history(ops, header=["expect: linearizable"]), encoding="utf-8")
    began = time.perf_counter()
    loaded = load_history(path)
    parsing = time.perf_counter() - began
    assert len(loaded) == FIFTY_THOUSAND
    result, elapsed = timed_check(loaded)
    print(f"\n50,000 operations: parsed in {parsing:.2f} s, checked in {elapsed:.2f} s")
    assert result.verdict == "linearizable", "\n".join(result.report())
    assert result.keys == result.keys_checked == 10
    assert elapsed < 30


def test_one_bad_read_in_fifty_thousand_is_found_and_named() -> None:
    ops = linearizable_history(FIFTY_THOUSAND, seed=2)
    index = next(
        index
        for index in range(FIFTY_THOUSAND // 2, FIFTY_THOUSAND)
        if ops[index].op == "get" and ops[index].outcome == "ok"
    )
    victim = dataclasses.replace(ops[index], output="never-written")
    mutated = [*ops[:index], victim, *ops[index + 1 :]]
    result, elapsed = timed_check(mutated)
    print(f"\n50,000 operations, one bad read: {elapsed:.2f} s")
    assert result.verdict == "not linearizable"
    assert result.failed_keys == (victim.key,)
    report = "\n".join(result.report())
    assert f'key "{victim.key}"' in report
    assert victim.describe() in report  # as the operation that cannot be placed
    assert elapsed < 30


# --- the clock -------------------------------------------------------------------------------


def test_a_timeout_is_never_a_pass() -> None:
    began = time.monotonic()
    result = check_history(hard_history(), timeout_s=0.2)
    assert time.monotonic() - began < 10
    assert result.verdict == "unknown"
    assert result.first_line == "unknown (checker timed out)"
    assert result.exit_code == 2
    assert result.timed_out_key == "h"


def test_a_violation_found_before_the_timeout_still_counts() -> None:
    # Smaller keys are checked first, so the stale read is seen before the hard key stalls.
    result = check_history([*history(STALE_READ), *hard_history()], timeout_s=0.2)
    assert result.verdict == "not linearizable"
    assert result.failed_keys == ("x",)
    assert result.timed_out_key == "h"


# --- the command line ------------------------------------------------------------------------


def test_cli_verdicts_and_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}\n', encoding="utf-8"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(STALE_READ, encoding="utf-8")
    hard = tmp_path / "hard.jsonl"
    hard.write_text(dump_history(hard_history()), encoding="utf-8")

    passed = run_cli(str(good))
    assert (passed.returncode, passed.stdout.splitlines()[0]) == (0, "linearizable")
    failed = run_cli(str(bad))
    assert (failed.returncode, failed.stdout.splitlines()[0]) == (1, "not linearizable")
    assert 'key "x"' in failed.stdout
    stalled = run_cli(str(hard), "--timeout", "0.2")
    assert stalled.stdout.splitlines()[0] == "unknown (checker timed out)"
    assert stalled.returncode == 2


def test_cli_malformed_input_exits_3_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(
        "# expect: linearizable\n"
        '{"client":1,"op":"set","key":"x","value":"a","call":0,"return":10}\n'
        '{"client":1,"op":"get","key":"x","output":"a","call":20,"return":5}\n',
        encoding="utf-8",
    )
    result = run_cli(str(path))
    assert result.returncode == 3
    assert result.stdout.splitlines()[0] == "malformed history: line 3: return 5 is before call 20"


def test_cli_unreadable_file_and_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing.jsonl")]) == 3
    assert capsys.readouterr().out.startswith("malformed history: cannot read ")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing.jsonl"), "--timeout", "-1"])
    assert exit_info.value.code == 64  # not 2, which would read as a timeout


MALFORMED = [
    ("{not json", 1, "not JSON"),
    ("[1, 2]", 1, "expected a JSON object"),
    ('{"op":"get","key":"x","output":null,"call":0,"return":1}', 1, "missing required field"),
    ('{"client":1,"op":"delete","key":"x","call":0,"return":1}', 1, "unknown op 'delete'"),
    (
        '{"client":1,"op":"set","key":"x","value":1,"call":0,"return":1,"outcome":"maybe"}',
        1,
        "unknown outcome 'maybe'",
    ),
    ('{"client":1,"op":"set","key":"x","value":1,"call":9,"return":1}', 1, "before call"),
    ('{"client":1,"op":"set","key":"x","value":1,"call":0}', 1, "missing return"),
    ('{"client":1,"op":"set","key":"x","value":1,"call":"0","return":1}', 1, "call must be"),
    ('{"client":1,"op":"set","key":"x","value":1,"call":0,"return":1.5}', 1, "return must be"),
    ('{"client":1,"op":"set","key":5,"value":1,"call":0,"return":1}', 1, "key must be"),
    ('{"client":true,"op":"set","key":"x","value":1,"call":0,"return":1}', 1, "client must be"),
    ('{"client":1,"op":"set","key":"x","call":0,"return":1}', 1, "needs a value"),
    ('{"client":1,"op":"cas","key":"x","value":1,"ok":true,"call":0,"return":1}', 1, "expected"),
    ('{"client":1,"op":"cas","key":"x","expected":1,"value":2,"call":0,"return":1}', 1, "ok"),
    (
        '{"client":1,"op":"cas","key":"x","expected":1,"value":2,"ok":"y","call":0,"return":1}',
        1,
        "ok",
    ),
    ('{"client":1,"op":"get","key":"x","call":0,"return":1}', 1, "needs an output"),
    (
        '{"client":1,"op":"get","key":"x","output":1,"call":0,"return":1,"extra":1}',
        1,
        "unknown field",
    ),
    ('{"client":1,"op":"get","key":"x","output":NaN,"call":0,"return":1}', 1, "not JSON"),
    ('{"client":1,"op":"get","key":"x","output":1,"output":2,"call":0,"return":1}', 1, "duplicate"),
    ('# a comment\n\n{"client":1,"op":"get","key":"x","call":0,"return":1}', 3, "output"),
]


@pytest.mark.parametrize(("text", "line", "reason"), MALFORMED)
def test_malformed_input_names_its_line(
    text: str, line: int, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(MalformedHistory) as error:
        parse_history(text.splitlines())
    assert error.value.line == line
    assert reason in error.value.reason
    path = tmp_path / "broken.jsonl"
    path.write_text(text + "\n", encoding="utf-8")
    assert main([str(path)]) == 3
    assert capsys.readouterr().out.startswith(f"malformed history: line {line}: ")


def test_operations_built_in_memory_are_validated_too() -> None:
    with pytest.raises(MalformedHistory, match="before call"):
        Operation(client=1, op="get", key="x", output=None, call=10, ret=5)
    with pytest.raises(MalformedHistory, match="needs a return"):
        Operation(client=1, op="set", key="x", value=1, call=10, outcome="fail")


def test_dump_and_parse_round_trip() -> None:
    ops = linearizable_history(500, seed=3, unknown_rate=0.1, fail_rate=0.1)
    again = parse_history(dump_history(ops, header=["expect: linearizable"]).splitlines())
    assert [dataclasses.replace(op, line=0) for op in again] == ops
