"""The revision checker on small histories, right and wrong."""

from __future__ import annotations

from typing import Any

from tests.lincheck.revisions import check_revisions


def w(value: str, revision: int, call: int, ret: int) -> dict[str, Any]:
    return {"op": "set", "key": "k", "value": value, "meta": {"revision": revision},
            "call": call, "return": ret}  # fmt: skip


def r(output: str | None, mod_revision: int) -> dict[str, Any]:
    return {"op": "get", "key": "k", "output": output, "meta": {"mod_revision": mod_revision},
            "call": 0, "return": 1}  # fmt: skip


def test_reads_that_report_the_revision_of_their_write_are_right() -> None:
    assert (
        check_revisions([w("a", 3, 0, 10), w("b", 7, 5, 12), r("a", 3), r("b", 7), r(None, 0)])
        == []
    )


def test_a_read_that_reports_another_revision_is_caught() -> None:
    problems = check_revisions([w("a", 3, 0, 10), r("a", 4), r(None, 3)])
    assert len(problems) == 2 and "written at revision 3" in problems[0]


def test_revisions_must_grow_with_real_time() -> None:
    assert check_revisions([w("a", 9, 0, 10), w("b", 5, 20, 30)])  # b began after a ended
    assert check_revisions([w("a", 9, 0, 10), w("b", 5, 5, 30)]) == []  # concurrent: either order
