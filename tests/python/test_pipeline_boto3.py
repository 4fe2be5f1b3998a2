"""Inference pipelines (a model with Containers) through unmodified boto3.

Run by tests/suites/pipelines.rs with the repository's .venv interpreter. PLINTH_URL is the
server (no credentials); SCALER_WASM, IRIS_WASM and LABELS_WASM the components; PIPELINE_DIR
examples/pipeline (scaler/, model/, labels/); IRIS_MODEL_DIR the iris model for raw features.

A Serial pipeline (scaler -> iris on scaled features -> labels) answers what the iris model
alone answers, through the labels container; the same three as a Direct model answer one
container each, by TargetContainerHostname: each container's own effect is checked.

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import csv
import io
import json
import os

import boto3

from plinth_clients import COMMON, error_of

SCALER = os.environ["SCALER_WASM"]
IRIS = os.environ["IRIS_WASM"]
LABELS = os.environ["LABELS_WASM"]
PIPELINE_DIR = os.environ["PIPELINE_DIR"]
IRIS_MODEL_DIR = os.environ["IRIS_MODEL_DIR"]
NPY = {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/x-npy"}
ROWS = ["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3", "5.9,3.0,4.2,1.5", "6.3,2.8,5.1,1.5"]

sagemaker = boto3.client("sagemaker", **COMMON)
runtime = boto3.client("sagemaker-runtime", **COMMON)


def containers(with_accept):
    return [
        {
            "ContainerHostname": "scaler",
            "Image": SCALER,
            "ModelDataUrl": f"{PIPELINE_DIR}/scaler",
            "Environment": NPY if with_accept else {},
        },
        {
            "ContainerHostname": "model",
            "Image": IRIS,
            "ModelDataUrl": f"{PIPELINE_DIR}/model",
            "Environment": NPY if with_accept else {},
        },
        {
            "ContainerHostname": "labels",
            "Image": LABELS,
            "ModelDataUrl": f"{PIPELINE_DIR}/labels",
        },
    ]


def endpoint(name, model):
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1}
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    sagemaker.get_waiter("endpoint_in_service").wait(
        EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )


def invoke(name, body, **extra):
    answer = runtime.invoke_endpoint(
        EndpointName=name, ContentType="text/csv", Body=body, **extra
    )
    return answer["Body"].read().decode(), answer


sagemaker.create_model(
    ModelName="iris",
    PrimaryContainer={"Image": IRIS, "ModelDataUrl": IRIS_MODEL_DIR},
)
sagemaker.create_model(ModelName="serial", Containers=containers(True))
sagemaker.create_model(
    ModelName="direct",
    Containers=containers(False),
    InferenceExecutionConfig={"Mode": "Direct"},
)
described = sagemaker.describe_model(ModelName="serial")
assert "PrimaryContainer" not in described, described
assert [c["ContainerHostname"] for c in described["Containers"]] == [
    "scaler",
    "model",
    "labels",
], described
assert sagemaker.describe_model(ModelName="direct")["InferenceExecutionConfig"] == {
    "Mode": "Direct"
}
for name, model in [("iris", "iris"), ("serial", "serial"), ("direct", "direct")]:
    endpoint(name, model)

for row in ROWS:
    alone = json.loads(invoke("iris", row)[0])["predictions"][0]
    # Serial: the labels container's answer, the same class and probability.
    chained = json.loads(invoke("serial", row)[0])["predictions"][0]
    assert chained["label"] == alone["label"], (row, chained, alone)
    assert abs(chained["probability"] - max(alone["probabilities"])) < 1e-4, (row, chained, alone)
    # Accept goes to the last container.
    text, answer = invoke("serial", row, Accept="text/csv")
    assert answer["ContentType"] == "text/csv", answer
    assert text.split(",")[0] == alone["label"], text

    # Direct: each container alone. The scaler standardizes the features...
    scaled_text, _ = invoke("direct", row, TargetContainerHostname="scaler")
    scaled = [float(v) for v in scaled_text.strip().split(",")]
    with open(f"{PIPELINE_DIR}/scaler/scaler.csv") as f:
        mean, std = [[float(v) for v in line] for line in csv.reader(f)]
    raw = [float(v) for v in row.split(",")]
    expected = [(x - m) / s for x, m, s in zip(raw, mean, std)]
    assert all(abs(a - b) < 1e-5 for a, b in zip(scaled, expected)), (scaled, expected)
    # ...the model on scaled features answers as iris on raw ones...
    model = json.loads(invoke("direct", scaled_text, TargetContainerHostname="model")[0])
    model = model["predictions"][0]
    assert model["label"] == alone["label"], (model, alone)
    assert all(
        abs(a - b) < 1e-4 for a, b in zip(model["probabilities"], alone["probabilities"])
    ), (model, alone)
    # ...and the labels container names the most probable class.
    probabilities = ",".join(str(p) for p in alone["probabilities"])
    labelled = json.loads(
        invoke("direct", probabilities, TargetContainerHostname="labels")[0]
    )["predictions"][0]
    assert labelled["label"] == alone["label"], (labelled, alone)

# SageMaker's errors.
code, message = error_of(lambda: invoke("direct", ROWS[0]))
assert code == "ValidationError" and "TargetContainerHostname" in message, (code, message)
code, message = error_of(lambda: invoke("direct", ROWS[0], TargetContainerHostname="post"))
assert code == "ValidationError" and '"post"' in message, (code, message)
code, message = error_of(lambda: invoke("serial", ROWS[0], TargetContainerHostname="model"))
assert code == "ValidationError" and "Serial" in message, (code, message)
code, message = error_of(lambda: invoke("iris", ROWS[0], TargetContainerHostname="model"))
assert code == "ValidationError" and "single container" in message, (code, message)
# A stage's model error names its container.
code, message = error_of(lambda: invoke("direct", "1,2,3", TargetContainerHostname="model"))
assert code == "ModelError" and "from model" in message, (code, message)
code, message = error_of(lambda: invoke("serial", "1,2,3"))
assert code == "ModelError" and "from scaler" in message, (code, message)
print("pipelines through boto3: ok")
