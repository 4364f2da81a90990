"""Where raftd's and raftctl's spans go, and how many of them got there.

The standard ``OTEL_*`` variables decide, so the same binary sends to Honeycomb, to a local
collector or to a file without a flag: an OTLP endpoint wins, then the trace file the
caller offers, then nothing (spans are still created, so trace context still propagates
and logs still carry trace ids; they are just not kept).

Export happens on the BatchSpanProcessor's own thread: a slow or unreachable collector
can fill its queue but never stall the Raft loop, which only appends to that queue. Spans
lost on the way (queue full, export failed, exporter raised) are counted, so the
Prometheus metrics can show tracing is lossy instead of it failing silently.

``environ`` decides the choices made here (which exporter, service name, queue sizes);
the SDK and the OTLP exporters read their own settings (endpoint, headers, timeout, TLS,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``) from ``os.environ`` themselves,
which is the point: they stay the single reading of those variables. Pass a mapping other
than ``os.environ`` only to test the choice.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Sampler

from observability.budget import TraceWindow
from observability.filexport import JsonLinesSpanExporter
from observability.sampling import RaftdSampler

_logger = logging.getLogger(__name__)

HTTP_PROTOBUF = "http/protobuf"
GRPC = "grpc"
_PROTOCOLS = (HTTP_PROTOBUF, GRPC)
_DEFAULT_ENDPOINTS = {HTTP_PROTOBUF: "http://localhost:4318", GRPC: "http://localhost:4317"}

DEFAULT_MAX_QUEUE_SIZE = 4096
DEFAULT_SCHEDULE_DELAY_MILLIS = 500
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512


@dataclass(frozen=True)
class ExporterChoice:
    """What the environment asks for, decided before anything is built.

    Kept separate from building so the start-up log line and the exporter cannot disagree.
    """

    kind: Literal["otlp", "file", "none"]
    protocol: str | None = None
    endpoint: str | None = None
    file_path: Path | None = None

    def describe(self) -> str:
        if self.kind == "otlp":
            return f"OTLP {self.protocol} to {_redact(self.endpoint or '')}"
        if self.kind == "file":
            return f"file {self.file_path}"
        return "none"


def _get(environ: Mapping[str, str], name: str) -> str:
    # The specification treats an empty variable as an unset one.
    return environ.get(name, "").strip()


def choose_exporter(
    environ: Mapping[str, str] = os.environ, *, file_path: Path | None = None
) -> ExporterChoice:
    """OTLP if an endpoint is configured (or ``OTEL_TRACES_EXPORTER=otlp``), else the file.

    ``OTEL_TRACES_EXPORTER=none`` turns export off even with a trace file. A protocol or
    exporter name this build cannot honour raises ``ValueError`` at start-up: silently
    falling back would leave someone staring at an empty Honeycomb dataset.
    """
    listed = _get(environ, "OTEL_TRACES_EXPORTER").lower().split(",")
    names = {name.strip() for name in listed} - {""}
    unsupported = names - {"otlp", "none"}
    if unsupported:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={_get(environ, 'OTEL_TRACES_EXPORTER')!r}: "
            f"raftd supports only 'otlp' and 'none' (or leave it unset)"
        )
    endpoint = _get(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _get(
        environ, "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if "otlp" in names or (endpoint and not names):
        protocol = _protocol(environ)
        return ExporterChoice(
            "otlp", protocol=protocol, endpoint=endpoint or _DEFAULT_ENDPOINTS[protocol]
        )
    if names == {"none"} or file_path is None:
        return ExporterChoice("none")
    return ExporterChoice("file", file_path=Path(file_path))


def _protocol(environ: Mapping[str, str]) -> str:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = _get(environ, variable)
        if value:
            if value.lower() not in _PROTOCOLS:
                raise ValueError(
                    f"{variable}={value!r}: unsupported OTLP protocol; "
                    f"raftd supports {' and '.join(_PROTOCOLS)}"
                )
            return value.lower()
    return HTTP_PROTOBUF


def describe_exporter(
    environ: Mapping[str, str] = os.environ, *, file_path: Path | None = None
) -> str:
    """For the start-up log line, e.g. ``OTLP http/protobuf to https://api.honeycomb.io``.

    Credentials in the endpoint URL are dropped; headers (where the Honeycomb key lives)
    are never shown.
    """
    return choose_exporter(environ, file_path=file_path).describe()


def _redact(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if not parts.scheme or not parts.netloc:
        return endpoint
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def build_exporter(choice: ExporterChoice) -> SpanExporter | None:
    """The exporter for a choice; the OTLP ones configure themselves from ``os.environ``.

    The OTLP modules are imported only when chosen: gRPC alone adds a noticeable delay to
    every raftctl invocation that never uses it.
    """
    if choice.kind == "otlp":
        if choice.protocol == GRPC:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )

            return GrpcSpanExporter()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter()
    if choice.kind == "file":
        assert choice.file_path is not None
        return JsonLinesSpanExporter(choice.file_path)
    return None


class CountingExporter(SpanExporter):
    """Counts what the wrapped exporter did with each batch, and contains its exceptions.

    The SDK keeps no such count, and an exception escaping ``export`` would only be logged
    by the processor thread; here it becomes a counted failure like any other.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported_spans = 0
        self.failed_spans = 0
        self._lock = threading.Lock()
        self._failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            if not self._failing:
                _logger.exception("span exporter %s raised", type(self.inner).__name__)
            result = SpanExportResult.FAILURE
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported_spans += len(spans)
            else:
                self.failed_spans += len(spans)
        # Log the first failure of an outage, not one per schedule delay until it ends.
        self._failing = result is not SpanExportResult.SUCCESS
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.inner.force_flush(timeout_millis)
        except Exception:
            _logger.exception("span exporter %s failed to flush", type(self.inner).__name__)
            return False

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception:
            _logger.exception("span exporter %s failed to shut down", type(self.inner).__name__)


@dataclass(frozen=True)
class BatchSettings:
    max_queue_size: int
    schedule_delay_millis: int
    max_export_batch_size: int


def batch_settings(environ: Mapping[str, str] = os.environ) -> BatchSettings:
    """raftd's batching defaults, overridden by ``OTEL_BSP_*``.

    Our defaults differ from the SDK's (a larger queue rides out a collector hiccup during
    an election storm; a shorter delay makes spans show up while someone watches), so the
    variables are read here rather than left to the SDK, which would only consult them
    when no value is passed. The batch size is capped at the queue size, a combination the
    SDK would otherwise reject at start-up.
    """
    queue = _positive_int(environ, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE)
    delay = _positive_int(environ, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY_MILLIS)
    batch = _positive_int(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE)
    return BatchSettings(queue, delay, min(batch, queue))


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = _get(environ, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        _logger.warning("%s=%r is not a positive integer; using %d", name, raw, default)
        return default
    return value


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that also counts the spans it drops.

    The SDK drops the oldest queued span when its queue is full, and spans ended after
    shutdown, reporting either only through its internal metrics (off unless an
    environment variable enables them). The queue is SDK-internal; if a future SDK moves
    it, queue-full drops stop being counted and a warning says so once at start-up
    (``tests/observability/test_tracing.py`` notices first).
    """

    def __init__(self, exporter: SpanExporter, settings: BatchSettings) -> None:
        super().__init__(
            exporter,
            max_queue_size=settings.max_queue_size,
            schedule_delay_millis=settings.schedule_delay_millis,
            max_export_batch_size=settings.max_export_batch_size,
        )
        self.capacity = settings.max_queue_size
        self.dropped_spans = 0
        self._lock = threading.Lock()
        self._closed = False
        self._queue: Sequence[object] | None = getattr(
            getattr(self, "_batch_processor", None), "_queue", None
        )
        if self._queue is None:
            _logger.warning("this OpenTelemetry SDK hides its span queue: drops go uncounted")

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            queue = self._queue
            if self._closed or (queue is not None and len(queue) >= self.capacity):
                with self._lock:
                    self.dropped_spans += 1
        super().on_end(span)

    def shutdown(self) -> None:
        self._closed = True
        super().shutdown()  # type: ignore[no-untyped-call]


class BudgetedSpanProcessor(SpanProcessor):
    """Holds every span to the member's trace window before it reaches the exporter.

    The sampler admits a trace when its first span here starts; this checks each span's
    own start and end instants too, which is what makes the cap exact even for a span
    dated in the past (``observability.budget``). A span that does not fit is not
    exported, and the rest of its trace is kept out with it."""

    def __init__(self, inner: SpanProcessor, window: TraceWindow) -> None:
        self.inner = inner
        self.window = window
        self._doomed: set[int] = set()  # span ids started but refused: never exported
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span.get_span_context()
        start = span.start_time
        if self._refused_at(context.trace_flags.sampled, context.trace_id, start):
            with self._lock:
                self._doomed.add(context.span_id)
        self.inner.on_start(span, parent_context)

    def _refused_at(self, sampled: bool, trace_id: int, start: int | None) -> bool:
        if not sampled or start is None or self.window.admit(trace_id, start):
            return False
        self.window.refuse(trace_id, start)
        return True

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            with self._lock:
                doomed = context.span_id in self._doomed
                self._doomed.discard(context.span_id)
            if doomed:
                return
            if span.end_time is not None and not self.window.admit(context.trace_id, span.end_time):
                return
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class TracingHandle:
    """The provider plus the counts the metrics read; nothing here is process-global.

    Keeping the provider off the global until ``install_global`` lets tests and the
    in-process cluster run several members, each with its own resource, side by side.
    """

    def __init__(
        self,
        provider: TracerProvider,
        *,
        exporter: SpanExporter | None,
        processor: CountingBatchSpanProcessor | None,
        counter: CountingExporter | None,
        description: str,
    ) -> None:
        self.provider = provider
        self.exporter = exporter
        self.processor = processor
        self.description = description
        self._counter = counter

    def tracer(self, name: str, version: str | None = None) -> trace.Tracer:
        return self.provider.get_tracer(name, version)

    @property
    def exported_spans(self) -> int:
        return 0 if self._counter is None else self._counter.exported_spans

    @property
    def dropped_spans(self) -> int:
        """Spans the processor dropped (queue full, or ended after shutdown)."""
        return 0 if self.processor is None else self.processor.dropped_spans

    @property
    def failed_spans(self) -> int:
        """Every sampled span that did not reach its destination: export failures + drops."""
        failed = 0 if self._counter is None else self._counter.failed_spans
        return failed + self.dropped_spans

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.provider.shutdown()


def build_resource(
    service_name: str, instance_id: str, environ: Mapping[str, str] = os.environ
) -> Resource:
    """``service.name`` and ``service.instance.id`` beat ``OTEL_RESOURCE_ATTRIBUTES``.

    Every member must be told apart in a trace even if the environment sets a blanket
    instance id; ``OTEL_SERVICE_NAME`` still renames the service, as the spec promises.
    """
    name = _get(environ, "OTEL_SERVICE_NAME") or service_name
    return Resource.create({SERVICE_NAME: name, SERVICE_INSTANCE_ID: instance_id})


def build_handle(
    resource: Resource,
    exporter: SpanExporter | None,
    *,
    sampler: Sampler | None = None,
    environ: Mapping[str, str] = os.environ,
    description: str = "",
) -> TracingHandle:
    """A handle around any exporter, so tests can use the counting and batching as is."""
    provider = TracerProvider(resource=resource, sampler=sampler)
    if exporter is None:
        return TracingHandle(
            provider, exporter=None, processor=None, counter=None, description=description
        )
    counter = CountingExporter(exporter)
    processor = CountingBatchSpanProcessor(counter, batch_settings(environ))
    if isinstance(sampler, RaftdSampler):
        provider.add_span_processor(BudgetedSpanProcessor(processor, sampler.window))
    else:
        provider.add_span_processor(processor)
    return TracingHandle(
        provider, exporter=exporter, processor=processor, counter=counter, description=description
    )


def setup_tracing(
    service_name: str,
    instance_id: str,
    *,
    file_path: Path | None,
    sampler: Sampler | None = None,
    environ: Mapping[str, str] = os.environ,
) -> TracingHandle:
    """Tracing for one raftd member or one raftctl run, exporting as the environment says.

    ``sampler`` None leaves the SDK to read ``OTEL_TRACES_SAMPLER``.
    """
    choice = choose_exporter(environ, file_path=file_path)
    return build_handle(
        build_resource(service_name, instance_id, environ),
        build_exporter(choice),
        sampler=sampler,
        environ=environ,
        description=choice.describe(),
    )


def install_global(handle: TracingHandle) -> None:
    """Make the handle's provider the one ``trace.get_tracer`` uses.

    The SDK allows this once per process and only logs a warning on a second attempt, after
    which spans would quietly go to the old provider; raise instead.
    """
    trace.set_tracer_provider(handle.provider)
    if trace.get_tracer_provider() is not handle.provider:
        raise RuntimeError("a global tracer provider was already installed in this process")
