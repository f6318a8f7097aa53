"""The official Cloud Functions client (google-cloud-functions, REST
transport, v1) lists and gets functions from the sandbox's Cloud Functions
API, and reads a function's IAM policy and permissions, as it would from
Google. The v2 client is not driven yet: the sandbox has no v2 API.

argv: api_host (127.0.0.1:PORT) access_token project function
Prints one JSON object; any exception fails the run.
"""
import json
import sys

import google.oauth2.credentials
from google.cloud import functions_v1
from google.cloud.functions_v1.services.cloud_functions_service.transports import (
    CloudFunctionsServiceRestTransport,
)
from google.iam.v1 import iam_policy_pb2

host, token, project, function = sys.argv[1:5]
transport = CloudFunctionsServiceRestTransport(
    host=host, url_scheme="http", credentials=google.oauth2.credentials.Credentials(token))
client = functions_v1.CloudFunctionsServiceClient(transport=transport)
parent = f"projects/{project}/locations/-"
listed = [f.name for f in client.list_functions(request={"parent": parent, "page_size": 2})]
name = f"projects/{project}/locations/us-central1/functions/{function}"
got = client.get_function(name=name)
policy = client.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=name))
held = client.test_iam_permissions(request=iam_policy_pb2.TestIamPermissionsRequest(
    resource=name, permissions=["cloudfunctions.functions.invoke"]))
missing = client.test_iam_permissions(request=iam_policy_pb2.TestIamPermissionsRequest(
    resource=f"projects/{project}/locations/us-central1/functions/nope",
    permissions=["cloudfunctions.functions.invoke"]))
print(json.dumps({
    "listed": listed,
    "got": {"name": got.name, "status": functions_v1.CloudFunctionStatus(got.status).name,
            "url": got.https_trigger.url, "timeout_s": got.timeout.seconds,
            "ingress": functions_v1.CloudFunction.IngressSettings(got.ingress_settings).name},
    "invokers": sorted(m for b in policy.bindings if b.role == "roles/cloudfunctions.invoker" for m in b.members),
    "held": list(held.permissions),
    "missing_held": list(missing.permissions),
}))
