"""Model quality through unmodified boto3: an endpoint of two variants (the iris classifier,
and a degraded copy: a Serial pipeline whose scaler shifts the petal features before the
same classifier) with data capture on, the iris data set (150 rows, each sent four times with
an InferenceId) as traffic, ground truth written as SageMaker takes it, and three model quality
job definitions over the same captures (MulticlassClassification on the label,
BinaryClassification of "virginica" by probability and threshold, Regression of that
probability against 0/1) on monitoring schedules of Plinth's `rate(2 seconds)`.

Each execution's statistics.json (for the endpoint and for each variant) is compared with
scikit-learn's metrics on the same predictions to 1e-9; the better variant is reported
better; a baseline constraint is violated (CompletedWithViolations, constraint_violations.json);
ListMonitoringExecutions, DescribeMonitoringSchedule's last execution, Stop/Start, the List
operations' filters and the refusals (a schedule expression SageMaker refuses, NOW without
its window, ground truth that is malformed or of the wrong type).

Run by tests/suites/model_quality.rs with the repository's .venv (boto3, scikit-learn) against
a server started with --data-capture-roll-seconds 1. PLINTH_URL is the server; IRIS_WASM,
SCALER_WASM and IRIS_MODEL_DIR the components and model; WORK a directory under the
server's artifact roots.

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import datetime
import json
import os
import threading
import time
import urllib.request
import uuid

import boto3
import botocore.exceptions
from sklearn import metrics as sk
from sklearn.datasets import load_iris

from plinth_clients import COMMON

sagemaker = boto3.client("sagemaker", **COMMON)
runtime = boto3.client("sagemaker-runtime", **COMMON)
def plinth_call(operation, body):
    request = urllib.request.Request(
        os.environ["PLINTH_URL"] + "/", data=json.dumps(body).encode(),
        headers={"X-Amz-Target": f"SageMaker.{operation}",
                 "Content-Type": "application/x-amz-json-1.1"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


WORK = os.environ["WORK"]
CAPTURE, OUTPUT = f"{WORK}/capture", f"{WORK}/output"
for d in (CAPTURE, OUTPUT, f"{WORK}/degraded", f"{WORK}/truth-labels", f"{WORK}/truth-binary",
          f"{WORK}/truth-bad"):
    os.makedirs(d, exist_ok=True)
# Means subtracted from the features before the classifier (deviations 1): the petal
# features shifted, so that some flowers are taken for another species.
with open(f"{WORK}/degraded/scaler.csv", "w") as f:
    f.write("0,0,1.2,0.5\n1,1,1,1\n")

sagemaker.create_model(
    ModelName="iris",
    PrimaryContainer={"Image": os.environ["IRIS_WASM"], "ModelDataUrl": os.environ["IRIS_MODEL_DIR"]},
)
sagemaker.create_model(
    ModelName="iris-degraded",
    Containers=[
        {"ContainerHostname": "shift", "Image": os.environ["SCALER_WASM"],
         "ModelDataUrl": f"{WORK}/degraded",
         "Environment": {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"}},
        {"ContainerHostname": "model", "Image": os.environ["IRIS_WASM"],
         "ModelDataUrl": os.environ["IRIS_MODEL_DIR"]},
    ],
)
sagemaker.create_endpoint_config(
    EndpointConfigName="quality",
    ProductionVariants=[
        {"VariantName": "good", "ModelName": "iris", "InitialInstanceCount": 1,
         "InitialVariantWeight": 1},
        {"VariantName": "degraded", "ModelName": "iris-degraded", "InitialInstanceCount": 1,
         "InitialVariantWeight": 1},
    ],
    DataCaptureConfig={
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": CAPTURE,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                     "JsonContentTypes": ["application/json"]},
    },
)
sagemaker.create_endpoint(EndpointName="quality", EndpointConfigName="quality")
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName="quality", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
)

iris = load_iris()
NAMES = list(iris.target_names)
answers = {}  # inference id -> (variant, true label, predicted label, P(virginica))
for repeat in range(4):
    for i, (row, target) in enumerate(zip(iris.data, iris.target)):
        inference_id = f"{repeat}-{i}"
        response = runtime.invoke_endpoint(
            EndpointName="quality",
            Body=",".join(f"{v:.1f}" for v in row),
            ContentType="text/csv",
            Accept="application/json",
            InferenceId=inference_id,
        )
        prediction = json.loads(response["Body"].read())["predictions"][0]
        answers[inference_id] = (
            response["InvokedProductionVariant"],
            NAMES[target],
            prediction["label"],
            prediction["probabilities"][2],
        )
variants = sorted({a[0] for a in answers.values()})
assert variants == ["degraded", "good"], variants


def write_truth(prefix, label_of, lines_extra=()):
    """Ground truth as SageMaker takes it, under <prefix>/yyyy/mm/dd/hh/."""
    now = datetime.datetime.now(datetime.timezone.utc)
    folder = f"{prefix}/{now:%Y/%m/%d/%H}"
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/{now:%M%S}-{uuid.uuid4().hex[:8]}.jsonl", "w") as f:
        for inference_id, (_, label, _, _) in answers.items():
            f.write(json.dumps({
                "groundTruthData": {"data": label_of(label), "encoding": "CSV"},
                "eventMetadata": {"eventId": inference_id},
                "eventVersion": "0",
            }) + "\n")
        # An id no capture has: ignored (counted as unmatched).
        f.write(json.dumps({"groundTruthData": {"data": label_of("setosa"), "encoding": "CSV"},
                            "eventMetadata": {"eventId": "never-served"},
                            "eventVersion": "0"}) + "\n")
        for line in lines_extra:
            f.write(line + "\n")


write_truth(f"{WORK}/truth-labels", lambda label: label)
write_truth(f"{WORK}/truth-binary", lambda label: "1" if label == "virginica" else "0")
with open(f"{WORK}/constraints.json", "w") as f:
    json.dump({"version": 0.0, "multiclass_classification_constraints": {
        "accuracy": {"threshold": 0.9, "comparison_operator": "LessThanThreshold"},
        "weighted_f1": {"threshold": 0.1, "comparison_operator": "LessThanThreshold"},
    }}, f)

IMAGE = "156813124566.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer"


def definition(name, problem, truth, baseline=None, endpoint="quality", **endpoint_input):
    request = dict(
        JobDefinitionName=name,
        ModelQualityAppSpecification={"ImageUri": IMAGE, "ProblemType": problem},
        ModelQualityJobInput={
            "EndpointInput": {"EndpointName": endpoint, "LocalPath": "/opt/ml/processing/input",
                              **endpoint_input},
            "GroundTruthS3Input": {"S3Uri": truth},
        },
        ModelQualityJobOutputConfig={"MonitoringOutputs": [{"S3Output": {
            "S3Uri": OUTPUT, "LocalPath": "/opt/ml/processing/output"}}]},
        JobResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                        "VolumeSizeInGB": 20}},
        RoleArn="arn:aws:iam::123456789012:role/monitor",
    )
    if baseline:
        request["ModelQualityBaselineConfig"] = {"ConstraintsResource": {"S3Uri": baseline}}
    sagemaker.create_model_quality_job_definition(**request)
    sagemaker.create_monitoring_schedule(
        MonitoringScheduleName=name,
        MonitoringScheduleConfig={
            "ScheduleConfig": {"ScheduleExpression": "rate(2 seconds)"},
            "MonitoringJobDefinitionName": name,
            "MonitoringType": "ModelQuality",
        },
    )


definition("labels", "MulticlassClassification", f"{WORK}/truth-labels",
           baseline=f"{WORK}/constraints.json", InferenceAttribute="predictions[0].label")
definition("virginica", "BinaryClassification", f"{WORK}/truth-binary",
           ProbabilityAttribute="$.predictions[0].probabilities[2]",
           ProbabilityThresholdAttribute=0.5)
definition("probability", "Regression", f"{WORK}/truth-binary",
           InferenceAttribute="predictions[0].probabilities[2]")


def finished(schedule):
    """The first execution of `schedule` that saw all 600 captures."""
    deadline = time.time() + 90
    while time.time() < deadline:
        for e in sagemaker.list_monitoring_executions(
            MonitoringScheduleName=schedule, SortBy="ScheduledTime", SortOrder="Descending"
        )["MonitoringExecutionSummaries"]:
            if e["MonitoringExecutionStatus"] in ("Completed", "CompletedWithViolations"):
                stats = statistics(schedule, e)
                if stats["dataset"]["item_count"] == 600:
                    return e, stats
            assert e["MonitoringExecutionStatus"] in (
                "Completed", "CompletedWithViolations", "InProgress", "Failed"), e
        time.sleep(0.5)
    raise AssertionError(f"no execution of {schedule} saw all 600 captures")


def folder(schedule, execution):
    t = execution["ScheduledTime"].astimezone(datetime.timezone.utc)
    return f"{OUTPUT}/quality/{schedule}/{t:%Y/%m/%d/%H}"


def statistics(schedule, execution, variant=None):
    path = folder(schedule, execution)
    if variant:
        path += f"/variants/{variant}"
    with open(f"{path}/statistics.json") as f:
        return json.load(f)


def close(ours, theirs, what):
    assert abs(ours - theirs) < 1e-9, f"{what}: Plinth {ours}, scikit-learn {theirs}"


def rows(variant=None):
    return [a for a in answers.values() if variant is None or a[0] == variant]


# Multiclass: accuracy and weighted precision, recall and F1 as scikit-learn's, per variant.
execution, _ = finished("labels")
assert execution["MonitoringExecutionStatus"] == "CompletedWithViolations", execution
accuracy = {}
for variant in [None, *variants]:
    stats = statistics("labels", execution, variant)
    m = stats["multiclass_classification_metrics"]
    truth = [r[1] for r in rows(variant)]
    predicted = [r[2] for r in rows(variant)]
    assert stats["dataset"]["item_count"] == len(truth)
    close(m["accuracy"]["value"], sk.accuracy_score(truth, predicted), f"{variant} accuracy")
    for ours, average in (("weighted_precision", "precision_score"),
                          ("weighted_recall", "recall_score"), ("weighted_f1", "f1_score")):
        theirs = getattr(sk, average)(truth, predicted, average="weighted", zero_division=0)
        close(m[ours]["value"], theirs, f"{variant} {ours}")
    close(m["weighted_f2"]["value"],
          sk.fbeta_score(truth, predicted, beta=2, average="weighted", zero_division=0), "f2")
    labels = sorted(set(truth) | set(predicted))
    matrix = sk.confusion_matrix(truth, predicted, labels=labels)
    for i, a in enumerate(labels):
        for j, p in enumerate(labels):
            assert m["confusion_matrix"][a][p] == matrix[i][j], (variant, a, p)
    accuracy[variant] = m["accuracy"]["value"]
    # At least 200 rows (600 for the endpoint, about 300 per variant): a standard deviation.
    sd = m["accuracy"]["standard_deviation"]
    assert isinstance(sd, float) and 0 <= sd < 0.1, (variant, sd)
print(f"accuracy: {accuracy}")
assert accuracy["good"] > accuracy["degraded"] + 0.1, accuracy
# The baseline's accuracy >= 0.9 fails for the endpoint (the degraded half drags it down).
with open(f"{folder('labels', execution)}/constraint_violations.json") as f:
    violations = json.load(f)["violations"]
assert [v["metric_name"] for v in violations] == ["accuracy"], violations
assert violations[0]["constraint_check_type"] == "LessThanThreshold"
with open(f"{folder('labels', execution)}/variants/good/constraint_violations.json") as f:
    assert json.load(f)["violations"] == []

# Ground truth for an id never served is ignored, and counted (Plinth's PlinthCounts,
# which boto3 leaves out: read raw).
raw = plinth_call("ListMonitoringExecutions", {"MonitoringScheduleName": "labels"})
counts = [e["PlinthCounts"] for e in raw["MonitoringExecutionSummaries"] if "PlinthCounts" in e]
assert any(c["Joined"] == 600 and c["GroundTruthUnmatched"] == 1 for c in counts), counts

# Binary by probability and threshold: with the curves' areas.
execution, _ = finished("virginica")
assert execution["MonitoringExecutionStatus"] == "Completed", execution
for variant in [None, *variants]:
    m = statistics("virginica", execution, variant)["binary_classification_metrics"]
    truth = [int(r[1] == "virginica") for r in rows(variant)]
    scores = [r[3] for r in rows(variant)]
    predicted = [int(s >= 0.5) for s in scores]
    close(m["accuracy"]["value"], sk.accuracy_score(truth, predicted), "binary accuracy")
    close(m["precision"]["value"], sk.precision_score(truth, predicted, zero_division=0), "precision")
    close(m["recall"]["value"], sk.recall_score(truth, predicted), "recall")
    close(m["f1"]["value"], sk.f1_score(truth, predicted), "f1")
    close(m["f0_5"]["value"], sk.fbeta_score(truth, predicted, beta=0.5), "f0.5")
    close(m["auc"]["value"], sk.roc_auc_score(truth, scores), f"{variant} auc")
    close(m["au_prc"]["value"], sk.average_precision_score(truth, scores), f"{variant} au_prc")
    tn, fp, fn, tp = sk.confusion_matrix(truth, predicted, labels=[0, 1]).ravel()
    assert m["confusion_matrix"] == {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}}, m

# The same labels through Plinth's outcomes API (RecordInferenceOutcomes): written as
# ground truth for the endpoint's definitions, here one whose prefix is otherwise empty.
os.makedirs(f"{WORK}/truth-outcomes", exist_ok=True)
definition("outcomes", "BinaryClassification", f"{WORK}/truth-outcomes",
           ProbabilityAttribute="$.predictions[0].probabilities[2]")
outcomes = [{"InferenceId": i, "Value": 1 if a[1] == "virginica" else 0}
            for i, a in answers.items()]
for k in range(0, len(outcomes), 1000):
    plinth_call("RecordInferenceOutcomes", {"EndpointName": "quality",
                                            "Outcomes": outcomes[k:k + 1000]})
via_outcomes, _ = finished("outcomes")
for variant in [None, *variants]:
    a = statistics("outcomes", via_outcomes, variant)["binary_classification_metrics"]
    b = statistics("virginica", execution, variant)["binary_classification_metrics"]
    for metric in ("accuracy", "auc", "f1"):
        close(a[metric]["value"], b[metric]["value"], f"outcomes {variant} {metric}")

# Regression of the probability against 0/1.
execution, _ = finished("probability")
for variant in [None, *variants]:
    m = statistics("probability", execution, variant)["regression_metrics"]
    truth = [float(r[1] == "virginica") for r in rows(variant)]
    predicted = [r[3] for r in rows(variant)]
    close(m["mae"]["value"], sk.mean_absolute_error(truth, predicted), "mae")
    close(m["mse"]["value"], sk.mean_squared_error(truth, predicted), "mse")
    close(m["rmse"]["value"], sk.mean_squared_error(truth, predicted) ** 0.5, "rmse")
    close(m["r2"]["value"], sk.r2_score(truth, predicted), "r2")

# DescribeMonitoringSchedule: Scheduled, with its last execution; Stop and Start.
described = sagemaker.describe_monitoring_schedule(MonitoringScheduleName="labels")
assert described["MonitoringScheduleStatus"] == "Scheduled", described
assert described["EndpointName"] == "quality" and described["MonitoringType"] == "ModelQuality"
assert described["LastMonitoringExecutionSummary"]["MonitoringScheduleName"] == "labels"
sagemaker.stop_monitoring_schedule(MonitoringScheduleName="probability")
assert sagemaker.describe_monitoring_schedule(
    MonitoringScheduleName="probability")["MonitoringScheduleStatus"] == "Stopped"
count = len(sagemaker.list_monitoring_executions(MonitoringScheduleName="probability",
                                                 MaxResults=100)["MonitoringExecutionSummaries"])
time.sleep(4.5)
after = len(sagemaker.list_monitoring_executions(MonitoringScheduleName="probability",
                                                 MaxResults=100)["MonitoringExecutionSummaries"])
assert after <= count + 1, (count, after)  # at most one already running when it stopped
sagemaker.start_monitoring_schedule(MonitoringScheduleName="probability")

# The List operations.
summaries = sagemaker.list_monitoring_schedules(EndpointName="quality", SortBy="Name",
                                                SortOrder="Ascending")
assert [s["MonitoringScheduleName"] for s in summaries["MonitoringScheduleSummaries"]] == [
    "labels", "outcomes", "probability", "virginica"], summaries
assert sagemaker.list_monitoring_schedules(StatusEquals="Stopped")["MonitoringScheduleSummaries"] == []
definitions = sagemaker.list_model_quality_job_definitions(EndpointName="quality", SortBy="Name",
                                                           SortOrder="Ascending")
assert [d["MonitoringJobDefinitionName"] for d in definitions["JobDefinitionSummaries"]] == [
    "labels", "outcomes", "probability", "virginica"]
described = sagemaker.describe_model_quality_job_definition(JobDefinitionName="virginica")
assert described["ModelQualityAppSpecification"]["ProblemType"] == "BinaryClassification"
assert described["ModelQualityJobInput"]["EndpointInput"]["ProbabilityThresholdAttribute"] == 0.5


def refused(call, code, fragment, **kwargs):
    try:
        call(**kwargs)
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == code, e.response
        assert fragment in e.response["Error"]["Message"], e.response["Error"]["Message"]
        return
    raise AssertionError(f"accepted: {kwargs}")


# A definition in use; an unknown schedule; SageMaker's expression forms; NOW's window.
refused(sagemaker.delete_model_quality_job_definition, "ResourceInUse", "delete the schedule first",
        JobDefinitionName="labels")
refused(sagemaker.describe_monitoring_schedule, "ResourceNotFound", "Could not find",
        MonitoringScheduleName="nothing")
for expression in ("cron(30 * ? * * *)", "cron(0 * ? * MON *)", "every hour", "rate(0 seconds)"):
    refused(sagemaker.create_monitoring_schedule, "ValidationException", "ScheduleExpression",
            MonitoringScheduleName="bad-expression",
            MonitoringScheduleConfig={"ScheduleConfig": {"ScheduleExpression": expression},
                                      "MonitoringJobDefinitionName": "labels",
                                      "MonitoringType": "ModelQuality"})
refused(sagemaker.create_monitoring_schedule, "ValidationException", "required when ScheduleExpression is NOW",
        MonitoringScheduleName="once",
        MonitoringScheduleConfig={"ScheduleConfig": {"ScheduleExpression": "NOW"},
                                  "MonitoringJobDefinitionName": "labels",
                                  "MonitoringType": "ModelQuality"})
refused(sagemaker.create_monitoring_schedule, "ValidationException", "MonitoringType",
        MonitoringScheduleName="data-quality",
        MonitoringScheduleConfig={"MonitoringJobDefinitionName": "labels",
                                  "MonitoringType": "DataQuality"})

# Ground truth that is malformed, or of the wrong type for the problem: the execution fails
# naming the file and line, and the next schedule keeps running.
write_truth(f"{WORK}/truth-bad", lambda label: label, lines_extra=["{not json"])
definition("malformed", "MulticlassClassification", f"{WORK}/truth-bad",
           InferenceAttribute="predictions[0].label")
definition("wrong-type", "BinaryClassification", f"{WORK}/truth-labels",
           InferenceAttribute="predictions[0].class_index")


def failure(schedule):
    deadline = time.time() + 60
    while time.time() < deadline:
        for e in sagemaker.list_monitoring_executions(MonitoringScheduleName=schedule)[
                "MonitoringExecutionSummaries"]:
            if e["MonitoringExecutionStatus"] == "Failed":
                return e["FailureReason"]
        time.sleep(0.5)
    raise AssertionError(f"{schedule} did not fail")


reason = failure("malformed")
assert "not a JSON record" in reason and ".jsonl line 602" in reason, reason
reason = failure("wrong-type")
assert "is not 0 or 1" in reason, reason

# ---- A canary of the degraded model, rolled back by a quality alarm on the new fleet ----

CAPTURE_CONFIG = {
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": CAPTURE,
    "CaptureOptions": [{"CaptureMode": "InputAndOutput"}],
    "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
}
for config, model in (("canary-a", "iris"), ("canary-b", "iris-degraded")):
    sagemaker.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": model,
                             "InitialInstanceCount": 1}],
        DataCaptureConfig=CAPTURE_CONFIG,
    )
sagemaker.create_endpoint(EndpointName="canary", EndpointConfigName="canary-a")
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName="canary", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
TRAFFIC = 20_000
os.makedirs(f"{WORK}/truth-canary/2000/01/01/00", exist_ok=True)
now = datetime.datetime.now(datetime.timezone.utc)
folder = f"{WORK}/truth-canary/{now:%Y/%m/%d/%H}"
os.makedirs(folder, exist_ok=True)
with open(f"{folder}/labels.jsonl", "w") as f:
    for k in range(TRAFFIC):
        f.write(json.dumps({"groundTruthData": {"data": NAMES[iris.target[k % 150]],
                                                "encoding": "CSV"},
                            "eventMetadata": {"eventId": f"canary-{k}"},
                            "eventVersion": "0"}) + "\n")
definition("canary", "MulticlassClassification", f"{WORK}/truth-canary", endpoint="canary",
           InferenceAttribute="predictions[0].label")



# The new fleet's accuracy, from the monitoring executions: below 0.85 is ALARM.
plinth_call("CreateAlarm", {
    "AlarmName": "canary-accuracy", "EndpointName": "canary", "Scope": "NewFleet",
    "Namespace": "aws/sagemaker/Endpoints/model-metrics", "MetricName": "accuracy",
    "Statistic": "Average", "ComparisonOperator": "LessThanThreshold", "Threshold": 0.85,
    "Period": 1, "EvaluationPeriods": 1,
})
stop = threading.Event()
sent = []


def traffic():
    k = 0
    while not stop.is_set() and k < TRAFFIC:
        row = iris.data[k % 150]
        runtime.invoke_endpoint(EndpointName="canary", Body=",".join(f"{v:.1f}" for v in row),
                                ContentType="text/csv", Accept="application/json",
                                InferenceId=f"canary-{k}")
        k += 1
    sent.append(k)


thread = threading.Thread(target=traffic)
thread.start()
try:
    time.sleep(3)
    started = time.time()
    sagemaker.update_endpoint(
        EndpointName="canary", EndpointConfigName="canary-b",
        DeploymentConfig={
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY", "WaitIntervalInSeconds": 60,
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50}},
                "TerminationWaitInSeconds": 0},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "canary-accuracy"}]},
        },
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        described = sagemaker.describe_endpoint(EndpointName="canary")
        if described["EndpointStatus"] == "InService" and time.time() - started > 1:
            break
        time.sleep(0.5)
finally:
    stop.set()
    thread.join()
assert described["EndpointConfigName"] == "canary-a", described
assert "canary-accuracy" in described.get("FailureReason", ""), described
# Rolled back during the 60 s bake: the quality alarm, not the bake's end, decided.
assert time.time() - started < 60, time.time() - started
alarm = plinth_call("DescribeAlarm", {"AlarmName": "canary-accuracy"})
print(f"canary rolled back after {time.time() - started:.1f} s: {described['FailureReason']}; "
      f"alarm now {alarm['StateValue']}")

print("model quality through boto3: ok")
