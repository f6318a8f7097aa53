"""Writes the seed corpora of the fuzz targets from the repository's own
examples: the Action, lease and results examples of docs/openapi.yaml, the
shipped configuration files, a service-account key the way Google writes one,
and token, Cloud Functions API and function answers shaped as the sandbox and
Google send them.

Usage: python3 fuzz/seeds.py   (writes fuzz/corpus/<target>/seed-*)
"""

import base64
import json
import pathlib
import subprocess

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"


def examples(schema_name):
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    schema = spec["components"]["schemas"][schema_name]
    return schema.get("examples", [])


def jwt(claims):
    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'RS256', 'kid': 'k1', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


def pem():
    key = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        capture_output=True, check=False, text=True,
    ).stdout
    return key or "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"


def main():
    actions = examples("Action") or [{"id": "act-7f3a", "integration": "orders-db", "event_type": "grant-access"}]
    action = actions[0]
    id_token = jwt({"iss": "https://accounts.google.com", "aud": "https://fn.example", "sub": "1",
                    "email": "gb@acme-prod.iam.gserviceaccount.com", "iat": 1796000000, "exp": 1796003600})
    key = {"type": "service_account", "project_id": "acme-prod", "private_key_id": "abc123",
           "private_key": pem(), "client_email": "gb@acme-prod.iam.gserviceaccount.com",
           "client_id": "1234", "token_uri": "https://oauth2.googleapis.com/token"}
    function = {"name": "projects/acme-prod/locations/us-central1/functions/grant-orders-db",
                "status": "ACTIVE", "entryPoint": "handler", "runtime": "python312",
                "timeout": "60s", "availableMemoryMb": 256, "ingressSettings": "ALLOW_ALL",
                "httpsTrigger": {"url": "https://us-central1-acme-prod.cloudfunctions.net/grant-orders-db",
                                 "securityLevel": "SECURE_ALWAYS"},
                "serviceAccountEmail": "fn@acme-prod.iam.gserviceaccount.com", "updateTime": "2026-11-22T10:00:00Z"}
    deep = "[" * 200 + "]" * 200
    seeds = {
        "action": [json.dumps(a) for a in actions] + [
            json.dumps({**action, "not_after": "0108-03-19T17:13:05.440596Z"}),
            json.dumps({**action, "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}),
            json.dumps({**action, "params": {"nested": json.loads(deep)}}),
            "2026-11-22T12:00:00.75+02:00",
        ],
        "control_plane_answers": [
            json.dumps({"actions": [{**action, "lease": {"token": "t-1", "expires_at": "2026-11-22T10:01:00Z"}}]}),
            json.dumps({"actions": []}),
            json.dumps({"accepted": ["act-7f3a"], "rejected": [{"action_id": "x", "reason": "unknown"}]}),
            json.dumps({"expires_at": "2026-11-22T10:02:00Z"}),
        ],
        "push_request": [
            "POST /v1/actions?wait=10\nx-grantbridge-timestamp: 1796000000\n"
            "x-grantbridge-signature: v1=" + "0" * 64 + "\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n\n"
            + json.dumps(action),
            "POST /v1/actions\nwebhook-id: act-7f3a\nwebhook-timestamp: 1796000000\n"
            "webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=\n\n" + json.dumps(action),
            "GET /v1/actions/act-7f3a\nx-grantbridge-timestamp: 1796000000\nx-grantbridge-signature: v1=00\n\n",
        ],
        "config": [
            "\n" + (ROOT / "config" / "grantbridge.example.toml").read_text(),
            "GRANTBRIDGE__ENGINE__MAX_CONCURRENCY=8;GRANTBRIDGE__LOG__LEVEL=debug\n"
            + (ROOT / "config" / "grantbridge.example.toml").read_text(),
        ],
        "key_file": [
            json.dumps(key),
            json.dumps({"type": "impersonated_service_account",
                        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/gb@acme-prod.iam.gserviceaccount.com:generateAccessToken",
                        "delegates": [], "source_credentials": key}),
            json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}),
        ],
        "token_answers": [
            "\x02" + json.dumps({"id_token": id_token}),
            "\x02" + json.dumps({"access_token": "ya29.x", "expires_in": 3599, "token_type": "Bearer"}),
            "\x02" + json.dumps({"token": id_token}),
            "\x02" + json.dumps({"accessToken": "ya29.x", "expireTime": "2026-11-22T11:00:00.123Z"}),
            "\x00" + json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            id_token,
        ],
        "functions_api": [
            json.dumps(function),
            json.dumps({"functions": [function], "nextPageToken": "p2"}),
            json.dumps({"version": 3, "etag": "BwX", "bindings": [
                {"role": "roles/cloudfunctions.invoker", "members": ["allUsers", "serviceAccount:gb@acme-prod.iam.gserviceaccount.com"]},
                {"role": "roles/cloudfunctions.invoker", "members": ["user:a@example.com"],
                 "condition": {"title": "t", "expression": "request.time < timestamp('2027-01-01T00:00:00Z')"}}]}),
            json.dumps({"permissions": ["cloudfunctions.functions.invoke"]}),
            json.dumps({"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}),
        ],
        "function_response": [
            "\x00\xc8\n" + json.dumps({"status": "ok"}),
            "\x00\xc8\n" + json.dumps({"status": "ok", "credentials": {"username": "u", "password": "p"}}),
            "\x01\xf4120\n" + json.dumps({"status": "error", "message": "db down"}),
            "\x01\xadWed, 21 Oct 2026 07:28:00 GMT\n<html>Too Many Requests</html>",
            "\x01\x93\n" + json.dumps({"error": "forbidden"}),
        ],
    }
    for target, items in seeds.items():
        d = OUT / target
        d.mkdir(parents=True, exist_ok=True)
        for i, item in enumerate(items):
            (d / f"seed-{i}").write_bytes(item.encode("latin-1") if item.startswith(("\x00", "\x01", "\x02")) else item.encode())
        print(f"{target}: {len(items)} seeds")


if __name__ == "__main__":
    main()
