"""Drives Google's own Python auth library (google-auth) against the sandbox.

Proves the sandbox speaks Google's protocol: google-auth's service-account
ID-token flow gets a token from the sandbox's token endpoint (so the sandbox
accepts the assertion google-auth builds), google-auth verifies sandbox-issued
and grantbridge-minted tokens against the sandbox's PEM certificates (its
default path) and JWKS (its PyJWT path), and the metadata-server flows work.

argv: key_file function_url pem_certs_url jwks_url grantbridge_token
Prints one JSON object; any exception fails the run.
"""
import json
import sys

import requests
import google.auth.transport.requests as tr
from google.auth import compute_engine
from google.oauth2 import id_token, service_account

key_file, fn_url, pem_url, jwks_url, grantbridge_token = sys.argv[1:6]
req = tr.Request()
out = {}

creds = service_account.IDTokenCredentials.from_service_account_file(key_file, target_audience=fn_url)
creds.refresh(req)
out["sa_claims"] = id_token.verify_token(creds.token, req, audience=fn_url, certs_url=pem_url)
out["sa_claims_jwks"] = id_token.verify_token(creds.token, req, audience=fn_url, certs_url=jwks_url)

r = requests.post(fn_url, headers={"Authorization": "Bearer " + creds.token},
                  json={"event_type": "get-status", "params": {}}, timeout=10)
out["invoke"] = [r.status_code, r.json()]

out["grantbridge_claims"] = id_token.verify_token(grantbridge_token, req, audience=fn_url, certs_url=pem_url)
try:
    id_token.verify_token(grantbridge_token, req, audience="https://wrong.example/", certs_url=pem_url)
    out["wrong_audience_rejected"] = False
except ValueError:
    out["wrong_audience_rejected"] = True

sc = service_account.Credentials.from_service_account_file(
    key_file, scopes=["https://www.googleapis.com/auth/cloud-platform"])
sc.refresh(req)
out["access_token_prefix"] = sc.token[:5]

mc = compute_engine.IDTokenCredentials(req, fn_url, use_metadata_identity_endpoint=True)
mc.refresh(req)
out["metadata_claims"] = id_token.verify_token(mc.token, req, audience=fn_url, certs_url=pem_url)
ac = compute_engine.Credentials()
ac.refresh(req)
out["metadata_access_prefix"] = ac.token[:5]
out["metadata_email"] = ac.service_account_email
print(json.dumps(out))
