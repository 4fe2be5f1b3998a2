"""A `plinth serve` for the benchmark scripts (multi-model-bench.py, serverless-bench.py,
autoscaling-bench.py):
started on an ephemeral port with its own data directory, driven over its API, and
`plinth bench` against it.
"""

import http.client
import json
import os
import re
import signal
import subprocess
import time

# Where the repository's builds are (CARGO_TARGET_DIR and PLINTH_BIN override them).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PLUGINS = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "plugins", "target"))
PLINTH = os.environ.get("PLINTH_BIN", os.path.join(TARGET, "release", "plinth"))
WASM = os.path.join(PLUGINS, "wasm32-wasip2", "release")
IRIS_MODEL = os.path.join(ROOT, "examples", "iris", "model")


# Application Auto Scaling's operations: their X-Amz-Target prefix is AnyScaleFrontendService.
AUTOSCALING = {
    "RegisterScalableTarget", "DeregisterScalableTarget", "DescribeScalableTargets",
    "PutScalingPolicy", "DescribeScalingPolicies", "DeleteScalingPolicy",
    "DescribeScalingActivities",
}


class Server:
    """A `plinth serve` on an ephemeral port, with its data directory under `work` and the
    artifact roots `roots`; `name` prefixes its messages."""

    def __init__(self, plinth, work, roots, name, env=None, args=()):
        self.plinth = plinth
        self.name = name
        data = os.path.join(work, "data")
        os.makedirs(work, exist_ok=True)
        self.log = open(os.path.join(work, "server.log"), "ab")
        root_args = [a for root in roots for a in ("--artifact-root", root)]
        self.process = subprocess.Popen(
            [plinth, "serve", "--bind", "127.0.0.1:0", "--data-dir", data, *root_args, *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, **(env or {})},
        )
        line = self.process.stdout.readline().decode()
        match = re.match(r"listening on http://(\S+)", line)
        if not match:
            raise SystemExit(f"{name}: plinth did not start: {line!r}")
        self.address = match.group(1)
        self.url = "http://" + self.address

    def connection(self):
        host, port = self.address.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=120)

    def call(self, operation, body):
        c = self.connection()
        c.request("POST", "/", json.dumps(body), {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": ("AnyScaleFrontendService." if operation in AUTOSCALING
                             else "SageMaker.") + operation,
        })
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise SystemExit(f"{self.name}: {operation} failed: {data.decode()}")
        return json.loads(data)

    def endpoint(self, name, container, variant=None, model=None):
        """A model (unless `model` names one), a one-variant config and an endpoint, InService."""
        if model is None:
            self.call("CreateModel", {"ModelName": name, "PrimaryContainer": container})
        v = {"VariantName": "AllTraffic", "ModelName": model or name, "InitialInstanceCount": 1}
        v.update(variant or {})
        v = {k: x for k, x in v.items() if x is not None}
        self.call("CreateEndpointConfig", {"EndpointConfigName": name, "ProductionVariants": [v]})
        self.call("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})
        deadline = time.time() + 120
        while time.time() < deadline:
            d = self.call("DescribeEndpoint", {"EndpointName": name})
            if d["EndpointStatus"] == "InService":
                return
            if d["EndpointStatus"] == "Failed":
                raise SystemExit(f"{self.name}: {name} failed: {d.get('FailureReason')}")
            time.sleep(0.01)
        raise SystemExit(f"{self.name}: {name} not InService")

    def rss_kib(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise SystemExit(f"{self.name}: no VmRSS")

    def loaded(self, endpoint):
        return self.call("ListLoadedModels", {"EndpointName": endpoint})["Variants"][0]

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)

    def bench(self, endpoint, body, duration, headers=(), connections=16):
        """`plinth bench` at `connections`: requests per second (no error allowed)."""
        args = [self.plinth, "bench", "--endpoint", endpoint, "--endpoint-url", self.url,
                "--body", body, "--concurrency", str(connections), "--duration", str(duration),
                "--warmup", "2", "--json", *headers]
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        run = json.loads(out)["runs"][0]
        if run.get("errors", 0) or run.get("non_2xx", 0):
            raise SystemExit(f"{self.name}: bench {endpoint} had errors: {run}")
        return run["rps"]


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
