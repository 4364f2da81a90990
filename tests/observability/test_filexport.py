"""The trace file is real OTLP/JSON (collector file-exporter flavour) and reads back whole.

Spans come from a real SDK TracerProvider, so ids, kinds and times are checked against what
the SDK itself recorded rather than against values the test made up.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict  # type: ignore[import-untyped]
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from observability.filexport import (
    JsonLinesSpanExporter,
    encode_otlp_json,
    read_spans,
    trace_files,
)

ALL_TYPES: dict[str, Any] = {
    "str": "leader",
    "empty_str": "",
    "int": 42,
    "zero": 0,
    "negative": -7,
    "big": 2**62,
    "float": 1.5,
    "float_zero": 0.0,
    "true": True,
    "false": False,
    "strs": ["a", "b"],
    "ints": [1, 2, 3],
    "floats": [0.5, 2.0],
    "bools": [True, False],
}


OTLP_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}


def resource(member: str) -> Resource:
    return Resource.create({"service.name": "raftd", "service.instance.id": member})


def make_spans(member: str = "n1") -> list[ReadableSpan]:
    """A parent with a child, a linked span and one span of every other kind."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource(member))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("raftd.test", "0.1")
    with tracer.start_as_current_span(
        "append_entries", kind=SpanKind.SERVER, attributes=ALL_TYPES
    ) as parent:
        parent.add_event("persisted", {"raft.index": 7, "fsync": True})
        with tracer.start_as_current_span("fsync", kind=SpanKind.CLIENT) as child:
            child.set_status(StatusCode.ERROR, "disk on fire")
    with tracer.start_as_current_span(
        "apply", links=[Link(parent.get_span_context(), {"raft.index": 7})]
    ) as linked:
        linked.set_status(StatusCode.OK)
    for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER):
        with tracer.start_as_current_span(f"queue.{kind.name.lower()}", kind=kind):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def otlp_spans(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        span
        for resource_spans in request["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]


def hex_trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def hex_span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "traces.jsonl"


@pytest.fixture
def exporter(path: Path) -> Iterator[JsonLinesSpanExporter]:
    exporter = JsonLinesSpanExporter(path)
    yield exporter
    exporter.shutdown()


def test_one_json_line_per_export_grouped_by_resource_and_scope(
    path: Path, exporter: JsonLinesSpanExporter
) -> None:
    n1, n2 = make_spans("n1"), make_spans("n2")
    other_scope = TracerProvider(resource=resource("n1"))
    memory = InMemorySpanExporter()
    other_scope.add_span_processor(SimpleSpanProcessor(memory))
    with other_scope.get_tracer("raftd.rpc").start_as_current_span("send"):
        pass
    assert exporter.export(n1) is SpanExportResult.SUCCESS
    assert exporter.export([*n1, *memory.get_finished_spans(), *n2]) is SpanExportResult.SUCCESS

    first, second = lines(path)
    assert set(first) == {"resourceSpans"}
    assert len(first["resourceSpans"]) == 1
    by_member = {
        {kv["key"]: kv["value"] for kv in rs["resource"]["attributes"]}["service.instance.id"][
            "stringValue"
        ]: rs
        for rs in second["resourceSpans"]
    }
    assert set(by_member) == {"n1", "n2"}
    n1_scopes = {ss["scope"]["name"]: ss for ss in by_member["n1"]["scopeSpans"]}
    assert set(n1_scopes) == {"raftd.test", "raftd.rpc"}
    assert n1_scopes["raftd.test"]["scope"]["version"] == "0.1"
    assert len(n1_scopes["raftd.test"]["spans"]) == len(n1)
    assert exporter.exported_spans == 2 * len(n1) + 1 + len(n2)
    assert exporter.failed_spans == 0


def test_span_fields_follow_otlp_json(path: Path, exporter: JsonLinesSpanExporter) -> None:
    spans = make_spans()
    exporter.export(spans)
    (request,) = lines(path)
    encoded = {span["name"]: span for span in otlp_spans(request)}
    by_name = {span.name: span for span in spans}
    assert set(encoded) == set(by_name)

    for name, span in by_name.items():
        out = encoded[name]
        assert out["traceId"] == hex_trace_id(span)
        assert out["spanId"] == hex_span_id(span)
        assert len(out["traceId"]) == 32 and len(out["spanId"]) == 16
        assert out["traceId"] == out["traceId"].lower()
        int(out["traceId"], 16), int(out["spanId"], 16)
        assert out["startTimeUnixNano"] == str(span.start_time)
        assert out["endTimeUnixNano"] == str(span.end_time)
        assert isinstance(out["kind"], int)

    assert {name: encoded[name]["kind"] for name in encoded} == {
        "append_entries": 2,
        "fsync": 3,
        "apply": 1,
        "queue.producer": 4,
        "queue.consumer": 5,
    }
    assert "parentSpanId" not in encoded["append_entries"]
    assert encoded["fsync"]["parentSpanId"] == hex_span_id(by_name["append_entries"])
    assert encoded["fsync"]["status"] == {"code": 2, "message": "disk on fire"}
    assert encoded["apply"]["status"] == {"code": 1}
    assert encoded["append_entries"]["status"] == {}

    (link,) = encoded["apply"]["links"]
    assert link["traceId"] == hex_trace_id(by_name["append_entries"])
    assert link["spanId"] == hex_span_id(by_name["append_entries"])
    assert link["attributes"] == [{"key": "raft.index", "value": {"intValue": "7"}}]

    (event,) = encoded["append_entries"]["events"]
    assert event["name"] == "persisted"
    assert isinstance(event["timeUnixNano"], str)

    attributes = {kv["key"]: kv["value"] for kv in encoded["append_entries"]["attributes"]}
    assert attributes["str"] == {"stringValue": "leader"}
    assert attributes["empty_str"] == {"stringValue": ""}
    assert attributes["int"] == {"intValue": "42"}
    assert attributes["zero"] == {"intValue": "0"}
    assert attributes["big"] == {"intValue": str(2**62)}
    assert attributes["float"] == {"doubleValue": 1.5}
    assert attributes["true"] == {"boolValue": True}
    assert attributes["false"] == {"boolValue": False}
    assert attributes["ints"] == {
        "arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}, {"intValue": "3"}]}
    }
    assert attributes["bools"] == {
        "arrayValue": {"values": [{"boolValue": True}, {"boolValue": False}]}
    }


def test_a_line_is_an_otlp_export_request_once_ids_are_base64(
    path: Path, exporter: JsonLinesSpanExporter
) -> None:
    """ParseDict rejects unknown fields and wrong types, so this checks the whole schema."""
    spans = make_spans()
    exporter.export(spans)
    (request,) = lines(path)

    def to_base64(value: str) -> str:
        return base64.b64encode(bytes.fromhex(value)).decode()

    for span in otlp_spans(request):
        for field in ("traceId", "spanId", "parentSpanId"):
            if field in span:
                span[field] = to_base64(span[field])
        for link in span.get("links", []):
            link["traceId"] = to_base64(link["traceId"])
            link["spanId"] = to_base64(link["spanId"])

    parsed = ParseDict(request, ExportTraceServiceRequest())
    assert parsed == encode_spans(spans)


def test_read_spans_round_trip(path: Path, exporter: JsonLinesSpanExporter) -> None:
    spans = make_spans()
    exporter.export(spans[:2])
    exporter.export(spans[2:])
    records = list(read_spans(path))
    assert [record["name"] for record in records] == [span.name for span in spans]

    for span, record in zip(spans, records, strict=True):
        assert span.context is not None and span.start_time and span.end_time
        assert record["trace_id"] == hex_trace_id(span)
        assert record["span_id"] == hex_span_id(span)
        assert record["parent_span_id"] == (
            None if span.parent is None else format(span.parent.span_id, "016x")
        )
        assert record["kind"] == OTLP_KINDS[span.kind]
        assert record["start_ns"] == span.start_time
        assert record["end_ns"] == span.end_time
        assert record["attributes"] == {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in (span.attributes or {}).items()
        }
        assert [(e["name"], e["time_ns"], e["attributes"]) for e in record["events"]] == [
            (e.name, e.timestamp, dict(e.attributes or {})) for e in span.events
        ]
        assert [(x["trace_id"], x["span_id"], x["attributes"]) for x in record["links"]] == [
            (
                format(x.context.trace_id, "032x"),
                format(x.context.span_id, "016x"),
                dict(x.attributes or {}),
            )
            for x in span.links
        ]
        assert (
            record["status_code"]
            == {
                StatusCode.UNSET: 0,
                StatusCode.OK: 1,
                StatusCode.ERROR: 2,
            }[span.status.status_code]
        )
        assert record["status_message"] == (span.status.description or "")
        assert record["service_name"] == "raftd"
        assert record["service_instance_id"] == "n1"
        assert record["scope_name"] == "raftd.test"
    (append,) = (record for record in records if record["name"] == "append_entries")
    assert append["attributes"] == ALL_TYPES


def test_reader_decodes_special_doubles(path: Path, exporter: JsonLinesSpanExporter) -> None:
    provider = TracerProvider(resource=resource("n1"))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    attributes = {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf")}
    with provider.get_tracer("t").start_as_current_span("odd", attributes=attributes):
        pass
    exporter.export(memory.get_finished_spans())
    (record,) = read_spans(path)
    assert record["attributes"]["nan"] != record["attributes"]["nan"]
    assert record["attributes"]["inf"] == float("inf")
    assert record["attributes"]["ninf"] == float("-inf")


def test_rotation_keeps_backups_and_newest_spans_in_the_live_file(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    spans = make_spans()
    longest = max(len(json.dumps(encode_otlp_json([span]))) + 1 for span in spans)
    # Room for about three one-span lines per file.
    exporter = JsonLinesSpanExporter(path, max_bytes=3 * longest, backups=2)
    sent: list[str] = []
    for _ in range(8):
        for span in spans:
            assert exporter.export([span]) is SpanExportResult.SUCCESS
            sent.append(hex_span_id(span))
    exporter.shutdown()

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "traces.jsonl",
        "traces.jsonl.1",
        "traces.jsonl.2",
    ]
    for file in tmp_path.iterdir():
        assert 0 < file.stat().st_size <= exporter.max_bytes
    assert exporter.exported_spans == len(sent)

    newest_line = lines(path)[-1]
    assert [span["spanId"] for span in otlp_spans(newest_line)] == [hex_span_id(spans[-1])]
    assert trace_files(path) == [
        path.with_name("traces.jsonl.2"),
        path.with_name("traces.jsonl.1"),
        path,
    ]
    kept = [record["span_id"] for record in read_spans(path)]
    # What survives is the newest run of spans, oldest first, ending with the last one.
    assert 3 <= len(kept) < len(sent)
    assert kept == sent[-len(kept) :]


def test_no_backups_means_the_file_restarts(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    spans = make_spans()
    exporter = JsonLinesSpanExporter(path, max_bytes=1, backups=0)
    for span in spans:
        exporter.export([span])
    exporter.shutdown()
    assert [p.name for p in tmp_path.iterdir()] == ["traces.jsonl"]
    assert [record["name"] for record in read_spans(path)] == [spans[-1].name]


def test_read_spans_over_a_cluster_directory(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster"
    expected: dict[str, list[str]] = {}
    for member in ("n1", "n2", "n3"):
        spans = make_spans(member)
        exporter = JsonLinesSpanExporter(
            cluster / member / "traces.jsonl", max_bytes=4000, backups=10
        )
        for span in spans:
            exporter.export([span])
        exporter.shutdown()
        expected[member] = [hex_span_id(span) for span in spans]
        (cluster / member / "raft.log").write_text("not traces\n")
        (cluster / member / "other.jsonl").write_text('{"resourceSpans": "nope"}\n')
    assert list((cluster / "n1").glob("traces.jsonl.*")), "expected rotated files"

    got: dict[str, list[str]] = {}
    for record in read_spans(cluster):
        assert record["service_instance_id"] is not None
        got.setdefault(record["service_instance_id"], []).append(record["span_id"])
    assert got == expected


def test_torn_last_line_is_skipped_and_a_restart_appends_after_it(path: Path) -> None:
    spans = make_spans()
    first = JsonLinesSpanExporter(path)
    first.export(spans[:2])
    first.export(spans[2:3])
    first.shutdown()
    whole = path.read_bytes()
    last_line_start = whole.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(whole[: last_line_start + (len(whole) - last_line_start) // 2])

    assert [r["name"] for r in read_spans(path)] == [s.name for s in spans[:2]]

    restarted = JsonLinesSpanExporter(path)
    assert restarted.export(spans[3:]) is SpanExportResult.SUCCESS
    restarted.shutdown()
    assert [r["name"] for r in read_spans(path)] == [s.name for s in spans[:2] + spans[3:]]


def test_a_json_line_that_is_not_otlp_is_an_error(path: Path) -> None:
    path.write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x"}]}]}]}\n')
    with pytest.raises(ValueError, match=r"traces\.jsonl:1"):
        list(read_spans(path))


def test_other_signals_are_ignored(path: Path, exporter: JsonLinesSpanExporter) -> None:
    exporter.export(make_spans()[:1])
    with path.open("a") as file:
        file.write('{"resourceLogs": []}\n')
    assert len(list(read_spans(path))) == 1


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(read_spans(tmp_path / "nothing.jsonl"))
    assert list(read_spans(tmp_path)) == []


def test_unwritable_path_fails_counted_and_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "member"
    blocker.write_text("a file where the directory should be")
    exporter = JsonLinesSpanExporter(blocker / "traces.jsonl")
    spans = make_spans()

    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert exporter.export(spans[:1]) is SpanExportResult.FAILURE
    assert exporter.failed_spans == len(spans) + 1
    assert exporter.exported_spans == 0

    blocker.unlink()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.exported_spans == len(spans)
    exporter.shutdown()
    assert len(list(read_spans(blocker / "traces.jsonl"))) == len(spans)


def test_export_after_shutdown_fails(path: Path) -> None:
    exporter = JsonLinesSpanExporter(path)
    exporter.shutdown()
    assert exporter.export(make_spans()[:1]) is SpanExportResult.FAILURE
    assert exporter.failed_spans == 1
    assert exporter.force_flush()


def test_concurrent_exports_never_interleave(path: Path, exporter: JsonLinesSpanExporter) -> None:
    spans = make_spans()
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        for _ in range(50):
            exporter.export(spans)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lines(path)) == 200
    assert exporter.exported_spans == 200 * len(spans)
    assert len(list(read_spans(path))) == 200 * len(spans)


def test_invalid_settings_are_rejected(path: Path) -> None:
    with pytest.raises(ValueError):
        JsonLinesSpanExporter(path, max_bytes=0)
    with pytest.raises(ValueError):
        JsonLinesSpanExporter(path, backups=-1)


def test_spans_through_a_live_provider(path: Path, exporter: JsonLinesSpanExporter) -> None:
    provider = TracerProvider(resource=resource("n1"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("raftd.test")
    with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
        pass
    provider.shutdown()
    inner, outer_record = read_spans(path)
    assert outer_record["span_id"] == format(outer.get_span_context().span_id, "016x")
    assert inner["parent_span_id"] == outer_record["span_id"]
    assert inner["trace_id"] == outer_record["trace_id"]
    assert trace.format_trace_id(outer.get_span_context().trace_id) == inner["trace_id"]
