"""Exporter selection from OTEL_* variables, the resource, and the span accounting.

Nothing here talks to a real collector: OTLP exporters connect lazily, so selection is
checked by type, and the one export attempted goes to a closed local port. Every test
starts from an environment with no OTEL_* variable, whatever the developer's shell has.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from observability.filexport import JsonLinesSpanExporter, read_spans
from observability.tracing import (
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SCHEDULE_DELAY_MILLIS,
    BatchSettings,
    CountingExporter,
    TracingHandle,
    batch_settings,
    build_handle,
    describe_exporter,
    setup_tracing,
)

Setup = Callable[..., TracingHandle]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def setup() -> Iterator[Setup]:
    """setup_tracing, shutting every handle down afterwards so no processor thread lingers."""
    handles: list[TracingHandle] = []

    def make(
        service_name: str = "raftd", instance_id: str = "n1", **kwargs: object
    ) -> TracingHandle:
        kwargs.setdefault("file_path", None)
        handle = setup_tracing(service_name, instance_id, **kwargs)  # type: ignore[arg-type]
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.shutdown()


def test_http_protobuf_is_the_default_protocol(
    monkeypatch: pytest.MonkeyPatch, setup: Setup, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://api.honeycomb.io")
    handle = setup(file_path=tmp_path / "traces.jsonl")
    assert isinstance(handle.exporter, HttpSpanExporter)
    assert handle.description == "OTLP http/protobuf to https://api.honeycomb.io"
    assert not (tmp_path / "traces.jsonl").exists()


def test_grpc_protocol(monkeypatch: pytest.MonkeyPatch, setup: Setup) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    handle = setup()
    assert isinstance(handle.exporter, GrpcSpanExporter)
    assert handle.description == "OTLP grpc to http://collector:4317"


def test_trace_specific_variables_win(monkeypatch: pytest.MonkeyPatch, setup: Setup) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/v1/traces")
    handle = setup()
    assert isinstance(handle.exporter, HttpSpanExporter)
    assert handle.exporter._endpoint == "http://traces:4318/v1/traces"
    assert handle.description == "OTLP http/protobuf to http://traces:4318/v1/traces"


@pytest.mark.parametrize("protocol", ["http/json", "thrift"])
def test_unknown_protocol_is_rejected(
    monkeypatch: pytest.MonkeyPatch, setup: Setup, protocol: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol)
    with pytest.raises(ValueError, match=f"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='{protocol}'"):
        setup()


def test_file_when_no_endpoint(setup: Setup, tmp_path: Path) -> None:
    path = tmp_path / "n1" / "traces.jsonl"
    handle = setup(file_path=path)
    assert isinstance(handle.exporter, JsonLinesSpanExporter)
    assert handle.description == f"file {path}"
    with handle.tracer("raftd.test").start_as_current_span("tick"):
        pass
    assert handle.force_flush()
    assert handle.exported_spans == 1
    assert handle.failed_spans == 0
    (record,) = read_spans(path)
    assert record["name"] == "tick"
    assert record["service_name"] == "raftd"
    assert record["service_instance_id"] == "n1"


def test_no_exporter_still_traces_in_process(setup: Setup) -> None:
    handle = setup(file_path=None)
    assert handle.exporter is None
    assert handle.description == "none"
    with handle.tracer("raftctl").start_as_current_span("put") as span:
        assert span.is_recording()
        assert span.get_span_context().is_valid
    assert handle.force_flush()
    assert (handle.exported_spans, handle.failed_spans) == (0, 0)


def test_traces_exporter_none_wins_over_the_file(
    monkeypatch: pytest.MonkeyPatch, setup: Setup, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    handle = setup(file_path=tmp_path / "traces.jsonl")
    assert handle.exporter is None


def test_traces_exporter_otlp_uses_the_default_endpoint(
    monkeypatch: pytest.MonkeyPatch, setup: Setup, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    handle = setup(file_path=tmp_path / "traces.jsonl")
    assert isinstance(handle.exporter, HttpSpanExporter)
    assert handle.description == "OTLP http/protobuf to http://localhost:4318"


def test_unsupported_traces_exporter_is_rejected(
    monkeypatch: pytest.MonkeyPatch, setup: Setup
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='console'"):
        setup()


def test_environ_mapping_decides_the_choice(setup: Setup, tmp_path: Path) -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    assert isinstance(setup(environ=environ).exporter, GrpcSpanExporter)
    assert isinstance(
        setup(environ={}, file_path=tmp_path / "t.jsonl").exporter, JsonLinesSpanExporter
    )


def test_describe_exporter() -> None:
    assert describe_exporter({}) == "none"
    assert describe_exporter({}, file_path=Path("/data/n1/traces.jsonl")) == (
        "file /data/n1/traces.jsonl"
    )
    assert (
        describe_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://api.honeycomb.io"})
        == "OTLP http/protobuf to https://api.honeycomb.io"
    )
    leaky = "https://user:secret@collector.example:4318/v1/traces?api_key=secret"
    description = describe_exporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": leaky})
    assert description == "OTLP http/protobuf to https://collector.example:4318/v1/traces"
    assert "secret" not in description
    assert describe_exporter(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    ) == ("OTLP grpc to collector:4317")


def test_resource_names_the_member(setup: Setup) -> None:
    attributes = setup("raftd", "n2").provider.resource.attributes
    assert attributes["service.name"] == "raftd"
    assert attributes["service.instance.id"] == "n2"
    assert attributes["telemetry.sdk.name"] == "opentelemetry"


def test_resource_honours_otel_variables(monkeypatch: pytest.MonkeyPatch, setup: Setup) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "raft-staging")
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,service.instance.id=ignored"
    )
    attributes = setup("raftctl", "cli-1").provider.resource.attributes
    assert attributes["service.name"] == "raft-staging"
    assert attributes["service.instance.id"] == "cli-1"
    assert attributes["deployment.environment"] == "ci"


def test_headers_reach_the_http_exporter(monkeypatch: pytest.MonkeyPatch, setup: Setup) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://api.honeycomb.io")
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS", "x-honeycomb-team=KEY,x-honeycomb-dataset=raft"
    )
    handle = setup()
    assert isinstance(handle.exporter, HttpSpanExporter)
    # The exporter's own parsing of the variable: private, but the only place headers live.
    headers = handle.exporter._client._headers
    assert headers["x-honeycomb-team"] == "KEY"
    assert headers["x-honeycomb-dataset"] == "raft"
    assert handle.exporter._endpoint == "https://api.honeycomb.io/v1/traces"
    assert "KEY" not in handle.description


def test_unreachable_collector_counts_failures_without_raising(
    monkeypatch: pytest.MonkeyPatch, setup: Setup
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    handle = setup()
    tracer = handle.tracer("raftd.test")
    for name in ("a", "b"):
        with tracer.start_as_current_span(name):
            pass
    assert handle.force_flush()
    assert handle.exported_spans == 0
    assert handle.failed_spans == 2


def test_sampler_is_used(setup: Setup, tmp_path: Path) -> None:
    handle = setup(file_path=tmp_path / "traces.jsonl", sampler=ALWAYS_OFF)
    with handle.tracer("raftd.test").start_as_current_span("unsampled") as span:
        assert not span.is_recording()
    assert handle.force_flush()
    assert (handle.exported_spans, handle.failed_spans) == (0, 0)
    assert not (tmp_path / "traces.jsonl").exists()


class RaisingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise RuntimeError("collector exploded")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        raise RuntimeError("flush exploded")

    def shutdown(self) -> None:
        raise RuntimeError("shutdown exploded")


def test_counting_exporter_contains_exceptions() -> None:
    counter = CountingExporter(RaisingExporter())
    assert counter.export([]) is SpanExportResult.FAILURE
    handle = build_handle(Resource.create({}), RaisingExporter())
    with handle.tracer("t").start_as_current_span("x"):
        pass
    assert handle.force_flush()
    assert handle.failed_spans == 1
    assert handle.exported_spans == 0
    handle.shutdown()
    assert counter.force_flush() is False
    counter.shutdown()


class BlockingExporter(SpanExporter):
    """Holds the processor's thread inside export until released, to fill the queue."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.names: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        assert self.release.wait(10), "test never released the exporter"
        self.names.extend(span.name for span in spans)
        return SpanExportResult.SUCCESS


def test_spans_dropped_from_a_full_queue_are_counted() -> None:
    exporter = BlockingExporter()
    handle = build_handle(
        Resource.create({}),
        exporter,
        environ={"OTEL_BSP_MAX_QUEUE_SIZE": "2", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1"},
    )
    tracer = handle.tracer("raftd.test")
    try:
        with tracer.start_as_current_span("a"):
            pass
        # The processor thread has taken "a" and is stuck exporting it: the queue is empty.
        assert exporter.entered.wait(10)
        for name in ("b", "c", "d"):
            with tracer.start_as_current_span(name):
                pass
        assert handle.dropped_spans == 1
    finally:
        exporter.release.set()
    assert handle.force_flush()
    # The SDK drops the oldest queued span to make room.
    assert exporter.names == ["a", "c", "d"]
    assert handle.exported_spans == 3
    assert handle.failed_spans == 1

    handle.shutdown()
    with tracer.start_as_current_span("late"):
        pass
    assert handle.dropped_spans == 2
    assert handle.failed_spans == 2


def test_batch_settings() -> None:
    assert batch_settings({}) == BatchSettings(
        DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SCHEDULE_DELAY_MILLIS, DEFAULT_MAX_EXPORT_BATCH_SIZE
    )
    assert (DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SCHEDULE_DELAY_MILLIS) == (4096, 500)
    assert batch_settings(
        {"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    ) == BatchSettings(100, 50, 100)
    assert batch_settings(
        {"OTEL_BSP_MAX_QUEUE_SIZE": "lots", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "-1"}
    ) == BatchSettings(DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SCHEDULE_DELAY_MILLIS, 512)


def test_install_global_sets_the_provider_once() -> None:
    """In a child process: the global provider can be set only once per process."""
    script = """
from opentelemetry import trace
from observability.tracing import install_global, setup_tracing

first = setup_tracing("raftd", "n1", file_path=None, environ={})
install_global(first)
assert trace.get_tracer_provider() is first.provider
second = setup_tracing("raftd", "n2", file_path=None, environ={})
try:
    install_global(second)
except RuntimeError:
    print("refused")
"""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env=environ,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused"
