"""CloudWatch alarms through unmodified boto3, as SageMaker's deployment guardrails use them:
an alarm defined with `put_metric_alarm` on an endpoint's variant rolls a faulty canary back
(the same alarms `AutoRollbackConfiguration` names); its state moves and its history is kept
(`describe_alarm_history`); `set_alarm_state`, `describe_alarms` filters and pages,
`describe_alarms_for_metric`, `enable_alarm_actions` / `disable_alarm_actions`,
`delete_alarms`; CloudWatch's errors by code; the alarms through the `query` protocol too.

Run by tests/suites/cloudwatch.rs with the repository's .venv interpreter. PLINTH_URL is the
server; FAULTS_WASM the faults plugin (FAULT_DEFAULT=model-error makes every request fail),
ECHO_WASM the echo plugin.

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import json
import os
import threading
import time

import boto3

from plinth_clients import COMMON, error_of, query_client

sagemaker = boto3.client("sagemaker", **COMMON)
runtime = boto3.client("sagemaker-runtime", **COMMON)
cloudwatch = boto3.client("cloudwatch", **COMMON)

ENDPOINT = "guarded"
sagemaker.create_model(ModelName="good", PrimaryContainer={"Image": os.environ["ECHO_WASM"]})
sagemaker.create_model(
    ModelName="faulty",
    PrimaryContainer={"Image": os.environ["FAULTS_WASM"], "Environment": {"FAULT_DEFAULT": "model-error"}},
)
for config, model in (("good-config", "good"), ("faulty-config", "faulty")):
    sagemaker.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 2}],
    )
sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="good-config")
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
)

DIMENSIONS = [
    {"Name": "EndpointName", "Value": ENDPOINT},
    {"Name": "VariantName", "Value": "AllTraffic"},
]
ALARM = dict(
    AlarmName="guarded-errors",
    AlarmDescription="Model errors on the guarded endpoint",
    Namespace="AWS/SageMaker",
    MetricName="InvocationModelErrors",
    Dimensions=DIMENSIONS,
    Statistic="Average",
    Period=10,
    EvaluationPeriods=1,
    Threshold=0.05,
    ComparisonOperator="GreaterThanThreshold",
    TreatMissingData="notBreaching",
)
cloudwatch.put_metric_alarm(**ALARM)
cloudwatch.put_metric_alarm(
    AlarmName="guarded-latency",
    Namespace="AWS/SageMaker",
    MetricName="ModelLatency",
    Dimensions=DIMENSIONS,
    ExtendedStatistic="p99",
    Period=60,
    EvaluationPeriods=2,
    DatapointsToAlarm=1,
    Threshold=5_000_000,
    ComparisonOperator="GreaterThanOrEqualToThreshold",
    TreatMissingData="ignore",
    Unit="Microseconds",
)

described = cloudwatch.describe_alarms(AlarmNames=["guarded-errors"])["MetricAlarms"]
assert len(described) == 1, described
a = described[0]
assert a["AlarmArn"] == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:guarded-errors", a
assert a["Dimensions"] == DIMENSIONS and a["Statistic"] == "Average" and a["Period"] == 10, a
assert a["ActionsEnabled"] is True and a["AlarmActions"] == [] and a["DatapointsToAlarm"] == 1, a
assert a["AlarmDescription"] == ALARM["AlarmDescription"], a

# Traffic keeps flowing while the canary runs.
stop = threading.Event()
answers = {"ok": 0, "failed": 0}


def load():
    client = boto3.client("sagemaker-runtime", **COMMON)
    while not stop.is_set():
        try:
            client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/plain", Body="hi")
            answers["ok"] += 1
        except client.exceptions.ClientError:
            answers["failed"] += 1


threads = [threading.Thread(target=load) for _ in range(3)]
for t in threads:
    t.start()
time.sleep(1.5)
# Every request so far succeeded: the alarm is OK.
deadline = time.time() + 10
while cloudwatch.describe_alarms(AlarmNames=["guarded-errors"])["MetricAlarms"][0]["StateValue"] != "OK":
    assert time.time() < deadline, "the alarm did not become OK under good traffic"
    time.sleep(0.2)

sagemaker.update_endpoint(
    EndpointName=ENDPOINT,
    EndpointConfigName="faulty-config",
    DeploymentConfig={
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "WaitIntervalInSeconds": 30,
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50},
            },
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "guarded-errors"}]},
    },
)
time.sleep(1)
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 90}
)
stop.set()
for t in threads:
    t.join()
endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
assert endpoint["EndpointConfigName"] == "good-config", endpoint
assert "alarm guarded-errors is in ALARM" in endpoint.get("FailureReason", ""), endpoint
assert answers["failed"] > 0 and answers["ok"] > 0, answers

alarm = cloudwatch.describe_alarms(AlarmNames=["guarded-errors"])["MetricAlarms"][0]
history = cloudwatch.describe_alarm_history(AlarmName="guarded-errors", ScanBy="TimestampAscending")[
    "AlarmHistoryItems"
]
kinds = [(h["HistoryItemType"], h["HistorySummary"]) for h in history]
assert kinds[0] == ("ConfigurationUpdate", 'Alarm "guarded-errors" created'), kinds
assert ("StateUpdate", "Alarm updated from OK to ALARM") in kinds, kinds
to_alarm = next(h for h in history if h["HistorySummary"] == "Alarm updated from OK to ALARM")
data = json.loads(to_alarm["HistoryData"])
assert data["oldState"]["stateValue"] == "OK" and data["newState"]["stateValue"] == "ALARM", data
assert data["newState"]["stateReasonData"]["recentDatapoints"][0] > 0.05, data
assert alarm["StateValue"] in ("ALARM", "OK"), alarm
assert json.loads(alarm["StateReasonData"])["period"] == 10, alarm

# -- SetAlarmState: held until the alarm's next period -------------------------------------
cloudwatch.set_alarm_state(
    AlarmName="guarded-latency", StateValue="ALARM", StateReason="Testing the pager",
    StateReasonData=json.dumps({"who": "test"}),
)
latency = cloudwatch.describe_alarms(AlarmNames=["guarded-latency"])["MetricAlarms"][0]
assert latency["StateValue"] == "ALARM" and latency["StateReason"] == "Testing the pager", latency
assert latency["ExtendedStatistic"] == "p99" and latency["Unit"] == "Microseconds", latency
newest = cloudwatch.describe_alarm_history(
    AlarmName="guarded-latency", HistoryItemType="StateUpdate", MaxRecords=1)
assert newest["AlarmHistoryItems"][0]["HistorySummary"].endswith("to ALARM"), newest
assert json.loads(newest["AlarmHistoryItems"][0]["HistoryData"])["newState"]["stateReason"] == \
    "Testing the pager", newest

# -- Filters and pages -----------------------------------------------------------------------
assert [a["AlarmName"] for a in cloudwatch.describe_alarms(AlarmNamePrefix="guarded-")["MetricAlarms"]] == [
    "guarded-errors", "guarded-latency"]
in_alarm = cloudwatch.describe_alarms(StateValue="ALARM")["MetricAlarms"]
assert "guarded-latency" in [a["AlarmName"] for a in in_alarm], in_alarm
assert all(a["StateValue"] == "ALARM" for a in in_alarm), in_alarm
pages = list(cloudwatch.get_paginator("describe_alarms").paginate(PaginationConfig={"PageSize": 1}))
assert [p["MetricAlarms"][0]["AlarmName"] for p in pages if p["MetricAlarms"]] == [
    "guarded-errors", "guarded-latency"], pages
assert cloudwatch.describe_alarms(AlarmTypes=["CompositeAlarm"]) ["MetricAlarms"] == []
for_metric = cloudwatch.describe_alarms_for_metric(
    MetricName="ModelLatency", Namespace="AWS/SageMaker", Dimensions=DIMENSIONS)["MetricAlarms"]
assert [a["AlarmName"] for a in for_metric] == ["guarded-latency"], for_metric
assert cloudwatch.describe_alarms_for_metric(
    MetricName="ModelLatency", Namespace="AWS/SageMaker", Dimensions=DIMENSIONS[:1])["MetricAlarms"] == []

# -- Actions switched, alarms updated and deleted --------------------------------------------
cloudwatch.disable_alarm_actions(AlarmNames=["guarded-errors"])
assert cloudwatch.describe_alarms(AlarmNames=["guarded-errors"])["MetricAlarms"][0]["ActionsEnabled"] is False
cloudwatch.enable_alarm_actions(AlarmNames=["guarded-errors"])
assert cloudwatch.describe_alarms(AlarmNames=["guarded-errors"])["MetricAlarms"][0]["ActionsEnabled"] is True
cloudwatch.put_metric_alarm(**{**ALARM, "Threshold": 0.5})
updated = cloudwatch.describe_alarms(AlarmNames=["guarded-errors"])["MetricAlarms"][0]
assert updated["Threshold"] == 0.5, updated
assert cloudwatch.describe_alarm_history(
    AlarmName="guarded-errors", HistoryItemType="ConfigurationUpdate")["AlarmHistoryItems"][0][
    "HistorySummary"] == 'Alarm "guarded-errors" updated'
cloudwatch.delete_alarms(AlarmNames=["guarded-errors", "guarded-latency"])
assert cloudwatch.describe_alarms()["MetricAlarms"] == []
assert cloudwatch.describe_alarm_history(AlarmName="guarded-errors")["AlarmHistoryItems"][0][
    "HistorySummary"] == 'Alarm "guarded-errors" deleted'


# -- CloudWatch's errors ---------------------------------------------------------------------
def refused(call, code, words):
    got, message = error_of(call)
    assert got == code and words in message, (got, message, code, words)


refused(lambda: cloudwatch.put_metric_alarm(**{**ALARM, "Dimensions": [{"Name": "Host", "Value": "h"}]}),
        "InvalidParameterValue", "Host")
refused(lambda: cloudwatch.put_metric_alarm(**ALARM, AlarmActions=["arn:aws:sns:us-east-1:123456789012:pager"]),
        "InvalidParameterValue", "AlarmActions")
refused(lambda: cloudwatch.put_metric_alarm(**{**ALARM, "Period": 3600, "EvaluationPeriods": 25}),
        "InvalidParameterValue", "EvaluationPeriods")
refused(lambda: cloudwatch.put_metric_alarm(**{**ALARM, "MetricName": "Nope"}),
        "InvalidParameterValue", "MetricName")
refused(lambda: cloudwatch.put_metric_alarm(**{**ALARM, "ComparisonOperator": "GreaterThanUpperThreshold"}),
        "InvalidParameterValue", "ComparisonOperator")
refused(lambda: cloudwatch.set_alarm_state(AlarmName="nope", StateValue="OK", StateReason="x"),
        "ResourceNotFound", "nope")
cloudwatch.put_metric_alarm(**ALARM)
refused(lambda: cloudwatch.set_alarm_state(AlarmName="guarded-errors", StateValue="OK",
                                           StateReason="x", StateReasonData="{not json"),
        "InvalidFormat", "JSON")
refused(lambda: cloudwatch.delete_alarms(AlarmNames=["guarded-errors", "nope"]),
        "ResourceNotFound", "nope")
assert [a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]] == ["guarded-errors"]
refused(lambda: cloudwatch.describe_alarms(ChildrenOfAlarmName="x"),
        "InvalidParameterValue", "ChildrenOfAlarmName")

# -- The query protocol ----------------------------------------------------------------------
query = query_client("cloudwatch")
query.put_metric_alarm(**{**ALARM, "AlarmName": "by-query", "Threshold": 0.25})
by_query = query.describe_alarms(AlarmNames=["by-query"])["MetricAlarms"][0]
by_json = cloudwatch.describe_alarms(AlarmNames=["by-query"])["MetricAlarms"][0]
assert by_query["Threshold"] == 0.25 and by_query["Dimensions"] == DIMENSIONS, by_query
assert by_query == by_json, (by_query, by_json)
assert query.describe_alarm_history(AlarmName="by-query")["AlarmHistoryItems"][0][
    "HistoryItemType"] == "ConfigurationUpdate"
query.delete_alarms(AlarmNames=["by-query"])

print("ok")
