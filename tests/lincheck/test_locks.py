"""The lock checker on small stories: sequential holders, the paused holder fenced off,
and each way a history can break the promises of fencing tokens."""

from __future__ import annotations

from typing import Any

from tests.lincheck.locks import check_locks, main


def op(client: str, kind: str, token: int, call: int, ret: int, **extra: Any) -> dict[str, Any]:
    return {"client": client, "op": kind, "lock": "L", "token": token, "call": call,
            "return": ret, **extra}  # fmt: skip


def write(client: str, token: int, call: int, ret: int, accepted: bool | None) -> dict[str, Any]:
    return op(client, "write", token, call, ret, accepted=accepted)


def test_holders_one_after_another_are_safe() -> None:
    history = [
        op("a", "acquire", 5, 0, 10),
        write("a", 5, 11, 12, True),
        op("a", "release", 5, 13, 14),
        op("b", "acquire", 9, 1, 20),  # waited while a held it
        write("b", 9, 21, 22, True),
        op("b", "release", 9, 23, 24),
    ]
    result = check_locks(history)
    assert result.ok and (result.acquisitions, result.overlaps, result.fenced) == (2, 0, 0)


# The GC-pause story: a acquires, pauses past its TTL, b acquires and writes, a wakes and
# writes with its old token.
PAUSED = [
    op("a", "acquire", 5, 0, 10),
    write("a", 5, 11, 12, True),
    op("b", "acquire", 9, 1, 50),  # a's lease expired while it was paused
    write("b", 9, 51, 52, True),
    op("b", "release", 9, 53, 54),
]


def test_a_paused_holder_whose_late_write_is_refused_is_fenced_off() -> None:
    result = check_locks([*PAUSED, write("a", 5, 60, 61, False)])
    assert result.ok, result.problems
    assert (result.overlaps, result.fenced) == (1, 1)


def test_a_paused_holder_whose_late_write_is_accepted_is_unsafe() -> None:
    result = check_locks([*PAUSED, write("a", 5, 60, 61, True)])
    assert not result.ok
    assert any("accepted after b's with token 9" in p for p in result.problems)
    assert any("went back in token order" in p for p in result.problems)


def test_tokens_that_do_not_grow_are_unsafe() -> None:
    result = check_locks([op("a", "acquire", 9, 0, 10), op("b", "acquire", 5, 20, 30)])
    assert any("not larger than 9" in p for p in result.problems)
    result = check_locks([op("a", "acquire", 5, 0, 10), op("b", "acquire", 5, 20, 30)])
    assert any("token 5 given to a and b" in p for p in result.problems)


def test_a_refusal_without_a_larger_token_accepted_is_unsafe() -> None:
    result = check_locks([op("a", "acquire", 5, 0, 10), write("a", 5, 11, 12, False)])
    assert any("no larger token had been accepted" in p for p in result.problems)


def test_a_write_of_unknown_outcome_may_explain_a_refusal_but_orders_nothing() -> None:
    history = [
        op("a", "acquire", 5, 0, 10),
        op("b", "acquire", 9, 1, 50),
        write("b", 9, 51, 70, None),  # timed out: perhaps accepted
        write("a", 5, 60, 61, False),
    ]
    assert check_locks(history).ok


def test_the_command_line_reads_a_history_file(tmp_path: Any, capsys: Any) -> None:
    import json

    path = tmp_path / "history.jsonl"
    lines = [*PAUSED, write("a", 5, 60, 61, False), {"op": "get", "key": "x"}]
    path.write_text("\n".join(json.dumps(row) for row in lines) + "\n")
    assert main([str(path)]) == 0
    assert "locks: safe: 2 acquisitions, 1 overlapping holds, 1 writes fenced off" in (
        capsys.readouterr().out
    )
