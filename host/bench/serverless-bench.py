#!/usr/bin/env python3
"""Serverless variants (`ServerlessConfig`) on a running `plinth serve`, measured over HTTP.

1. Cold start: COLD serverless endpoints, each at zero instances, each invoked once (one
   connection, one request at a time): the first request's latency from the client (it
   starts the instance: the component from the compiled cache, `model_fn`, the request),
   p50 and p99, against a warm request to the same endpoint right after. For the echo
   plugin (whose `model_fn` does nothing: Plinth's own cost) and for iris (its `model_fn`
   loads the graph; the graph itself is shared by every variant holding the same file).
2. Throughput: `plinth bench` at INSTANCES connections (default 16) for DURATION s against
   a serverless variant with `ProvisionedConcurrency` = `MaxConcurrency` = INSTANCES and an
   instance variant of INSTANCES instances, same model, alternating order for ROUNDS
   rounds; the ratio serverless/instance of each round, its median.

    .venv/bin/python host/bench/serverless-bench.py
    COLD=50 ROUNDS=1 .venv/bin/python host/bench/serverless-bench.py

Needs a release `plinth` (PLINTH_BIN) and the plugins built for wasm32-wasip2. Prints a
Markdown report. Linux only.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plinth_server import IRIS_MODEL, PLINTH, ROOT, WASM, Server, percentile  # noqa: E402
COLD = int(os.environ.get("COLD", "200"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = float(os.environ.get("DURATION", "10"))
INSTANCES = int(os.environ.get("INSTANCES", "16"))
ROW = b"5.1,3.5,1.4,0.2"


def invoke(connection, endpoint):
    started = time.perf_counter()
    connection.request("POST", f"/endpoints/{endpoint}/invocations", ROW,
                       {"Content-Type": "text/csv"})
    r = connection.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"serverless-bench: {endpoint}: {r.status} {body[:200]!r}")
    return (time.perf_counter() - started) * 1000


def cold_starts(server, model, count):
    """(first-request ms, warm-request ms) for `count` fresh serverless endpoints of `model`."""
    serverless = {"InitialInstanceCount": None,
                  "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 4}}
    names = [f"{model}-cold-{i}" for i in range(count)]
    for name in names:
        server.endpoint(name, None, serverless, model=model)
    c = server.connection()
    first, warm = [], []
    for name in names:
        first.append(invoke(c, name))
        warm.append(invoke(c, name))
    return first, warm


def main():
    for path in (PLINTH, os.path.join(WASM, "iris.wasm"), os.path.join(WASM, "echo.wasm")):
        if not os.path.exists(path):
            raise SystemExit(f"serverless-bench: {path} is missing; build it first")
    work = tempfile.mkdtemp(prefix="plinth-serverless-bench-")
    try:
        server = Server(PLINTH, os.path.join(work, "server"), [ROOT, WASM],
                        "serverless-bench", args=["--max-instances", str(COLD * 8 + 100)])
        server.call("CreateModel", {"ModelName": "echo", "PrimaryContainer": {
            "Image": os.path.join(WASM, "echo.wasm")}})
        server.call("CreateModel", {"ModelName": "iris", "PrimaryContainer": {
            "Image": os.path.join(WASM, "iris.wasm"), "ModelDataUrl": IRIS_MODEL}})
        # Compile both components once, before anything is timed.
        server.endpoint("echo-warmup", None, model="echo")
        server.endpoint("iris-warmup", None, model="iris")

        report = ["| first request at zero instances | endpoints | p50 | p99 | warm p50 |",
                  "|---|---:|---:|---:|---:|"]
        for model, what in (("echo", "echo (`model_fn` does nothing)"),
                            ("iris", "iris (`model_fn` loads its graph)")):
            first, warm = cold_starts(server, model, COLD)
            report.append(f"| {what} | {len(first)} | {statistics.median(first):.2f} ms | "
                          f"{percentile(first, 99):.2f} ms | {statistics.median(warm):.2f} ms |")

        server.endpoint("iris-instances", None, {"InitialInstanceCount": INSTANCES},
                        model="iris")
        server.endpoint("iris-serverless", None, {
            "InitialInstanceCount": None,
            "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": INSTANCES,
                                 "ProvisionedConcurrency": INSTANCES}}, model="iris")
        ratios, instance_rps, serverless_rps = [], [], []
        for r in range(ROUNDS):
            order = ["iris-instances", "iris-serverless"]
            if r % 2:
                order.reverse()
            got = {e: server.bench(e, ROW.decode(), DURATION, connections=INSTANCES)
                   for e in order}
            instance_rps.append(got["iris-instances"])
            serverless_rps.append(got["iris-serverless"])
            ratios.append(got["iris-serverless"] / got["iris-instances"])
        report += ["", f"| {INSTANCES} connections, {INSTANCES} instances | instance variant "
                   "req/s | serverless req/s | ratio |", "|---|---:|---:|---:|",
                   f"| median of {ROUNDS} rounds, {DURATION:.0f} s each | "
                   f"{statistics.median(instance_rps):.0f} | "
                   f"{statistics.median(serverless_rps):.0f} | "
                   f"{statistics.median(ratios):.3f} |", "",
                   "Each round's ratio: " + ", ".join(f"{r:.3f}" for r in ratios) + "."]
        server.stop()
        print("\n".join(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
