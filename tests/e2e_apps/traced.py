"""The basic app with an OpenTelemetry SDK set up at import, exporting finished spans as JSON
lines to the file named by PGFLOW_TEST_SPANS (for ``pgflow-kombu worker --otel`` tests)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tests.e2e_apps.basic import app

__all__ = ["app"]


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                parent = span.parent
                entry = {
                    "name": span.name,
                    "trace_id": f"{span.context.trace_id:032x}",
                    "span_id": f"{span.context.span_id:016x}",
                    "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                }
                out.write(json.dumps(entry) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["PGFLOW_TEST_SPANS"])))
trace.set_tracer_provider(provider)
