"""The trace audit: did each member keep within its cap, and are the kept traces whole?

Reads spans as the members exported them (OTLP JSON lines, ``traces.jsonl`` in each data
directory) and judges two promises:

* **The cap.** For each member, the most distinct trace ids with an exported span in any
  60-second window (sliding). A span counts at its start and at its end, so the figure is
  the strictest of the ways one could read "exports spans in a window".
* **Whole traces.** A kept trace is whole when nothing in it points at a part that is
  missing: every span's parent is present, unless the span is where the trace entered
  the cluster (``raftd.edge``: its parent is the client's); and every member that
  answered a traced message (an AppendEntries acknowledged, a vote reply received) has
  spans of its own in the trace. A message that was lost, or whose reply was, proves
  nothing about its receiver and is not held against the trace.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from observability.filexport import SpanRecord
from observability.sampling import EDGE_ATTRIBUTE

WINDOW_NS = 60 * 1_000_000_000
CLIENT_SERVICES = ("raftctl",)
# A traced message whose sender saw the reply, by span name prefix: the attribute that
# only a reply sets, and the attribute naming the receiver.
ANSWERED = {"AppendEntries ": "raft.match_index", "RequestVote ": "raft.vote_granted"}


def max_in_window(points: Iterable[tuple[int, str]], window_ns: int = WINDOW_NS) -> int:
    """The most distinct ids among points within any closed window of ``window_ns``."""
    ordered = sorted(points)
    inside: Counter[str] = Counter()
    best = 0
    left = 0
    for at, trace_id in ordered:
        inside[trace_id] += 1
        while ordered[left][0] < at - window_ns:
            old = ordered[left][1]
            inside[old] -= 1
            if not inside[old]:
                del inside[old]
            left += 1
        best = max(best, len(inside))
    return best


@dataclass
class MemberFigures:
    member: str
    spans: int
    traces: int
    most_in_window: int


@dataclass
class Audit:
    cap: int
    members: list[MemberFigures] = field(default_factory=list)
    traces: int = 0
    whole: int = 0
    broken: dict[str, str] = field(default_factory=dict)  # trace id -> why not whole
    # By what the trace is: "election", "client" (a request), or "other"; (kept, whole).
    by_kind: dict[str, list[int]] = field(default_factory=dict)

    def share(self, kind: str) -> float:
        kept, whole = self.by_kind.get(kind, [0, 0])
        return whole / kept if kept else 1.0

    @property
    def over_cap(self) -> list[MemberFigures]:
        return [m for m in self.members if m.most_in_window > self.cap]

    @property
    def whole_share(self) -> float:
        return self.whole / self.traces if self.traces else 1.0

    def lines(self, *, examples: int = 5) -> list[str]:
        out = []
        for m in self.members:
            verdict = "ok" if m.most_in_window <= self.cap else "OVER THE CAP"
            out.append(
                f"{m.member}: at most {m.most_in_window} traces in any 60 s window "
                f"(cap {self.cap}): {verdict}; {m.traces} traces, {m.spans} spans"
            )
        out.append(
            f"kept traces: {self.traces}, whole: {self.whole} ({100 * self.whole_share:.1f}%)"
        )
        for kind, (kept, whole) in sorted(self.by_kind.items()):
            out.append(f"  {kind}: {kept} kept, {whole} whole ({100 * self.share(kind):.1f}%)")
        for trace_id, why in list(self.broken.items())[:examples]:
            out.append(f"  not whole: {trace_id}: {why}")
        return out


def audit(spans: Iterable[SpanRecord], cap: int) -> Audit:
    by_member: dict[str, list[SpanRecord]] = defaultdict(list)
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        if span["service_name"] in CLIENT_SERVICES:
            by_trace[span["trace_id"]].append(span)
            continue
        member = span["service_instance_id"] or span["service_name"] or "?"
        by_member[member].append(span)
        by_trace[span["trace_id"]].append(span)
    result = Audit(cap)
    for member in sorted(by_member):
        member_spans = by_member[member]
        points = [(s["start_ns"], s["trace_id"]) for s in member_spans]
        points += [(s["end_ns"], s["trace_id"]) for s in member_spans]
        result.members.append(
            MemberFigures(
                member,
                len(member_spans),
                len({s["trace_id"] for s in member_spans}),
                max_in_window(points),
            )
        )
    for trace_id, trace_spans in by_trace.items():
        if all(s["service_name"] in CLIENT_SERVICES for s in trace_spans):
            continue  # a client's own trace that reached no member
        result.traces += 1
        counts = result.by_kind.setdefault(kind_of(trace_spans), [0, 0])
        counts[0] += 1
        why = why_not_whole(trace_spans)
        if why is None:
            result.whole += 1
            counts[1] += 1
        else:
            result.broken[trace_id] = why
    return result


def kind_of(spans: list[SpanRecord]) -> str:
    """What a trace is, by its spans: an election, a client request, or something else."""
    names = {s["name"] for s in spans}
    if "raft.election" in names or "raft.vote_decision" in names:
        return "election"
    if any(name.startswith("kv.") for name in names):
        return "client"
    return "other"


def why_not_whole(spans: list[SpanRecord]) -> str | None:
    ids = {s["span_id"] for s in spans}
    members = {s["service_instance_id"] for s in spans}
    for span in spans:
        parent = span["parent_span_id"]
        if parent and parent not in ids and EDGE_ATTRIBUTE not in span["attributes"]:
            return f"{span['name']} on {span['service_instance_id']} has no parent span"
        for prefix, reply_attribute in ANSWERED.items():
            if span["name"].startswith(prefix) and reply_attribute in span["attributes"]:
                peer = span["attributes"].get("raft.peer")
                if peer is not None and peer not in members:
                    return f"{peer} answered {span['name']} but recorded nothing of the trace"
    return None
