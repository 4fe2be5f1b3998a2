"""Batch transform through unmodified boto3 against the S3 test server: a 10,000-row CSV
validation set in two objects (one in a folder) split by line and packed into MultiRecord
requests, its outputs compared row for row with `invoke_endpoint`'s answers for the same
rows; a Gzip input sent one record at a time (SingleRecord) through a manifest file; the
`transform_job_completed_or_stopped` waiter; ListTransformJobs' filters, sort and pages;
a missing prefix and a row the model refuses failing the job with their messages; refused
settings named.

Run by tests/suites/batch_transform.rs with the repository's .venv interpreter. PLINTH_URL is
the server; IRIS_WASM and IRIS_MODEL_DIR the model; BUCKET an empty bucket on the S3
server at S3_ENDPOINT (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY).

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import gzip
import json
import os
import urllib.request

import boto3
import botocore.exceptions

from plinth_clients import COMMON, s3_client

BUCKET = os.environ["BUCKET"]
sagemaker = boto3.client("sagemaker", **COMMON)
runtime = boto3.client("sagemaker-runtime", **COMMON)
s3 = s3_client()
WAIT = {"Delay": 1, "MaxAttempts": 120}
RESOURCES = {"InstanceType": "ml.m5.large", "InstanceCount": 2}

sagemaker.create_model(
    ModelName="iris",
    PrimaryContainer={"Image": os.environ["IRIS_WASM"], "ModelDataUrl": os.environ["IRIS_MODEL_DIR"]},
)

rows = [
    f"{4.3 + (i % 36) / 10:.1f},{2.0 + (i % 24) / 10:.1f},{1.0 + (i % 59) / 10:.1f},{0.1 + (i % 25) / 10:.1f}"
    for i in range(10_000)
]
s3.put_object(Bucket=BUCKET, Key="validation/a.csv", Body="\n".join(rows[:6000]).encode() + b"\n")
s3.put_object(Bucket=BUCKET, Key="validation/more/b.csv", Body="\n".join(rows[6000:]).encode())


def progress(name):
    """DescribeTransformJob's PlinthProgress (boto3 keeps only botocore's members)."""
    request = urllib.request.Request(
        os.environ["PLINTH_URL"] + "/",
        data=json.dumps({"TransformJobName": name}).encode(),
        headers={"X-Amz-Target": "SageMaker.DescribeTransformJob",
                 "Content-Type": "application/x-amz-json-1.1"},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)["PlinthProgress"]


def transform(name, fails=False, **job):
    """Create a job and wait for its end: the waiter's failure is expected when `fails`."""
    sagemaker.create_transform_job(TransformJobName=name, ModelName="iris", **job)
    try:
        sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName=name, WaiterConfig=WAIT
        )
        assert not fails, f"{name} did not fail"
    except botocore.exceptions.WaiterError as e:
        assert fails and "Failed" in str(e), e
    return sagemaker.describe_transform_job(TransformJobName=name)


described = transform(
    "validation",
    BatchStrategy="MultiRecord",
    MaxPayloadInMB=1,
    MaxConcurrentTransforms=4,
    TransformInput={
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/validation"}},
        "ContentType": "text/csv",
        "SplitType": "Line",
    },
    TransformOutput={"S3OutputPath": f"s3://{BUCKET}/predictions", "Accept": "text/csv", "AssembleWith": "Line"},
    TransformResources=RESOURCES,
)
assert described["TransformJobStatus"] == "Completed", described
size = sum(len(r) + 1 for r in rows) - 1
assert progress("validation") == {
    "Inputs": 2, "InputsCompleted": 2, "RecordsCompleted": 10_000,
    "BytesCompleted": size, "BytesTotal": size,
}, progress("validation")
assert described["TransformEndTime"] >= described["CreationTime"], described
assert described["BatchStrategy"] == "MultiRecord" and described["MaxPayloadInMB"] == 1, described
assert described["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 3}

# One output per input, named after it (its folder kept), equal row for row to the
# synchronous answers.
keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="predictions/")["Contents"])
assert keys == ["predictions/a.csv.out", "predictions/more/b.csv.out"], keys
output = b"".join(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys).decode()
predicted = output.splitlines()
assert len(predicted) == 10_000, len(predicted)

sagemaker.create_endpoint_config(
    EndpointConfigName="iris",
    ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "iris", "InitialInstanceCount": 1,
                         "InstanceType": "ml.m5.large"}],
)
sagemaker.create_endpoint(EndpointName="iris", EndpointConfigName="iris")
sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="iris", WaiterConfig=WAIT)
synchronous = []
for start in range(0, 10_000, 1000):
    body = "\n".join(rows[start:start + 1000])
    answer = runtime.invoke_endpoint(EndpointName="iris", Body=body, ContentType="text/csv", Accept="text/csv")
    synchronous += answer["Body"].read().decode().splitlines()
assert predicted == synchronous, [(i, a, b) for i, (a, b) in enumerate(zip(predicted, synchronous)) if a != b][:5]

# Gzip inputs named by a manifest, one record per request: the same answers.
s3.put_object(Bucket=BUCKET, Key="zipped/first.csv.gz", Body=gzip.compress("\n".join(rows[:40]).encode()))
s3.put_object(Bucket=BUCKET, Key="zipped/second.csv.gz", Body=gzip.compress("\n".join(rows[40:70]).encode()))
s3.put_object(Bucket=BUCKET, Key="zipped/not-listed.csv.gz", Body=b"not gzip at all")
s3.put_object(
    Bucket=BUCKET,
    Key="manifests/zipped.json",
    Body=json.dumps([{"prefix": f"s3://{BUCKET}/zipped/"}, "first.csv.gz", "second.csv.gz"]).encode(),
)
described = transform(
    "zipped",
    BatchStrategy="SingleRecord",
    TransformInput={
        "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile",
                                        "S3Uri": f"s3://{BUCKET}/manifests/zipped.json"}},
        "ContentType": "text/csv",
        "CompressionType": "Gzip",
        "SplitType": "Line",
    },
    TransformOutput={"S3OutputPath": f"s3://{BUCKET}/zipped-out/", "Accept": "text/csv", "AssembleWith": "Line"},
    TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
)
assert described["TransformJobStatus"] == "Completed", described
first = s3.get_object(Bucket=BUCKET, Key="zipped-out/first.csv.gz.out")["Body"].read().decode()
second = s3.get_object(Bucket=BUCKET, Key="zipped-out/second.csv.gz.out")["Body"].read().decode()
assert (first + second).splitlines() == synchronous[:70]

# DataProcessing: an id column dropped before the model (InputFilter), the output joined
# with the input row (JoinSource), the id and the predicted class kept (OutputFilter).
s3.put_object(Bucket=BUCKET, Key="with-ids/rows.csv",
              Body="\n".join(f"id-{i},{row}" for i, row in enumerate(rows)).encode())
described = transform(
    "joined",
    BatchStrategy="MultiRecord",
    DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,5]"},
    TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/with-ids"}},
                    "ContentType": "text/csv", "SplitType": "Line"},
    TransformOutput={"S3OutputPath": f"s3://{BUCKET}/joined", "Accept": "text/csv", "AssembleWith": "Line"},
    TransformResources=RESOURCES,
)
assert described["TransformJobStatus"] == "Completed", described
assert described["DataProcessing"]["JoinSource"] == "Input", described
joined = s3.get_object(Bucket=BUCKET, Key="joined/rows.csv.out")["Body"].read().decode().splitlines()
assert joined == [f"id-{i},{synchronous[i].split(',')[0]}" for i in range(10_000)], joined[:3]

# An S3Uri that names one object.
described = transform(
    "one-object",
    TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                    "S3Uri": f"s3://{BUCKET}/validation/more/b.csv"}},
                    "ContentType": "text/csv", "SplitType": "Line"},
    TransformOutput={"S3OutputPath": f"s3://{BUCKET}/one", "Accept": "text/csv", "AssembleWith": "Line"},
    TransformResources=RESOURCES,
)
assert described["TransformJobStatus"] == "Completed", described
one = s3.get_object(Bucket=BUCKET, Key="one/b.csv.out")["Body"].read().decode()
assert one.splitlines() == synchronous[6000:], "one object, the same answers"

# Failures: nothing under the prefix; a row the model refuses (after its retries).
described = transform(
    "nothing-there",
    fails=True,
    TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/missing/"}},
                    "ContentType": "text/csv", "SplitType": "Line"},
    TransformOutput={"S3OutputPath": f"s3://{BUCKET}/never"},
    TransformResources=RESOURCES,
)
assert described["TransformJobStatus"] == "Failed", described
assert described["FailureReason"].startswith(f'No S3 objects found under S3 URL "s3://{BUCKET}/missing/"'), described
s3.put_object(Bucket=BUCKET, Key="bad/rows.csv", Body=b"5.1,3.5,1.4,0.2\nnot,a,flower\n")
described = transform(
    "bad-rows",
    fails=True,
    BatchStrategy="SingleRecord",
    ModelClientConfig={"InvocationsMaxRetries": 0},
    TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/bad"}},
                    "ContentType": "text/csv", "SplitType": "Line"},
    TransformOutput={"S3OutputPath": f"s3://{BUCKET}/bad-out"},
    TransformResources=RESOURCES,
)
assert described["TransformJobStatus"] == "Failed", described
assert "bad/rows.csv" in described["FailureReason"] and "after 1 tries" in described["FailureReason"], described
assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="bad-out/"), "no output for a failed input"

# Listing: filters, sort, pages.
listed = sagemaker.list_transform_jobs(StatusEquals="Completed", SortBy="Name", SortOrder="Ascending")
assert [j["TransformJobName"] for j in listed["TransformJobSummaries"]] == ["joined", "one-object", "validation", "zipped"], listed
names = []
token = {}
while True:
    page = sagemaker.list_transform_jobs(MaxResults=1, SortBy="CreationTime", SortOrder="Ascending", **token)
    names += [j["TransformJobName"] for j in page["TransformJobSummaries"]]
    if "NextToken" not in page:
        break
    token = {"NextToken": page["NextToken"]}
assert names == ["validation", "zipped", "joined", "one-object", "nothing-there", "bad-rows"], names
failed = sagemaker.list_transform_jobs(StatusEquals="Failed", NameContains="BAD")["TransformJobSummaries"]
assert [j["TransformJobName"] for j in failed] == ["bad-rows"] and failed[0]["FailureReason"], failed


def refused(expected, **job):
    base = dict(
        TransformJobName="refused",
        ModelName="iris",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/validation"}}},
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/x"},
        TransformResources=RESOURCES,
    )
    base.update(job)
    try:
        sagemaker.create_transform_job(**base)
    except sagemaker.exceptions.ClientError as e:
        message = e.response["Error"]["Message"]
        assert expected in message, (expected, message)
        return e.response["Error"]["Code"]
    raise AssertionError(f"accepted: {job}")


assert refused("MaxPayloadInMB 0", MaxPayloadInMB=0) == "ValidationException"
assert refused("times MaxPayloadInMB (6) is 120", MaxConcurrentTransforms=20) == "ValidationException"
refused("RecordIO", TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/v"}},
                                    "SplitType": "RecordIO"})
refused('DataProcessing.InputFilter "$[1:" is not a JSONPath expression', DataProcessing={"InputFilter": "$[1:"})
refused('TransformInput.ContentType "application/x-npy"', DataProcessing={"JoinSource": "Input"},
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/v"}},
                        "ContentType": "application/x-npy"})
refused('Could not find model', ModelName="nobody")
assert refused("a job with this name already exists", TransformJobName="validation") == "ResourceInUse"
try:
    sagemaker.describe_transform_job(TransformJobName="nobody")
    raise AssertionError("found a job that does not exist")
except sagemaker.exceptions.ClientError as e:
    assert e.response["Error"]["Message"] == "Could not find requested job with name nobody", e.response
print("ok")
