"""google-auth's own workload identity federation flow (identity_pool
credentials) against the sandbox, from an `external_account` credential
configuration: the subject token from its file, the STS exchange at its
`token_url`, then generateAccessToken for its service account. The
configuration names the sandbox's URLs itself; nothing in google-auth is
changed.

argv: config_file
Prints one JSON object; any exception fails the run.
"""
import json
import sys

import google.auth.transport.requests as tr
from google.auth import identity_pool

# identity_pool.Credentials.from_file, not google.auth.load_credentials_from_file:
# the latter also looks the project number up at Cloud Resource Manager.
creds = identity_pool.Credentials.from_file(
    sys.argv[1], scopes=["https://www.googleapis.com/auth/cloud-platform"])
creds.refresh(tr.Request())
print(json.dumps({
    "token_prefix": creds.token[:5],
    "service_account": creds.service_account_email,
}))
