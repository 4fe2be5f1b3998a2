#!/usr/bin/env python3
"""Variant life-cycle costs of a running `plinth serve`, measured over its API.

- Cold start of a variant: CreateEndpoint to InService, as Plinth reports it in the
  endpoint's "built in N ms" event (artifact resolution, compiling or loading the compiled
  component, instantiating, and the guest's model_fn, which loads the model), for a compile
  cache miss (a fresh data directory), a hit in the process, and a hit on disk after a restart.
  The guest's model_fn time is measured separately (an endpoint of the echo plugin, whose
  model_fn does nothing) so that Plinth's share can be read without the model's own load.
- Memory per warm instance: the server's resident memory before and after growing a variant
  from 1 to 33 instances (UpdateEndpointWeightsAndCapacities), divided by 32.
- Resident memory over 1,000 deploy/undeploy cycles (CreateEndpoint, InService,
  DeleteEndpoint), sampled every 100 cycles.

    host/bench/lifecycle.py                      # release build, 1000 cycles
    CYCLES=200 PLINTH_BIN=target/debug/plinth host/bench/lifecycle.py

Prints a Markdown report. Linux only (reads /proc/<pid>/status).
"""

import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plinth_server import IRIS_MODEL, PLINTH, ROOT, WASM  # noqa: E402
from plinth_server import Server as PlinthServer  # noqa: E402
CYCLES = int(os.environ.get("CYCLES", "1000"))


class Server(PlinthServer):
    """A `plinth serve` on an ephemeral port over `data_dir` (plinth_server.py), with the
    life-cycle helpers."""

    def __init__(self, data_dir):
        super().__init__(PLINTH, os.path.dirname(data_dir), [ROOT, WASM], "lifecycle")

    def wait(self, endpoint, status="InService", timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            d = self.call("DescribeEndpoint", {"EndpointName": endpoint})
            if d["EndpointStatus"] == status:
                return d
            if d["EndpointStatus"] == "Failed":
                raise SystemExit(f"lifecycle: {endpoint} failed: {d.get('FailureReason')}")
            time.sleep(0.002)
        raise SystemExit(f"lifecycle: {endpoint} not {status} after {timeout} s")

    def built_ms(self, endpoint):
        """The build time of the endpoint's last InService event."""
        events = self.call("ListEndpointEvents", {"EndpointName": endpoint, "AfterSequence": -20})
        for event in reversed(events["Events"]):
            match = re.search(r"built in (\d+) ms", event["Message"])
            if match:
                return int(match.group(1))
        raise SystemExit(f"lifecycle: no build time for {endpoint}")


def deploy(server, endpoint, config):
    started = time.perf_counter()
    server.call("CreateEndpoint", {"EndpointName": endpoint, "EndpointConfigName": config})
    server.wait(endpoint)
    return (time.perf_counter() - started) * 1000, server.built_ms(endpoint)


def main():
    for path in (PLINTH, os.path.join(WASM, "iris.wasm"), os.path.join(WASM, "echo.wasm")):
        if not os.path.exists(path):
            raise SystemExit(f"lifecycle: {path} is missing; build it first (see BENCHMARKS.md)")
    work = tempfile.mkdtemp(prefix="plinth-lifecycle-")
    data = os.path.join(work, "data")
    try:
        server = Server(data)
        server.call("CreateModel", {"ModelName": "iris", "PrimaryContainer": {
            "Image": os.path.join(WASM, "iris.wasm"), "ModelDataUrl": IRIS_MODEL}})
        server.call("CreateModel", {"ModelName": "echo", "PrimaryContainer": {
            "Image": os.path.join(WASM, "echo.wasm")}})
        for model in ("iris", "echo"):
            server.call("CreateEndpointConfig", {"EndpointConfigName": model, "ProductionVariants": [
                {"VariantName": "A", "ModelName": model, "InitialInstanceCount": 1}]})

        rows = []
        wall, built = deploy(server, "iris-miss", "iris")
        rows.append(("iris, compile cache miss (fresh data directory)", built, wall))
        wall, built = deploy(server, "echo-miss", "echo")
        rows.append(("echo, compile cache miss", built, wall))
        hits = [deploy(server, f"iris-hit-{i}", "iris") for i in range(5)]
        rows.append(("iris, cache hit in the process (median of 5)",
                     sorted(h[1] for h in hits)[2], sorted(h[0] for h in hits)[2]))
        hits = [deploy(server, f"echo-hit-{i}", "echo") for i in range(5)]
        rows.append(("echo, cache hit in the process (median of 5)",
                     sorted(h[1] for h in hits)[2], sorted(h[0] for h in hits)[2]))
        for name in [f"iris-hit-{i}" for i in range(5)] + [f"echo-hit-{i}" for i in range(5)] + [
                "iris-miss", "echo-miss"]:
            server.call("DeleteEndpoint", {"EndpointName": name})
        server.stop()

        server = Server(data)
        wall, built = deploy(server, "iris-disk", "iris")
        rows.append(("iris, cache hit on disk (after a restart)", built, wall))
        wall, built = deploy(server, "echo-disk", "echo")
        rows.append(("echo, cache hit on disk (after a restart)", built, wall))

        # Memory per warm instance.
        time.sleep(0.5)
        before = server.rss_kib()
        server.call("UpdateEndpointWeightsAndCapacities", {"EndpointName": "iris-disk",
                    "DesiredWeightsAndCapacities": [{"VariantName": "A", "DesiredInstanceCount": 33}]})
        server.wait("iris-disk")
        time.sleep(0.5)
        after = server.rss_kib()
        per_instance = (after - before) / 32
        server.call("DeleteEndpoint", {"EndpointName": "iris-disk"})
        server.call("DeleteEndpoint", {"EndpointName": "echo-disk"})

        # Deploy/undeploy cycles.
        samples = []
        for cycle in range(CYCLES + 1):
            if cycle % 100 == 0 or cycle == CYCLES:
                time.sleep(0.3)
                samples.append((cycle, server.rss_kib()))
            if cycle == CYCLES:
                break
            deploy(server, "cycle", "iris")
            server.call("DeleteEndpoint", {"EndpointName": "cycle"})
        server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"plinth: {PLINTH}; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}")
    print()
    print("| variant start | built in (Plinth's event) | CreateEndpoint to InService (client) |")
    print("|---|---:|---:|")
    for what, built, wall in rows:
        print(f"| {what} | {built} ms | {wall:.1f} ms |")
    print()
    print(f"Memory per warm iris instance: {per_instance:.0f} KiB "
          f"(RSS {before} KiB with 1 instance, {after} KiB with 33).")
    print()
    print("| deploy/undeploy cycles | RSS KiB |")
    print("|---:|---:|")
    for cycle, rss in samples:
        print(f"| {cycle} | {rss} |")
    growth = samples[-1][1] - samples[1][1] if len(samples) > 2 else 0
    print()
    print(f"Growth from cycle 100 to {CYCLES}: {growth} KiB.")


if __name__ == "__main__":
    sys.exit(main())
