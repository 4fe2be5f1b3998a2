"""CloudWatch's metric API through unmodified boto3, as SageMaker's hosting guide uses it: an
endpoint with two variants takes known traffic; `get_metric_statistics` and `get_metric_data`
read Invocations, the error counts, InvocationsPerInstance and ModelLatency per variant
(counts exactly; latencies agreeing with the server's Prometheus histograms and ordered as
percentiles must be); pagination through boto3's paginator; 1-second datapoints;
`list_metrics` with filters; CloudWatch's errors for bad queries, by their codes and
modelled exceptions; and the same calls through CloudWatch's `query` protocol (a botocore
client whose model is told to speak it, as older SDKs do), answering the same numbers.

Run by tests/suites/cloudwatch.rs with the repository's .venv interpreter. PLINTH_URL is the
server; IRIS_WASM and IRIS_MODEL_DIR the model.

Plain asserts, no pytest: exit status 0 means every check passed.
"""

import datetime
import os
import re
import time
import urllib.request

import boto3
from botocore.config import Config

from plinth_clients import COMMON, URL, error_of, query_client

sagemaker = boto3.client("sagemaker", **COMMON)
runtime = boto3.client("sagemaker-runtime", **COMMON)
cloudwatch = boto3.client("cloudwatch", **COMMON)
assert cloudwatch.meta.service_model.resolved_protocol == "json"

ENDPOINT = "guide"
ROW = "5.1,3.5,1.4,0.2"

# -- The guide's endpoint: two variants, known traffic --------------------------------------
for name in ("iris-a", "iris-b"):
    sagemaker.create_model(
        ModelName=name,
        PrimaryContainer={"Image": os.environ["IRIS_WASM"], "ModelDataUrl": os.environ["IRIS_MODEL_DIR"]},
    )
sagemaker.create_endpoint_config(
    EndpointConfigName="guide-config",
    ProductionVariants=[
        {"VariantName": "A", "ModelName": "iris-a", "InitialInstanceCount": 1, "InitialVariantWeight": 1},
        {"VariantName": "B", "ModelName": "iris-b", "InitialInstanceCount": 2, "InitialVariantWeight": 1},
    ],
)
sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="guide-config")
sagemaker.get_waiter("endpoint_in_service").wait(
    EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
)

START = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=2)
SENT = {"A": 120, "B": 80}
BAD_B = 10


def send(variant, n):
    for _ in range(n):
        r = runtime.invoke_endpoint(
            EndpointName=ENDPOINT, TargetVariant=variant, ContentType="text/csv", Body=ROW
        )
        assert r["InvokedProductionVariant"] == variant


# A's requests in two seconds at least, for the 1-second datapoints.
send("A", 60)
time.sleep(1.1)
send("A", 60)
send("B", 80)
for _ in range(BAD_B):
    code, _ = error_of(
        lambda: runtime.invoke_endpoint(
            EndpointName=ENDPOINT, TargetVariant="B", ContentType="text/csv", Body="not,a,row"
        )
    )
    assert code in ("ValidationError", "ModelError"), code
END = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=2)


def dims(variant):
    return [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": variant}]


def statistics(client, metric, variant, period=60, **kw):
    if "ExtendedStatistics" not in kw and "Statistics" not in kw:
        kw["Statistics"] = ["Sum", "SampleCount", "Average", "Minimum", "Maximum"]
    return client.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName=metric,
        Dimensions=dims(variant),
        StartTime=START,
        EndTime=END,
        Period=period,
        **kw,
    )["Datapoints"]


def total(datapoints, statistic="Sum"):
    return sum(d[statistic] for d in datapoints)


# The publisher writes each second a couple of seconds after it ends.
deadline = time.time() + 30
while True:
    got = {v: total(statistics(cloudwatch, "Invocations", v)) for v in SENT}
    if got == {"A": 120, "B": 90}:
        break
    assert time.time() < deadline, f"Invocations after 30 s: {got}"
    time.sleep(0.5)

# -- Counts, exactly ------------------------------------------------------------------------
a = statistics(cloudwatch, "Invocations", "A")
assert all(d["Unit"] == "None" and isinstance(d["Timestamp"], datetime.datetime) for d in a), a
assert total(a, "SampleCount") == 120 and all(d["Average"] == 1.0 for d in a), a
assert total(statistics(cloudwatch, "Invocation4XXErrors", "B")) == BAD_B
assert total(statistics(cloudwatch, "Invocation4XXErrors", "A")) == 0
assert total(statistics(cloudwatch, "Invocation5XXErrors", "B")) == 0
# InvocationsPerInstance: A has one instance, B two.
assert total(statistics(cloudwatch, "InvocationsPerInstance", "A")) == 120
assert abs(total(statistics(cloudwatch, "InvocationsPerInstance", "B")) - 45) < 1e-9

# -- Latencies, against the server's own histograms ------------------------------------------
prometheus = urllib.request.urlopen(URL + "/metrics").read().decode()


def prom(name, variant):
    pattern = rf'^{name}\{{[^}}]*endpoint="{ENDPOINT}"[^}}]*variant="{variant}"[^}}]*\}} (\S+)$'
    values = [float(m) for m in re.findall(pattern, prometheus, re.M)]
    assert values, f"{name} for {variant} is not in /metrics"
    return sum(values)


latency = statistics(cloudwatch, "ModelLatency", "A")
assert all(d["Unit"] == "Microseconds" for d in latency)
count = total(latency, "SampleCount")
assert count == 120 == prom("plinth_model_latency_seconds_count", "A"), count
mean = total(latency) / count
prom_mean = prom("plinth_model_latency_seconds_sum", "A") / 120 * 1e6
assert abs(mean - prom_mean) / prom_mean < 1e-6, (mean, prom_mean)
minimum = min(d["Minimum"] for d in latency)
maximum = max(d["Maximum"] for d in latency)
assert 0 < minimum <= mean <= maximum, (minimum, mean, maximum)
percentiles = statistics(cloudwatch, "ModelLatency", "A", period=3600 * 24,
                         ExtendedStatistics=["p0.1", "p50", "p99", "p100"])
assert len(percentiles) == 1, percentiles
p = percentiles[0]["ExtendedStatistics"]
assert minimum <= p["p50"] <= p["p99"] <= p["p100"] == maximum, p
assert p["p0.1"] == minimum, p
assert abs(prom("plinth_invocation_4xx_errors_total", "B") - BAD_B) < 1e-9

# -- Instance metrics: the variant's CPU time and memory, measured -------------------------
def instance(metric, variant):
    return cloudwatch.get_metric_statistics(
        Namespace="/aws/sagemaker/Endpoints", MetricName=metric, Dimensions=dims(variant),
        StartTime=START, EndTime=END, Period=60, Statistics=["Maximum", "Average", "SampleCount"],
    )["Datapoints"]


cpu, memory = instance("CPUUtilization", "A"), instance("MemoryUtilization", "A")
assert cpu and memory, (cpu, memory)
assert all(d["Unit"] == "Percent" for d in cpu + memory), (cpu, memory)
# Its 120 requests took CPU time in some second; one instance's guest and model are a few
# MiB against its memory limit.
assert max(d["Maximum"] for d in cpu) > 0, cpu
assert all(0 < d["Maximum"] <= 100 for d in memory), memory
assert {m["MetricName"] for m in cloudwatch.list_metrics(Namespace="/aws/sagemaker/Endpoints")[
    "Metrics"]} == {"CPUUtilization", "MemoryUtilization"}

# -- GetMetricData: several queries, both scan orders, pages ---------------------------------
queries = [
    {"Id": f"inv_{v.lower()}", "MetricStat": {"Metric": {"Namespace": "AWS/SageMaker",
        "MetricName": "Invocations", "Dimensions": dims(v)}, "Period": 1, "Stat": "Sum"}}
    for v in SENT
] + [
    {"Id": "p99_a", "Label": "A p99", "MetricStat": {"Metric": {"Namespace": "AWS/SageMaker",
        "MetricName": "ModelLatency", "Dimensions": dims("A")}, "Period": 86400, "Stat": "p99"}},
]
data = cloudwatch.get_metric_data(
    MetricDataQueries=queries, StartTime=START, EndTime=END, ScanBy="TimestampAscending"
)
results = {r["Id"]: r for r in data["MetricDataResults"]}
assert "NextToken" not in data
assert sum(results["inv_a"]["Values"]) == 120 and sum(results["inv_b"]["Values"]) == 90
assert results["inv_a"]["Timestamps"] == sorted(results["inv_a"]["Timestamps"])
assert all(r["StatusCode"] == "Complete" for r in results.values())
assert results["p99_a"]["Label"] == "A p99" and results["inv_a"]["Label"] == "Invocations"
assert results["p99_a"]["Values"] == [p["p99"]], (results["p99_a"], p)
descending = cloudwatch.get_metric_data(MetricDataQueries=queries[:1], StartTime=START, EndTime=END)
stamps = descending["MetricDataResults"][0]["Timestamps"]
assert stamps == sorted(stamps, reverse=True) and len(stamps) > 1, stamps
pages = list(
    cloudwatch.get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries, StartTime=START, EndTime=END, MaxDatapoints=3
    )
)
assert len(pages) >= 2, len(pages)
assert all(sum(len(r["Values"]) for r in page["MetricDataResults"]) <= 3 for page in pages)
paged = {}
for page in pages:
    for r in page["MetricDataResults"]:
        paged.setdefault(r["Id"], []).extend(r["Values"])
assert sum(paged["inv_a"]) == 120 and sum(paged["inv_b"]) == 90 and paged["p99_a"] == [p["p99"]]

# -- ListMetrics ------------------------------------------------------------------------------
listed = cloudwatch.list_metrics(
    Namespace="AWS/SageMaker", Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}]
)["Metrics"]
names = {(m["MetricName"], m["Dimensions"][1]["Value"]) for m in listed}
for metric in ("Invocations", "ModelLatency", "OverheadLatency", "Invocation4XXErrors",
               "Invocation5XXErrors", "InvocationModelErrors", "InvocationsPerInstance"):
    assert (metric, "A") in names and (metric, "B") in names, (metric, names)
assert all(m["Dimensions"] == dims(m["Dimensions"][1]["Value"]) for m in listed), listed
only_b = cloudwatch.list_metrics(
    MetricName="Invocations", RecentlyActive="PT3H",
    Dimensions=[{"Name": "VariantName", "Value": "B"}],
)["Metrics"]
assert [m["Dimensions"] for m in only_b] == [dims("B")], only_b
assert cloudwatch.list_metrics(Namespace="AWS/Nothing")["Metrics"] == []

# -- CloudWatch's errors --------------------------------------------------------------------
unchecked = boto3.client(
    "cloudwatch", **{**COMMON, "config": COMMON["config"].merge(Config(parameter_validation=False))}
)


def refused(call, code, words):
    got, message = error_of(call)
    assert got == code and words in message, (got, message, code, words)


base = dict(Namespace="AWS/SageMaker", MetricName="Invocations", Dimensions=dims("A"),
            StartTime=START, EndTime=END)
refused(lambda: cloudwatch.get_metric_statistics(**base, Period=7, Statistics=["Sum"]),
        "InvalidParameterValue", "Period")
refused(lambda: cloudwatch.get_metric_statistics(**base, Period=60, Statistics=["Median"]),
        "InvalidParameterValue", "Statistics.member.1")
refused(lambda: cloudwatch.get_metric_statistics(**base, Period=60, ExtendedStatistics=["tm99"]),
        "InvalidParameterValue", "ExtendedStatistics.member.1")
refused(lambda: cloudwatch.get_metric_statistics(**base, Period=60, Statistics=["Sum"],
                                                 ExtendedStatistics=["p99"]),
        "InvalidParameterCombination", "not both")
refused(lambda: unchecked.get_metric_statistics(**base, Period=60),
        "MissingParameter", "Statistics")
refused(lambda: cloudwatch.get_metric_statistics(**{**base, "StartTime": END, "EndTime": START},
                                                 Period=60, Statistics=["Sum"]),
        "InvalidParameterValue", "StartTime")
refused(lambda: cloudwatch.get_metric_statistics(
            **{**base, "StartTime": START - datetime.timedelta(days=2)}, Period=60,
            Statistics=["Sum"]),
        "InvalidParameterCombination", "exceeds the limit of 1,440")
refused(lambda: unchecked.get_metric_statistics(
            **{**base, "Dimensions": [{"Name": f"D{i}", "Value": "v"} for i in range(31)]},
            Period=60, Statistics=["Sum"]),
        "InvalidParameterValue", "Dimensions")
refused(lambda: cloudwatch.get_metric_data(
            MetricDataQueries=[{"Id": "e1", "Expression": "SUM(METRICS())"}],
            StartTime=START, EndTime=END),
        "InvalidParameterValue", "Expression")
refused(lambda: cloudwatch.get_metric_data(
            MetricDataQueries=[dict(queries[0], Id="M1")], StartTime=START, EndTime=END),
        "InvalidParameterValue", "Id")
refused(lambda: cloudwatch.get_metric_data(MetricDataQueries=queries, StartTime=START,
                                           EndTime=END, NextToken="bogus"),
        "InvalidNextToken", "NextToken")
try:
    cloudwatch.get_metric_statistics(**base, Period=7, Statistics=["Sum"])
    raise AssertionError("accepted")
except cloudwatch.exceptions.InvalidParameterValueException:
    pass
# No data is no error: an unknown metric, a unit that is not the metric's.
assert cloudwatch.get_metric_statistics(**{**base, "MetricName": "Nope"}, Period=60,
                                        Statistics=["Sum"])["Datapoints"] == []
assert cloudwatch.get_metric_statistics(**base, Period=60, Statistics=["Sum"],
                                        Unit="Seconds")["Datapoints"] == []

# -- The same through the query protocol -----------------------------------------------------
query = query_client("cloudwatch")
assert statistics(query, "Invocations", "A") == statistics(cloudwatch, "Invocations", "A")
assert statistics(query, "ModelLatency", "A", period=86400, ExtendedStatistics=["p99"]) == \
    statistics(cloudwatch, "ModelLatency", "A", period=86400, ExtendedStatistics=["p99"])
query_data = query.get_metric_data(MetricDataQueries=queries, StartTime=START, EndTime=END)
assert {r["Id"]: sum(r["Values"]) for r in query_data["MetricDataResults"]}["inv_b"] == 90


def listing(client):
    return sorted(
        (m["Namespace"], m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"]))
        for m in client.list_metrics(Namespace="AWS/SageMaker")["Metrics"]
    )


assert listing(query) == listing(cloudwatch) and len(listing(query)) == 14, listing(query)
refused(lambda: query.get_metric_statistics(**base, Period=7, Statistics=["Sum"]),
        "InvalidParameterValue", "Period")

print("ok")
