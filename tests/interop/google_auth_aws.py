"""google-auth's workload identity federation from AWS (aws.Credentials)
against the sandbox, from an `external_account` credential configuration
with an `aws1` credential source and AWS credentials in the environment.

1. The subject token google-auth builds (the SigV4-signed GetCallerIdentity
   request, serialized) at a fixed time: grantbridge must build the same bytes.
2. The whole flow at the current time: STS accepts the signed request, then
   generateAccessToken for the configuration's service account.

argv: config_file unix_seconds access_key_id secret_access_key session_token region
Prints one JSON object; any exception fails the run.
"""
import datetime
import json
import os
import sys

import google.auth._helpers
import google.auth.transport.requests as tr
from google.auth import aws

config, at, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], \
    os.environ["AWS_SESSION_TOKEN"], os.environ["AWS_REGION"] = sys.argv[1:7]
fixed = datetime.datetime.fromtimestamp(int(at), tz=datetime.timezone.utc).replace(tzinfo=None)

creds = aws.Credentials.from_file(config, scopes=["https://www.googleapis.com/auth/cloud-platform"])
real_utcnow = google.auth._helpers.utcnow
google.auth._helpers.utcnow = lambda: fixed
subject = creds.retrieve_subject_token(tr.Request())
google.auth._helpers.utcnow = real_utcnow

creds = aws.Credentials.from_file(config, scopes=["https://www.googleapis.com/auth/cloud-platform"])
creds.refresh(tr.Request())
print(json.dumps({
    "subject_token": subject,
    "token_prefix": creds.token[:5],
    "service_account": creds.service_account_email,
}))
