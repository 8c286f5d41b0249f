"""OpenTelemetry traces of embed and rerank requests: a server span per request, a child per stage.

Off unless the standard variables name an OTLP endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_EXPORTER_OTLP_ENDPOINT`); `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` chooses `grpc` or
`http/protobuf` (the default, as the specification says). The SDK's exporter reads the rest
(headers, certificates, time-outs), `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the
service, and `OTEL_SDK_DISABLED=true` turns it off. A W3C `traceparent` from the client becomes
the request span's parent. Spans are built from the request's clock after its answer is sent,
and exported in batches by a background thread: nothing is added to the request's own time.
"""

from __future__ import annotations

import os
import time
from typing import Any

from serving.api.timing import RequestClock

PROTOCOLS = ("grpc", "http/protobuf")


class TracingConfigError(ValueError):
    """The OTLP variables ask for something this server cannot do."""


def tracer_from_env(environ: dict[str, str] | None = None):
    """A tracer exporting over OTLP as the environment says, or None when tracing is off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise TracingConfigError(f"OTLP protocol {protocol!r} is not supported for traces; use one of {PROTOCOLS}")
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over this default.
    defaults = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "qwen3-serving"}
    provider = TracerProvider(resource=Resource.create(defaults))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("serving")


def record_spans(tracer, clock: RequestClock, scope: dict[str, Any]) -> None:
    """The request's spans, from its clock: the request, then ingress, the model call (tokenize,
    queue, inference: per input) and serialize."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    end_ns = time.time_ns()
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()}
    method = scope.get("method", "POST")
    attributes = {"http.request.method": method, "url.path": scope.get("path", ""),
                  "http.response.status_code": clock.status, "qwen3.endpoint": clock.endpoint or "",
                  "qwen3.model": clock.model, "qwen3.inputs": clock.inputs, "qwen3.input_tokens": clock.tokens}
    if clock.kind:
        attributes["qwen3.kind"] = clock.kind
    if clock.dimensions is not None:
        attributes["qwen3.dimensions"] = clock.dimensions
    request = tracer.start_span(f"{method} {clock.endpoint}", context=propagate.extract(headers),
                                kind=SpanKind.SERVER, start_time=clock.start_ns, attributes=attributes)
    if clock.status >= 500:
        request.set_status(Status(StatusCode.ERROR, clock.code or ""))
    if clock.stages:
        parent = trace.set_span_in_context(request)
        ingress_end, model_end = clock.epoch_ns("ingress"), clock.epoch_ns("model")

        def child(name: str, start: int, end: int, context=parent, **attrs):
            span = tracer.start_span(name, context=context, start_time=start, attributes=attrs or None)
            span.end(end_time=max(end, start))
            return span

        child("ingress", clock.start_ns, ingress_end)
        times = clock.times
        model = tracer.start_span(clock.kind, context=parent, start_time=ingress_end,
                                  attributes={"qwen3.dispatch_s": clock.stages["dispatch"]})
        inside = trace.set_span_in_context(model)
        # The model's own times are wall-clock times of the process that ran it.
        engine_start = times.engine_ns or times.start_ns
        queue_ns, inference_ns = int(clock.stages["queue"] * 1e9), int(clock.stages["inference"] * 1e9)
        child("tokenize", times.start_ns, engine_start, inside, **{"qwen3.inputs": times.inputs})
        child("queue", engine_start, engine_start + queue_ns, inside)
        child("inference", engine_start + queue_ns, engine_start + queue_ns + inference_ns, inside)
        model.end(end_time=model_end)
        child("serialize", model_end, clock.respond_ns or end_ns)
    request.end(end_time=end_ns)
