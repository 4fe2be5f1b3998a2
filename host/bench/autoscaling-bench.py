#!/usr/bin/env python3
"""Application Auto Scaling on a running `plinth serve`: the time from a load step to the new
capacity serving.

The server's autoscaling minute is MINUTE seconds (default 1: `--autoscaling-minute`
compresses the policy's clock; datapoints, alarms and cooldowns count in it). Each of ROUNDS
rounds makes a fresh iris endpoint of one instance, registers it (1 to 8 instances) with a
target-tracking policy of 70 invocations per instance per minute, sends 40 requests a minute
(below the target) for WARM minutes, then steps to STEP requests a minute (default 400: the
policy asks for ceil(400 / 70) = 6 instances). DescribeEndpoint is polled every 5 ms:

- decision: from the step to DesiredInstanceCount changing, in minutes. Application Auto
  Scaling's alarm needs three datapoints above the target: 2 to 3 minutes after a step (the
  minute the step falls in may already be above), plus up to 1/6 minute for the
  controller's evaluation, six times a minute;
- actuation: from the capacity change committed to complete, by the endpoint's events (the
  new instances started with their `model_fn`, the weights published), in ms;
- the whole: step to serving, in minutes, and its ratio to those 3 minutes.

    .venv/bin/python host/bench/autoscaling-bench.py
    ROUNDS=1 .venv/bin/python host/bench/autoscaling-bench.py

Needs a release `plinth` (PLINTH_BIN) and the plugins built for wasm32-wasip2. Prints a
Markdown report, medians over the rounds. Linux only.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plinth_server import IRIS_MODEL, PLINTH, ROOT, WASM, Server  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
MINUTE = int(os.environ.get("MINUTE", "1"))
WARM = float(os.environ.get("WARM", "4"))
STEP = int(os.environ.get("STEP", "400"))
ROW = b"5.1,3.5,1.4,0.2"
THREADS = 8


def drive(server, endpoint, per_minute, stop):
    """Requests to `endpoint` at `per_minute` a minute (of the server's) until `stop` is set."""
    interval = THREADS * MINUTE / per_minute

    def worker():
        c = server.connection()
        next_at = time.perf_counter()
        while not stop.is_set():
            c.request("POST", f"/endpoints/{endpoint}/invocations", ROW,
                      {"Content-Type": "text/csv"})
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise SystemExit(f"autoscaling-bench: {r.status} {body[:200]!r}")
            next_at = max(next_at + interval, time.perf_counter())
            time.sleep(max(0.0, next_at - time.perf_counter()))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    return threads


def variant(server, endpoint):
    d = server.call("DescribeEndpoint", {"EndpointName": endpoint})
    return d["EndpointStatus"], d["ProductionVariants"][0]


def one_round(server, i):
    endpoint = f"step-{i}"
    server.endpoint(endpoint, None, model="iris")
    resource = f"endpoint/{endpoint}/variant/AllTraffic"
    target = {"ServiceNamespace": "sagemaker", "ResourceId": resource,
              "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    server.call("RegisterScalableTarget", {**target, "MinCapacity": 1, "MaxCapacity": 8})
    server.call("PutScalingPolicy", {
        **target, "PolicyName": "track", "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 70.0, "ScaleOutCooldown": 60,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}})
    stop = threading.Event()
    threads = drive(server, endpoint, 40, stop)
    time.sleep(WARM * MINUTE)
    stop.set()
    for t in threads:
        t.join()
    _, v = variant(server, endpoint)
    if v["DesiredInstanceCount"] != 1:
        raise SystemExit(f"autoscaling-bench: scaled before the step: {v}")
    stop = threading.Event()
    stepped = time.perf_counter()
    threads = drive(server, endpoint, STEP, stop)
    decided = None
    while True:
        status, v = variant(server, endpoint)
        now = time.perf_counter()
        if decided is None and v["DesiredInstanceCount"] > 1:
            decided, wanted = now, v["DesiredInstanceCount"]
        if decided is not None and status == "InService" \
                and v["CurrentInstanceCount"] == wanted:
            serving = now
            break
        if now - stepped > 20 * MINUTE:
            raise SystemExit(f"autoscaling-bench: no scale-out: {v}")
        time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join()
    # The change itself, from the endpoint's events (millisecond times): the capacity change
    # committed (the decision) to complete (the new instances started and routed to).
    events = server.call("ListEndpointEvents",
                         {"EndpointName": endpoint, "AfterSequence": -20})["Events"]
    started = [e["EventTime"] for e in events
               if e["Message"].startswith("Changing weights and instance counts")]
    done = [e["EventTime"] for e in events if e["Message"] == "Capacity change complete"]
    if not started or not done:
        raise SystemExit(f"autoscaling-bench: no capacity change in the events: {events}")
    return {
        "wanted": wanted,
        "decision_minutes": (decided - stepped) / MINUTE,
        "actuation_ms": (done[-1] - started[-1]) * 1000,
        "total_minutes": (serving - stepped) / MINUTE,
    }


def main():
    if not os.path.exists(PLINTH):
        raise SystemExit(f"autoscaling-bench: no release plinth at {PLINTH}")
    iris = os.path.join(WASM, "iris.wasm")
    work = tempfile.mkdtemp(prefix="plinth-autoscaling-bench-")
    server = Server(PLINTH, work, [ROOT], "autoscaling-bench",
                    args=("--autoscaling-minute", str(MINUTE)))
    try:
        server.call("CreateModel", {"ModelName": "iris", "PrimaryContainer": {
            "Image": iris, "ModelDataUrl": IRIS_MODEL}})
        rounds = [one_round(server, i) for i in range(ROUNDS)]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"## Autoscaling: a load step to the new capacity ({ROUNDS} rounds, minute = "
          f"{MINUTE} s, medians)\n")
    print("| step | instances asked | step to decision | decision to serving | "
          "step to serving | against 3 minutes |")
    print("|---|---|---|---|---|---|")
    print(f"| 40 -> {STEP} a minute | {med['wanted']:.0f} | {med['decision_minutes']:.2f} min "
          f"| {med['actuation_ms']:.1f} ms | {med['total_minutes']:.2f} min | "
          f"{med['total_minutes'] / 3:.2f}x |")
    print("\nper round:", json.dumps(rounds))


if __name__ == "__main__":
    main()
