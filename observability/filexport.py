"""Spans to a local file, in the OpenTelemetry Collector's file-exporter format.

A member without a collector still leaves a trace of what it did: each export becomes one
line of OTLP/JSON (``{"resourceSpans": [...]}``) with hex ids, exactly what the collector's
``file`` exporter writes, so the same files can be replayed into a collector, loaded by tools
that read that format, or read back here by tests and ``raftctl trace``.

The exporter runs on the BatchSpanProcessor's thread, never on Raft's, so the plain blocking
file I/O below costs consensus nothing. A member killed mid-write leaves a torn line; the
exporter starts a fresh line when it reopens the file and the reader skips what does not
parse, so a crash costs at most the spans of that one export.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypedDict

from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_logger = logging.getLogger(__name__)

# The default name of the file a member writes and every rotated copy of it.
TRACE_FILE_NAME = "traces.jsonl"
_TRACE_FILE = re.compile(r"^traces\.jsonl(?:\.(\d+))?$")

_SPAN_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_LINK_ID_FIELDS = ("traceId", "spanId")


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def encode_otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """One OTLP/JSON ``ExportTraceServiceRequest``, ids in hex as the collector writes them.

    Going through the OTLP protobuf encoder, the one the OTLP exporters use, keeps the file
    identical to what a collector would receive: same grouping by resource and scope, same
    attribute encoding, int64 as strings. Only the ids differ from protobuf's JSON mapping,
    which would write bytes as base64: OTLP/JSON requires hex there.
    """
    request: dict[str, Any] = MessageToDict(
        encode_spans(spans), preserving_proto_field_name=False, use_integers_for_enums=True
    )
    for resource_spans in request.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for field in _SPAN_ID_FIELDS:
                    if field in span:
                        span[field] = _b64_to_hex(span[field])
                for link in span.get("links", []):
                    for field in _LINK_ID_FIELDS:
                        if field in link:
                            link[field] = _b64_to_hex(link[field])
    return request


class JsonLinesSpanExporter(SpanExporter):
    """Appends one OTLP/JSON line per export to ``path``, rotating by size.

    Rotation bounds the disk a long-running member can use for traces: when a line would
    take the file past ``max_bytes``, ``traces.jsonl`` becomes ``traces.jsonl.1``, the
    older copies move up one and the one past ``backups`` is deleted. A single line larger
    than ``max_bytes`` is still written, alone in a fresh file, rather than lost.

    Failures to write are reported as ``FAILURE`` and counted, never raised: the
    BatchSpanProcessor would only log an exception, and a full disk must not take tracing,
    let alone the member, down. The file is reopened on the next export, so the exporter
    recovers once the disk or directory is back.
    """

    def __init__(self, path: Path, *, max_bytes: int = 20 * 1024 * 1024, backups: int = 3) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be zero or more, not {backups}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.exported_spans = 0
        self.failed_spans = 0
        # export() runs on the processor's thread while force_flush() and shutdown() come
        # from whichever thread stops the member.
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0
        self._shut_down = False
        self._failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            line = (
                json.dumps(encode_otlp_json(spans), ensure_ascii=False, separators=(",", ":"))
                + "\n"
            ).encode("utf-8")
        except Exception:
            # A span the encoder rejects must cost only its batch, not the exporter thread.
            _logger.exception("could not encode %d spans for %s", len(spans), self.path)
            with self._lock:
                self.failed_spans += len(spans)
            return SpanExportResult.FAILURE
        with self._lock:
            if self._shut_down:
                self.failed_spans += len(spans)
                return SpanExportResult.FAILURE
            try:
                self._write(line)
            except OSError as error:
                self._close_quietly()
                self.failed_spans += len(spans)
                if not self._failing:
                    # Once per outage: the processor retries every schedule delay.
                    _logger.warning("cannot write spans to %s: %s", self.path, error)
                    self._failing = True
                return SpanExportResult.FAILURE
            self._failing = False
            self.exported_spans += len(spans)
            return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            if self._file is None:
                return True
            try:
                self._file.flush()
            except OSError:
                self._close_quietly()
                return False
            return True

    def shutdown(self) -> None:
        with self._lock:
            self._shut_down = True
            self._close_quietly()

    def _write(self, line: bytes) -> None:
        if self._file is None:
            self._open()
        if self._size > 0 and self._size + len(line) > self.max_bytes:
            self._rotate()
            self._open()
        assert self._file is not None
        self._file.write(line)
        self._file.flush()
        self._size += len(line)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "ab")  # noqa: SIM115 - kept open across exports
        try:
            size = os.fstat(file.fileno()).st_size
            if size > 0 and not _ends_with_newline(self.path, size):
                # The previous writer died (or failed) mid-line: end the torn line so it
                # stays one unreadable line instead of corrupting the next one.
                file.write(b"\n")
                file.flush()
                size += 1
        except OSError:
            file.close()
            raise
        self._file = file
        self._size = size

    def _rotate(self) -> None:
        self._close_quietly()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for number in range(self.backups - 1, 0, -1):
            older = _backup(self.path, number)
            if older.exists():
                os.replace(older, _backup(self.path, number + 1))
        os.replace(self.path, _backup(self.path, 1))

    def _close_quietly(self) -> None:
        file, self._file = self._file, None
        self._size = 0
        if file is not None:
            try:
                file.close()
            except OSError as error:
                _logger.warning("error closing %s: %s", self.path, error)


def _backup(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}")


def _ends_with_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as file:
        file.seek(size - 1)
        return file.read(1) == b"\n"


# --- reading -------------------------------------------------------------------------------


class EventRecord(TypedDict):
    name: str
    time_ns: int
    attributes: dict[str, Any]


class LinkRecord(TypedDict):
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


class SpanRecord(TypedDict):
    """One span, flattened so tests and ``raftctl trace`` need not walk the OTLP nesting."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[EventRecord]
    links: list[LinkRecord]
    status_code: int
    status_message: str
    service_name: str | None
    service_instance_id: str | None
    scope_name: str
    resource: dict[str, Any]


def trace_files(path_or_dir: Path) -> list[Path]:
    """The files to read, oldest first, so spans come out in the order they were written.

    A file path stands for itself and its rotated copies (``path.1`` is older than
    ``path``, ``path.2`` older still); a directory stands for every ``traces.jsonl`` and
    rotated copy anywhere beneath it, such as a cluster directory of member directories.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        groups: dict[Path, list[tuple[int, Path]]] = {}
        for candidate in path.rglob("traces.jsonl*"):
            match = _TRACE_FILE.match(candidate.name)
            if match is None or not candidate.is_file():
                continue
            number = int(match.group(1)) if match.group(1) else 0
            groups.setdefault(candidate.parent / TRACE_FILE_NAME, []).append((number, candidate))
        return [
            file
            for base in sorted(groups)
            for _, file in sorted(groups[base], key=lambda entry: -entry[0])
        ]
    numbered: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        prefix = path.name + "."
        for candidate in path.parent.iterdir():
            suffix = candidate.name.removeprefix(prefix)
            if candidate.name.startswith(prefix) and suffix.isdigit() and candidate.is_file():
                numbered.append((int(suffix), candidate))
    files = [file for _, file in sorted(numbered, key=lambda entry: -entry[0])]
    if path.is_file():
        files.append(path)
    if not files:
        raise FileNotFoundError(f"no trace file at {path}")
    return files


def read_spans(path_or_dir: Path) -> Iterator[SpanRecord]:
    """Every span in a trace file and its rotated copies, or under a directory tree.

    A line that is not JSON is skipped: it is what a member killed mid-write leaves,
    usually as the last line, or in the middle once the restarted member appended after
    it. A line that is JSON but not OTLP is a real error and raises ``ValueError``.
    Lines of other signals (``resourceLogs``, ``resourceMetrics``) are ignored, so a
    collector file exporter's mixed output can be read too.
    """
    for file in trace_files(path_or_dir):
        yield from _read_file(file)


def _read_file(path: Path) -> Iterator[SpanRecord]:
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                request = json.loads(raw)
            except ValueError:
                continue
            try:
                yield from _flatten(request)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise ValueError(f"{path}:{number}: not OTLP/JSON spans: {error}") from error


def _flatten(request: Mapping[str, Any]) -> Iterator[SpanRecord]:
    for resource_spans in request.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        service_name = resource.get("service.name")
        instance_id = resource.get("service.instance.id")
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope_name = str(scope_spans.get("scope", {}).get("name", ""))
            for span in scope_spans.get("spans", []):
                status = span.get("status", {})
                yield SpanRecord(
                    trace_id=str(span["traceId"]).lower(),
                    span_id=str(span["spanId"]).lower(),
                    parent_span_id=str(span["parentSpanId"]).lower()
                    if span.get("parentSpanId")
                    else None,
                    name=str(span.get("name", "")),
                    kind=int(span.get("kind", 0)),
                    start_ns=int(span.get("startTimeUnixNano", 0)),
                    end_ns=int(span.get("endTimeUnixNano", 0)),
                    attributes=_attributes(span.get("attributes", [])),
                    events=[
                        EventRecord(
                            name=str(event.get("name", "")),
                            time_ns=int(event.get("timeUnixNano", 0)),
                            attributes=_attributes(event.get("attributes", [])),
                        )
                        for event in span.get("events", [])
                    ],
                    links=[
                        LinkRecord(
                            trace_id=str(link["traceId"]).lower(),
                            span_id=str(link["spanId"]).lower(),
                            attributes=_attributes(link.get("attributes", [])),
                        )
                        for link in span.get("links", [])
                    ],
                    status_code=int(status.get("code", 0)),
                    status_message=str(status.get("message", "")),
                    service_name=None if service_name is None else str(service_name),
                    service_instance_id=None if instance_id is None else str(instance_id),
                    scope_name=scope_name,
                    resource=resource,
                )


def _attributes(key_values: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {str(kv["key"]): _any_value(kv.get("value", {})) for kv in key_values}


def _any_value(value: Mapping[str, Any]) -> Any:
    """A Python value from an OTLP ``AnyValue``; proto3 JSON omits nothing set in a oneof."""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        # float() also takes proto3 JSON's "NaN", "Infinity" and "-Infinity".
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_any_value(item) for item in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None
