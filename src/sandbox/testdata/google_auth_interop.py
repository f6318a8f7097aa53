import json, os, sys
import requests
import google.auth.transport.requests as tr
from google.oauth2 import service_account, id_token
from google.auth import compute_engine

key_file, fn_url, certs_url = sys.argv[1:4]
req = tr.Request()
out = {}
creds = service_account.IDTokenCredentials.from_service_account_file(key_file, target_audience=fn_url)
creds.refresh(req)
claims = id_token.verify_token(creds.token, req, audience=fn_url, certs_url=certs_url)
out["sa_claims"] = claims
r = requests.post(fn_url, headers={"Authorization": "Bearer " + creds.token}, json={"event_type": "get-status", "params": {}})
out["invoke"] = [r.status_code, r.json()]
sc = service_account.Credentials.from_service_account_file(key_file, scopes=["https://www.googleapis.com/auth/cloud-platform"])
sc.refresh(req)
out["access_token_prefix"] = sc.token[:5]
mc = compute_engine.IDTokenCredentials(req, fn_url, use_metadata_identity_endpoint=True)
mc.refresh(req)
out["metadata_claims"] = id_token.verify_token(mc.token, req, audience=fn_url, certs_url=certs_url)
ac = compute_engine.Credentials()
ac.refresh(req)
out["metadata_access_prefix"] = ac.token[:5]
out["metadata_email"] = ac.service_account_email
print(json.dumps(out))
