"""RaftLog: 1-based indexing from a snapshot offset, as the rest of the core relies on it.

Most tests use a log whose first retained entry is not index 1 (a snapshot at index 10,
term 3), because off-by-one errors at that boundary are what compaction would expose.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.core import Entry, LogCompactedError, RaftLog

SNAP_INDEX = 10
SNAP_TERM = 3
# Terms of indexes 11..17: a run of 3s continuing the snapshot's term, then 4s, then 6s.
TERMS = (3, 3, 4, 4, 4, 6, 6)


def make_log(
    terms: tuple[int, ...] = TERMS, snapshot_index: int = SNAP_INDEX, snapshot_term: int = SNAP_TERM
) -> RaftLog:
    entries = tuple(
        Entry(snapshot_index + 1 + offset, term, f"e{offset}".encode())
        for offset, term in enumerate(terms)
    )
    return RaftLog(entries, snapshot_index, snapshot_term)


# ----------------------------------------------------------------- indexing


def test_empty_log_starts_at_zero() -> None:
    log = RaftLog()
    assert (log.last_index, log.last_term) == (0, 0)
    assert log.term_at(0) == 0
    assert log.term_at(1) is None
    assert log.slice(1, 5) == ()


def test_empty_log_after_a_snapshot_reports_the_snapshot_point() -> None:
    """Right after compaction nothing is retained; the snapshot point is the last entry."""
    log = RaftLog((), SNAP_INDEX, SNAP_TERM)
    assert (log.last_index, log.last_term) == (SNAP_INDEX, SNAP_TERM)
    assert log.term_at(SNAP_INDEX) == SNAP_TERM
    assert log.term_at(SNAP_INDEX + 1) is None
    log.append(Entry(SNAP_INDEX + 1, 5))
    assert (log.last_index, log.last_term) == (SNAP_INDEX + 1, 5)


def test_last_index_and_term_count_from_the_snapshot_offset() -> None:
    log = make_log()
    assert log.last_index == SNAP_INDEX + len(TERMS) == 17
    assert log.last_term == 6


def test_term_at_the_snapshot_boundary_is_the_snapshot_term() -> None:
    """The consistency check on prev_log_index must work for the entry just before the log."""
    log = make_log()
    assert log.term_at(SNAP_INDEX) == SNAP_TERM
    assert log.term_at(SNAP_INDEX + 1) == 3
    assert log.term_at(13) == 4
    assert log.term_at(17) == 6
    assert log.term_at(18) is None


@pytest.mark.parametrize("index", [0, 1, SNAP_INDEX - 1])
def test_term_at_below_the_snapshot_raises_log_compacted(index: int) -> None:
    with pytest.raises(LogCompactedError):
        make_log().term_at(index)


def test_entry_returns_the_entry_with_that_index() -> None:
    log = make_log()
    assert log.entry(11) == Entry(11, 3, b"e0")
    assert log.entry(17) == Entry(17, 6, b"e6")
    with pytest.raises(LogCompactedError):
        log.entry(SNAP_INDEX)  # the snapshot point itself holds no entry any more


def test_constructor_rejects_entries_that_do_not_follow_the_snapshot() -> None:
    with pytest.raises(ValueError, match="not contiguous"):
        RaftLog((Entry(12, 3),), SNAP_INDEX, SNAP_TERM)
    with pytest.raises(ValueError, match="not contiguous"):
        RaftLog((Entry(11, 3), Entry(13, 3)), SNAP_INDEX, SNAP_TERM)


def test_append_must_extend_the_log_by_exactly_one_index() -> None:
    log = make_log()
    with pytest.raises(ValueError):
        log.append(Entry(19, 6))  # a gap
    with pytest.raises(ValueError):
        log.append(Entry(17, 6))  # overwriting needs truncate_from first
    log.append(Entry(18, 7))
    assert (log.last_index, log.last_term) == (18, 7)


# ------------------------------------------------------------------ slicing


def test_slice_is_half_open_and_clamped_at_the_end() -> None:
    log = make_log()
    assert [e.index for e in log.slice(11, 14)] == [11, 12, 13]
    assert [e.index for e in log.slice(16, 100)] == [16, 17]
    assert log.slice(18, 20) == ()
    assert log.slice(13, 13) == ()


def test_slice_starting_at_or_below_the_snapshot_raises() -> None:
    """Asking for compacted entries must fail loudly, never return a shorter slice."""
    log = make_log()
    with pytest.raises(LogCompactedError):
        log.slice(SNAP_INDEX, 14)
    with pytest.raises(LogCompactedError):
        log.slice(1, 14)


# ---------------------------------------------------------------- truncation


def test_truncate_from_drops_the_suffix_only() -> None:
    log = make_log()
    log.truncate_from(14)
    assert log.last_index == 13
    assert log.last_term == 4
    assert log.term_at(14) is None
    log.append(Entry(14, 9))
    assert log.term_at(14) == 9


def test_truncate_from_the_first_retained_entry_leaves_the_snapshot_point() -> None:
    log = make_log()
    log.truncate_from(SNAP_INDEX + 1)
    assert (log.last_index, log.last_term) == (SNAP_INDEX, SNAP_TERM)


def test_truncate_from_beyond_the_end_changes_nothing() -> None:
    log = make_log()
    log.truncate_from(40)
    assert log.last_index == 17


def test_truncate_into_the_snapshot_raises() -> None:
    """Committed (compacted) entries can never be removed."""
    with pytest.raises(LogCompactedError):
        make_log().truncate_from(SNAP_INDEX)


# ------------------------------------------------------- election restriction


@pytest.mark.parametrize(
    ("last_index", "last_term", "expected"),
    [
        (17, 6, True),  # identical
        (30, 6, True),  # same term, longer
        (16, 6, False),  # same term, shorter
        (5, 7, True),  # higher last term wins even when much shorter
        (100, 5, False),  # lower last term loses even when much longer
    ],
)
def test_is_up_to_date_compares_last_term_then_length(
    last_index: int, last_term: int, expected: bool
) -> None:
    assert make_log().is_up_to_date(last_index, last_term) is expected


def test_is_up_to_date_on_a_compacted_empty_log_uses_the_snapshot_point() -> None:
    log = RaftLog((), SNAP_INDEX, SNAP_TERM)
    assert log.is_up_to_date(SNAP_INDEX, SNAP_TERM)
    assert not log.is_up_to_date(SNAP_INDEX - 1, SNAP_TERM)
    assert not log.is_up_to_date(50, SNAP_TERM - 1)


# ------------------------------------------------------------- fast back-off


@pytest.mark.parametrize(
    ("index", "first"),
    [
        (17, 16),
        (16, 16),
        (15, 13),
        (13, 13),
        # The run of 3s continues into the snapshot; the answer stops at the first retained
        # entry, which is still a correct (if conservative) conflict index.
        (12, 11),
        (11, 11),
    ],
)
def test_first_index_of_term_finds_the_start_of_the_run(index: int, first: int) -> None:
    assert make_log().first_index_of_term(index) == first


def test_first_index_of_term_never_reaches_below_the_snapshot() -> None:
    with pytest.raises(LogCompactedError):
        make_log().first_index_of_term(SNAP_INDEX - 1)


@pytest.mark.parametrize(
    ("term", "last"),
    [(6, 17), (4, 15), (3, 12), (5, None), (7, None), (2, None)],
)
def test_last_index_of_term(term: int, last: int | None) -> None:
    assert make_log().last_index_of_term(term) == last


# ------------------------------------------------------------------ properties

# The same examples on every run (seeded from the test itself), and no example database.
deterministic = settings(derandomize=True, database=None, max_examples=200)


@st.composite
def logs(draw: st.DrawFn) -> tuple[int, int, tuple[int, ...]]:
    """A snapshot point and a non-decreasing run of terms after it (as Raft logs are)."""
    snapshot_index = draw(st.integers(min_value=0, max_value=20))
    snapshot_term = 0 if snapshot_index == 0 else draw(st.integers(min_value=1, max_value=3))
    increments = draw(st.lists(st.integers(min_value=0, max_value=2), max_size=30))
    terms: list[int] = []
    term = max(snapshot_term, 1)
    for step in increments:
        term += step
        terms.append(term)
    return snapshot_index, snapshot_term, tuple(terms)


@deterministic
@given(logs())
def test_term_run_lookups_agree_with_a_linear_scan(
    log_spec: tuple[int, int, tuple[int, ...]],
) -> None:
    """first_index_of_term and last_index_of_term match a naive definition on any log."""
    snapshot_index, snapshot_term, terms = log_spec
    log = make_log(terms, snapshot_index, snapshot_term)
    indexed = {snapshot_index + 1 + i: t for i, t in enumerate(terms)}
    for index, term in indexed.items():
        first = index
        while first - 1 in indexed and indexed[first - 1] == term:
            first -= 1
        assert log.first_index_of_term(index) == first
    # The snapshot point counts: its term is known even though its entry is gone.
    points = {snapshot_index: snapshot_term, **indexed}
    for term in {*terms, 0, max(terms, default=0) + 1}:
        holding = [i for i, t in points.items() if t == term]
        assert log.last_index_of_term(term) == (max(holding) if holding else None)


@deterministic
@given(logs(), st.integers(min_value=0, max_value=60), st.integers(min_value=1, max_value=5))
def test_truncate_then_append_keeps_the_log_contiguous(
    log_spec: tuple[int, int, tuple[int, ...]], cut: int, new_term: int
) -> None:
    """Replacing a suffix, as a follower does on conflict, leaves a gapless log whose prefix
    before the cut is untouched."""
    snapshot_index, snapshot_term, terms = log_spec
    log = make_log(terms, snapshot_index, snapshot_term)
    before = {i: log.term_at(i) for i in range(snapshot_index, log.last_index + 1)}
    cut_at = snapshot_index + 1 + cut % (len(terms) + 1)
    log.truncate_from(cut_at)
    assert log.last_index == cut_at - 1
    log.append(Entry(cut_at, 100 + new_term))
    for index in range(snapshot_index, cut_at):
        assert log.term_at(index) == before[index]
    assert (log.last_index, log.last_term) == (cut_at, 100 + new_term)
    slice_ = log.slice(snapshot_index + 1, log.last_index + 1)
    assert [e.index for e in slice_] == list(range(snapshot_index + 1, log.last_index + 1))


@deterministic
@given(logs(), st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=8))
def test_is_up_to_date_is_the_lexicographic_order_of_last_term_and_index(
    log_spec: tuple[int, int, tuple[int, ...]], other_index: int, other_term: int
) -> None:
    snapshot_index, snapshot_term, terms = log_spec
    log = make_log(terms, snapshot_index, snapshot_term)
    expected = (other_term, other_index) >= (log.last_term, log.last_index)
    assert log.is_up_to_date(other_index, other_term) is expected


def test_last_index_of_term_finds_the_snapshot_point() -> None:
    """A leader backing off a follower may name the term of the snapshot point itself."""
    log = RaftLog((Entry(11, 5), Entry(12, 5)), snapshot_index=10, snapshot_term=3)
    assert log.last_index_of_term(3) == 10
    assert log.last_index_of_term(4) is None
