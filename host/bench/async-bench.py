#!/usr/bin/env python3
"""Asynchronous inference on a running `plinth serve`: jobs per second through the queue
against synchronous requests of the same input, and the time from a job arriving at an
endpoint scaled to zero to its output existing.

Throughput. Two iris endpoints of INSTANCES instances each on the same server: `sync`, and
`queue` with `AsyncInferenceConfig` (MaxConcurrentInvocationsPerInstance PER_INSTANCE,
results to a local directory through the storage layer). `plinth bench` submits
InvokeEndpointAsync at 16 connections for DURATION seconds (each job's input is one iris row
in a file under the artifact root), and the clock stops when the queue is empty: every
job's storage round trip (the input read, the output staged and renamed into place, the
queue's commits) is counted. The synchronous reference is `plinth bench` at 16 connections
on `sync` with the same row, run right before and right after; the ratio is jobs/s over
the reference's median requests/s (target >= 0.5x).

From zero. The `queue` endpoint registered for Application Auto Scaling (MinCapacity 0,
MaxCapacity 1) with a target-tracking policy on ApproximateBacklogSizePerInstance, and set
to 0 instances; for each of ROUNDS rounds one job is submitted and the time to its output
file measured; the endpoint is then set back to 0 instances. The server's autoscaling
minute is MINUTE seconds (default 1): the decision needs one datapoint of backlog with no
capacity, so in real minutes expect up to one minute plus the controller's step (10 s) more.

    .venv/bin/python host/bench/async-bench.py
    DURATION=5 ROUNDS=1 .venv/bin/python host/bench/async-bench.py

Needs a release `plinth` (PLINTH_BIN) and the plugins built for wasm32-wasip2. Prints a
Markdown report. Linux only.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plinth_server import IRIS_MODEL, PLINTH, ROOT, WASM, Server  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
MINUTE = int(os.environ.get("MINUTE", "1"))
INSTANCES = int(os.environ.get("INSTANCES", "2"))
PER_INSTANCE = int(os.environ.get("PER_INSTANCE", "4"))
DURATION = int(os.environ.get("DURATION", "10"))
ROW = "5.1,3.5,1.4,0.2"


def submit(server, endpoint, input_path):
    """One InvokeEndpointAsync: its OutputLocation."""
    c = server.connection()
    c.request("POST", f"/endpoints/{endpoint}/async-invocations", b"", {
        "X-Amzn-SageMaker-InputLocation": input_path,
        "X-Amzn-SageMaker-Content-Type": "text/csv",
    })
    r = c.getresponse()
    body = r.read()
    if r.status != 202:
        raise SystemExit(f"async-bench: {r.status} {body[:200]!r}")
    return r.getheader("X-Amzn-SageMaker-OutputLocation")


def wait_for(path, timeout):
    """When `path` exists (polled every 2 ms)."""
    deadline = time.perf_counter() + timeout
    while not os.path.exists(path):
        if time.perf_counter() > deadline:
            raise SystemExit(f"async-bench: nothing at {path}")
        time.sleep(0.002)
    return time.perf_counter()


def throughput(server, input_path, out):
    """Jobs per second: `plinth bench` submits InvokeEndpointAsync at 16 connections for
    DURATION seconds; the clock runs from its start until the queue is empty (every job's
    output written). Also the rate jobs were accepted at."""
    started = time.perf_counter()
    args = [PLINTH, "bench", "--url", f"{server.url}/endpoints/queue/async-invocations",
            "--header", f"X-Amzn-SageMaker-InputLocation:{input_path}",
            "--header", "X-Amzn-SageMaker-Content-Type:text/csv",
            "--body", "", "--concurrency", "16", "--duration", str(DURATION),
            "--warmup", "0", "--json"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    run = json.loads(out)["runs"][0]
    if run.get("errors", 0) or run.get("non_2xx", 0):
        raise SystemExit(f"async-bench: submitting had errors: {run}")
    deadline = time.perf_counter() + 600
    while True:
        q = server.call("DescribeAsyncQueue", {"EndpointName": "queue"})
        if q["Queued"] + q["Running"] == 0:
            done = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise SystemExit(f"async-bench: the queue did not drain: {q}")
        time.sleep(0.05)
    if q["Failed"]:
        failures = [f for f in os.listdir(out) if f.endswith("-error.out")]
        with open(os.path.join(out, failures[0])) as f:
            raise SystemExit(f"async-bench: {q['Failed']} failed jobs, e.g.: {f.read()}")
    print(f"async-bench: accepts at 16 connections: {run['rps']:.0f}/s, latency "
          f"{json.dumps(run['latency_ms'])}", file=sys.stderr)
    return q["Completed"] / (done - started), run["rps"], q["Completed"]


def in_service(server, endpoint):
    deadline = time.time() + 60
    while server.call("DescribeEndpoint", {"EndpointName": endpoint})["EndpointStatus"] \
            != "InService":
        if time.time() > deadline:
            raise SystemExit(f"async-bench: {endpoint} not InService")
        time.sleep(0.01)


def set_instances(server, endpoint, count):
    in_service(server, endpoint)
    server.call("UpdateEndpointWeightsAndCapacities", {
        "EndpointName": endpoint,
        "DesiredWeightsAndCapacities": [{"VariantName": "AllTraffic",
                                         "DesiredInstanceCount": count}]})
    deadline = time.time() + 60
    while time.time() < deadline:
        d = server.call("DescribeEndpoint", {"EndpointName": endpoint})
        v = d["ProductionVariants"][0]
        if d["EndpointStatus"] == "InService" and v["CurrentInstanceCount"] == count:
            return
        time.sleep(0.01)
    raise SystemExit(f"async-bench: {endpoint} not at {count} instances")


def from_zero(server, input_path):
    resource = "endpoint/queue/variant/AllTraffic"
    target = {"ServiceNamespace": "sagemaker", "ResourceId": resource,
              "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    server.call("RegisterScalableTarget", {**target, "MinCapacity": 0, "MaxCapacity": 1})
    server.call("PutScalingPolicy", {
        **target, "PolicyName": "backlog", "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 5.0, "ScaleOutCooldown": 0, "ScaleInCooldown": 600,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker", "Statistic": "Average",
                "Dimensions": [{"Name": "EndpointName", "Value": "queue"}]}}})
    times = []
    for _ in range(ROUNDS):
        # At zero, and still there after three minutes of an empty queue (a minute whose
        # samples saw the last job running asks for an instance again).
        while True:
            set_instances(server, "queue", 0)
            time.sleep(MINUTE * 3)
            d = server.call("DescribeEndpoint", {"EndpointName": "queue"})
            if d["ProductionVariants"][0]["CurrentInstanceCount"] == 0:
                break
        start = time.perf_counter()
        output = submit(server, "queue", input_path)
        times.append(wait_for(output, 600) - start)
    return times


def main():
    if not os.path.exists(PLINTH):
        raise SystemExit(f"async-bench: no release plinth at {PLINTH}")
    work = tempfile.mkdtemp(prefix="plinth-async-bench-", dir=os.environ.get("BENCH_DIR"))
    root = os.path.join(work, "storage")
    out = os.path.join(root, "out")
    os.makedirs(out)
    row = os.path.join(root, "row.csv")
    with open(row, "w") as f:
        f.write(ROW)
    server = Server(PLINTH, work, [root, ROOT], "async-bench",
                    args=("--autoscaling-minute", str(MINUTE)))
    try:
        iris = {"Image": os.path.join(WASM, "iris.wasm"), "ModelDataUrl": IRIS_MODEL}
        server.call("CreateModel", {"ModelName": "iris", "PrimaryContainer": iris})
        server.endpoint("sync", None, model="iris", variant={"InitialInstanceCount": INSTANCES})
        server.call("CreateEndpointConfig", {
            "EndpointConfigName": "queue",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "iris",
                                    "InitialInstanceCount": INSTANCES}],
            "AsyncInferenceConfig": {
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": PER_INSTANCE},
                "OutputConfig": {"S3OutputPath": out}}})
        server.call("CreateEndpoint", {"EndpointName": "queue", "EndpointConfigName": "queue"})
        set_instances(server, "queue", INSTANCES)
        before = server.bench("sync", ROW, DURATION, ("--content-type", "text/csv"))
        jobs_per_s, accepted_per_s, jobs = throughput(server, row, out)
        after = server.bench("sync", ROW, DURATION, ("--content-type", "text/csv"))
        zero = from_zero(server, row)
    finally:
        server.stop()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    reference = statistics.median([before, after])
    print(f"## Asynchronous inference: jobs through the queue, and from zero ({jobs} jobs, "
          f"{INSTANCES} instances x {PER_INSTANCE} per instance; minute = {MINUTE} s)\n")
    print("| synchronous (plinth bench, 16 conns) | async jobs/s (submit to last output) | "
          "ratio | accepted/s |")
    print("|---|---|---|---|")
    print(f"| {reference:.0f} req/s (before {before:.0f}, after {after:.0f}) | "
          f"{jobs_per_s:.0f} | {jobs_per_s / reference:.2f}x | {accepted_per_s:.0f} |")
    print(f"\nscaled to zero, job to output: median {statistics.median(zero):.2f} s "
          f"(rounds: {', '.join(f'{t:.2f}' for t in zero)})")
    print("\nraw:", json.dumps({"reference": [before, after], "jobs_per_s": jobs_per_s,
                                 "accepted_per_s": accepted_per_s, "from_zero_s": zero}))


if __name__ == "__main__":
    main()
