"""An OTLP trace receiver for tests, over gRPC and over HTTP (protobuf): the OpenTelemetry
Collector's receiving end, built on the protocol's own generated service and messages
(`opentelemetry-proto`), as the SDK's exporter tests build theirs. No collector binary can be
had here (no hub, no release downloads)."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving.ports import reserve_port


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    service: str


class Receiver:
    """Collects the spans of every export request it is sent."""

    def __init__(self):
        self.spans: list[Span] = []
        self.exports = 0
        self._lock = threading.Lock()

    def take(self, request) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    spans.append(Span(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                                      s.start_time_unix_nano, s.end_time_unix_nano, _attributes(s.attributes),
                                      resource.get("service.name", "")))
        with self._lock:
            self.spans.extend(spans)
            self.exports += 1

    def wait_for(self, predicate, timeout_s: float = 30) -> list[Span]:
        """The spans once ``predicate(spans)`` holds (spans are exported in batches, every few seconds)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


def _attributes(pairs) -> dict[str, Any]:
    out = {}
    for kv in pairs:
        value = kv.value
        field = value.WhichOneof("value")
        out[kv.key] = getattr(value, field) if field else None
    return out


class GrpcReceiver(Receiver):
    """OTLP/gRPC on 127.0.0.1 (`endpoint`: http://127.0.0.1:PORT)."""

    def __enter__(self) -> GrpcReceiver:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # the protocol's name
                receiver.take(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.port = reserve_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=None)


class HttpReceiver(Receiver):
    """OTLP/HTTP with protobuf bodies on 127.0.0.1: `POST /v1/traces` (`endpoint` is the base URL)."""

    def __enter__(self) -> HttpReceiver:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.take(request)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.port = reserve_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
