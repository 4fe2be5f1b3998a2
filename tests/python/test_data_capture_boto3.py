"""Data capture through unmodified boto3 against the S3 test server: an endpoint config with
DataCaptureConfig (every request, input and output, CSV and JSON listed as text) whose
captured records are read back from the bucket with S3's client and checked field by field
against SageMaker's documented format (captureData.endpointInput / endpointOutput with
observedContentType, mode, data, encoding; eventMetadata with eventId, inferenceId,
inferenceTime; eventVersion) and layout (<prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/
<file>.jsonl); a body of an unlisted type stored as base64 byte for byte; DescribeEndpoint's
DataCaptureConfig summary; UpdateEndpoint turning capture off (CaptureStatus Stopped, nothing
more written); refusals by name.

Run by tests/suites/data_capture.rs with the repository's .venv interpreter against a server
started with --data-capture-roll-seconds 1. PLINTH_URL is the server; IRIS_WASM and
IRIS_MODEL_DIR the model; BUCKET an empty bucket on the S3 server at S3_ENDPOINT.

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import base64
import datetime
import json
import os
import re
import struct
import time
import uuid

import boto3
import botocore.exceptions

from plinth_clients import COMMON, s3_client

BUCKET = os.environ["BUCKET"]
sagemaker = boto3.client("sagemaker", **COMMON)
runtime = boto3.client("sagemaker-runtime", **COMMON)
s3 = s3_client()
PREFIX = f"s3://{BUCKET}/capture"

sagemaker.create_model(
    ModelName="iris",
    PrimaryContainer={"Image": os.environ["IRIS_WASM"], "ModelDataUrl": os.environ["IRIS_MODEL_DIR"]},
)
VARIANT = {"VariantName": "AllTraffic", "ModelName": "iris", "InitialInstanceCount": 1}


def capture_config(enable=True, percentage=100):
    return {
        "EnableCapture": enable,
        "InitialSamplingPercentage": percentage,
        "DestinationS3Uri": PREFIX,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "CsvContentTypes": ["text/csv"],
            "JsonContentTypes": ["application/json"],
        },
    }


sagemaker.create_endpoint_config(
    EndpointConfigName="captured",
    ProductionVariants=[VARIANT],
    DataCaptureConfig=capture_config(),
)
# The config is described as given.
described = sagemaker.describe_endpoint_config(EndpointConfigName="captured")
assert described["DataCaptureConfig"]["InitialSamplingPercentage"] == 100, described
assert described["DataCaptureConfig"]["DestinationS3Uri"] == PREFIX, described

sagemaker.create_endpoint(EndpointName="captured", EndpointConfigName="captured")
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName="captured", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
)
summary = sagemaker.describe_endpoint(EndpointName="captured")["DataCaptureConfig"]
assert summary == {
    "EnableCapture": True,
    "CaptureStatus": "Started",
    "CurrentSamplingPercentage": 100,
    "DestinationS3Uri": PREFIX,
}, summary

ROW = "5.1,3.5,1.4,0.2"


def npy_row(values):
    """One float32 row [1, n] as a .npy file (format 1.0), without numpy."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': (1, {len(values)}), }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + struct.pack(
        f"<{len(values)}f", *values
    )
sent = {}
for i in range(20):
    inference_id = f"req-{i}"
    response = runtime.invoke_endpoint(
        EndpointName="captured",
        Body=ROW,
        ContentType="text/csv",
        Accept="application/json",
        InferenceId=inference_id,
    )
    sent[inference_id] = response["Body"].read().decode()
# A body of a type not listed is stored as base64; one without an InferenceId has none in
# its record.
npy = npy_row([6.3, 3.3, 6.0, 2.5])
npy_answer = runtime.invoke_endpoint(
    EndpointName="captured", Body=npy, ContentType="application/x-npy", Accept="application/x-npy"
)["Body"].read()


def records(wanted):
    """Every captured record under the prefix (waiting for `wanted` of them), with its key."""
    deadline = time.time() + 30
    while True:
        found = []
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="capture/")
        for item in listed.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode()
            for line in body.splitlines():
                found.append((item["Key"], json.loads(line)))
        if len(found) >= wanted or time.time() > deadline:
            return found
        time.sleep(0.25)


found = records(21)
assert len(found) == 21, len(found)
KEY = re.compile(
    r"^capture/captured/AllTraffic/(\d{4})/(\d{2})/(\d{2})/(\d{2})/"
    r"\d{2}-\d{2}-\d{3}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    # The endpoint config that served the records (Plinth's part of the free-form name).
    r"-captured\.jsonl$"
)
now = datetime.datetime.now(datetime.timezone.utc)
event_ids = set()
by_id = {}
for key, record in found:
    match = KEY.match(key)
    assert match, key
    assert set(record) == {"captureData", "eventMetadata", "eventVersion"}, record
    assert record["eventVersion"] == "0"
    metadata = record["eventMetadata"]
    event_ids.add(metadata["eventId"])
    uuid.UUID(metadata["eventId"])
    inference_time = datetime.datetime.strptime(
        metadata["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=datetime.timezone.utc)
    assert abs((now - inference_time).total_seconds()) < 300, metadata
    # The file's hour is the record's.
    assert tuple(int(g) for g in match.groups()) == (
        inference_time.year, inference_time.month, inference_time.day, inference_time.hour
    ), (key, metadata)
    data = record["captureData"]
    assert set(data) == {"endpointInput", "endpointOutput"}, data
    for side, mode in (("endpointInput", "INPUT"), ("endpointOutput", "OUTPUT")):
        assert set(data[side]) == {"observedContentType", "mode", "data", "encoding"}, data[side]
        assert data[side]["mode"] == mode
    if "inferenceId" in metadata:
        by_id[metadata["inferenceId"]] = data
    else:
        assert data["endpointInput"]["observedContentType"] == "application/x-npy"
        assert data["endpointInput"]["encoding"] == "BASE64"
        assert base64.b64decode(data["endpointInput"]["data"]) == npy
        assert data["endpointOutput"]["encoding"] == "BASE64"
        assert base64.b64decode(data["endpointOutput"]["data"]) == npy_answer
assert len(event_ids) == 21, "each record has its own eventId"
assert set(by_id) == set(sent), sorted(by_id)
for inference_id, data in by_id.items():
    assert data["endpointInput"] == {
        "observedContentType": "text/csv",
        "mode": "INPUT",
        "data": ROW,
        "encoding": "CSV",
    }, data
    assert data["endpointOutput"]["encoding"] == "JSON", data
    assert data["endpointOutput"]["data"] == sent[inference_id], data
    assert data["endpointOutput"]["observedContentType"].startswith("application/json")

# UpdateEndpoint to a config with capture off: Stopped, and nothing more is written.
sagemaker.create_endpoint_config(
    EndpointConfigName="not-captured",
    ProductionVariants=[VARIANT],
    DataCaptureConfig=capture_config(enable=False),
)
sagemaker.update_endpoint(EndpointName="captured", EndpointConfigName="not-captured")
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName="captured", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
)
summary = sagemaker.describe_endpoint(EndpointName="captured")["DataCaptureConfig"]
assert summary["CaptureStatus"] == "Stopped" and summary["EnableCapture"] is False, summary
for i in range(5):
    runtime.invoke_endpoint(EndpointName="captured", Body=ROW, ContentType="text/csv")
time.sleep(2.5)
assert len(records(21)) == 21

# Refused by name: SageMaker's members Plinth does not implement, and SageMaker's checks.
def refused(fragment, **config):
    try:
        sagemaker.create_endpoint_config(
            EndpointConfigName="bad-" + uuid.uuid4().hex[:8],
            ProductionVariants=[VARIANT],
            DataCaptureConfig=config,
        )
    except botocore.exceptions.ClientError as e:
        message = e.response["Error"]["Message"]
        assert e.response["Error"]["Code"] == "ValidationException", e.response
        assert fragment in message, message
        return
    raise AssertionError(f"accepted: {config}")


good = capture_config()
refused("DataCaptureConfig.KmsKeyId", **{**good, "KmsKeyId": "alias/capture"})
refused("DataCaptureConfig.CaptureOptions[0].CaptureMode", **{**good, "CaptureOptions": [{"CaptureMode": "Both"}]})
refused("DataCaptureConfig.DestinationS3Uri", **{**good, "DestinationS3Uri": "/nowhere/under/the/roots"})
refused(
    "CsvContentTypes[0]",
    **{**good, "CaptureContentTypeHeader": {"CsvContentTypes": ["not a type"]}},
)
print("data capture through boto3: ok")
