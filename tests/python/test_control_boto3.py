"""Unmodified boto3 (`sagemaker` and `sagemaker-runtime`) against Plinth's control plane.

Run by tests/boto3.rs with the repository's .venv interpreter, against a server started with
one credential pair and no deployment file, so everything here is created through the API.

Environment:
  PLINTH_URL         the server's base URL
  PLINTH_ACCESS_KEY  the access key id the server knows
  PLINTH_SECRET_KEY  its secret
  IRIS_WASM          the iris classifier component (.wasm)
  IRIS_MODEL_DIR     a directory holding the iris model.onnx
  ECHO_WASM          the echo component (.wasm)
  PLINTH_SCRATCH     an empty directory this script may write to

The whole life cycle, as a SageMaker user drives it: models (one from a .tar.gz), an endpoint
config with two weighted variants, an endpoint (waiters included), traffic split and
TargetVariant, a weight update, paginated and filtered listings, an endpoint update (and a
failing one), refusals (ResourceInUse, ValidationException), signature refusals on both
clients (wrong secret, unknown key, unsigned, tampered, malformed, clock skew) with no state
change, then deletion of everything. Last, CreateEndpoint and UpdateEndpoint on an endpoint
config whose model was deleted must name the missing model.

Plain asserts, no pytest: steps run in order and the first failure exits non-zero with a
traceback.
"""

import datetime
import json
import os
import sys
import tarfile
import time
import traceback
from collections import Counter
from unittest import mock

import boto3
import botocore
import botocore.auth
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

URL = os.environ["PLINTH_URL"]
ACCESS_KEY = os.environ["PLINTH_ACCESS_KEY"]
SECRET_KEY = os.environ["PLINTH_SECRET_KEY"]
IRIS_WASM = os.environ["IRIS_WASM"]
IRIS_MODEL_DIR = os.environ["IRIS_MODEL_DIR"]
ECHO_WASM = os.environ["ECHO_WASM"]
SCRATCH = os.environ["PLINTH_SCRATCH"]

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/plinth-boto3-test"

# Model names are mixed case on purpose: SageMaker keeps the case in names and lowercases
# ARNs.
IRIS = "Boto3-Iris"  # ModelDataUrl: a .tar.gz
IRIS2 = "boto3-iris2"  # ModelDataUrl: a directory, Environment {"A": "1"}
BROKEN = "boto3-broken"  # Image: a file that is not a component
CONFIG_A = "boto3-config-a"  # Primary (IRIS, weight 1) + Canary (IRIS2, weight 3)
CONFIG_B = "boto3-config-b"  # Single (IRIS)
CONFIG_BROKEN = "boto3-config-broken"  # Single (BROKEN)
ENDPOINT = "Boto3-Endpoint"
PAGE_MODELS = [f"boto3-page-{i:02d}" for i in range(10)]

IRIS_ROW = b"5.1,3.5,1.4,0.2"


def client(service, access_key=ACCESS_KEY, secret_key=SECRET_KEY, **config):
    return boto3.client(
        service,
        endpoint_url=URL,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}, read_timeout=60, **config),
    )


sm = client("sagemaker")
rt = client("sagemaker-runtime")


def arn(kind, name):
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name.lower()}"


def step(message):
    print(f"ok   {message}", flush=True)


def expect_error(code, call, *args, status=400, message=None, **kwargs):
    """Run `call`; it must raise ClientError `code` with HTTP `status`. Returns the error."""
    try:
        response = call(*args, **kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        http = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert got == code, f"expected {code}, got {got}: {e.response}"
        assert http == status, f"{code}: expected HTTP {status}, got {http}: {e.response}"
        if message is not None:
            assert message in e.response["Error"]["Message"], (
                f"{code}: message should contain {message!r}: {e.response['Error']}"
            )
        return e
    raise AssertionError(f"expected {code}, but the call succeeded: {response}")


def recent(value):
    """A timestamp boto3 parsed (an aware datetime, in local time), within minutes of now."""
    assert isinstance(value, datetime.datetime) and value.tzinfo is not None, repr(value)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - value).total_seconds()) < 600, (value, now)
    return True


def invoke(target=None):
    kwargs = {"TargetVariant": target} if target else {}
    r = rt.invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="text/csv", Body=IRIS_ROW, **kwargs
    )
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200, r
    body = json.loads(r["Body"].read())
    assert body["predictions"][0]["label"] == "setosa", body
    return r["InvokedProductionVariant"]


def wait_in_service():
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )


def variants_by_name(description):
    return {v["VariantName"]: v for v in description["ProductionVariants"]}


def all_model_names():
    names = []
    for page in sm.get_paginator("list_models").paginate(
        PaginationConfig={"PageSize": 100}
    ):
        names += [m["ModelName"] for m in page["Models"]]
    return names


# ---- 1. Models ----


def build_tarball():
    path = os.path.join(SCRATCH, "model.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name in sorted(os.listdir(IRIS_MODEL_DIR)):
            tar.add(os.path.join(IRIS_MODEL_DIR, name), arcname=name)
    with tarfile.open(path) as tar:
        assert "model.onnx" in tar.getnames(), tar.getnames()
    return path


def models():
    tarball = build_tarball()
    r = sm.create_model(
        ModelName=IRIS,
        PrimaryContainer={"Image": f"file://{IRIS_WASM}", "ModelDataUrl": tarball},
        ExecutionRoleArn=ROLE,
    )
    assert r["ModelArn"] == arn("model", IRIS), r
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200, r
    r = sm.create_model(
        ModelName=IRIS2,
        PrimaryContainer={
            "Image": IRIS_WASM,
            "ModelDataUrl": IRIS_MODEL_DIR,
            "Environment": {"A": "1"},
        },
    )
    assert r["ModelArn"] == arn("model", IRIS2), r

    d = sm.describe_model(ModelName=IRIS)
    assert d["ModelName"] == IRIS, d
    assert d["ModelArn"] == arn("model", IRIS), d
    assert d["ExecutionRoleArn"] == ROLE, d
    assert d["PrimaryContainer"]["Image"] == f"file://{IRIS_WASM}", d
    assert d["PrimaryContainer"]["ModelDataUrl"] == tarball, d
    assert not d["PrimaryContainer"].get("Environment"), d
    assert recent(d["CreationTime"])
    d2 = sm.describe_model(ModelName=IRIS2)
    assert d2["ModelName"] == IRIS2, d2
    assert d2["PrimaryContainer"]["Image"] == IRIS_WASM, d2
    assert d2["PrimaryContainer"]["ModelDataUrl"] == IRIS_MODEL_DIR, d2
    assert d2["PrimaryContainer"]["Environment"] == {"A": "1"}, d2
    assert "ExecutionRoleArn" not in d2, d2
    assert d2["CreationTime"] >= d["CreationTime"], (d, d2)

    listed = sm.list_models()
    assert "NextToken" not in listed, listed
    summaries = {m["ModelName"]: m for m in listed["Models"]}
    assert set(summaries) == {IRIS, IRIS2}, listed
    assert summaries[IRIS]["ModelArn"] == arn("model", IRIS), listed
    assert summaries[IRIS]["CreationTime"] == d["CreationTime"], (listed, d)
    # Default order: newest first.
    assert [m["ModelName"] for m in listed["Models"]] == [IRIS2, IRIS], listed
    step("1. create_model x2 (.tar.gz and directory), describe_model, list_models")


# ---- 2. Endpoint config ----


def endpoint_config():
    r = sm.create_endpoint_config(
        EndpointConfigName=CONFIG_A,
        ProductionVariants=[
            {
                "VariantName": "Primary",
                "ModelName": IRIS,
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
                "InstanceType": "ml.m5.large",
            },
            {
                "VariantName": "Canary",
                "ModelName": IRIS2,
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 3.0,
                "InstanceType": "ml.m5.large",
                "RoutingConfig": {"RoutingStrategy": "RANDOM"},
            },
        ],
    )
    assert r["EndpointConfigArn"] == arn("endpoint-config", CONFIG_A), r
    d = sm.describe_endpoint_config(EndpointConfigName=CONFIG_A)
    assert d["EndpointConfigName"] == CONFIG_A, d
    assert d["EndpointConfigArn"] == arn("endpoint-config", CONFIG_A), d
    assert recent(d["CreationTime"])
    variants = d["ProductionVariants"]
    assert [v["VariantName"] for v in variants] == ["Primary", "Canary"], d
    primary, canary = variants
    assert primary["ModelName"] == IRIS, d
    assert primary["InitialInstanceCount"] == 1, d
    assert primary["InitialVariantWeight"] == 1.0, d
    assert primary["InstanceType"] == "ml.m5.large", d
    assert canary["ModelName"] == IRIS2, d
    assert canary["InitialVariantWeight"] == 3.0, d
    assert canary["RoutingConfig"] == {"RoutingStrategy": "RANDOM"}, d

    listed = sm.list_endpoint_configs()
    assert [c["EndpointConfigName"] for c in listed["EndpointConfigs"]] == [CONFIG_A], listed
    assert listed["EndpointConfigs"][0]["EndpointConfigArn"] == arn(
        "endpoint-config", CONFIG_A
    ), listed
    step("2. create_endpoint_config (2 variants, weights 1 and 3), describe, list")


# ---- 3. Endpoint ----


def endpoint():
    r = sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=CONFIG_A)
    assert r["EndpointArn"] == arn("endpoint", ENDPOINT), r
    d = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert d["EndpointStatus"] in ("Creating", "InService"), d
    wait_in_service()
    d = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert d["EndpointName"] == ENDPOINT, d
    assert d["EndpointArn"] == arn("endpoint", ENDPOINT), d
    assert d["EndpointConfigName"] == CONFIG_A, d
    assert d["EndpointStatus"] == "InService", d
    assert "FailureReason" not in d, d
    assert recent(d["CreationTime"]) and recent(d["LastModifiedTime"])
    assert d["LastModifiedTime"] >= d["CreationTime"], d
    variants = variants_by_name(d)
    assert set(variants) == {"Primary", "Canary"}, d
    for name, weight in (("Primary", 1.0), ("Canary", 3.0)):
        v = variants[name]
        assert v["CurrentWeight"] == weight, d
        assert v["DesiredWeight"] == weight, d
        assert v["CurrentInstanceCount"] == 1, d
        assert v["DesiredInstanceCount"] == 1, d
    step("3. create_endpoint, endpoint_in_service waiter, describe_endpoint: InService")


# ---- 4. Invocations ----


def invocations():
    counts = Counter(invoke() for _ in range(200))
    assert set(counts) == {"Primary", "Canary"}, counts
    # Weights 1:3 => Primary ~50 of 200 (standard deviation ~6).
    assert 20 <= counts["Primary"] <= 90, counts
    for target in ("Primary", "Canary"):
        for _ in range(10):
            assert invoke(target) == target
    e = expect_error(
        "ValidationError",
        rt.invoke_endpoint,
        EndpointName=ENDPOINT,
        ContentType="text/csv",
        Body=IRIS_ROW,
        TargetVariant="NoSuchVariant",
    )
    assert "NoSuchVariant" in e.response["Error"]["Message"], e.response
    step(f"4. invoke_endpoint x200 split {dict(counts)}; TargetVariant honoured")


# ---- 5. Weights ----


def weights():
    before = sm.describe_endpoint(EndpointName=ENDPOINT)
    r = sm.update_endpoint_weights_and_capacities(
        EndpointName=ENDPOINT,
        DesiredWeightsAndCapacities=[
            {"VariantName": "Primary", "DesiredWeight": 1.0},
            {"VariantName": "Canary", "DesiredWeight": 0.0},
        ],
    )
    assert r["EndpointArn"] == arn("endpoint", ENDPOINT), r
    wait_in_service()
    d = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert d["EndpointStatus"] == "InService", d
    assert d["EndpointConfigName"] == CONFIG_A, d
    assert d["LastModifiedTime"] > before["LastModifiedTime"], (before, d)
    variants = variants_by_name(d)
    assert variants["Primary"]["CurrentWeight"] == 1.0, d
    assert variants["Primary"]["DesiredWeight"] == 1.0, d
    assert variants["Canary"]["CurrentWeight"] == 0.0, d
    assert variants["Canary"]["DesiredWeight"] == 0.0, d
    for v in variants.values():
        assert v["CurrentInstanceCount"] == 1 and v["DesiredInstanceCount"] == 1, d
    counts = Counter(invoke() for _ in range(100))
    assert counts == Counter({"Primary": 100}), counts

    # A capacity change: Updating, then InService with the new instance count.
    sm.update_endpoint_weights_and_capacities(
        EndpointName=ENDPOINT,
        DesiredWeightsAndCapacities=[{"VariantName": "Primary", "DesiredInstanceCount": 2}],
    )
    d = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert d["EndpointStatus"] in ("Updating", "InService"), d
    assert variants_by_name(d)["Primary"]["DesiredInstanceCount"] == 2, d
    wait_in_service()
    d = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert d["EndpointStatus"] == "InService", d
    assert "FailureReason" not in d, d
    variants = variants_by_name(d)
    assert variants["Primary"]["CurrentInstanceCount"] == 2, d
    assert variants["Primary"]["DesiredInstanceCount"] == 2, d
    assert variants["Primary"]["CurrentWeight"] == 1.0, d
    assert variants["Canary"]["CurrentWeight"] == 0.0, d
    assert variants["Canary"]["CurrentInstanceCount"] == 1, d
    counts = Counter(invoke() for _ in range(100))
    assert counts == Counter({"Primary": 100}), counts
    # A variant with weight 0 still serves when named.
    assert invoke("Canary") == "Canary"
    # An unknown variant is refused and changes nothing.
    expect_error(
        "ValidationException",
        sm.update_endpoint_weights_and_capacities,
        EndpointName=ENDPOINT,
        DesiredWeightsAndCapacities=[{"VariantName": "Nope", "DesiredWeight": 2.0}],
    )
    assert variants_by_name(sm.describe_endpoint(EndpointName=ENDPOINT)) == variants
    step("5. update_endpoint_weights_and_capacities: weights 1:0 (all to Primary), 2 instances")


# ---- 6. Listing ----


def listing():
    for name in PAGE_MODELS:
        sm.create_model(ModelName=name, PrimaryContainer={"Image": ECHO_WASM})
    everything = sorted([IRIS, IRIS2] + PAGE_MODELS)
    assert len(everything) == 12

    # By hand, with NextToken.
    seen, pages, token = [], [], None
    while True:
        kwargs = {"NextToken": token} if token else {}
        r = sm.list_models(SortBy="Name", SortOrder="Ascending", MaxResults=5, **kwargs)
        pages.append(len(r["Models"]))
        seen += [m["ModelName"] for m in r["Models"]]
        token = r.get("NextToken")
        if not token:
            break
        assert isinstance(token, str) and token, r
    assert pages == [5, 5, 2], pages
    assert seen == everything, seen

    # With boto3's paginator, both orders.
    for order in ("Ascending", "Descending"):
        page_sizes, names = [], []
        for page in sm.get_paginator("list_models").paginate(
            SortBy="Name", SortOrder=order, PaginationConfig={"PageSize": 5}
        ):
            page_sizes.append(len(page["Models"]))
            names += [m["ModelName"] for m in page["Models"]]
        assert page_sizes == [5, 5, 2], (order, page_sizes)
        expected = everything if order == "Ascending" else everything[::-1]
        assert names == expected, (order, names)

    # Default sort (CreationTime, Descending): newest first, each once.
    listed = []
    for page in sm.get_paginator("list_models").paginate(
        PaginationConfig={"PageSize": 5}
    ):
        listed += page["Models"]
    assert sorted(m["ModelName"] for m in listed) == everything, listed
    times = [m["CreationTime"] for m in listed]
    assert times == sorted(times, reverse=True), times
    assert listed[0]["ModelName"] == PAGE_MODELS[-1], listed
    assert listed[-1]["ModelName"] == IRIS, listed

    # MaxItems across pages (the paginator's own NextToken).
    first = sm.get_paginator("list_models").paginate(
        SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 5, "MaxItems": 7}
    ).build_full_result()
    assert [m["ModelName"] for m in first["Models"]] == everything[:7], first
    rest = sm.get_paginator("list_models").paginate(
        SortBy="Name",
        SortOrder="Ascending",
        PaginationConfig={"PageSize": 5, "StartingToken": first["NextToken"]},
    ).build_full_result()
    assert [m["ModelName"] for m in rest["Models"]] == everything[7:], rest

    # MaxResults defaults to 10.
    r = sm.list_models(SortBy="Name", SortOrder="Ascending")
    assert [m["ModelName"] for m in r["Models"]] == everything[:10], r
    r = sm.list_models(SortBy="Name", SortOrder="Ascending", NextToken=r["NextToken"])
    assert [m["ModelName"] for m in r["Models"]] == everything[10:], r
    assert "NextToken" not in r, r
    # A token is bound to its SortBy and SortOrder.
    expect_error(
        "ValidationException",
        sm.list_models,
        SortBy="CreationTime",
        NextToken=sm.list_models(SortBy="Name", MaxResults=1)["NextToken"],
    )

    # Filters.
    r = sm.list_models(NameContains="page", SortBy="Name", SortOrder="Ascending", MaxResults=100)
    assert [m["ModelName"] for m in r["Models"]] == PAGE_MODELS, r
    r = sm.list_models(NameContains="iris", SortBy="Name", SortOrder="Ascending")
    assert [m["ModelName"] for m in r["Models"]] == sorted([IRIS, IRIS2]), r
    r = sm.list_models(NameContains="no-such-model")
    assert r["Models"] == [] and "NextToken" not in r, r
    long_ago = datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc)
    tomorrow = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    assert sm.list_models(CreationTimeBefore=long_ago)["Models"] == []
    assert sm.list_models(CreationTimeAfter=tomorrow)["Models"] == []
    r = sm.list_models(CreationTimeAfter=long_ago, CreationTimeBefore=tomorrow, MaxResults=100)
    assert len(r["Models"]) == 12, r

    # Endpoints and endpoint configs.
    r = sm.list_endpoints(StatusEquals="InService")
    assert [e["EndpointName"] for e in r["Endpoints"]] == [ENDPOINT], r
    summary = r["Endpoints"][0]
    assert summary["EndpointArn"] == arn("endpoint", ENDPOINT), r
    assert summary["EndpointStatus"] == "InService", r
    assert recent(summary["CreationTime"]) and recent(summary["LastModifiedTime"])
    for status in ("Creating", "Updating", "Failed", "OutOfService"):
        r = sm.list_endpoints(StatusEquals=status)
        assert r["Endpoints"] == [], (status, r)
    r = sm.list_endpoints(NameContains="Endpoint", SortBy="Status")
    assert [e["EndpointName"] for e in r["Endpoints"]] == [ENDPOINT], r
    r = sm.list_endpoints(LastModifiedTimeAfter=tomorrow)
    assert r["Endpoints"] == [], r
    r = sm.list_endpoint_configs(NameContains="config-a")
    assert [c["EndpointConfigName"] for c in r["EndpointConfigs"]] == [CONFIG_A], r

    # Bad list inputs that botocore lets through are the server's ValidationException.
    expect_error("ValidationException", sm.list_models, MaxResults=101)
    expect_error("ValidationException", sm.list_models, SortBy="Size")
    expect_error("ValidationException", sm.list_models, SortOrder="Sideways")
    expect_error("ValidationException", sm.list_models, NextToken="not-a-token")
    expect_error("ValidationException", sm.list_endpoints, StatusEquals="Sleeping")
    step("6. list_models paged (NextToken, paginator, MaxItems), sorted, filtered; list_endpoints")


# ---- 7. UpdateEndpoint ----


def update():
    sm.create_endpoint_config(
        EndpointConfigName=CONFIG_B,
        ProductionVariants=[
            {"VariantName": "Single", "ModelName": IRIS, "InitialInstanceCount": 2}
        ],
    )
    before = sm.describe_endpoint(EndpointName=ENDPOINT)
    # A blue/green canary deployment: 1 of the new fleet's 2 instances' worth of traffic,
    # bake 1 s, then the rest and a final bake.
    deployment = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "WaitIntervalInSeconds": 1,
                "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1},
            },
            "TerminationWaitInSeconds": 0,
        }
    }
    r = sm.update_endpoint(
        EndpointName=ENDPOINT, EndpointConfigName=CONFIG_B, DeploymentConfig=deployment
    )
    assert r["EndpointArn"] == arn("endpoint", ENDPOINT), r
    baking = None
    deadline = time.time() + 30
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=ENDPOINT)
        assert d["EndpointStatus"] in ("Updating", "InService"), d
        if d["EndpointStatus"] == "InService":
            break
        pending = d.get("PendingDeploymentSummary", {})
        assert pending["EndpointConfigName"] == CONFIG_B, d
        for v in pending.get("ProductionVariants", []):
            if v.get("VariantStatus", [{}])[0].get("Status") == "Baking":
                baking = v
        time.sleep(0.05)
    assert baking is not None and baking["VariantName"] == "Single", d
    wait_in_service()
    d = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert d["EndpointStatus"] == "InService", d
    assert d["EndpointConfigName"] == CONFIG_B, d
    assert "FailureReason" not in d, d
    assert d["CreationTime"] == before["CreationTime"], (before, d)
    assert d["LastModifiedTime"] > before["LastModifiedTime"], (before, d)
    variants = variants_by_name(d)
    assert set(variants) == {"Single"}, d
    assert variants["Single"]["CurrentInstanceCount"] == 2, d
    assert variants["Single"]["DesiredInstanceCount"] == 2, d
    assert variants["Single"]["CurrentWeight"] == 1.0, d
    assert d["LastDeploymentConfig"] == deployment, d
    assert {invoke() for _ in range(20)} == {"Single"}
    step("7. update_endpoint with a canary DeploymentConfig; Baking seen; waiter; new config")

    # An update that cannot be built leaves the old config serving, with FailureReason.
    not_a_component = os.path.join(SCRATCH, "not-a-component.wasm")
    with open(not_a_component, "wb") as f:
        f.write(b"this is not a WebAssembly component")
    sm.create_model(ModelName=BROKEN, PrimaryContainer={"Image": not_a_component})
    sm.create_endpoint_config(
        EndpointConfigName=CONFIG_BROKEN,
        ProductionVariants=[{"VariantName": "Single", "ModelName": BROKEN}],
    )
    sm.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName=CONFIG_BROKEN)
    wait_in_service()
    d = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert d["EndpointStatus"] == "InService", d
    assert d["EndpointConfigName"] == CONFIG_B, d
    assert d.get("FailureReason"), d
    assert invoke() == "Single"

    # A new endpoint on it fails, and the waiter says so.
    sm.create_endpoint(EndpointName="boto3-broken-endpoint", EndpointConfigName=CONFIG_BROKEN)
    try:
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName="boto3-broken-endpoint", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    except WaiterError as e:
        assert e.last_response["EndpointStatus"] == "Failed", e.last_response
        assert e.last_response.get("FailureReason"), e.last_response
    else:
        raise AssertionError("an endpoint with a broken component came InService")
    r = sm.list_endpoints(StatusEquals="Failed")
    assert [e["EndpointName"] for e in r["Endpoints"]] == ["boto3-broken-endpoint"], r
    expect_error(
        "ValidationError",
        rt.invoke_endpoint,
        EndpointName="boto3-broken-endpoint",
        ContentType="text/csv",
        Body=IRIS_ROW,
    )
    sm.delete_endpoint(EndpointName="boto3-broken-endpoint")
    sm.delete_endpoint_config(EndpointConfigName=CONFIG_BROKEN)
    sm.delete_model(ModelName=BROKEN)
    step("7b. a failed update keeps the old config with FailureReason; a failed create is Failed")


# ---- 8. ResourceInUse ----


def in_use():
    expect_error(
        "ResourceInUse", sm.delete_endpoint_config, EndpointConfigName=CONFIG_B
    )
    expect_error("ResourceInUse", sm.delete_model, ModelName=IRIS)
    # Still there.
    sm.describe_endpoint_config(EndpointConfigName=CONFIG_B)
    sm.describe_model(ModelName=IRIS)
    # What the endpoint no longer uses can go.
    sm.delete_endpoint_config(EndpointConfigName=CONFIG_A)
    sm.delete_model(ModelName=IRIS2)
    expect_error(
        "ValidationException",
        sm.describe_endpoint_config,
        EndpointConfigName=CONFIG_A,
        message="Could not find endpoint configuration",
    )
    assert invoke() == "Single"
    step("8. delete of the live endpoint's config and model: ResourceInUse; unused ones go")


# ---- 9. Errors ----


def errors():
    expect_error(
        "ValidationException",
        sm.describe_model,
        ModelName="no-such-model",
        message=f'Could not find model "{arn("model", "no-such-model")}"',
    )
    expect_error(
        "ValidationException",
        sm.create_model,
        ModelName=IRIS,
        PrimaryContainer={"Image": IRIS_WASM},
        message="Cannot create already existing model",
    )
    # Names differ from existing ones only in case: still duplicates.
    expect_error(
        "ValidationException",
        sm.create_model,
        ModelName=IRIS.upper(),
        PrimaryContainer={"Image": IRIS_WASM},
    )
    expect_error(
        "ValidationException",
        sm.create_endpoint,
        EndpointName=ENDPOINT.lower(),
        EndpointConfigName=CONFIG_B,
    )
    # botocore checks neither patterns nor maximum lengths: these reach the server.
    for bad in ("bad_name!", "-leading-hyphen", "x" * 64, ""):
        expect_error(
            "ValidationException",
            sm.create_model,
            ModelName=bad,
            PrimaryContainer={"Image": IRIS_WASM},
        )
    expect_error(
        "ValidationException",
        sm.create_endpoint_config,
        EndpointConfigName="bad_name!",
        ProductionVariants=[{"VariantName": "A", "ModelName": IRIS}],
    )
    expect_error(
        "ValidationException",
        sm.create_endpoint,
        EndpointName="bad_name!",
        EndpointConfigName=CONFIG_B,
    )
    expect_error(
        "ValidationException",
        sm.create_model,
        ModelName="boto3-no-image",
        PrimaryContainer={"Image": os.path.join(SCRATCH, "missing.wasm")},
    )
    expect_error(
        "ValidationException",
        sm.create_model,
        ModelName="boto3-no-data",
        PrimaryContainer={
            "Image": IRIS_WASM,
            "ModelDataUrl": os.path.join(SCRATCH, "missing.tar.gz"),
        },
    )
    expect_error(
        "ValidationException",
        sm.create_endpoint_config,
        EndpointConfigName="boto3-config-missing-model",
        ProductionVariants=[{"VariantName": "A", "ModelName": "no-such-model"}],
        message="Could not find model",
    )
    expect_error(
        "ValidationException",
        sm.create_endpoint,
        EndpointName="boto3-no-config",
        EndpointConfigName="no-such-config",
        message="Could not find endpoint configuration",
    )
    expect_error(
        "ValidationException",
        sm.update_endpoint,
        EndpointName="no-such-endpoint",
        EndpointConfigName=CONFIG_B,
        message="Could not find endpoint",
    )
    expect_error(
        "ValidationException",
        sm.delete_model,
        ModelName="no-such-model",
        message="Could not find model",
    )
    # None of the refused creates left anything behind.
    assert sorted(all_model_names()) == sorted([IRIS] + PAGE_MODELS), all_model_names()
    configs = [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    assert configs == [CONFIG_B], configs
    endpoints = [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]
    assert endpoints == [ENDPOINT], endpoints
    step("9. ValidationException: missing, duplicate (any case), bad names, bad artifacts")


# ---- 10. Signatures ----


def refused_everywhere(code, control, runtime, message=None):
    """`control` (sagemaker) and `runtime` (sagemaker-runtime) clients are both refused (the
    refused create_model is checked for at the end of `signatures`)."""
    name = f"boto3-refused-{code.lower()[:20]}"
    expect_error(
        code,
        control.create_model,
        ModelName=name,
        PrimaryContainer={"Image": IRIS_WASM},
        status=403,
        message=message,
    )
    expect_error(code, control.list_models, status=403, message=message)
    expect_error(
        code,
        runtime.invoke_endpoint,
        EndpointName=ENDPOINT,
        ContentType="text/csv",
        Body=IRIS_ROW,
        status=403,
        message=message,
    )


def tamper(request, **_):
    """before-send: change the body after it was signed."""
    request.body = request.body.replace(b"boto3-tampered", b"boto3-tampered-x")


def malform(request, **_):
    """before-send: drop the Signature= part of the Authorization header."""
    auth = request.headers["Authorization"]
    if isinstance(auth, bytes):
        auth = auth.decode()
    request.headers["Authorization"] = auth.split(", Signature=")[0]


def skewed(minutes):
    real = botocore.auth.get_current_datetime

    def now(*args, **kwargs):
        return real(*args, **kwargs) + datetime.timedelta(minutes=minutes)

    return mock.patch.object(botocore.auth, "get_current_datetime", now)


def signatures():
    refused_everywhere(
        "InvalidSignatureException",
        client("sagemaker", secret_key="wrong-secret"),
        client("sagemaker-runtime", secret_key="wrong-secret"),
        message="signature",
    )
    refused_everywhere(
        "UnrecognizedClientException",
        client("sagemaker", access_key="AKIDUNKNOWN"),
        client("sagemaker-runtime", access_key="AKIDUNKNOWN"),
    )
    unsigned = {"signature_version": botocore.UNSIGNED}
    refused_everywhere(
        "MissingAuthenticationTokenException",
        client("sagemaker", **unsigned),
        client("sagemaker-runtime", **unsigned),
    )

    tampered = client("sagemaker")
    tampered.meta.events.register("before-send.sagemaker.CreateModel", tamper)
    expect_error(
        "InvalidSignatureException",
        tampered.create_model,
        ModelName="boto3-tampered",
        PrimaryContainer={"Image": IRIS_WASM},
        status=403,
    )
    for name in ("boto3-tampered", "boto3-tampered-x"):
        expect_error("ValidationException", sm.describe_model, ModelName=name)

    malformed = client("sagemaker")
    malformed.meta.events.register("before-send.sagemaker.ListModels", malform)
    expect_error("IncompleteSignatureException", malformed.list_models, status=403)
    malformed_rt = client("sagemaker-runtime")
    malformed_rt.meta.events.register("before-send", malform)
    expect_error(
        "IncompleteSignatureException",
        malformed_rt.invoke_endpoint,
        EndpointName=ENDPOINT,
        ContentType="text/csv",
        Body=IRIS_ROW,
        status=403,
    )

    with skewed(20):
        refused_everywhere("InvalidSignatureException", sm, rt, "Signature not yet current")
    with skewed(-20):
        refused_everywhere("InvalidSignatureException", sm, rt, "Signature expired")
    # A small skew is fine.
    with skewed(5):
        sm.list_models(MaxResults=1)
        assert invoke() == "Single"

    # Nothing changed, and the good clients still work.
    assert sorted(all_model_names()) == sorted([IRIS] + PAGE_MODELS), all_model_names()
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "InService"
    assert invoke() == "Single"
    step(
        "10. 403s on both clients: wrong secret, unknown key, unsigned, tampered, malformed, "
        "clock +-20 min; no state changed"
    )


# ---- 11. Deletion ----


def deletion():
    sm.delete_endpoint(EndpointName=ENDPOINT)
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    expect_error(
        "ValidationException",
        sm.describe_endpoint,
        EndpointName=ENDPOINT,
        message=f'Could not find endpoint "{arn("endpoint", ENDPOINT)}"',
    )
    expect_error(
        "ValidationError",
        rt.invoke_endpoint,
        EndpointName=ENDPOINT,
        ContentType="text/csv",
        Body=IRIS_ROW,
    )
    expect_error("ValidationException", sm.delete_endpoint, EndpointName=ENDPOINT)
    sm.delete_endpoint_config(EndpointConfigName=CONFIG_B)
    for name in [IRIS] + PAGE_MODELS:
        sm.delete_model(ModelName=name)
    assert sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_endpoints()["Endpoints"] == []
    expect_error("ValidationException", sm.delete_model, ModelName=IRIS)
    expect_error(
        "ValidationException", sm.delete_endpoint_config, EndpointConfigName=CONFIG_B
    )
    step("11. delete_endpoint, endpoint_deleted waiter, configs and models deleted; lists empty")


# ---- 12. A config whose model is gone ----


def config_without_model():
    """An endpoint config outlives the model it names (DeleteModel only checks endpoints);
    CreateEndpoint and UpdateEndpoint on it must be refused naming the missing model, as
    SageMaker does, not claim that the (existing) endpoint configuration is missing."""
    live_config, live = "boto3-live-config", "boto3-live-endpoint"
    sm.create_model(ModelName="boto3-live-model", PrimaryContainer={"Image": ECHO_WASM})
    sm.create_endpoint_config(
        EndpointConfigName=live_config,
        ProductionVariants=[{"VariantName": "A", "ModelName": "boto3-live-model"}],
    )
    sm.create_endpoint(EndpointName=live, EndpointConfigName=live_config)
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=live, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )

    model, config = "boto3-orphan-model", "boto3-orphan-config"
    sm.create_model(ModelName=model, PrimaryContainer={"Image": IRIS_WASM})
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[{"VariantName": "A", "ModelName": model}],
    )
    sm.delete_model(ModelName=model)
    assert sm.describe_endpoint_config(EndpointConfigName=config)["EndpointConfigName"] == config
    missing_model = f'Could not find model "{arn("model", model)}"'
    wrong = []
    for operation, call, kwargs in (
        ("CreateEndpoint", sm.create_endpoint, {"EndpointName": "boto3-orphan-endpoint"}),
        ("UpdateEndpoint", sm.update_endpoint, {"EndpointName": live}),
    ):
        e = expect_error("ValidationException", call, EndpointConfigName=config, **kwargs)
        if missing_model not in e.response["Error"]["Message"]:
            wrong.append(f"{operation}: {e.response['Error']['Message']}")
    # Refused: nothing was created, and the live endpoint is untouched.
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == [live]
    d = sm.describe_endpoint(EndpointName=live)
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == live_config, d
    assert wrong == [], (
        f"on an existing endpoint config whose model was deleted, the refusal should say "
        f"{missing_model!r}; got: {wrong}"
    )
    sm.delete_endpoint(EndpointName=live)
    sm.delete_endpoint_config(EndpointConfigName=config)
    sm.delete_endpoint_config(EndpointConfigName=live_config)
    sm.delete_model(ModelName="boto3-live-model")
    step("12. CreateEndpoint/UpdateEndpoint on a config whose model was deleted name the model")


STEPS = [
    models,
    endpoint_config,
    endpoint,
    invocations,
    weights,
    listing,
    update,
    in_use,
    errors,
    signatures,
    deletion,
    config_without_model,
]


def main():
    print(f"boto3 {boto3.__version__} against {URL}", flush=True)
    for run in STEPS:
        try:
            run()
        except Exception:
            print(f"FAIL {run.__name__}", flush=True)
            traceback.print_exc(file=sys.stdout)
            return 1
    print(f"{len(STEPS)}/{len(STEPS)} control-plane steps passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
