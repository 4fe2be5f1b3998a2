"""boto3 clients for the Plinth under test (PLINTH_URL, no credentials needed: the keys are
placeholders), shared by the test scripts beside this file."""

import os

import boto3
from botocore.config import Config

URL = os.environ["PLINTH_URL"]

COMMON = dict(
    endpoint_url=URL,
    region_name="us-east-1",
    aws_access_key_id="x",
    aws_secret_access_key="x",
    config=Config(retries={"max_attempts": 1}, read_timeout=60),
)


def error_of(call):
    """The (code, message) of the error `call()` raises; the call must fail."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"]["Message"]
    raise AssertionError("the call succeeded")


def client(service):
    """An unmodified boto3 client of `service` pointed at Plinth."""
    return boto3.client(service, **COMMON)


def s3_client():
    """A boto3 `s3` client of the S3 test server (S3_ENDPOINT, S3_ACCESS_KEY_ID,
    S3_SECRET_ACCESS_KEY)."""
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=os.environ["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["S3_SECRET_ACCESS_KEY"],
    )


def query_client(service):
    """A botocore client of `service` pointed at Plinth that speaks the `query` protocol, as
    older SDKs and tools do: botocore's own model, told that `query` is its only protocol."""
    import copy

    import botocore.session

    session = botocore.session.get_session()
    loader = session.get_component("data_loader")
    original = loader.load_service_model

    def query_model(service_name, type_name, api_version=None):
        model = original(service_name, type_name, api_version)
        if service_name == service and type_name == "service-2":
            model = copy.deepcopy(model)
            model["metadata"]["protocol"] = "query"
            model["metadata"]["protocols"] = ["query"]
        return model

    loader.load_service_model = query_model
    client = session.create_client(service, **COMMON)
    assert client.meta.service_model.resolved_protocol == "query"
    return client
