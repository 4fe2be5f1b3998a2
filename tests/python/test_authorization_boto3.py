"""Unmodified boto3 against Plinth keys with IAM-style policies (README "Authentication").

Run by tests/suites/authorization.rs with the repository's .venv interpreter, against a server
with an echo endpoint `prod-echo` and these keys:

  PLINTH_URL                               the server's base URL
  PLINTH_ADMIN_KEY / PLINTH_ADMIN_SECRET   a key without a policy (full access)
  PLINTH_INVOKE_KEY / PLINTH_INVOKE_SECRET the README's invoke-only key
  PLINTH_READ_KEY / PLINTH_READ_SECRET     the README's read-only key
  ECHO_WASM                                the echo component (.wasm)

Every refusal must reach boto3 as `ClientError` with code `AccessDeniedException`, HTTP 400
and IAM's message, on the `sagemaker` and the `sagemaker-runtime` client alike, and change
nothing. Plain asserts, no pytest: the first failure exits non-zero with a traceback.
"""

import os
import sys
import traceback

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

URL = os.environ["PLINTH_URL"]
ADMIN = (os.environ["PLINTH_ADMIN_KEY"], os.environ["PLINTH_ADMIN_SECRET"])
INVOKE = (os.environ["PLINTH_INVOKE_KEY"], os.environ["PLINTH_INVOKE_SECRET"])
READ = (os.environ["PLINTH_READ_KEY"], os.environ["PLINTH_READ_SECRET"])
ECHO_WASM = os.environ["ECHO_WASM"]

REGION = "us-east-1"
ACCOUNT = "123456789012"
ENDPOINT = "prod-echo"
ENDPOINT_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT}"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/plinth-authorization-test"


def client(service, key):
    return boto3.client(
        service,
        endpoint_url=URL,
        region_name=REGION,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 1}, read_timeout=60),
    )


def denied(key, action, resource, call, *args, **kwargs):
    """`call` must raise AccessDeniedException (HTTP 400) with IAM's implicit-deny message."""
    try:
        response = call(*args, **kwargs)
    except ClientError as e:
        error = e.response["Error"]
        http = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert error["Code"] == "AccessDeniedException", e.response
        assert http == 400, e.response
        expected = (
            f"User: {key[0]} is not authorized to perform: {action} on resource: {resource} "
            f"because no identity-based policy allows the {action} action"
        )
        assert error["Message"] == expected, (error["Message"], expected)
        return
    raise AssertionError(f"{action} by {key[0]} should be refused; got {response}")


def invoke_only_key():
    sm = client("sagemaker", INVOKE)
    runtime = client("sagemaker-runtime", INVOKE)
    response = runtime.invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="text/plain", Body=b"hello"
    )
    assert response["Body"].read() == b"hello", response
    denied(
        INVOKE,
        "sagemaker:CreateModel",
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/intruder",
        sm.create_model,
        ModelName="intruder",
        PrimaryContainer={"Image": ECHO_WASM},
        ExecutionRoleArn=ROLE,
    )
    denied(
        INVOKE,
        "sagemaker:DeleteEndpoint",
        ENDPOINT_ARN,
        sm.delete_endpoint,
        EndpointName=ENDPOINT,
    )
    denied(INVOKE, "sagemaker:ListEndpoints", "*", sm.list_endpoints)


def read_only_key():
    sm = client("sagemaker", READ)
    runtime = client("sagemaker-runtime", READ)
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService", described
    names = [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]
    assert names == [ENDPOINT], names
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [ENDPOINT]
    denied(
        READ,
        "sagemaker:UpdateEndpointWeightsAndCapacities",
        ENDPOINT_ARN,
        sm.update_endpoint_weights_and_capacities,
        EndpointName=ENDPOINT,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredWeight": 2.0}],
    )
    denied(
        READ,
        "sagemaker:InvokeEndpoint",
        ENDPOINT_ARN,
        runtime.invoke_endpoint,
        EndpointName=ENDPOINT,
        ContentType="text/plain",
        Body=b"hello",
    )


def nothing_changed():
    sm = client("sagemaker", ADMIN)
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService", described
    weights = [v["CurrentWeight"] for v in described["ProductionVariants"]]
    assert weights == [1.0], weights
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [ENDPOINT]


STEPS = [invoke_only_key, read_only_key, nothing_changed]


def main():
    print(f"boto3 {boto3.__version__} against {URL}", flush=True)
    for run in STEPS:
        try:
            run()
        except Exception:
            print(f"FAIL {run.__name__}", flush=True)
            traceback.print_exc(file=sys.stdout)
            return 1
        print(f"ok {run.__name__}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
