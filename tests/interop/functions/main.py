"""A grant function as a customer writes it for Cloud Functions (Python 1st gen),
served by Google's functions-framework in the interop test.

It speaks the function contract (docs/protocol.md §1) and echoes what it received,
so the test can check what reached the function through the front end.
"""
import functions_framework

_seen = {}


@functions_framework.http
def grant(request):
    key = request.headers.get("Idempotency-Key", "")
    if key in _seen:
        return _seen[key]
    payload = request.get_json(silent=True) or {}
    event_type = payload.get("event_type")
    params = payload.get("params") or {}
    if event_type not in ("grant-access", "revoke-access", "get-status"):
        return {"status": "error", "message": f"unsupported event_type {event_type!r}"}, 400
    answer = {
        "status": "ok",
        "echo": {
            "event_type": event_type,
            "username": params.get("username"),
            "custom_parameters": params.get("custom_parameters"),
            "idempotency_key": key,
            "traceparent": request.headers.get("traceparent"),
            "user_agent": request.headers.get("User-Agent"),
            "authorized": request.headers.get("Authorization", "").startswith("Bearer "),
        },
    }
    _seen[key] = answer
    return answer
