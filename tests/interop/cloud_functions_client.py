"""The official Cloud Functions client (google-cloud-functions, REST
transport, v1 and v2) lists and gets functions from the sandbox's Cloud
Functions API, and reads a function's IAM policy and permissions (v1), as it
would from Google.

argv: api_host (127.0.0.1:PORT) access_token project function gen2_function
Prints one JSON object; any exception fails the run.
"""
import json
import sys

import google.oauth2.credentials
from google.cloud import functions_v1, functions_v2
from google.cloud.functions_v1.services.cloud_functions_service.transports import (
    CloudFunctionsServiceRestTransport,
)
from google.iam.v1 import iam_policy_pb2

from google.cloud.functions_v2.services.function_service.transports import (
    FunctionServiceRestTransport,
)

host, token, project, function, gen2_function = sys.argv[1:6]
credentials = google.oauth2.credentials.Credentials(token)
transport = CloudFunctionsServiceRestTransport(host=host, url_scheme="http", credentials=credentials)
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
v2 = functions_v2.FunctionServiceClient(
    transport=FunctionServiceRestTransport(host=host, url_scheme="http", credentials=credentials))
v2_listed = {f.name.rsplit("/", 1)[-1]: functions_v2.Environment(f.environment).name
             for f in v2.list_functions(request={"parent": parent, "page_size": 2})}
gen2 = v2.get_function(name=f"projects/{project}/locations/us-central1/functions/{gen2_function}")
print(json.dumps({
    "v2_listed": v2_listed,
    "gen2": {"environment": functions_v2.Environment(gen2.environment).name,
             "state": functions_v2.Function.State(gen2.state).name,
             "url": gen2.url, "uri": gen2.service_config.uri,
             "service": gen2.service_config.service,
             "timeout_s": gen2.service_config.timeout_seconds},
    "listed": listed,
    "got": {"name": got.name, "status": functions_v1.CloudFunctionStatus(got.status).name,
            "url": got.https_trigger.url, "timeout_s": got.timeout.seconds,
            "ingress": functions_v1.CloudFunction.IngressSettings(got.ingress_settings).name},
    "invokers": sorted(m for b in policy.bindings if b.role == "roles/cloudfunctions.invoker" for m in b.members),
    "held": list(held.permissions),
    "missing_held": list(missing.permissions),
}))
