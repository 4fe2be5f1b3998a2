"""boto3's `plinth` client (host/server/botocore) against a real Plinth server.

Run by tests/suites/plinth_service.rs with the repository's .venv interpreter, against a
server started with one credential pair and no deployment file.

Environment:
  PLINTH_URL         the server's base URL
  PLINTH_ACCESS_KEY  the access key id the server knows
  PLINTH_SECRET_KEY  its secret
  AWS_DATA_PATH      host/server/botocore (where botocore finds the `plinth` model)
  IRIS_WASM          the iris classifier component (.wasm)
  IRIS_MODEL_DIR     a directory holding the iris model.onnx
  ECHO_WASM          the echo component (.wasm)

What it shows: the model is what makes `boto3.client("plinth")` exist (and the two ways to
point botocore at it); botocore refuses before sending what Plinth refuses (a member
SageMaker defines and Plinth does not implement, a number below its range, an empty outcome
list, a missing required member), and Plinth refuses a number above its range (botocore
checks only minimums); then, through the `plinth` client with SigV4: a model with
`PlinthLimits` and `PlinthBackend`, an endpoint config with two variants, a shadow and a
`PlinthExperiment`, an endpoint (SageMaker's waiter, polling DescribeEndpoint), invocations
through `sagemaker-runtime`, outcomes, the experiment's report, an alarm's life cycle,
endpoint events, a weight change, the loaded models of an endpoint that is not
multi-model (refused), the shadow's report and its promotion, an UpdateEndpoint
with a `DeploymentConfig`, the listings (paginators), modeled errors (`ValidationException`,
`ResourceInUse`), a wrong signature, and deletion: every operation of the model.

Plain asserts, no pytest: steps run in order and the first failure exits non-zero with a
traceback.
"""

import datetime
import json
import os
import sys
import time
import traceback

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError, UnknownServiceError

URL = os.environ["PLINTH_URL"]
ACCESS_KEY = os.environ["PLINTH_ACCESS_KEY"]
SECRET_KEY = os.environ["PLINTH_SECRET_KEY"]
DATA_PATH = os.environ["AWS_DATA_PATH"]
IRIS_WASM = os.environ["IRIS_WASM"]
IRIS_MODEL_DIR = os.environ["IRIS_MODEL_DIR"]
ECHO_WASM = os.environ["ECHO_WASM"]

REGION = "us-east-1"
ACCOUNT = "123456789012"
IRIS_A = "plinth-iris-a"
IRIS_B = "plinth-iris-b"
ECHO = "plinth-echo"
CONFIG = "plinth-ab"
ENDPOINT = "plinth-ab"
ALARM = "plinth-ab-5xx"
IRIS_ROW = b"5.1,3.5,1.4,0.2"

CLIENT_CONFIG = Config(retries={"max_attempts": 1}, read_timeout=60)


def step(message):
    print(f"ok   {message}", flush=True)


def arn(kind, name):
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name.lower()}"


def recent(value):
    """A timestamp boto3 parsed (an aware datetime) within minutes of now."""
    assert isinstance(value, datetime.datetime) and value.tzinfo is not None, repr(value)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - value).total_seconds()) < 600, (value, now)
    return True


def make_client(session, service, secret_key=SECRET_KEY):
    return session.client(
        service,
        endpoint_url=URL,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret_key,
        config=CLIENT_CONFIG,
    )


# ---- 0. Finding the model ----

# Without the model directory, botocore has no `plinth` service.
os.environ.pop("AWS_DATA_PATH")
try:
    boto3.session.Session().client("plinth", region_name=REGION)
    raise AssertionError("botocore knows `plinth` without host/server/botocore")
except UnknownServiceError:
    pass

# On the loader's search path (the second way the README gives).
core = botocore.session.get_session()
core.get_component("data_loader").search_paths.append(DATA_PATH)
by_search_path = make_client(boto3.session.Session(botocore_session=core), "plinth")
assert by_search_path.meta.service_model.service_id == "Plinth"

# With AWS_DATA_PATH (the first way), which the rest of the script uses.
os.environ["AWS_DATA_PATH"] = DATA_PATH
session = boto3.session.Session()
plinth = make_client(session, "plinth")
runtime = make_client(session, "sagemaker-runtime")
sagemaker = make_client(session, "sagemaker")
assert plinth.meta.service_model.signing_name == "sagemaker"
assert plinth.meta.service_model.metadata["targetPrefix"] == "SageMaker"
step("0. boto3.client('plinth') exists with AWS_DATA_PATH or the loader's search path, not without")

# Every request the `plinth` client sends, by operation.
SENT = []
plinth.meta.events.register(
    "before-send.*", lambda request, **_: SENT.append(request.headers["X-Amz-Target"])
)


def refused_before_sending(call, fragment, **kwargs):
    """`call(**kwargs)` must raise ParamValidationError naming `fragment`, sending nothing."""
    sent = len(SENT)
    try:
        call(**kwargs)
    except ParamValidationError as e:
        assert fragment in str(e), f"{fragment!r} not in {e}"
        assert len(SENT) == sent, f"a request was sent: {SENT[sent:]}"
        return str(e)
    raise AssertionError(f"{call.__name__} {kwargs} was not refused by botocore")


def expect_error(code, call, message=None, **kwargs):
    """`call(**kwargs)` must reach the server and fail with `code`; returns the error."""
    sent = len(SENT)
    try:
        response = call(**kwargs)
    except ClientError as e:
        assert e.response["Error"]["Code"] == code, e.response
        if message is not None:
            assert message in e.response["Error"]["Message"], e.response["Error"]
        assert len(SENT) == sent + 1, SENT[sent:]
        return e
    raise AssertionError(f"expected {code}; the call succeeded: {response}")


def variant(name, model, **extra):
    return {"VariantName": name, "ModelName": model, "InitialInstanceCount": 1, **extra}


# ---- 1. Refused before sending ----


def client_side_validation():
    config = {
        "EndpointConfigName": "never-created",
        "ProductionVariants": [variant("A", IRIS_A)],
    }
    # A SageMaker member Plinth does not implement is not in the model.
    refused_before_sending(
        plinth.create_endpoint_config,
        'Unknown parameter in input: "ExplainerConfig"',
        ExplainerConfig={"ClarifyExplainerConfig": {"ShapConfig": {}}},
        **config,
    )
    refused_before_sending(
        plinth.create_endpoint_config,
        'Unknown parameter in ProductionVariants[0]: "CoreDumpConfig"',
        EndpointConfigName="never-created",
        ProductionVariants=[
            variant("A", IRIS_A, CoreDumpConfig={"DestinationS3Uri": "s3://b/dumps"})
        ],
    )
    # Below the table's range (botocore checks minimums).
    message = refused_before_sending(
        plinth.create_endpoint_config,
        "ProductionVariants[0].PlinthMaxQueueLength, value: -1, valid min value: 0",
        EndpointConfigName="never-created",
        ProductionVariants=[variant("A", IRIS_A, PlinthMaxQueueLength=-1)],
    )
    refused_before_sending(
        plinth.create_model,
        "PlinthLimits.MemorySizeInMB, value: 0, valid min value: 1",
        ModelName="never-created",
        PrimaryContainer={"Image": IRIS_WASM},
        PlinthLimits={"MemorySizeInMB": 0},
    )
    refused_before_sending(
        plinth.create_model,
        "Invalid type for parameter PlinthLimits.AllowGraphsFromBytes, value: yes",
        ModelName="never-created",
        PrimaryContainer={"Image": IRIS_WASM},
        PlinthLimits={"AllowGraphsFromBytes": "yes"},
    )
    refused_before_sending(
        plinth.record_inference_outcomes,
        "Invalid length for parameter Outcomes, value: 0, valid min length: 1",
        EndpointName=ENDPOINT,
        Outcomes=[],
    )
    refused_before_sending(
        plinth.create_alarm,
        'Missing required parameter in input: "Threshold"',
        AlarmName=ALARM, EndpointName=ENDPOINT, MetricName="Invocations",
        ComparisonOperator="GreaterThanThreshold", Period=1, EvaluationPeriods=1,
    )
    refused_before_sending(
        plinth.list_endpoint_events,
        "MaxResults, value: 0, valid min value: 1",
        EndpointName=ENDPOINT,
        MaxResults=0,
    )
    # SageMaker's own client cannot send Plinth's members at all.
    try:
        sagemaker.create_model(
            ModelName="never-created", PrimaryContainer={"Image": IRIS_WASM},
            PlinthLimits={"MemorySizeInMB": 128},
        )
        raise AssertionError("the sagemaker client sent PlinthLimits")
    except ParamValidationError as e:
        assert 'Unknown parameter in input: "PlinthLimits"' in str(e), e
    assert SENT == [], SENT
    # Above the range: botocore does not check maximums; Plinth refuses it by name.
    expect_error(
        "ValidationException",
        plinth.create_endpoint_config,
        message="ProductionVariants[0].PlinthMaxQueueLength must be a whole number between 0 "
        "and 1000000",
        EndpointConfigName="never-created",
        ProductionVariants=[variant("A", IRIS_A, PlinthMaxQueueLength=2_000_000)],
    )
    example = message.splitlines()[-1].strip()
    step(f"1. refused before sending (e.g. {example!r}); above a maximum, by Plinth")


# ---- 2. Models, config, endpoint ----


def models_and_endpoint():
    r = plinth.create_model(
        ModelName=IRIS_A,
        PrimaryContainer={"Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR},
        PlinthLimits={"MemorySizeInMB": 128, "InvocationTimeoutInSeconds": 30,
                      "MaxResponseSizeInMB": 16, "AllowGraphsFromBytes": True},
        PlinthBackend="Tract",
    )
    assert r["ModelArn"] == arn("model", IRIS_A), r
    plinth.create_model(
        ModelName=IRIS_B, PrimaryContainer={"Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR}
    )
    plinth.create_model(ModelName=ECHO, PrimaryContainer={"Image": ECHO_WASM})
    d = plinth.describe_model(ModelName=IRIS_A)
    assert d["PlinthLimits"] == {"MemorySizeInMB": 128, "InvocationTimeoutInSeconds": 30,
                                 "MaxResponseSizeInMB": 16, "AllowGraphsFromBytes": True}, d
    assert d["PlinthBackend"] == "Tract", d
    assert recent(d["CreationTime"])
    d = plinth.describe_model(ModelName=IRIS_B)
    assert d["PlinthLimits"] == {"MemorySizeInMB": 256, "InvocationTimeoutInSeconds": 60,
                                 "MaxResponseSizeInMB": 6, "AllowGraphsFromBytes": False}, d
    assert d["PlinthBackend"] == "Auto", d

    r = plinth.create_endpoint_config(
        EndpointConfigName=CONFIG,
        ProductionVariants=[
            variant("A", IRIS_A, InitialVariantWeight=1.0, PlinthMaxQueueLength=64,
                    RoutingConfig={"RoutingStrategy": "RANDOM"},
                    ContainerStartupHealthCheckTimeoutInSeconds=30),
            variant("B", IRIS_B, InitialVariantWeight=1.0, PlinthMaxBatchSize=4),
        ],
        ShadowProductionVariants=[variant("S", ECHO, PlinthSamplingPercentage=100.0)],
        PlinthExperiment={"ControlVariant": "A", "Metric": "Binary", "Confidence": 0.9,
                          "OutcomeRetentionSeconds": 3600},
    )
    assert r["EndpointConfigArn"] == arn("endpoint-config", CONFIG), r
    c = plinth.describe_endpoint_config(EndpointConfigName=CONFIG)
    experiment = c["PlinthExperiment"]
    assert experiment["ControlVariant"] == "A" and experiment["Confidence"] == 0.9, c
    assert experiment["RoutingStrategy"] == "Static" and experiment["AutoAction"] == "None", c
    variants = {v["VariantName"]: v for v in c["ProductionVariants"]}
    assert variants["A"]["PlinthMaxQueueLength"] == 64, c
    assert variants["A"]["RoutingConfig"] == {"RoutingStrategy": "RANDOM"}, c
    assert variants["B"]["PlinthMaxBatchSize"] == 4, c
    assert variants["B"]["PlinthMaxQueueLength"] == 128, c
    # Echoed only when given, as SageMaker does.
    assert variants["A"]["ContainerStartupHealthCheckTimeoutInSeconds"] == 30, c
    assert "ContainerStartupHealthCheckTimeoutInSeconds" not in variants["B"], c
    assert c["ShadowProductionVariants"][0]["PlinthSamplingPercentage"] == 100.0, c

    r = plinth.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=CONFIG)
    assert r["EndpointArn"] == arn("endpoint", ENDPOINT), r
    # SageMaker's waiter, polling DescribeEndpoint.
    plinth.get_waiter("endpoint_in_service").wait(
        EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 90}
    )
    e = plinth.describe_endpoint(EndpointName=ENDPOINT)
    assert e["EndpointStatus"] == "InService", e
    assert recent(e["CreationTime"]) and recent(e["LastModifiedTime"])
    production = {v["VariantName"]: v for v in e["ProductionVariants"]}
    assert production["A"]["ModelName"] == IRIS_A and production["A"]["PlinthBackend"] == "Tract", e
    assert production["B"]["CurrentInstanceCount"] == 1, e
    shadow = e["ShadowProductionVariants"][0]
    assert shadow["VariantName"] == "S" and shadow["PlinthSamplingPercentage"] == 100.0, e
    step("2. create_model with PlinthLimits; endpoint config with an experiment and a shadow; "
         "endpoint InService")


# ---- 3. Experiment ----


def experiment():
    served = {}
    for i in range(20):
        r = runtime.invoke_endpoint(
            EndpointName=ENDPOINT, ContentType="text/csv", Body=IRIS_ROW, InferenceId=f"req-{i}"
        )
        body = json.loads(r["Body"].read())
        assert body["predictions"][0]["label"] == "setosa", body
        served[f"req-{i}"] = r["InvokedProductionVariant"]
    assert set(served.values()) <= {"A", "B"}, served

    # A converts, B does not; one unknown id and one duplicate are refused.
    outcomes = [{"InferenceId": i, "Value": 1.0 if v == "A" else 0.0} for i, v in served.items()]
    r = plinth.record_inference_outcomes(
        EndpointName=ENDPOINT,
        Outcomes=outcomes + [{"InferenceId": "nobody-asked", "Value": 1}, outcomes[0]],
    )
    assert r["Recorded"] == 20, r
    reasons = {o["InferenceId"]: o["Reason"] for o in r["Rejected"]}
    assert reasons == {"nobody-asked": "Unknown", outcomes[0]["InferenceId"]: "Duplicate"}, r

    report = plinth.describe_experiment(EndpointName=ENDPOINT)
    assert report["EndpointName"] == ENDPOINT and report["EndpointConfigName"] == CONFIG, report
    assert report["Experiment"]["ControlVariant"] == "A", report
    by_name = {v["VariantName"]: v for v in report["Variants"]}
    for name in ("A", "B"):
        count = sum(1 for v in served.values() if v == name)
        assert by_name[name]["Outcomes"] == count, (name, count, report)
        assert by_name[name]["Invocations"] == count, (name, count, report)
        assert 0.0 <= by_name[name]["TrafficShare"] <= 1.0, report
    assert by_name["A"]["Verdict"] == "Control", report
    assert by_name["B"]["Verdict"] in ("Better", "Worse", "NotYetKnown"), report
    if by_name["A"]["Outcomes"] and by_name["B"]["Outcomes"]:
        assert by_name["A"]["Mean"] == 1.0 and by_name["B"]["Mean"] == 0.0, report
        low, high = by_name["A"]["Interval"]
        assert 0.0 <= low <= high <= 1.0, report
        assert isinstance(by_name["B"]["Comparison"]["Sequential"]["PValue"], float), report
    assert report["RejectedOutcomes"]["Unknown"] == 1, report
    assert report["RejectedOutcomes"]["Duplicate"] == 1, report
    assert isinstance(report["RecommendedAction"], str) and report["RecommendedAction"], report
    advice = report["RecommendedAction"]
    step(f"3. 20 invocations; record_inference_outcomes; describe_experiment ({advice})")
    return served


# ---- 4. Alarms ----


def alarms():
    r = plinth.create_alarm(
        AlarmName=ALARM, EndpointName=ENDPOINT, Scope="Endpoint",
        MetricName="Invocation5XXErrors", Statistic="Average",
        ComparisonOperator="GreaterThanThreshold", Threshold=0.5,
        Period=1, EvaluationPeriods=3, DatapointsToAlarm=2,
        TreatMissingData="notBreaching", AlarmDescription="5xx rate of plinth-ab",
    )
    assert r["AlarmArn"] == arn("alarm", ALARM), r
    a = plinth.describe_alarm(AlarmName=ALARM)
    assert a["AlarmName"] == ALARM and a["EndpointName"] == ENDPOINT, a
    assert a["Threshold"] == 0.5 and a["Period"] == 1 and a["EvaluationPeriods"] == 3, a
    assert a["StateValue"] in ("OK", "INSUFFICIENT_DATA"), a
    assert isinstance(a["StateReason"], str), a
    assert len(a["Datapoints"]) == 3, a
    assert all(d is None or isinstance(d, float) for d in a["Datapoints"]), a
    assert recent(a["CreationTime"])
    pages = list(plinth.get_paginator("list_alarms").paginate(PaginationConfig={"PageSize": 1}))
    listed = [s for p in pages for s in p["Alarms"]]
    assert [s["AlarmName"] for s in listed] == [ALARM], pages
    assert listed[0]["MetricName"] == "Invocation5XXErrors", listed
    assert recent(listed[0]["CreationTime"])
    plinth.delete_alarm(AlarmName=ALARM)
    try:
        plinth.describe_alarm(AlarmName=ALARM)
        raise AssertionError("the alarm is still there")
    except plinth.exceptions.ValidationException as e:
        assert "Could not find alarm" in e.response["Error"]["Message"], e.response
    assert plinth.list_alarms()["Alarms"] == []
    state = a["StateValue"]
    step(f"4. create_alarm, describe_alarm ({state}), list_alarms paginator, delete_alarm")


# ---- 5. Events and shadows ----


def events_and_shadows(served):
    events = plinth.list_endpoint_events(EndpointName=ENDPOINT)["Events"]
    assert events, events
    assert [e["Sequence"] for e in events] == sorted(e["Sequence"] for e in events), events
    assert events[0]["EndpointStatus"] == "Creating", events
    assert events[-1]["EndpointStatus"] == "InService", events
    assert all(recent(e["EventTime"]) and e["EndpointConfigName"] == CONFIG for e in events), events
    last = plinth.list_endpoint_events(EndpointName=ENDPOINT, AfterSequence=-1)["Events"]
    assert last == events[-1:], (last, events)

    # Copies reach the shadow off the request path: wait for all 20.
    deadline = time.monotonic() + 30
    while True:
        report = plinth.describe_shadow_variants(EndpointName=ENDPOINT)
        shadow = report["ShadowProductionVariants"][0]
        if shadow["Invocations"] >= len(served) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert report["EndpointConfigName"] == CONFIG, report
    assert {v["VariantName"] for v in report["ProductionVariants"]} == {"A", "B"}, report
    assert shadow["VariantName"] == "S" and shadow["ModelName"] == ECHO, report
    assert shadow["SamplingPercentage"] == 100.0, report
    assert shadow["Sampled"] == len(served) and shadow["Invocations"] == len(served), report
    assert shadow["Dropped"] == 0 and shadow["Errors"] == 0, report
    assert shadow["Recent"]["Invocations"] == float(len(served)), report

    # A weight-only change applies before the call returns.
    r = plinth.update_endpoint_weights_and_capacities(
        EndpointName=ENDPOINT,
        DesiredWeightsAndCapacities=[{"VariantName": "B", "DesiredWeight": 0.0}],
    )
    assert r["EndpointArn"] == arn("endpoint", ENDPOINT), r
    weights = {v["VariantName"]: v["CurrentWeight"]
               for v in plinth.describe_endpoint(EndpointName=ENDPOINT)["ProductionVariants"]}
    assert weights == {"A": 1.0, "B": 0.0}, weights

    # Loaded models are a multi-model endpoint's: this one's models are SingleModel.
    expect_error("ValidationException", plinth.list_loaded_models,
                 message="not a multi-model endpoint", EndpointName=ENDPOINT)
    expect_error("ValidationException", plinth.list_loaded_models,
                 message="Could not find endpoint", EndpointName="never-created")
    # The asynchronous queue is an asynchronous endpoint's: this one has none.
    expect_error("ValidationException", plinth.describe_async_queue,
                 message="is not an asynchronous endpoint", EndpointName=ENDPOINT)
    step(f"5. list_endpoint_events ({len(events)} events); describe_shadow_variants "
         f"({shadow['Compared']} compared); update_endpoint_weights_and_capacities; "
         "list_loaded_models and describe_async_queue refused (not multi-model, not "
         "asynchronous, unknown endpoint)")


def promotion():
    r = plinth.promote_shadow_variant(EndpointName=ENDPOINT, ShadowVariantName="S")
    assert r["EndpointArn"] == arn("endpoint", ENDPOINT), r
    promoted = r["EndpointConfigName"]
    plinth.get_waiter("endpoint_in_service").wait(
        EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 90}
    )
    e = plinth.describe_endpoint(EndpointName=ENDPOINT)
    assert e["EndpointConfigName"] == promoted, e
    assert [v["VariantName"] for v in e["ProductionVariants"]] == ["S"], e
    r = runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/plain", Body=b"hello")
    assert r["InvokedProductionVariant"] == "S", r
    # The experiment went with the old config.
    expect_error("ValidationException", plinth.describe_experiment, message="no PlinthExperiment",
                 EndpointName=ENDPOINT)

    # And back, through a blue/green deployment: DeploymentConfig is SageMaker's, cut to
    # what Plinth serves.
    deployment = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 5},
            "TerminationWaitInSeconds": 0,
        }
    }
    r = plinth.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName=CONFIG,
                               DeploymentConfig=deployment)
    assert r["EndpointArn"] == arn("endpoint", ENDPOINT), r
    # During the 5 s bake: the new fleet in PendingDeploymentSummary, and PlinthDeployment.
    deadline = time.monotonic() + 30
    while True:
        e = plinth.describe_endpoint(EndpointName=ENDPOINT)
        pending = e.get("PendingDeploymentSummary", {})
        baking = pending.get("PlinthDeployment", {}).get("Phase") == "Baking"
        if baking or e["EndpointStatus"] != "Updating" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert e["EndpointStatus"] == "Updating", e
    assert pending["EndpointConfigName"] == CONFIG and recent(pending["StartTime"]), e
    deployment_state = pending["PlinthDeployment"]
    assert deployment_state["Strategy"] == "ALL_AT_ONCE" and deployment_state["Steps"] == 1, e
    assert deployment_state["NewFleetTrafficPercent"] == 100.0, e
    assert recent(deployment_state["PhaseStartTime"]), e
    new_fleet = {v["VariantName"]: v for v in pending["ProductionVariants"]}
    assert set(new_fleet) == {"A", "B"} and new_fleet["A"]["ModelName"] == IRIS_A, e
    assert all(recent(s["StartTime"]) for v in new_fleet.values() for s in v["VariantStatus"]), e
    plinth.get_waiter("endpoint_in_service").wait(
        EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 90}
    )
    e = plinth.describe_endpoint(EndpointName=ENDPOINT)
    assert e["EndpointConfigName"] == CONFIG, e
    routing = e["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 5}, e
    assert plinth.describe_experiment(EndpointName=ENDPOINT)["Experiment"]["ControlVariant"] == "A"
    step(f"6. promote_shadow_variant: {promoted} serves S; update_endpoint back to {CONFIG} "
         "(blue/green)")
    return promoted


# ---- 7. A transform job, its progress, listing and stop ----


def transform_job():
    import tempfile
    work = tempfile.mkdtemp(prefix="plinth-service-transform-")
    os.makedirs(os.path.join(work, "in"))
    os.makedirs(os.path.join(work, "out"))
    with open(os.path.join(work, "in", "rows.csv"), "w") as f:
        f.write("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    plinth.create_transform_job(
        TransformJobName="plinth-transform",
        ModelName=IRIS_A,
        PlinthCompareModels=[IRIS_B],
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                        "S3Uri": os.path.join(work, "in")}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": os.path.join(work, "out"), "Accept": "text/csv"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    plinth.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="plinth-transform", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    job = plinth.describe_transform_job(TransformJobName="plinth-transform")
    assert job["TransformJobStatus"] == "Completed", job
    # The plinth model carries Plinth's progress.
    assert job["PlinthProgress"]["RecordsCompleted"] == 2, job
    assert job["PlinthProgress"]["InputsCompleted"] == job["PlinthProgress"]["Inputs"] == 1, job
    # The same iris on another backend: every record close and of the same class.
    [compared] = job["PlinthProgress"]["Comparison"]
    assert compared["ModelName"] == IRIS_B and compared["Records"] == 2, job
    assert compared["CloseShare"] == compared["SameClassShare"] == 1.0, job
    assert os.path.exists(os.path.join(work, "out", IRIS_B, "rows.csv.out")), job
    listed = plinth.list_transform_jobs(StatusEquals="Completed")["TransformJobSummaries"]
    assert [j["TransformJobName"] for j in listed] == ["plinth-transform"], listed
    try:
        plinth.stop_transform_job(TransformJobName="plinth-transform")
        raise AssertionError("stopped an ended job")
    except ClientError as e:
        assert "already ended (Completed)" in e.response["Error"]["Message"], e.response
    step("7. create_transform_job comparing two models, the waiter, PlinthProgress, list_transform_jobs, "
         "stop_transform_job refused for an ended job")


# ---- 7b. Model quality: a job definition and its schedule's life cycle ----


def model_quality():
    import tempfile
    work = tempfile.mkdtemp(prefix="plinth-service-quality-")
    for d in ("truth", "out"):
        os.makedirs(os.path.join(work, d))
    arn = plinth.create_model_quality_job_definition(
        JobDefinitionName="quality",
        ModelQualityAppSpecification={"ImageUri": "plinth:model-quality",
                                      "ProblemType": "MulticlassClassification"},
        ModelQualityJobInput={
            "EndpointInput": {"EndpointName": ENDPOINT, "LocalPath": "/opt/ml/processing/input",
                              "InferenceAttribute": "predictions[0].label"},
            "GroundTruthS3Input": {"S3Uri": os.path.join(work, "truth")},
        },
        ModelQualityJobOutputConfig={"MonitoringOutputs": [{"S3Output": {
            "S3Uri": os.path.join(work, "out"), "LocalPath": "/opt/ml/processing/output"}}]},
        JobResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                        "VolumeSizeInGB": 1}},
        RoleArn="arn:aws:iam::123456789012:role/monitor",
    )["JobDefinitionArn"]
    assert arn.endswith(":model-quality-job-definition/quality"), arn
    described = plinth.describe_model_quality_job_definition(JobDefinitionName="quality")
    assert described["ModelQualityJobInput"]["EndpointInput"]["EndpointName"] == ENDPOINT
    plinth.create_monitoring_schedule(
        MonitoringScheduleName="quality-daily",
        MonitoringScheduleConfig={"ScheduleConfig": {"ScheduleExpression": "cron(0 0 ? * * *)"},
                                  "MonitoringJobDefinitionName": "quality",
                                  "MonitoringType": "ModelQuality"},
    )
    plinth.stop_monitoring_schedule(MonitoringScheduleName="quality-daily")
    schedule = plinth.describe_monitoring_schedule(MonitoringScheduleName="quality-daily")
    assert schedule["MonitoringScheduleStatus"] == "Stopped", schedule
    plinth.start_monitoring_schedule(MonitoringScheduleName="quality-daily")
    listed = plinth.list_monitoring_schedules(EndpointName=ENDPOINT)["MonitoringScheduleSummaries"]
    assert [s["MonitoringScheduleStatus"] for s in listed] == ["Scheduled"], listed
    definitions = plinth.list_model_quality_job_definitions()["JobDefinitionSummaries"]
    assert [d["MonitoringJobDefinitionName"] for d in definitions] == ["quality"], definitions
    # Daily at midnight: nothing has run (unless the test crossed midnight).
    executions = plinth.list_monitoring_executions(MonitoringScheduleName="quality-daily")
    assert len(executions["MonitoringExecutionSummaries"]) <= 1, executions
    plinth.delete_monitoring_schedule(MonitoringScheduleName="quality-daily")
    plinth.delete_model_quality_job_definition(JobDefinitionName="quality")
    try:
        plinth.describe_monitoring_schedule(MonitoringScheduleName="quality-daily")
        raise AssertionError("described a deleted schedule")
    except plinth.exceptions.ResourceNotFound as e:
        assert e.response["Error"]["Code"] == "ResourceNotFound", e.response
    step("7b. a model quality job definition and its monitoring schedule: create, describe, "
         "stop, start, list, delete; ResourceNotFound after")


# ---- 8. Listings, modeled errors, signatures, deletion ----


def listings_and_deletion(promoted):
    pages = plinth.get_paginator("list_models").paginate()
    models = [m["ModelName"] for p in pages for m in p["Models"]]
    assert sorted(models) == sorted([IRIS_A, IRIS_B, ECHO]), models
    configs = plinth.list_endpoint_configs(SortBy="Name", SortOrder="Ascending")["EndpointConfigs"]
    assert [c["EndpointConfigName"] for c in configs] == sorted([CONFIG, promoted]), configs
    endpoints = plinth.list_endpoints(StatusEquals="InService")["Endpoints"]
    assert [e["EndpointName"] for e in endpoints] == [ENDPOINT], endpoints
    assert recent(endpoints[0]["LastModifiedTime"])

    try:
        plinth.delete_model(ModelName=ECHO)
        raise AssertionError("deleted a model an endpoint uses")
    except plinth.exceptions.ResourceInUse as e:
        assert e.response["Error"]["Code"] == "ResourceInUse", e.response

    wrong = make_client(session, "plinth", secret_key="not-the-secret")
    try:
        wrong.list_models()
        raise AssertionError("a wrong signature was accepted")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidSignatureException", e.response
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e.response

    plinth.delete_endpoint(EndpointName=ENDPOINT)
    plinth.get_waiter("endpoint_deleted").wait(
        EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    for name in (CONFIG, promoted):
        plinth.delete_endpoint_config(EndpointConfigName=name)
    for name in (IRIS_A, IRIS_B, ECHO):
        plinth.delete_model(ModelName=name)
    assert plinth.list_models()["Models"] == []
    assert plinth.list_endpoint_configs()["EndpointConfigs"] == []
    assert plinth.list_endpoints()["Endpoints"] == []
    step("8. list paginators and filters; ResourceInUse; a wrong signature refused; "
         "everything deleted")


def main():
    client_side_validation()
    models_and_endpoint()
    served = experiment()
    alarms()
    events_and_shadows(served)
    promoted = promotion()
    transform_job()
    model_quality()
    listings_and_deletion(promoted)
    sent = {t.decode() if isinstance(t, bytes) else t for t in SENT}
    every = {f"SageMaker.{op}" for op in plinth.meta.service_model.operation_names}
    assert sent == every, f"never sent: {sorted(every - sent)}"
    print(f"ok   all {len(every)} operations of the plinth model sent and answered", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
