"""Unmodified boto3 against a running Plinth server.

Run by tests/boto3.rs with the repository's .venv interpreter; PLINTH_URL is the server's base
URL. The server serves three endpoints, each with one variant "AllTraffic": "iris" (the iris
classifier), "faults" (the faults plugin) and "echo" (the echo plugin).

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import json
import os
import sys
import traceback

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

URL = os.environ["PLINTH_URL"]

client = boto3.client(
    "sagemaker-runtime",
    endpoint_url=URL,
    region_name="us-east-1",
    aws_access_key_id="x",
    aws_secret_access_key="x",
    config=Config(retries={"max_attempts": 1}, read_timeout=60),
)


def iris_prediction():
    r = client.invoke_endpoint(
        EndpointName="iris", ContentType="text/csv", Body=b"5.1,3.5,1.4,0.2"
    )
    assert r["InvokedProductionVariant"] == "AllTraffic", r
    assert r["ContentType"] == "application/json", r
    body = json.loads(r["Body"].read())
    assert body["predictions"][0]["label"] == "setosa", body


def iris_csv_accept_and_target_variant():
    r = client.invoke_endpoint(
        EndpointName="iris",
        ContentType="text/csv",
        Accept="text/csv",
        TargetVariant="AllTraffic",
        InferenceId="boto3-inference-1",
        Body=b"6.7,3.0,5.2,2.3\n5.9,3.0,4.2,1.5",
    )
    assert r["ContentType"] == "text/csv", r
    labels = [line.split(",")[0] for line in r["Body"].read().decode().splitlines()]
    assert labels == ["virginica", "versicolor"], labels


def custom_attributes_round_trip():
    r = client.invoke_endpoint(
        EndpointName="echo",
        ContentType="application/octet-stream",
        CustomAttributes="trace-id=abc123",
        Body=b"hello",
    )
    assert r["CustomAttributes"] == "trace-id=abc123", r
    assert r["Body"].read() == b"hello"
    r = client.invoke_endpoint(
        EndpointName="echo", ContentType="text/plain", Body=b"no attributes"
    )
    assert "CustomAttributes" not in r, r


def model_error_is_modeled():
    try:
        client.invoke_endpoint(
            EndpointName="faults",
            ContentType="text/plain",
            CustomAttributes="model-error",
            Body=b"x",
        )
    except client.exceptions.ModelError as e:
        # botocore puts modeled error members at the top level of e.response.
        assert e.response["Error"]["Code"] == "ModelError", e.response
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 424, e.response
        assert e.response.get("OriginalStatusCode") == 500, e.response
        assert "fault plugin: deliberate model error" in e.response.get(
            "OriginalMessage", ""
        ), e.response
    else:
        raise AssertionError("model-error did not raise ModelError")


def bad_request_is_400_from_the_model():
    try:
        client.invoke_endpoint(
            EndpointName="iris", ContentType="text/csv", Body=b"5.1,3.5,1.4"
        )
    except client.exceptions.ModelError as e:
        assert e.response.get("OriginalStatusCode") == 400, e.response
        assert "expected 4 features" in e.response["Error"]["Message"], e.response
    else:
        raise AssertionError("3 columns did not raise ModelError")


def unknown_endpoint_is_a_validation_error():
    try:
        client.invoke_endpoint(
            EndpointName="no-such-endpoint", ContentType="text/csv", Body=b"1,2,3,4"
        )
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ValidationError", e.response
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response
        assert "no-such-endpoint" in e.response["Error"]["Message"], e.response
    else:
        raise AssertionError("an unknown endpoint did not raise")


CHECKS = [
    iris_prediction,
    iris_csv_accept_and_target_variant,
    custom_attributes_round_trip,
    model_error_is_modeled,
    bad_request_is_400_from_the_model,
    unknown_endpoint_is_a_validation_error,
]


def main():
    failed = []
    for check in CHECKS:
        try:
            check()
        except Exception:  # report every check, then fail
            failed.append(check.__name__)
            print(f"FAIL {check.__name__}")
            traceback.print_exc(file=sys.stdout)
        else:
            print(f"ok   {check.__name__}")
    print(f"{len(CHECKS) - len(failed)}/{len(CHECKS)} boto3 checks passed against {URL}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
