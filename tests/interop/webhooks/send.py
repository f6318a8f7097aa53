"""Sends one action to grantbridge's push endpoint, signed by the official
Standard Webhooks library (PyPI `standardwebhooks`), as a control plane would.

    python3 send.py URL SECRET MSG_ID BODY [--tamper] [--stale] [--also-sign-with OTHER]

Prints one JSON line: {"status": HTTP status, "body": the answer}.
--tamper changes the event type after signing; --stale signs 10 minutes ago;
--also-sign-with adds a second signature (a sender rotating its secret).
"""

import argparse
import json
import math
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

from standardwebhooks import Webhook


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("secret")
    p.add_argument("msg_id")
    p.add_argument("body")
    p.add_argument("--tamper", action="store_true")
    p.add_argument("--stale", action="store_true")
    p.add_argument("--also-sign-with")
    a = p.parse_args()

    when = datetime.now(timezone.utc) - (timedelta(minutes=10) if a.stale else timedelta())
    signature = Webhook(a.secret).sign(a.msg_id, when, a.body)
    if a.also_sign_with:
        signature = Webhook(a.also_sign_with).sign(a.msg_id, when, a.body) + " " + signature
    body = a.body.replace("revoke-access", "grant-access") if a.tamper else a.body
    request = urllib.request.Request(
        a.url,
        data=body.encode(),
        method="POST",
        headers={
            "content-type": "application/json",
            "webhook-id": a.msg_id,
            "webhook-timestamp": str(math.floor(when.timestamp())),
            "webhook-signature": signature,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    print(json.dumps({"status": status, "body": json.loads(text) if text else None}))


if __name__ == "__main__":
    main()
