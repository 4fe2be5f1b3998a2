"""Asynchronous inference through unmodified boto3 against the S3 test server: inputs put in
S3, `invoke_endpoint_async` for each, the outputs polled at their OutputLocation and
compared with `invoke_endpoint`'s answers for the same bodies; an input the model refuses
lands at its FailureLocation with the model's message, and nothing at its OutputLocation.
A webhook receiver in this process (the config's SuccessTopic and ErrorTopic) answers 503
to each job's first notification and 200 after: each job is notified exactly once more,
in SageMaker's message format, the response included on success as configured.

Run by tests/suites/async_inference.rs with the repository's .venv interpreter. PLINTH_URL
is the server (no credentials); IRIS_WASM and IRIS_MODEL_DIR the model; BUCKET an empty
bucket on the S3 server at S3_ENDPOINT (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY).

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import base64
import json
import os
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

from plinth_clients import COMMON, s3_client

BUCKET = os.environ["BUCKET"]
common = COMMON
sagemaker = boto3.client("sagemaker", **common)
runtime = boto3.client("sagemaker-runtime", **common)
s3 = s3_client()

# The webhook receiver: every POST kept, by topic path and inference id.
received = defaultdict(list)
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        message = json.loads(body)
        with lock:
            tries = received[message["inferenceId"]]
            tries.append((self.path, message))
            status = 503 if len(tries) == 1 else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


hooks = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=hooks.serve_forever, daemon=True).start()
HOOK = f"http://127.0.0.1:{hooks.server_address[1]}"

# An SNS topic is refused by name: Plinth delivers webhooks.
try:
    sagemaker.create_endpoint_config(
        EndpointConfigName="iris-async-sns",
        ProductionVariants=[{"VariantName": "A", "ModelName": "m", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}],
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": f"s3://{BUCKET}/output",
                "NotificationConfig": {"SuccessTopic": "arn:aws:sns:us-east-1:123456789012:done"},
            }
        },
    )
    raise AssertionError("an SNS topic was accepted")
except sagemaker.exceptions.ClientError as e:
    assert "SNS topic" in e.response["Error"]["Message"], e.response

sagemaker.create_model(
    ModelName="iris-async",
    PrimaryContainer={"Image": os.environ["IRIS_WASM"], "ModelDataUrl": os.environ["IRIS_MODEL_DIR"]},
)
sagemaker.create_endpoint_config(
    EndpointConfigName="iris-async",
    ProductionVariants=[
        {
            "VariantName": "AllTraffic",
            "ModelName": "iris-async",
            "InitialInstanceCount": 2,
            "InstanceType": "ml.m5.large",
        }
    ],
    AsyncInferenceConfig={
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
        "OutputConfig": {
            "S3OutputPath": f"s3://{BUCKET}/output",
            "S3FailurePath": f"s3://{BUCKET}/failure/",
            "NotificationConfig": {
                "SuccessTopic": f"{HOOK}/success",
                "ErrorTopic": f"{HOOK}/error",
                "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
            },
        },
    },
)
sagemaker.create_endpoint(EndpointName="iris-async", EndpointConfigName="iris-async")
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName="iris-async", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
)
described = sagemaker.describe_endpoint(EndpointName="iris-async")
assert described["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == f"s3://{BUCKET}/output", described

rows = [f"{5 + i / 10:.1f},{3 + i / 20:.2f},{1 + i / 5:.1f},{0.2 + i / 10:.1f}" for i in range(20)]
jobs = []
for i, row in enumerate(rows):
    key = f"input/{i}.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=row.encode())
    response = runtime.invoke_endpoint_async(
        EndpointName="iris-async",
        InputLocation=f"s3://{BUCKET}/{key}",
        ContentType="text/csv",
        InvocationTimeoutSeconds=60,
        RequestTTLSeconds=600,
        InferenceId=f"row-{i}",
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202, response
    # Objects are named by a fresh id, as SageMaker names them.
    output, failure = response["OutputLocation"], response["FailureLocation"]
    name = output.removeprefix(f"s3://{BUCKET}/output/").removesuffix(".out")
    assert output == f"s3://{BUCKET}/output/{name}.out" and "/" not in name, response
    assert failure == f"s3://{BUCKET}/failure/{name}-error.out", response
    jobs.append((row, response))

# A body the model refuses: its failure object holds the model's message.
s3.put_object(Bucket=BUCKET, Key="input/bad.csv", Body=b"not,a,flower")
bad = runtime.invoke_endpoint_async(
    EndpointName="iris-async",
    InputLocation=f"s3://{BUCKET}/input/bad.csv",
    ContentType="text/csv",
    InferenceId="bad",
)
# An input that is not there fails the same way, saying so.
missing = runtime.invoke_endpoint_async(
    EndpointName="iris-async",
    InputLocation=f"s3://{BUCKET}/input/missing.csv",
    ContentType="text/csv",
    InferenceId="missing",
)


def key_of(location):
    return location.split(f"s3://{BUCKET}/", 1)[1]


def read(location, deadline):
    while True:
        try:
            return s3.get_object(Bucket=BUCKET, Key=key_of(location))["Body"].read()
        except s3.exceptions.NoSuchKey:
            assert time.monotonic() < deadline, f"nothing at {location}"
            time.sleep(0.1)


deadline = time.monotonic() + 60
for row, response in jobs:
    result = read(response["OutputLocation"], deadline)
    direct = runtime.invoke_endpoint(
        EndpointName="iris-async", ContentType="text/csv", Body=row.encode()
    )["Body"].read()
    assert result == direct, (row, result, direct)

failure = read(bad["FailureLocation"], deadline).decode()
sync_error = None
try:
    runtime.invoke_endpoint(EndpointName="iris-async", ContentType="text/csv", Body=b"not,a,flower")
except runtime.exceptions.ModelError as e:
    sync_error = e.response["Error"]["Message"]
assert sync_error and failure == sync_error, (failure, sync_error)
try:
    s3.head_object(Bucket=BUCKET, Key=key_of(bad["OutputLocation"]))
    raise AssertionError("a failed job has an output")
except s3.exceptions.ClientError:
    pass
gone = read(missing["FailureLocation"], deadline).decode()
assert "input/missing.csv" in gone, gone

# Notifications: each job's first try refused (503), its second delivered; none after.
ids = [f"row-{i}" for i in range(len(jobs))] + ["bad", "missing"]
deadline = time.monotonic() + 30
while True:
    with lock:
        short = [i for i in ids if len(received[i]) < 2]
    if not short:
        break
    assert time.monotonic() < deadline, f"not notified twice: {short}"
    time.sleep(0.2)
time.sleep(2.5)  # a delivered notification is not sent again
with lock:
    assert sorted(received) == sorted(ids), sorted(received)
    for i, tries in received.items():
        assert len(tries) == 2, (i, tries)
        assert tries[0] == tries[1], (i, tries)
for (row, response), i in zip(jobs, range(len(jobs))):
    path, message = received[f"row-{i}"][1]
    assert path == "/success", path
    assert message["invocationStatus"] == "Completed", message
    assert message["eventName"] == "InferenceResult" and message["eventSource"] == "aws:sagemaker", message
    assert message["requestParameters"]["endpointName"] == "iris-async", message
    assert message["requestParameters"]["inputLocation"] == f"s3://{BUCKET}/input/{i}.csv", message
    assert message["responseParameters"]["outputLocation"] == response["OutputLocation"], message
    included = base64.b64decode(message["responseBody"]["content"])
    assert included == read(response["OutputLocation"], deadline), message
for name, response in [("bad", bad), ("missing", missing)]:
    path, message = received[name][1]
    assert path == "/error", path
    assert message["invocationStatus"] == "Failed", message
    assert message["responseParameters"]["failureLocation"] == response["FailureLocation"], message
    assert message["failureReason"] == read(response["FailureLocation"], deadline).decode(), message
    assert "responseBody" not in message, "the error topic was not asked to include it"
hooks.shutdown()
print("ok")
