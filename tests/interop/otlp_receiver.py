"""A minimal OTLP/HTTP traces receiver for the trace export tests.

It decodes what it receives with the OpenTelemetry project's own protobuf
definitions (the `opentelemetry-proto` package), so a span grantbridge
encodes wrongly fails to parse here as it would in a collector.

Usage: python3 otlp_receiver.py OUT.jsonl
Prints `listening PORT` once bound on 127.0.0.1, then appends one JSON line
per received span to OUT.jsonl:
  {"service": ..., "name": ..., "trace_id": hex, "span_id": hex,
   "parent_span_id": hex or "", "kind": int, "status": int,
   "attributes": {key: value}, "events": [name, ...],
   "start": unix_nanos, "end": unix_nanos, "content_type": ...}
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


class Receiver(BaseHTTPRequestHandler):
    out = None

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as e:  # a collector would refuse it too
            self.send_error(400, f"not an ExportTraceServiceRequest: {e}")
            return
        lines = []
        for rs in request.resource_spans:
            resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    lines.append(
                        {
                            "service": resource.get("service.name"),
                            "service_version": resource.get("service.version"),
                            "scope": ss.scope.name,
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "status": span.status.code,
                            "attributes": {
                                kv.key: any_value(kv.value) for kv in span.attributes
                            },
                            "events": [e.name for e in span.events],
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "content_type": self.headers.get("content-type"),
                        }
                    )
        with open(self.out, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    Receiver.out = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
