"""google-auth's own impersonation flow against the sandbox, from the file
`gcloud auth application-default login --impersonate-service-account=SA`
writes: an `impersonated_service_account` whose source is a person's login
(`authorized_user`). Proves the sandbox answers google-auth's refresh grant
and IAM Credentials generateIdToken as Google does.

google-auth always sends an `authorized_user`'s refresh grant to
https://oauth2.googleapis.com/token and IAM calls to
iamcredentials.googleapis.com (module constants): both are pointed at the
sandbox here, nothing else is changed.

argv: adc_file token_url iam_base audience pem_certs_url
Prints one JSON object; any exception fails the run.
"""
import json
import sys

import google.auth
import google.auth.iam as iam
import google.auth.transport.requests as tr
import google.oauth2.credentials as user_credentials
from google.auth import impersonated_credentials
from google.oauth2 import id_token

adc_file, token_url, iam_base, audience, pem_url = sys.argv[1:6]
user_credentials._GOOGLE_OAUTH2_TOKEN_ENDPOINT = token_url
iam._IAM_ENDPOINT = iam_base + "/v1/projects/-/serviceAccounts/{}:generateAccessToken"
iam._IAM_IDTOKEN_ENDPOINT = iam_base + "/v1/projects/-/serviceAccounts/{}:generateIdToken"

req = tr.Request()
creds, _ = google.auth.load_credentials_from_file(
    adc_file, scopes=["https://www.googleapis.com/auth/cloud-platform"])
assert isinstance(creds, impersonated_credentials.Credentials), type(creds)
idc = impersonated_credentials.IDTokenCredentials(creds, target_audience=audience, include_email=True)
idc.refresh(req)
claims = id_token.verify_token(idc.token, req, audience=audience, certs_url=pem_url)
print(json.dumps({"source": type(creds._source_credentials).__module__, "claims": claims}))
