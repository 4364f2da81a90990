"""tests.perf.timeline's own arithmetic: whole chains cut into hops, and the slice view."""

from __future__ import annotations

from tests.perf.timeline import HOPS, Event, chains, window_lines


def one_write(start_ns: int) -> list[Event]:
    events: list[Event] = [(start_ns, "C", "enc:SetRequest")]
    for n, (_, who, tag) in enumerate(HOPS, start=1):
        events.append((start_ns + 1000 * n, "Fn2" if who == "F" else who, tag))
    return events


def test_a_write_is_cut_into_every_hop_in_order() -> None:
    events = sorted(one_write(0) + one_write(100_000) + [(50, "L", "turn")])
    found = chains(events)
    assert len(found) == 2
    assert [hop for hop, _ in found[0][1:]] == [hop for hop, _, _ in HOPS]
    assert found[1][-1][1] - found[1][0][1] == 1000 * len(HOPS)


def test_the_slice_gives_each_process_its_column() -> None:
    events: list[Event] = [
        (0, "C", "written"),
        (2000, "L", "rx:SetRequest"),
        (3000, "Fn3", "rx:AppendEntries"),
        (4000, "Fn1", "rx:AppendEntries"),
        (9_000_000, "L", "outside the slice"),
    ]
    lines = window_lines(events, 0, 1)
    assert lines == [
        "      0.0 C written",
        "      2.0 " + " " * 24 + "L rx:SetRequest",
        "      3.0 " + " " * 72 + "Fn3 rx:AppendEntries",
        "      4.0 " + " " * 48 + "Fn1 rx:AppendEntries",
    ]
