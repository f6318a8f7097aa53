"""Checks error answers against what Google's clients read: the JSON error
envelope of Google's APIs, `{"error": {"code", "message", "status"}}`, parsed
by google-api-core (what Google's Python clients raise an HTTP error as), and
`status` a google.rpc.Code name whose google-api-core exception has that HTTP
status.

stdin: a JSON list of {"where": "...", "status": HTTP status, "body": {...}}
Prints one line per answer; exits 1 if any does not conform.
"""
import json
import sys

import google.api_core.exceptions as exceptions
import requests
from google.rpc import code_pb2


def api_core_class_for(code_name):
    """The google-api-core exception class that carries this gRPC code."""
    for value in vars(exceptions).values():
        grpc_code = getattr(value, "grpc_status_code", None)
        if isinstance(value, type) and grpc_code is not None and grpc_code.name == code_name:
            return value
    return None


def problems(status, body):
    if set(body) != {"error"}:
        return [f"top-level keys {sorted(body)}, expected only 'error'"]
    error = body["error"]
    out = []
    extra = set(error) - {"code", "message", "status", "details"}
    if extra:
        out.append(f"fields Google does not send: {sorted(extra)}")
    if error.get("code") != status:
        out.append(f"error.code {error.get('code')!r} is not the HTTP status {status}")
    if not isinstance(error.get("message"), str) or not error["message"]:
        out.append("error.message is not a non-empty string")
    name = error.get("status")
    if name not in code_pb2.Code.keys():
        out.append(f"error.status {name!r} is not a google.rpc.Code")
    else:
        cls = api_core_class_for(name)
        if cls is None or cls.code != status:
            out.append(f"error.status {name} maps to HTTP {getattr(cls, 'code', None)} in google-api-core, not {status}")
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body).encode()
    r.request = requests.Request("GET", "http://sandbox/").prepare()
    raised = exceptions.from_http_response(r)
    if raised.code != status or error.get("message") not in raised.message:
        out.append(f"google-api-core read HTTP {raised.code} {raised.message!r}")
    return out


def main():
    failed = 0
    for case in json.load(sys.stdin):
        found = problems(case["status"], case["body"])
        if found:
            failed += 1
            for p in found:
                print(f"FAIL {case['where']}: {p}")
        else:
            print(f"ok   {case['where']}")
    sys.exit(1 if failed else 0)


main()
