"""``raftctl trace``: one trace from the local span files, drawn as a waterfall across nodes.

Without an OTLP endpoint, every member and raftctl keep their spans in ``traces.jsonl``
files (``observability/filexport.py``), and each holds only its own part of a trace: a
write starts in raftctl's file and continues in every member's. Reading them all and
joining the spans on trace and parent span ids gives back the whole picture Honeycomb would
show, in a terminal, with nothing to install or sign up for.

This only reads files. It never contacts the cluster (so it also works on the files of a
stopped cluster, or ones copied from elsewhere) and creates no spans (they would land in
the very files being read). Start offsets compare wall clocks of different processes: on
one machine, as with ``raftd cluster``, they share a clock; across machines the clock skew
shows up as it is.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from observability.filexport import TRACE_FILE_NAME, SpanRecord, read_spans, trace_files

PROG: Final = "raftctl"
DEFAULT_DATA_DIR: Final = Path(".raftd")
INDEX_LIMIT: Final = 20
BAR_WIDTH: Final = 40
CLIENT_NODE: Final = "client"

EXIT_OK: Final = 0
EXIT_NOT_FOUND: Final = 1
EXIT_USAGE: Final = 2

Kind = Literal["election", "write", "read", "other"]
LAST_CHOICES: Final = ("election", "write", "any")

# Attributes worth a column, in this order; the rest stay in --output json. Every chaos.*
# attribute is shown too: chaos is what someone running this is usually looking for.
KEY_ATTRIBUTES: Final = (
    "raft.term",
    "raft.peer",
    "raft.candidate",
    "raft.entries",
    "raft.index",
    "raft.match_index",
    "raft.rejected",
    "raft.pre_vote",
    "raft.vote_granted",
    "raft.vote_refused_reason",
    "raft.election.reason",
    "raft.election.outcome",
    "raftd.outcome",
    "raftd.error_code",
    "raftd.attempt_outcome",
    "raftctl.error_code",
    "kv.outcome",
    "wal.entries",
)
# Booleans that mean something only when true; "raft.pre_vote=false" on every vote is noise.
_FLAGS: Final = frozenset({"raft.pre_vote", "raft.rejected"})
# Events every healthy span has; anything else (chaos, rejections, lost replies, exceptions)
# is what the reader is looking for, including events added after this list was written.
ROUTINE_EVENTS: Final = frozenset({"written to the peer", "reply sent", "raft.read_index"})

_WRITE_ROOTS: Final = frozenset({"raftctl set", "raftctl cas", "raftctl delete"})
_WRITE_SPANS: Final = frozenset(
    {"kv.set", "kv.cas", "kv.delete", "client.set", "client.cas", "client.delete"}
)
_READ_SPANS: Final = frozenset({"raftctl get", "kv.get", "client.get"})
_ELECTION_SPANS: Final = frozenset(
    {"raft.election", "raft.election.pre_vote", "raft.election.vote", "raft.vote_decision"}
)
_SPAN_KINDS: Final = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS_CODES: Final = ("unset", "ok", "error")
_STATUS_ERROR: Final = 2
_HEX: Final = re.compile(r"^[0-9a-f]{1,32}$")

DESCRIPTION: Final = """\
Print one trace as a waterfall across nodes: each span with its node, its start offset
and duration in milliseconds, where it sits in the trace (a 40-column bar), its key
attributes, and below it the chaos and other notable events.

Spans are read from every traces.jsonl file (and rotated copy) under --data-dir, so the
client's and every member's part of a trace are joined. Pick the trace by TRACE_ID (any
unique prefix, like git) or with --last: election is the latest election whatever its
outcome, write the latest set, cas or delete, any the latest trace. With neither, list
the most recent traces to pick from."""

EPILOG: Final = f"""\
exit codes:
  0  the trace, or the list of traces, was printed
  1  no trace matches: none recorded under DIR, or none of the kind asked for
  2  usage error: bad arguments, DIR does not exist, or an ambiguous TRACE_ID prefix

Only reads files: the cluster need not be running and is never contacted. Members write
these files only while no OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT sends spans
to Honeycomb or a collector instead); raftctl writes its own where RAFTCTL_TRACE_FILE
says, which `raftd cluster --demo` sets to {DEFAULT_DATA_DIR}/raftctl/{TRACE_FILE_NAME}.
Times are UTC, the same wherever the files are read.
"""


class TraceError(Exception):
    """A reason to stop, with the exit code and JSON error code it maps to."""

    def __init__(self, message: str, *, code: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code


def _trace_id_prefix(text: str) -> str:
    prefix = text.strip().lower()
    if not _HEX.match(prefix):
        raise argparse.ArgumentTypeError(f"TRACE_ID must be 1 to 32 hex digits, not {text!r}")
    return prefix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``raftctl trace``; raftctl owns the parser, this module its meaning."""
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="directory searched (with its sub-directories) for trace files, or one trace"
        f" file (default: {DEFAULT_DATA_DIR}, where `raftd cluster` keeps its members)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "trace_id",
        metavar="TRACE_ID",
        nargs="?",
        type=_trace_id_prefix,
        help="the trace to show: its id, or any prefix of it that matches no other trace",
    )
    which.add_argument(
        "--last",
        choices=LAST_CHOICES,
        help="show the latest trace of this kind (by start time)",
    )
    # SUPPRESS: "raftctl --output json trace" must not be undone by this option's default.
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="text for people, json for scripts: exactly one object on stdout (default: text)",
    )


# ------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Row:
    span: SpanRecord
    depth: int
    # The span names a parent that no file read holds: the other process's file is missing,
    # rotated away, or that span was dropped. It is shown at the top level, not lost.
    parent_missing: bool


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    rows: tuple[Row, ...]
    start_ns: int
    end_ns: int
    root: SpanRecord
    kind: Kind
    nodes: tuple[str, ...]

    @property
    def spans(self) -> tuple[SpanRecord, ...]:
        return tuple(row.span for row in self.rows)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True, slots=True)
class Loaded:
    traces: tuple[Trace, ...]  # oldest first
    warnings: tuple[str, ...]


def node_of(span: SpanRecord) -> str:
    """The member's name, or "client" for raftctl, whose instance id is just host-pid."""
    if span["service_name"] == PROG:
        return CLIENT_NODE
    return span["service_instance_id"] or span["service_name"] or "?"


def load_traces(path: Path) -> Loaded:
    """Every trace under ``path``, its spans joined across all the files.

    Each member's files are read on their own, so one member's damaged file (JSON that is
    not OTLP) costs only the rest of that member's spans, with a warning, not the command.
    A span seen twice (a live member rotated its file while we listed and read) counts once.
    """
    files = trace_files(path)
    bases = (
        list(dict.fromkeys(file.parent / TRACE_FILE_NAME for file in files))
        if path.is_dir()
        else [path]
    )
    by_trace: dict[str, dict[str, SpanRecord]] = {}
    warnings: list[str] = []
    for base in bases:
        try:
            for span in read_spans(base):
                by_trace.setdefault(span["trace_id"], {}).setdefault(span["span_id"], span)
        except (ValueError, OSError) as error:
            warnings.append(f"skipped the rest of the trace files in {base.parent}: {error}")
    traces = [assemble(trace_id, list(spans.values())) for trace_id, spans in by_trace.items()]
    traces.sort(key=lambda trace: (trace.start_ns, trace.trace_id))
    return Loaded(tuple(traces), tuple(warnings))


def _order(span: SpanRecord) -> tuple[int, str, str, str]:
    return (span["start_ns"], node_of(span), span["name"], span["span_id"])


def assemble(trace_id: str, spans: Sequence[SpanRecord]) -> Trace:
    """Children in start order, as Honeycomb draws them, so the files' order (which depends
    on each process's export batching) never shows through."""
    if not spans:
        raise ValueError(f"trace {trace_id} has no spans")
    by_id = {span["span_id"]: span for span in spans}
    children: dict[str, list[SpanRecord]] = {}
    top: list[SpanRecord] = []
    for span in spans:
        parent = span["parent_span_id"]
        if parent is not None and parent in by_id and parent != span["span_id"]:
            children.setdefault(parent, []).append(span)
        else:
            top.append(span)
    rows: list[Row] = []
    seen: set[str] = set()

    def walk(starts: Iterable[SpanRecord]) -> None:
        stack = [(span, 0) for span in sorted(starts, key=_order, reverse=True)]
        while stack:
            span, depth = stack.pop()
            if span["span_id"] in seen:
                continue
            seen.add(span["span_id"])
            missing = depth == 0 and span["parent_span_id"] is not None
            rows.append(Row(span, depth, missing))
            below = sorted(children.get(span["span_id"], []), key=_order, reverse=True)
            stack.extend((child, depth + 1) for child in below)

    walk(top)
    # Only a damaged file can make parents a cycle; its spans are still shown.
    walk(span for span in spans if span["span_id"] not in seen)
    roots = [row.span for row in rows if row.span["parent_span_id"] is None]
    root = roots[0] if roots else rows[0].span
    start = min(span["start_ns"] for span in spans)
    end = max(max(span["end_ns"], span["start_ns"]) for span in spans)
    nodes = tuple(dict.fromkeys(node_of(span) for span in sorted(spans, key=_order)))
    return Trace(trace_id, tuple(rows), start, end, root, _kind(root, spans), nodes)


def _kind(root: SpanRecord, spans: Sequence[SpanRecord]) -> Kind:
    names = {span["name"] for span in spans}
    if names & _ELECTION_SPANS or any(name.startswith("RequestVote ") for name in names):
        return "election"
    # A raftctl write that reached no member has only its own spans, hence the root check.
    if root["name"] in _WRITE_ROOTS or names & _WRITE_SPANS:
        return "write"
    if names & _READ_SPANS:
        return "read"
    return "other"


def latest(traces: Sequence[Trace], which: str) -> Trace | None:
    """By start time, not end time: an election begins once, on its candidate, while its
    spans end whenever each member's reply or decision does."""
    candidates = [trace for trace in traces if which == "any" or trace.kind == which]
    return max(candidates, key=lambda trace: (trace.start_ns, trace.trace_id), default=None)


def by_prefix(traces: Sequence[Trace], prefix: str) -> list[Trace]:
    return [trace for trace in traces if trace.trace_id.startswith(prefix.lower())]


def outcome(trace: Trace) -> str | None:
    """One word for the index and JSON: what a reader would first ask of this trace."""
    spans = trace.spans
    if trace.kind == "election":
        for span in spans:
            if span["name"] == "raft.election" and "raft.election.outcome" in span["attributes"]:
                return str(span["attributes"]["raft.election.outcome"])
        return None
    error = trace.root["attributes"].get("raftctl.error_code")
    if error is not None:
        return str(error)
    # After a redirect the member that answered last is the one whose answer counted.
    served = [
        s for s in spans if s["name"].startswith("kv.") and "raftd.outcome" in s["attributes"]
    ]
    if served:
        return str(
            max(served, key=lambda s: (s["end_ns"], s["span_id"]))["attributes"]["raftd.outcome"]
        )
    if trace.root["status_code"] == _STATUS_ERROR:
        return "error"
    return None


# ------------------------------------------------------------------- text


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.2f}"


def _utc(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp}.{rest // 1_000_000:03d}"


def _decimal(value: float) -> str:
    """Two decimals at most (milliseconds to the 10 µs), no trailing zeros: 6.5, 13.62, 3."""
    if not math.isfinite(value):
        return str(value)
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2g}"
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _decimal(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return "[" + ",".join(_value(item) for item in value) + "]"
    if isinstance(value, str):
        # Quoted only when needed, so "key=value key=value" still splits on spaces.
        plain = value and not any(c.isspace() or c in '="' for c in value)
        return value if plain else json.dumps(value, ensure_ascii=False)
    return str(value)


def _pairs(attributes: dict[str, Any], keys: Iterable[str]) -> list[str]:
    return [f"{key}={_value(attributes[key])}" for key in keys if key in attributes]


def key_attributes(span: SpanRecord) -> list[str]:
    attributes = span["attributes"]
    keys = [
        key for key in KEY_ATTRIBUTES if key not in _FLAGS or attributes.get(key) is True
    ] + sorted(key for key in attributes if key.startswith("chaos.") and key not in KEY_ATTRIBUTES)
    shown = _pairs(attributes, keys)
    if span["status_code"] == _STATUS_ERROR:
        shown.append(f"error={_value(span['status_message'] or 'true')}")
    return shown


def notable_events(span: SpanRecord) -> list[tuple[int, str, list[str]]]:
    """(time, name, attributes) of the events worth a line of their own."""
    return [
        (
            event["time_ns"],
            event["name"],
            _pairs(
                event["attributes"], [k for k in event["attributes"] if k != "exception.stacktrace"]
            ),
        )
        for event in span["events"]
        if event["name"] not in ROUTINE_EVENTS
    ]


def _bar(start_ns: int, end_ns: int, trace: Trace, width: int) -> str:
    total = trace.duration_ns
    if total <= 0:
        return "|" + "=" * width + "|"
    first = min(width - 1, (start_ns - trace.start_ns) * width // total)
    last = -(-(max(end_ns, start_ns) - trace.start_ns) * width // total)  # rounded up
    last = min(width, max(first + 1, last))
    return "|" + " " * first + "=" * (last - first) + " " * (width - last) + "|"


def render_waterfall(trace: Trace, *, bar_width: int = BAR_WIDTH) -> str:
    """Indentation carries the tree and the bar the timing, so which member waited on which
    shows at a glance; events get lines of their own, as chaos is usually why it waited."""
    lines = [
        f"trace {trace.trace_id}  {trace.root['name']} ({trace.kind})",
        f"started {_utc(trace.start_ns)} UTC, lasted {_ms(trace.duration_ns)} ms,"
        f" {len(trace.rows)} spans on {', '.join(trace.nodes)}",
        "",
    ]
    cells = [
        (
            node_of(row.span),
            "  " * row.depth + row.span["name"],
            _ms(row.span["start_ns"] - trace.start_ns),
            _ms(max(0, row.span["end_ns"] - row.span["start_ns"])),
        )
        for row in trace.rows
    ]
    titles = ("NODE", "SPAN", "START ms", "DUR ms")
    node_w, name_w, start_w, dur_w = (
        max(len(titles[i]), *(len(cell[i]) for cell in cells)) for i in range(4)
    )
    lines.append(
        f"{'NODE':<{node_w}}  {'SPAN':<{name_w}}  {'START ms':>{start_w}}  {'DUR ms':>{dur_w}}"
        f"  {'TIMELINE':<{bar_width + 2}}  ATTRIBUTES"
    )
    for row, (node, name, start, duration) in zip(trace.rows, cells, strict=True):
        span = row.span
        shown = key_attributes(span)
        if row.parent_missing:
            shown.insert(0, "(parent not recorded)")
        bar = _bar(span["start_ns"], span["end_ns"], trace, bar_width)
        line = (
            f"{node:<{node_w}}  {name:<{name_w}}  {start:>{start_w}}  {duration:>{dur_w}}"
            f"  {bar}  {' '.join(shown)}"
        )
        lines.append(line.rstrip())
        indent = " " * (node_w + 2 + 2 * row.depth + 2)
        for time_ns, event, pairs in notable_events(span):
            at = _ms(time_ns - trace.start_ns)
            lines.append(f"{indent}! {event} at {at} ms  {' '.join(pairs)}".rstrip())
    lines.append("")
    lines.extend(summary_lines(trace))
    return "\n".join(lines)


def summary_lines(trace: Trace) -> list[str]:
    """What the waterfall adds up to: who won the election, or where the write got to."""
    if trace.kind == "election":
        lines = _election_summary(trace)
    elif trace.kind == "write":
        lines = _write_summary(trace)
    else:
        lines = [f"{trace.kind}: {outcome(trace) or 'outcome not recorded'} in {_took(trace)}"]
    chaos = _chaos_summary(trace)
    if chaos:
        lines.append(chaos)
    return lines


def _took(trace: Trace) -> str:
    """The root's duration is the latency the caller saw; without the root, the trace's
    whole span is the closest there is, and says so."""
    root = trace.root
    if root["parent_span_id"] is None:
        return f"{_ms(root['end_ns'] - root['start_ns'])} ms ({root['name']})"
    return f"{_ms(trace.duration_ns)} ms (its first spans are not recorded)"


def _election_summary(trace: Trace) -> list[str]:
    election = next((span for span in trace.spans if span["name"] == "raft.election"), None)
    if election is None:
        lines = ["election: the candidate's spans are not recorded (file missing or rotated away)"]
    else:
        attributes = election["attributes"]
        result = attributes.get("raft.election.outcome", "outcome not recorded")
        term = attributes.get("raft.term", "?")
        took = _ms(election["end_ns"] - election["start_ns"])
        lines = [f"election: {result}, term {term}, candidate {node_of(election)}, {took} ms"]
    for phase, verdicts in _votes(trace).items():
        lines.append(
            f"  {phase}: " + ", ".join(f"{peer} {verdicts[peer]}" for peer in sorted(verdicts))
        )
    return lines


def _votes(trace: Trace) -> dict[str, dict[str, str]]:
    """Per phase, each voter's answer: its own decision when recorded (it says why), else
    what the candidate saw."""
    asked: dict[tuple[str, str], SpanRecord] = {}
    decided: dict[tuple[str, str], SpanRecord] = {}
    for span in sorted(trace.spans, key=_order):
        attributes = span["attributes"]
        phase = "pre-vote" if attributes.get("raft.pre_vote") is True else "vote"
        if span["name"].startswith("RequestVote "):
            peer = str(attributes.get("raft.peer", span["name"].removeprefix("RequestVote ")))
            asked[(phase, peer)] = span  # a resent request replaces the earlier one
        elif span["name"] == "raft.vote_decision":
            decided[(phase, node_of(span))] = span
    votes: dict[str, dict[str, str]] = {}
    for phase, peer in sorted(asked.keys() | decided.keys(), key=lambda k: (k[0] != "pre-vote", k)):
        votes.setdefault(phase, {})[peer] = _verdict(
            asked.get((phase, peer)), decided.get((phase, peer))
        )
    return votes


def _verdict(request: SpanRecord | None, decision: SpanRecord | None) -> str:
    answered = request is not None and "raft.vote_granted" in request["attributes"]
    notes: list[str] = []
    if decision is not None and "raft.vote_granted" in decision["attributes"]:
        attributes = decision["attributes"]
        verdict = "granted" if attributes["raft.vote_granted"] else "refused"
        if attributes.get("raft.vote_refused_reason"):
            notes.append(str(attributes["raft.vote_refused_reason"]))
        if request is not None and not answered:
            notes.append("reply not received")
    elif request is not None and answered:
        verdict = "granted" if request["attributes"]["raft.vote_granted"] else "refused"
    else:
        verdict = "no reply"
        if request is not None and request["attributes"].get("chaos.dropped") is True:
            notes.append("request dropped by chaos")
    return f"{verdict} ({'; '.join(notes)})" if notes else verdict


def _write_summary(trace: Trace) -> list[str]:
    lines = [f"write: {outcome(trace) or 'outcome not recorded'} in {_took(trace)}"]
    spans = sorted(trace.spans, key=_order)
    commits = [span for span in spans if span["name"] == "raft.commit"]
    if commits:
        index = commits[0]["attributes"].get("raft.index", "?")
        lines.append(f"  committed: index {index} on {node_of(commits[0])}")
    applied = list(dict.fromkeys(node_of(span) for span in spans if span["name"] == "raft.apply"))
    lines.append(f"  applied on: {', '.join(applied) if applied else 'no member'}")
    peers = {
        str(span["attributes"]["raft.peer"])
        for span in spans
        if span["name"].startswith("AppendEntries ") and "raft.peer" in span["attributes"]
    }
    missing = sorted(peers - set(applied))
    if missing:
        # Not necessarily a failure: the apply may come later, or its span be unsampled.
        lines.append(f"  no apply recorded on: {', '.join(missing)}")
    return lines


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _chaos_summary(trace: Trace) -> str | None:
    dropped = delayed = slow_fsyncs = failed_fsyncs = 0
    delay_ms = 0.0
    for span in trace.spans:
        attributes = span["attributes"]
        if attributes.get("chaos.dropped") is True:
            dropped += 1
        delay = _number(attributes.get("chaos.delay_ms"))
        if delay is not None and delay > 0:
            delayed += 1
            delay_ms += delay
        if attributes.get("chaos.fsync_failed") is True:
            failed_fsyncs += 1
        elif (_number(attributes.get("chaos.fsync_delay_ms")) or 0) > 0:
            slow_fsyncs += 1
    parts = []
    if dropped:
        parts.append(f"{dropped} message{'s' * (dropped != 1)} dropped")
    if delayed:
        parts.append(f"{delayed} delayed ({_decimal(delay_ms)} ms in all)")
    if slow_fsyncs:
        parts.append(f"{slow_fsyncs} fsync{'s' * (slow_fsyncs != 1)} slowed")
    if failed_fsyncs:
        parts.append(f"{failed_fsyncs} fsync{'s' * (failed_fsyncs != 1)} failed")
    return f"chaos: {', '.join(parts)}" if parts else None


def render_index(traces: Sequence[Trace]) -> str:
    """One line per trace, in the order given, to pick a TRACE_ID from."""
    header = ["START (UTC)", "TRACE ID", "KIND", "ROOT", "NODES", "SPANS", "DURATION ms", "OUTCOME"]
    rows = [
        [
            _utc(trace.start_ns),
            trace.trace_id,
            trace.kind,
            trace.root["name"],
            str(len(trace.nodes)),
            str(len(trace.rows)),
            _ms(trace.duration_ns),
            outcome(trace) or "-",
        ]
        for trace in traces
    ]
    right = {4, 5, 6}
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------- json


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and Infinity are not JSON
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return value


def _offset_ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def summary_json(trace: Trace) -> dict[str, Any]:
    return {
        "trace_id": trace.trace_id,
        "kind": trace.kind,
        "root": trace.root["name"],
        "start": _utc(trace.start_ns) + "Z",
        "start_unix_nano": trace.start_ns,
        "duration_ms": _offset_ms(trace.duration_ns),
        "nodes": list(trace.nodes),
        "span_count": len(trace.rows),
        "outcome": outcome(trace),
    }


def trace_json(trace: Trace) -> dict[str, Any]:
    """The summary and every span in waterfall order, with its depth and offsets in ms."""
    spans = []
    for row in trace.rows:
        span = row.span
        spans.append(
            {
                "node": node_of(span),
                "service_name": span["service_name"],
                "name": span["name"],
                "span_id": span["span_id"],
                "parent_span_id": span["parent_span_id"],
                "parent_missing": row.parent_missing,
                "depth": row.depth,
                "kind": _SPAN_KINDS[span["kind"]] if 0 <= span["kind"] < 6 else str(span["kind"]),
                "start_offset_ms": _offset_ms(span["start_ns"] - trace.start_ns),
                "duration_ms": _offset_ms(max(0, span["end_ns"] - span["start_ns"])),
                "status": {
                    "code": _STATUS_CODES[span["status_code"]]
                    if 0 <= span["status_code"] < 3
                    else str(span["status_code"]),
                    "message": span["status_message"],
                },
                "attributes": _jsonable(span["attributes"]),
                "events": [
                    {
                        "name": event["name"],
                        "offset_ms": _offset_ms(event["time_ns"] - trace.start_ns),
                        "attributes": _jsonable(event["attributes"]),
                    }
                    for event in span["events"]
                ],
                "links": [
                    {"trace_id": link["trace_id"], "span_id": link["span_id"]}
                    for link in span["links"]
                ],
            }
        )
    return {**summary_json(trace), "spans": spans}


# ------------------------------------------------------------------- command


_NOTHING_HINT: Final = (
    "is the cluster running with the embedded default? (spans go to Honeycomb or a collector"
    " instead when OTEL_EXPORTER_OTLP_ENDPOINT is set)"
)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``raftctl trace``; returns the exit code. Errors follow raftctl's other commands: a
    line on stderr, or with --output json a single ``{"error": ...}`` object on stdout."""
    as_json = getattr(args, "output", "text") == "json"
    try:
        return _run(Path(args.data_dir), args.trace_id, args.last, as_json, out, err)
    except TraceError as exc:
        if as_json:
            body = {"code": exc.code, "message": exc.message, "definite": True}
            out.write(json.dumps({"error": body}) + "\n")
        else:
            err.write(f"{PROG}: {exc.message}\n")
        return exc.exit_code


def _run(
    data_dir: Path,
    trace_id: str | None,
    last: str | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    if not data_dir.exists():
        raise TraceError(
            f"{data_dir} does not exist (give --data-dir; `raftd cluster` keeps its members"
            f" in {DEFAULT_DATA_DIR})",
            code="usage",
            exit_code=EXIT_USAGE,
        )
    try:
        loaded = load_traces(data_dir)
    except OSError as exc:
        raise TraceError(
            f"cannot read {data_dir}: {exc}", code="usage", exit_code=EXIT_USAGE
        ) from None
    for warning in loaded.warnings:
        err.write(f"{PROG}: warning: {warning}\n")
    traces = loaded.traces
    what = (
        f"trace {trace_id}"
        if trace_id is not None
        else "trace"
        if last in (None, "any")
        else f"{last} trace"
    )
    if not traces:
        raise TraceError(
            f"no {what} under {data_dir}: {_NOTHING_HINT}",
            code="not_found",
            exit_code=EXIT_NOT_FOUND,
        )
    among = f"among the {len(traces)} trace{'s' * (len(traces) != 1)} under {data_dir}"
    if trace_id is not None:
        matches = by_prefix(traces, trace_id)
        if not matches:
            raise TraceError(f"no {what} {among}", code="not_found", exit_code=EXIT_NOT_FOUND)
        if len(matches) > 1:
            shown = ", ".join(trace.trace_id for trace in matches[:5])
            more = ", ..." if len(matches) > 5 else ""
            raise TraceError(
                f"TRACE_ID {trace_id} is ambiguous: {len(matches)} traces start with it"
                f" ({shown}{more}); give more digits",
                code="ambiguous",
                exit_code=EXIT_USAGE,
            )
        chosen: Trace | None = matches[0]
    elif last is not None:
        chosen = latest(traces, last)
    else:
        newest = sorted(traces, key=lambda t: (t.start_ns, t.trace_id), reverse=True)
        if as_json:
            obj = {"data_dir": str(data_dir), "traces": [summary_json(t) for t in newest]}
            out.write(json.dumps(obj) + "\n")
            return EXIT_OK
        out.write(render_index(newest[:INDEX_LIMIT]) + "\n")
        if len(newest) > INDEX_LIMIT:
            err.write(f"{PROG}: the {INDEX_LIMIT} most recent of {len(newest)} traces\n")
        err.write(
            f"{PROG}: show one with: {PROG} trace TRACE_ID (a unique prefix will do),"
            " or --last election|write|any\n"
        )
        return EXIT_OK
    if chosen is None:
        raise TraceError(f"no {what} {among}", code="not_found", exit_code=EXIT_NOT_FOUND)
    if as_json:
        out.write(json.dumps(trace_json(chosen)) + "\n")
    else:
        out.write(render_waterfall(chosen) + "\n")
    return EXIT_OK
