"""Schemathesis hooks for the push API conformance run (tests/it/conformance.rs).

Every request schemathesis sends is signed as a control plane would sign it
(docs/protocol.md, "Signing"): HMAC-SHA256 over `<timestamp>.<METHOD>.<path and
query>.<raw body>` with the push secret in GRANTBRIDGE_TEST_PUSH_SECRET. The
signature is computed on the prepared request, so it covers the exact bytes
sent.

The run passes `X-Grantbridge-Signature: sign-me` as explicit credentials, so
schemathesis also probes each operation without them and with invalid ones
(its `ignored_auth` check). Only a request still carrying the placeholder is
signed: the probes go out as schemathesis made them, and must get 401.
"""

PLACEHOLDER = "sign-me"

import hashlib
import hmac
import os
import time

import requests
import schemathesis

SECRET = os.environ["GRANTBRIDGE_TEST_PUSH_SECRET"].encode()


class Signed(requests.auth.AuthBase):
    def __call__(self, r):
        if r.headers.get("X-Grantbridge-Signature") != PLACEHOLDER:
            return r
        ts = str(int(time.time()))
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        message = f"{ts}.{r.method}.{r.path_url}.".encode() + body
        r.headers["X-Grantbridge-Timestamp"] = ts
        r.headers["X-Grantbridge-Signature"] = (
            "v1=" + hmac.new(SECRET, message, hashlib.sha256).hexdigest()
        )
        return r


@schemathesis.hook
def before_call(context, case, kwargs):
    kwargs["auth"] = Signed()
