#!/usr/bin/env python3
"""Inference pipelines: what chaining containers in one process costs.

One `plinth serve` with four endpoints of INSTANCES instances each:

- `iris`: the iris model alone (examples/iris);
- `pipeline`: examples/pipeline's Serial model, scaler -> iris (scaled features) -> labels,
  the first two asked for NPY (SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT);
- `echo1`: the echo plugin alone; `echo3`: three echo containers as a Serial pipeline.

and `native-iris-pipeline` (cargo build --release -p plinth-bench), the same three stages
as one native function with no WebAssembly, on 2 worker threads.

1. Throughput: `plinth bench` at CONNECTIONS connections for DURATION seconds on `iris`,
   `pipeline` and the native server, ROUNDS rounds in turn; medians of requests/s.
2. The cost of a stage, from the server's own metrics over a run at 1 connection on
   `echo1` and `echo3` (and `iris` and `pipeline`): SageMaker's OverheadLatency (the time a
   request spent in Plinth outside the guests: routing, queueing for an instance, the hop
   from one container to the next) and ModelLatency (in the guests), as means. What each
   extra stage adds in Plinth is (overhead(echo3) - overhead(echo1)) / 2; what it adds in
   all, its guest call included, is (latency(echo3) - latency(echo1)) / 2, from the client's
   mean latencies.
3. For comparison, an in-host HTTP hop on this machine (what SageMaker makes between the
   containers of a pipeline, on the same instance): the p50 round trip of a loopback HTTP
   request to the native server at 1 connection (its model work takes a few microseconds).

    .venv/bin/python host/bench/pipeline-bench.py   # DURATION=5 ROUNDS=3 INSTANCES=2

Needs release builds of `plinth`, `native-iris-pipeline` and the plugins.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plinth_server import PLINTH, ROOT, TARGET, WASM, IRIS_MODEL, Server  # noqa: E402

DURATION = int(os.environ.get("DURATION", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
INSTANCES = int(os.environ.get("INSTANCES", "2"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
NATIVE = os.path.join(TARGET, "release", "native-iris-pipeline")
PIPELINE = os.path.join(ROOT, "examples", "pipeline")
ROW = "5.1,3.5,1.4,0.2"
NPY = {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/x-npy"}


def bench(url_args, connections, duration=DURATION):
    """`plinth bench` once: (requests/s, mean latency in ms, p50 latency in ms)."""
    args = [PLINTH, "bench", *url_args, "--body", ROW, "--concurrency", str(connections),
            "--duration", str(duration), "--warmup", "1", "--json"]
    import json
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    run = json.loads(out)["runs"][0]
    if run.get("errors", 0) or run.get("non_2xx", 0):
        raise SystemExit(f"bench {url_args} had errors: {run}")
    return run["rps"], run["latency_ms"]["mean"], run["latency_ms"]["p50"]


def histogram(metrics, name, endpoint):
    """(sum, count) of a per-variant histogram."""
    labels = f'endpoint="{endpoint}",variant="AllTraffic"'
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith(f"{name}_sum{{") and labels in line:
            total = float(line.rsplit(" ", 1)[1])
        if line.startswith(f"{name}_count{{") and labels in line:
            count = float(line.rsplit(" ", 1)[1])
    return total, count


def means_during(server, endpoint, run):
    """Run `run`; the mean OverheadLatency and ModelLatency (us) of `endpoint` meanwhile."""
    def snapshot():
        text = urllib.request.urlopen(server.url + "/metrics").read().decode()
        return (histogram(text, "plinth_overhead_latency_seconds", endpoint),
                histogram(text, "plinth_model_latency_seconds", endpoint))
    before = snapshot()
    result = run()
    after = snapshot()
    means = []
    for (s0, c0), (s1, c1) in zip(before, after):
        means.append((s1 - s0) / max(c1 - c0, 1) * 1e6)
    return result, means[0], means[1]


def main():
    for f in (PLINTH, NATIVE, os.path.join(WASM, "scaler.wasm")):
        if not os.path.exists(f):
            raise SystemExit(f"pipeline-bench: {f} is missing; build it (see the header)")
    work = tempfile.mkdtemp(prefix="pipeline-bench-")
    server = Server(PLINTH, work, [ROOT, work], "plinth")
    variant = {"InitialInstanceCount": INSTANCES}
    server.endpoint("iris", {"Image": os.path.join(WASM, "iris.wasm"), "ModelDataUrl": IRIS_MODEL},
                    variant)
    stage = lambda host, wasm, data, env: {  # noqa: E731
        "ContainerHostname": host, "Image": os.path.join(WASM, wasm),
        "ModelDataUrl": os.path.join(PIPELINE, data), "Environment": env}
    server.call("CreateModel", {"ModelName": "pipeline", "Containers": [
        stage("scaler", "scaler.wasm", "scaler", NPY),
        stage("model", "iris.wasm", "model", NPY),
        stage("labels", "labels.wasm", "labels", {}),
    ]})
    server.endpoint("pipeline", None, variant, model="pipeline")
    echo = {"Image": os.path.join(WASM, "echo.wasm")}
    server.endpoint("echo1", echo, variant)
    server.call("CreateModel", {"ModelName": "echo3", "Containers": [echo, echo, echo]})
    server.endpoint("echo3", None, variant, model="echo3")

    native = subprocess.Popen([NATIVE, "--dir", PIPELINE, "--threads", "2"],
                              stdout=subprocess.PIPE, text=True)
    line = native.stdout.readline()
    match = re.match(r"listening on (\S+)", line)
    if not match:
        raise SystemExit(f"native-iris-pipeline did not start: {line!r}")
    native_url = match.group(1) + "/endpoints/pipeline/invocations"

    def at(endpoint):
        return ["--endpoint", endpoint, "--endpoint-url", server.url]

    # 1. Throughput.
    rps = {"iris": [], "pipeline": [], "native": []}
    for _ in range(ROUNDS):
        rps["iris"].append(bench(at("iris"), CONNECTIONS)[0])
        rps["pipeline"].append(bench(at("pipeline"), CONNECTIONS)[0])
        rps["native"].append(bench(["--url", native_url], CONNECTIONS)[0])
    med = {k: statistics.median(v) for k, v in rps.items()}

    # 2. Per stage, at 1 connection.
    per = {}
    for endpoint in ("echo1", "echo3", "iris", "pipeline"):
        rounds = [means_during(server, endpoint, lambda e=endpoint: bench(at(e), 1))
                  for _ in range(ROUNDS)]
        per[endpoint] = {
            "latency_us": statistics.median(r[0][1] * 1000 for r in rounds),
            "overhead_us": statistics.median(r[1] for r in rounds),
            "model_us": statistics.median(r[2] for r in rounds),
        }
    # 3. A loopback HTTP hop.
    hop = statistics.median(bench(["--url", native_url], 1)[2] * 1000 for _ in range(ROUNDS))

    native.terminate()
    server.stop()

    print(f"## {CONNECTIONS} connections, {INSTANCES} instances, {DURATION} s x {ROUNDS} "
          "rounds (medians)\n")
    print("| | req/s | vs iris alone | vs native 3-stage |")
    print("|---|---:|---:|---:|")
    for k, label in (("iris", "iris alone (Plinth)"),
                     ("pipeline", "3-stage Serial pipeline (Plinth)"),
                     ("native", "3 stages as one native function")):
        print(f"| {label} | {med[k]:,.0f} | {med[k] / med['iris']:.2f}x | "
              f"{med[k] / med['native']:.2f}x |")
    print("\n## 1 connection: means per request (us; medians over rounds)\n")
    print("| endpoint | client latency | OverheadLatency | ModelLatency |")
    print("|---|---:|---:|---:|")
    for endpoint, p in per.items():
        print(f"| {endpoint} | {p['latency_us']:.1f} | {p['overhead_us']:.1f} | "
              f"{p['model_us']:.1f} |")
    extra_overhead = (per["echo3"]["overhead_us"] - per["echo1"]["overhead_us"]) / 2
    extra_total = (per["echo3"]["latency_us"] - per["echo1"]["latency_us"]) / 2
    print(f"\nEach extra stage: {extra_overhead:.1f} us of Plinth overhead (the hop), "
          f"{extra_total:.1f} us in all with its guest call (echo).")
    print(f"A loopback HTTP round trip on this machine (p50, 1 connection): {hop:.1f} us.")


if __name__ == "__main__":
    main()
