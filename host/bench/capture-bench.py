#!/usr/bin/env python3
"""Data capture and model quality: what capturing every request costs, and what a model
quality execution over a million captured records takes.

1. Throughput: one `plinth serve` with two iris endpoints of INSTANCES instances each,
   `plain` (no capture) and `captured` (DataCaptureConfig: every request, input and output,
   to a local directory); `plinth bench` at CONNECTIONS connections for DURATION seconds on
   each in turn, ROUNDS rounds; medians of requests/s and their ratio, and the captures the
   server wrote and dropped.
2. An execution over RECORDS captured records (default 1,000,000): capture files in
   SageMaker's layout and a ground truth record for each are written for an endpoint
   `big`, then a model quality job definition (multiclass, the JSON label) runs once
   (`NOW`); its run time (the execution's LastModifiedTime - CreationTime) and the server's
   peak resident memory during it (polled every 50 ms) against its memory before.

    .venv/bin/python host/bench/capture-bench.py   # DURATION=5 ROUNDS=3 INSTANCES=2 RECORDS=1000000

Needs release builds of `plinth` and the plugins.
"""

import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plinth_server import PLINTH, ROOT, WASM, IRIS_MODEL, Server  # noqa: E402

DURATION = int(os.environ.get("DURATION", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
INSTANCES = int(os.environ.get("INSTANCES", "2"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
RECORDS = int(os.environ.get("RECORDS", "1000000"))
PER_FILE = 10_000
ROW = "5.1,3.5,1.4,0.2"
LABELS = ["setosa", "versicolor", "virginica"]


def bench(server, endpoint):
    """`plinth bench` once on `endpoint`: requests/s."""
    args = [PLINTH, "bench", "--endpoint", endpoint, "--endpoint-url", server.url,
            "--body", ROW, "--content-type", "text/csv", "--concurrency", str(CONNECTIONS),
            "--duration", str(DURATION), "--warmup", "1", "--json"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    run = json.loads(out)["runs"][0]
    if run.get("errors", 0) or run.get("non_2xx", 0):
        raise SystemExit(f"bench {endpoint} had errors: {run}")
    return run["rps"]


def counter(server, name, endpoint):
    text = urllib.request.urlopen(server.url + "/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'endpoint="{endpoint}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def capture_config(destination):
    return {"InitialSamplingPercentage": 100, "DestinationS3Uri": destination,
            "CaptureOptions": [{"CaptureMode": "InputAndOutput"}],
            "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                         "JsonContentTypes": ["application/json"]}}


def captured_endpoint(server, name, destination, instances):
    iris = {"Image": os.path.join(WASM, "iris.wasm"), "ModelDataUrl": IRIS_MODEL}
    server.call("CreateModel", {"ModelName": name, "PrimaryContainer": iris})
    server.call("CreateEndpointConfig", {
        "EndpointConfigName": name,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": name,
                                "InitialInstanceCount": instances}],
        "DataCaptureConfig": capture_config(destination)})
    server.call("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})
    while server.call("DescribeEndpoint", {"EndpointName": name})["EndpointStatus"] != "InService":
        time.sleep(0.05)


def write_records(capture, truth, n):
    """`n` captured records of endpoint `big` ten minutes ago, and their ground truth."""
    at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    hour = f"{at:%Y/%m/%d/%H}"
    folder = os.path.join(capture, "big", "AllTraffic", hour)
    truth_folder = os.path.join(truth, hour)
    os.makedirs(folder, exist_ok=True)
    os.makedirs(truth_folder, exist_ok=True)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    for f in range(0, n, PER_FILE):
        lines, truths = [], []
        for i in range(f, min(f + PER_FILE, n)):
            label = LABELS[i % 3]
            predicted = label if i % 10 else LABELS[(i + 1) % 3]
            output = json.dumps({"predictions": [{"label": predicted, "class_index": 0,
                                                  "probabilities": [0.8, 0.1, 0.1]}]})
            lines.append(json.dumps({
                "captureData": {
                    "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                                      "data": ROW, "encoding": "CSV"},
                    "endpointOutput": {"observedContentType": "application/json",
                                       "mode": "OUTPUT", "data": output, "encoding": "JSON"}},
                "eventMetadata": {"eventId": f"e-{i}", "inferenceId": f"r-{i}",
                                  "inferenceTime": stamp},
                "eventVersion": "0"}))
            truths.append(json.dumps({"groundTruthData": {"data": label, "encoding": "CSV"},
                                      "eventMetadata": {"eventId": f"r-{i}"},
                                      "eventVersion": "0"}))
        name = f"{at:%M-%S}-000-{f:08d}-0000-0000-0000-000000000000-big.jsonl"
        with open(os.path.join(folder, name), "w") as out:
            out.write("\n".join(lines) + "\n")
        with open(os.path.join(truth_folder, f"{f:08d}.jsonl"), "w") as out:
            out.write("\n".join(truths) + "\n")


def main():
    for f in (PLINTH, os.path.join(WASM, "iris.wasm")):
        if not os.path.exists(f):
            raise SystemExit(f"capture-bench: {f} is missing; build it (see the header)")
    work = tempfile.mkdtemp(prefix="capture-bench-")
    capture = os.path.join(work, "capture")
    os.makedirs(capture)
    server = Server(PLINTH, work, [ROOT, work], "plinth")
    server.endpoint("plain", {"Image": os.path.join(WASM, "iris.wasm"),
                              "ModelDataUrl": IRIS_MODEL}, {"InitialInstanceCount": INSTANCES})
    captured_endpoint(server, "captured", capture, INSTANCES)

    # 1. Throughput with every request captured, against none.
    rps = {"plain": [], "captured": []}
    for _ in range(ROUNDS):
        for endpoint in ("plain", "captured"):
            rps[endpoint].append(bench(server, endpoint))
    med = {k: statistics.median(v) for k, v in rps.items()}
    dropped = counter(server, "plinth_data_capture_dropped_total", "captured")
    time.sleep(1)

    # 2. One execution over RECORDS records.
    truth, output = os.path.join(work, "truth"), os.path.join(work, "out")
    os.makedirs(output)
    captured_endpoint(server, "big", capture, 1)
    started = time.time()
    write_records(capture, truth, RECORDS)
    written_s = time.time() - started
    server.call("CreateModelQualityJobDefinition", {
        "JobDefinitionName": "big",
        "ModelQualityAppSpecification": {"ImageUri": "plinth:model-quality",
                                         "ProblemType": "MulticlassClassification"},
        "ModelQualityJobInput": {
            "EndpointInput": {"EndpointName": "big", "LocalPath": "/opt/ml/processing/input",
                              "InferenceAttribute": "predictions[0].label"},
            "GroundTruthS3Input": {"S3Uri": truth}},
        "ModelQualityJobOutputConfig": {"MonitoringOutputs": [{"S3Output": {
            "S3Uri": output, "LocalPath": "/opt/ml/processing/output"}}]},
        "JobResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                           "VolumeSizeInGB": 1}},
        "RoleArn": "arn:aws:iam::123456789012:role/monitor"})
    before_kib = server.rss_kib()
    peak = [before_kib]
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], server.rss_kib())
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    server.call("CreateMonitoringSchedule", {
        "MonitoringScheduleName": "big",
        "MonitoringScheduleConfig": {
            "ScheduleConfig": {"ScheduleExpression": "NOW", "DataAnalysisStartTime": "-PT1H",
                               "DataAnalysisEndTime": "-PT0H"},
            "MonitoringJobDefinitionName": "big", "MonitoringType": "ModelQuality"}})
    deadline = time.time() + 1800
    while time.time() < deadline:
        listed = server.call("ListMonitoringExecutions", {"MonitoringScheduleName": "big"})
        runs = listed["MonitoringExecutionSummaries"]
        if runs and runs[0]["MonitoringExecutionStatus"] not in ("Pending", "InProgress"):
            break
        time.sleep(0.2)
    done.set()
    poller.join()
    execution = runs[0]
    server.stop()
    shutil.rmtree(work, ignore_errors=True)
    if execution["MonitoringExecutionStatus"] != "Completed":
        raise SystemExit(f"the execution did not complete: {execution}")
    seconds = execution["LastModifiedTime"] - execution["CreationTime"]
    accuracy = execution["PlinthEndpointMetrics"]["Metrics"]["accuracy"]["Value"]

    print(f"## {CONNECTIONS} connections, {INSTANCES} instances, {DURATION} s x {ROUNDS} rounds")
    print("| endpoint | req/s (median) | rounds |")
    print("|---|---|---|")
    for k in ("plain", "captured"):
        print(f"| {k} | {med[k]:.0f} | {', '.join(f'{r:.0f}' for r in rps[k])} |")
    print(f"\ncaptured / plain: {med['captured'] / med['plain']:.3f}x; captures dropped: "
          f"{dropped:.0f}")
    print(f"\n## one execution over {RECORDS:,} captured records "
          f"(files written in {written_s:.0f} s)")
    print(f"run time {seconds:.1f} s ({RECORDS / seconds:,.0f} records/s); server RSS "
          f"{before_kib / 1024:.0f} MiB before, {peak[0] / 1024:.0f} MiB at peak "
          f"(+{(peak[0] - before_kib) / 1024:.0f} MiB); accuracy {accuracy:.4f} (0.9 expected)")


if __name__ == "__main__":
    main()
