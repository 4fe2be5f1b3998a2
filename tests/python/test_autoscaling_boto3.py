"""SageMaker's documented autoscaling example through unmodified boto3 (`sagemaker` and
`application-autoscaling` clients with only `endpoint_url` added): register the variant as a
scalable target, put a target-tracking policy on SageMakerVariantInvocationsPerInstance, and
watch it scale the endpoint; then Application Auto Scaling's errors as boto3's modelled
exceptions, paging, and deregistration.

Run by tests/suites/autoscaling.rs with the repository's .venv interpreter against a server
whose autoscaling minute is one second. PLINTH_URL is the server (no credentials),
ECHO_WASM the component.

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import os
import threading
import time

import boto3

from plinth_clients import COMMON

common = COMMON
sagemaker = boto3.client("sagemaker", **common)
runtime = boto3.client("sagemaker-runtime", **common)
client = boto3.client("application-autoscaling", **common)

endpoint_name = "documented"
sagemaker.create_model(
    ModelName=endpoint_name, PrimaryContainer={"Image": os.environ["ECHO_WASM"]}
)
sagemaker.create_endpoint_config(
    EndpointConfigName=endpoint_name,
    ProductionVariants=[
        {
            "VariantName": "AllTraffic",
            "ModelName": endpoint_name,
            "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large",
        }
    ],
)
sagemaker.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=endpoint_name)
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName=endpoint_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
)

# --- The documented example, as written. ---
resource_id = "endpoint/" + endpoint_name + "/variant/" + "AllTraffic"
response = client.register_scalable_target(
    ServiceNamespace="sagemaker",
    ResourceId=resource_id,
    ScalableDimension="sagemaker:variant:DesiredInstanceCount",
    MinCapacity=1,
    MaxCapacity=2,
)
assert response["ScalableTargetARN"].startswith(
    "arn:aws:application-autoscaling:us-east-1:123456789012:scalable-target/"
), response
response = client.put_scaling_policy(
    PolicyName="Invocations-ScalingPolicy",
    ServiceNamespace="sagemaker",
    ResourceId=resource_id,
    ScalableDimension="sagemaker:variant:DesiredInstanceCount",
    PolicyType="TargetTrackingScaling",
    TargetTrackingScalingPolicyConfiguration={
        "TargetValue": 70.0,
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance",
        },
        "ScaleInCooldown": 600,
        "ScaleOutCooldown": 300,
    },
)
assert "policyName/Invocations-ScalingPolicy" in response["PolicyARN"], response

targets = client.describe_scalable_targets(
    ServiceNamespace="sagemaker", ResourceIds=[resource_id]
)["ScalableTargets"]
assert len(targets) == 1, targets
assert (targets[0]["MinCapacity"], targets[0]["MaxCapacity"]) == (1, 2), targets
assert targets[0]["SuspendedState"]["DynamicScalingInSuspended"] is False, targets
policies = client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
assert [p["PolicyName"] for p in policies] == ["Invocations-ScalingPolicy"], policies
config = policies[0]["TargetTrackingScalingPolicyConfiguration"]
assert config["TargetValue"] == 70.0 and config["ScaleInCooldown"] == 600, config

# --- 180 invocations a minute (the server's minute is a second) on one instance: above
# 70 for three minutes asks for three instances; MaxCapacity gives two. ---
stop = time.monotonic() + 6


def drive():
    local = boto3.client("sagemaker-runtime", **common)
    while time.monotonic() < stop:
        started = time.monotonic()
        local.invoke_endpoint(EndpointName=endpoint_name, ContentType="text/csv", Body=b"1")
        time.sleep(max(0.0, 1 / 30 - (time.monotonic() - started)))


threads = [threading.Thread(target=drive) for _ in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()

deadline = time.monotonic() + 15
while True:
    variant = sagemaker.describe_endpoint(EndpointName=endpoint_name)["ProductionVariants"][0]
    activities = client.describe_scaling_activities(
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
    )["ScalingActivities"]
    if (
        variant["CurrentInstanceCount"] == 2
        and variant["DesiredInstanceCount"] == 2
        and activities
        and activities[0]["StatusCode"] != "InProgress"
    ):
        break
    assert time.monotonic() < deadline, (variant, activities)
    time.sleep(0.2)
assert activities and activities[0]["Description"] == "Setting desired instance count to 2.", activities
assert activities[0]["StatusCode"] == "Successful", activities
assert "Invocations-ScalingPolicy" in activities[0]["Cause"], activities
assert activities[0]["EndTime"] >= activities[0]["StartTime"], activities

# --- Errors, as boto3's modelled exceptions. ---
try:
    client.delete_scaling_policy(
        PolicyName="missing",
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
    )
    raise AssertionError("deleting a missing policy succeeded")
except client.exceptions.ObjectNotFoundException as e:
    assert "policy name: missing" in str(e), e
try:
    client.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=3,
    )
    raise AssertionError("MinCapacity above MaxCapacity was accepted")
except client.exceptions.ValidationException as e:
    assert "MinCapacity 3 must not be greater than MaxCapacity 2" in str(e), e
try:
    client.describe_scalable_targets(ServiceNamespace="sagemaker", NextToken="bogus")
    raise AssertionError("a bogus NextToken was accepted")
except client.exceptions.InvalidNextTokenException:
    pass

# --- An update keeps what it leaves out; paginators walk every page. ---
client.register_scalable_target(
    ServiceNamespace="sagemaker",
    ResourceId=resource_id,
    ScalableDimension="sagemaker:variant:DesiredInstanceCount",
    SuspendedState={"DynamicScalingInSuspended": True},
)
target = client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 2), target
assert target["SuspendedState"]["DynamicScalingInSuspended"] is True, target
pages = client.get_paginator("describe_scaling_activities").paginate(
    ServiceNamespace="sagemaker", PaginationConfig={"PageSize": 1}
)
walked = [a["ActivityId"] for page in pages for a in page["ScalingActivities"]]
everything = client.describe_scaling_activities(ServiceNamespace="sagemaker")
assert walked == [a["ActivityId"] for a in everything["ScalingActivities"]], walked

# --- Deregistering deletes the policy with the target. ---
client.deregister_scalable_target(
    ServiceNamespace="sagemaker",
    ResourceId=resource_id,
    ScalableDimension="sagemaker:variant:DesiredInstanceCount",
)
assert client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
assert client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
print("ok")
