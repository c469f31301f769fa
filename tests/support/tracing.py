"""Spans recorded in memory: the SDK's in-memory exporter behind a switch, installed once per process.

The global tracer provider can be set only once in a process, so the recorder stays installed after
the test that needed it; between tests it records nothing and the marketplace's own tracing is off
again (core.telemetry.STATE), as it is by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core import telemetry


class SwitchedProcessor(SpanProcessor):
    """Hands ended spans to the in-memory exporter while switched on."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self._inner = SimpleSpanProcessor(self.exporter)
        self.on = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self._inner.on_end(span)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


_PROCESSOR: SwitchedProcessor | None = None


@contextmanager
def recorded_spans() -> Iterator[SwitchedProcessor]:
    """Tracing on for the block, every ended span kept in memory (`.spans()`)."""
    global _PROCESSOR
    if _PROCESSOR is None:
        _PROCESSOR = SwitchedProcessor()
        telemetry.install(_PROCESSOR, "marketplace-tests")
    _PROCESSOR.exporter.clear()
    _PROCESSOR.on = telemetry.STATE.enabled = True
    try:
        yield _PROCESSOR
    finally:
        _PROCESSOR.on = telemetry.STATE.enabled = False
        _PROCESSOR.exporter.clear()


def by_name(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None
