"""A multi-model endpoint through unmodified boto3.

Run by tests/suites/multi_model.rs with the repository's .venv interpreter. PLINTH_URL is the
server (no credentials), IRIS_SIMPLE_WASM the component, MODELS_PREFIX a directory of 50
iris-like models: m-<i>.tar.gz for even i, a directory m-<i> for odd i; model i answers every
row with [i, 0.5, -1].

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import json
import os

import boto3

from plinth_clients import COMMON, error_of

PREFIX = os.environ["MODELS_PREFIX"]
COMPONENT = os.environ["IRIS_SIMPLE_WASM"]
COUNT = 50

common = COMMON
sagemaker = boto3.client("sagemaker", **common)
runtime = boto3.client("sagemaker-runtime", **common)


def target(i):
    return f"m-{i}.tar.gz" if i % 2 == 0 else f"m-{i}"


def first_number(value):
    while isinstance(value, (list, dict)):
        value = value[0] if isinstance(value, list) else next(
            v for v in value.values() if isinstance(v, (list, dict))
        )
    return value


sagemaker.create_model(
    ModelName="many",
    PrimaryContainer={
        "Image": COMPONENT,
        "Mode": "MultiModel",
        "ModelDataUrl": PREFIX,
        "MultiModelConfig": {"ModelCacheSetting": "Enabled"},
    },
)
described = sagemaker.describe_model(ModelName="many")
assert described["PrimaryContainer"]["Mode"] == "MultiModel", described
assert described["PrimaryContainer"]["MultiModelConfig"] == {"ModelCacheSetting": "Enabled"}
sagemaker.create_endpoint_config(
    EndpointConfigName="many",
    ProductionVariants=[
        {
            "VariantName": "AllTraffic",
            "ModelName": "many",
            "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large",
        }
    ],
)
sagemaker.create_endpoint(EndpointName="many", EndpointConfigName="many")
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName="many", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
)

# Every model, twice (a load, then a hit), answers as itself.
for round in range(2):
    for i in range(COUNT):
        r = runtime.invoke_endpoint(
            EndpointName="many",
            TargetModel=target(i),
            ContentType="text/csv",
            Body=b"5.1,3.5,1.4,0.2",
        )
        assert r["InvokedProductionVariant"] == "AllTraffic", r
        body = json.loads(r["Body"].read())
        assert first_number(body) == i, (target(i), body)

# TargetModel with TargetVariant.
r = runtime.invoke_endpoint(
    EndpointName="many",
    TargetModel="m-7",
    TargetVariant="AllTraffic",
    ContentType="text/csv",
    Body=b"5.1,3.5,1.4,0.2",
)
assert first_number(json.loads(r["Body"].read())) == 7

# SageMaker's errors, as boto3 raises them.
def invoke_error(**target):
    return error_of(
        lambda: runtime.invoke_endpoint(
            EndpointName="many", ContentType="text/csv", Body=b"5.1,3.5,1.4,0.2", **target
        )
    )


code, message = invoke_error()
assert code == "ValidationError" and "TargetModel" in message, (code, message)
for name in ("m-999.tar.gz", "../escape"):
    code, message = invoke_error(TargetModel=name)
    assert code == "ValidationError" and name in message, (code, message)

# A value SageMaker does not define is refused by name.
code, message = error_of(
    lambda: sagemaker.create_model(
        ModelName="bad-cache",
        PrimaryContainer={
            "Image": COMPONENT,
            "Mode": "MultiModel",
            "ModelDataUrl": PREFIX,
            "MultiModelConfig": {"ModelCacheSetting": "Sometimes"},
        },
    )
)
assert code == "ValidationException" and "ModelCacheSetting" in message, (code, message)

sagemaker.delete_endpoint(EndpointName="many")
print("ok")
