"""A grantbridge (and Apono custom-integration) function for Cloud Functions,
Python, served by Google's functions-framework.

One HTTP entry point, `handle`, dispatches on the body's `event_type`:

    POST /  {"event_type": "grant-access",
             "params": {"grant_id", "username", "resource_type", "resources": [...],
                        "permission", "custom_parameters": {"role_prefix": "..."}}}

- get-status      -> 200 {"status": "ok", "backend": ..., ...}
- list-resources  -> 200 {"resources": [{"id", "name", "type", "metadata"}],
                          "permissions": [{"id", "name"}]}
- grant-access    -> 200 {"status": "ok", "grant_id", "changes": [...], "replayed": false}
- revoke-access   -> the same
- a request the backend cannot do (unknown resource, ...)
                  -> 200 {"status": "error", "message": ...}   (not retried)
- a malformed request or another event type
                  -> 400 {"status": "error", "message": ...}   (not retried)
- an unexpected failure
                  -> 500 {"status": "error", "message": ...}   (retried, same key)

grant-access and revoke-access change things, so they are deduplicated on the
`Idempotency-Key` header (the grantbridge action id, kept across retries): a
repeat gets the first answer with `"replayed": true` and the backend is not
called again. The reads (get-status, list-resources) always run.

Logs are JSON lines on stdout, which Cloud Logging parses: `severity`,
`message`, and `logging.googleapis.com/trace` from the `traceparent` header, so
the function's lines sit under the same trace as grantbridge's. Credentials and
the Authorization header are never logged.
"""

from __future__ import annotations

import json
import os
import re
import sys

import functions_framework

from grant_backend import AccessRequest, Backend, BusinessError, InMemoryBackend
from idempotency_store import (
    IN_PROGRESS,
    MISMATCH,
    REPLAY,
    Answer,
    IdempotencyStore,
    fingerprint,
    store_from_env,
)

# Built once per instance, reused by every request it serves.
BACKEND: Backend = InMemoryBackend()
IDEMPOTENCY: IdempotencyStore = store_from_env()
# Cloud Logging links a line to a trace by "projects/<project>/traces/<id>".
# Deploy with --set-env-vars=GOOGLE_CLOUD_PROJECT=<project> (newer runtimes do
# not set it for you); without it lines still carry the bare trace id.
PROJECT = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCP_PROJECT")

MUTATIONS = ("grant-access", "revoke-access")
READS = ("get-status", "list-resources")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ROLE_PREFIX = re.compile(r"^[a-z0-9_]{0,32}$")
_MAX_KEY_LENGTH = 255


class BadRequest(Exception):
    """Answered 400: the caller sent something this function does not accept."""


@functions_framework.http
def handle(request):
    log = RequestLog(request.headers.get("traceparent"), request.headers.get("Idempotency-Key"))
    key = request.headers.get("Idempotency-Key")
    try:
        event_type, params = parse(request)
        if key is not None and not 0 < len(key) <= _MAX_KEY_LENGTH:
            raise BadRequest(f"Idempotency-Key must be 1..{_MAX_KEY_LENGTH} characters")
    except BadRequest as e:
        log.write("WARNING", "bad request", reason=str(e))
        return reply(Answer(400, {"status": "error", "message": str(e)}))
    log.event(event_type, params)

    if event_type in READS or key is None:
        answer = run(event_type, params, log)
        log.write("INFO" if answer.status < 500 else "ERROR", f"{event_type} answered",
                  http_status=answer.status, outcome=answer.body.get("status", "ok"))
        return reply(answer)

    claim = IDEMPOTENCY.claim(key, fingerprint(event_type, params))
    if claim.outcome == REPLAY:
        log.write("INFO", f"{event_type} replayed: already done under this Idempotency-Key",
                  http_status=claim.answer.status, replayed=True)
        return reply(claim.answer, replayed=True)
    if claim.outcome == IN_PROGRESS:
        log.write("WARNING", f"{event_type} already running under this Idempotency-Key")
        return reply(
            Answer(429, {"status": "error",
                         "message": "a request with this Idempotency-Key is still running; retry shortly"}),
            headers={"Retry-After": "2"},
        )
    if claim.outcome == MISMATCH:
        log.write("WARNING", "Idempotency-Key reused for a different request")
        return reply(Answer(422, {"status": "error",
                                  "message": "this Idempotency-Key was used for a different request"}))

    answer = run(event_type, params, log)
    if answer.status >= 500:
        IDEMPOTENCY.release(key)  # not done: a retry with this key runs it again
    else:
        IDEMPOTENCY.complete(key, answer)
    log.write("INFO" if answer.status < 500 else "ERROR", f"{event_type} answered",
              http_status=answer.status, outcome=answer.body.get("status"), replayed=False)
    return reply(answer)


def run(event_type: str, params: dict, log: "RequestLog") -> Answer:
    """Calls the backend; maps its errors onto the contract's answers."""
    try:
        if event_type == "get-status":
            return Answer(200, {"status": "ok", "backend": BACKEND.name,
                                "idempotency_store": IDEMPOTENCY.name, **BACKEND.status()})
        if event_type == "list-resources":
            return Answer(200, BACKEND.list_resources(params["resource_type"]))
        request = access_request(params)
        changes = BACKEND.grant(request) if event_type == "grant-access" else BACKEND.revoke(request)
        return Answer(200, {"status": "ok", "grant_id": request.grant_id, "changes": changes})
    except BusinessError as e:
        return Answer(200, {"status": "error", "message": str(e)})
    except Exception as e:  # the backend failed: tell the caller to retry
        log.write("ERROR", f"{event_type} failed", error=f"{type(e).__name__}: {e}")
        return Answer(500, {"status": "error", "message": f"{event_type} failed; retry later"})


def parse(request) -> tuple:
    """The body as (event_type, params), or BadRequest saying what is wrong."""
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object {\"event_type\", \"params\"}")
    event_type = payload.get("event_type")
    params = payload.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object")
    if event_type == "list-resources":
        require_str(params, "resource_type")
    elif event_type in MUTATIONS:
        for name in ("grant_id", "username", "resource_type", "permission"):
            require_str(params, name)
        resources = params.get("resources")
        if (not isinstance(resources, list) or not resources
                or not all(isinstance(r, str) and r for r in resources)):
            raise BadRequest(f"{event_type} requires params.resources: a non-empty array of strings")
    elif event_type != "get-status":
        raise BadRequest(
            f"unsupported event_type {event_type!r}; this function handles "
            + ", ".join(READS + MUTATIONS)
        )
    custom = params.get("custom_parameters") or {}
    if not isinstance(custom, dict):
        raise BadRequest("params.custom_parameters must be a JSON object")
    prefix = custom.get("role_prefix", "")
    if not isinstance(prefix, str) or not _ROLE_PREFIX.match(prefix):
        raise BadRequest("custom_parameters.role_prefix must be up to 32 of [a-z0-9_]")
    return event_type, params


def require_str(params: dict, name: str) -> None:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"params.{name} is required: a non-empty string")


def access_request(params: dict) -> AccessRequest:
    custom = params.get("custom_parameters") or {}
    return AccessRequest(
        grant_id=params["grant_id"],
        username=params["username"],
        resource_type=params["resource_type"],
        resources=tuple(params["resources"]),
        permission=params["permission"],
        role_prefix=custom.get("role_prefix", ""),
    )


def reply(answer: Answer, replayed: bool = False, headers: dict | None = None):
    body = dict(answer.body)
    headers = dict(headers or {})
    if answer.status < 300 and "status" in body:  # grant/revoke answers, not lists
        body["replayed"] = replayed
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return body, answer.status, headers


class RequestLog:
    """One JSON line per call to `write`, correlated by the W3C trace id."""

    def __init__(self, traceparent: str | None, idempotency_key: str | None) -> None:
        self._fields: dict = {}
        match = _TRACEPARENT.match((traceparent or "").strip().lower())
        if match and set(match.group(1)) != {"0"}:
            trace_id, span_id, flags = match.groups()
            self._fields["trace_id"] = trace_id
            if PROJECT:
                self._fields["logging.googleapis.com/trace"] = f"projects/{PROJECT}/traces/{trace_id}"
            self._fields["logging.googleapis.com/spanId"] = span_id
            self._fields["logging.googleapis.com/trace_sampled"] = bool(int(flags, 16) & 1)
        if idempotency_key:
            self._fields["idempotency_key"] = idempotency_key[:_MAX_KEY_LENGTH]

    def event(self, event_type: str, params: dict) -> None:
        """Remembers what the request is about; never the whole params."""
        self._fields["event_type"] = event_type
        for name in ("grant_id", "username", "resource_type", "resources", "permission"):
            if name in params:
                self._fields[name] = params[name]

    def write(self, severity: str, message: str, **fields) -> None:
        entry = {"severity": severity, "message": message, **self._fields, **fields}
        print(json.dumps(entry, default=str), file=sys.stdout, flush=True)
