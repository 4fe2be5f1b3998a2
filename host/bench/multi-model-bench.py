#!/usr/bin/env python3
"""Multi-model endpoints (`Mode: MultiModel`) on a running `plinth serve`, measured over HTTP.

Models are iris-sized: the graph of tests/src/onnx.rs `iris_like` (input [N,4] -> [N,3], a
MatMul and an Add; model i answers [i, 0.5, -1]), served by the iris-simple plugin.

1. Cold first requests: COLD models, each invoked once (one connection, one request at a
   time), latency from the client: p50 and p99, for models in a local prefix (directories,
   and .tar.gz archives, which are copied, hashed and unpacked on first use) and in an S3
   prefix (moto's server, from .venv; fetched, unpacked, then loaded).
2. Warm throughput: the same model on a single-model endpoint and, by TargetModel, on a
   multi-model endpoint; `plinth bench` at 16 connections for DURATION s each, ROUNDS rounds
   alternating the order; the ratio multi/single of each round's requests/s, its median.
3. Memory: the server's RSS before and after loading LOADED models (each answering once),
   divided by LOADED; with the cache's own count of the bytes they take. The server is
   started with `--max-instances LOADED+100` (each loaded model holds an instance).
4. Churn: CYCLE distinct models invoked once each, at 16 connections, through a budget that
   holds LOADED of them: failures (must be 0) and the most models loaded at once.

    .venv/bin/python host/bench/multi-model-bench.py
    COLD=100 LOADED=200 CYCLE=1000 ROUNDS=1 .venv/bin/python host/bench/multi-model-bench.py

Needs a release `plinth` (PLINTH_BIN) and the iris-simple plugin built for wasm32-wasip2
(`cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`); the S3
part needs .venv with boto3 and moto[server] (skipped without). Prints a Markdown report.
Linux only (reads /proc/<pid>/status).
"""

import io
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plinth_server import PLINTH, ROOT, WASM, percentile  # noqa: E402
from plinth_server import Server as PlinthServer  # noqa: E402

COMPONENT = os.path.join(WASM, "iris_simple.wasm")
COLD = int(os.environ.get("COLD", "300"))
LOADED = int(os.environ.get("LOADED", "1000"))
CYCLE = int(os.environ.get("CYCLE", "10000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = float(os.environ.get("DURATION", "10"))
ROW = b"5.1,3.5,1.4,0.2"


# --- iris-like ONNX graphs (the protobuf that tests/src/onnx.rs writes) -------------------


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n == 0:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def field(number, wire, payload):
    key = varint((number << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def text(number, s):
    return field(number, 2, s.encode())


def tensor(name, dims, values):
    out = b"".join(field(1, 0, d) for d in dims)
    raw = b"".join(struct.pack("<f", v) for v in values)
    return out + field(2, 0, 1) + text(8, name) + field(9, 2, raw)


def value_info(name, columns):
    shape = field(1, 2, text(2, "N")) + field(1, 2, field(1, 0, columns))
    tensor_type = field(1, 0, 1) + field(2, 2, shape)
    return text(1, name) + field(2, 2, field(1, 2, tensor_type))


def node(op, inputs, output):
    return b"".join(text(1, i) for i in inputs) + text(2, output) + text(3, output) + text(4, op)


def iris_like(bias):
    graph = (
        field(1, 2, node("MatMul", ["input", "w"], "h"))
        + field(1, 2, node("Add", ["h", "b"], "probabilities"))
        + text(2, "iris-like")
        + field(5, 2, tensor("w", [4, 3], [0.0] * 12))
        + field(5, 2, tensor("b", [3], bias))
        + field(11, 2, value_info("input", 4))
        + field(12, 2, value_info("probabilities", 3))
    )
    return (
        field(1, 0, 8)
        + text(2, "plinth-bench")
        + field(7, 2, graph)
        + field(8, 2, text(1, "") + field(2, 0, 13))
    )


def tar_gz(onnx):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("model.onnx")
        info.size = len(onnx)
        archive.addfile(info, io.BytesIO(onnx))
    return buffer.getvalue()


def write_models(prefix, first, count, archives):
    os.makedirs(prefix, exist_ok=True)
    for i in range(first, first + count):
        onnx = iris_like([float(i), 0.5, -1.0])
        if archives:
            with open(os.path.join(prefix, f"m-{i}.tar.gz"), "wb") as f:
                f.write(tar_gz(onnx))
        else:
            os.makedirs(os.path.join(prefix, f"m-{i}"), exist_ok=True)
            with open(os.path.join(prefix, f"m-{i}", "model.onnx"), "wb") as f:
                f.write(onnx)


# --- the server ----------------------------------------------------------------------------


def Server(work, env=None, args=()):
    roots = [os.path.dirname(work), ROOT, os.path.dirname(COMPONENT)]
    return PlinthServer(PLINTH, work, roots, "multi-model-bench", env, args)


def bench(server, endpoint, target=None):
    headers = ["--target-model", target] if target else []
    return server.bench(endpoint, ROW.decode(), DURATION, headers), None


def invoke(connection, endpoint, target):
    connection.request("POST", f"/endpoints/{endpoint}/invocations", ROW, {
        "Content-Type": "text/csv",
        "X-Amzn-SageMaker-Target-Model": target,
    })
    r = connection.getresponse()
    return r.status, r.read()


def first_number(body):
    value = json.loads(body)
    while isinstance(value, (list, dict)):
        value = value[0] if isinstance(value, list) else next(
            v for v in value.values() if isinstance(v, (list, dict)))
    return value


def cold(server, endpoint, targets):
    """Latencies (ms) of the first request of each target, one at a time."""
    c = server.connection()
    times = []
    for i, target in targets:
        started = time.perf_counter()
        status, body = invoke(c, endpoint, target)
        times.append((time.perf_counter() - started) * 1000)
        if status != 200 or first_number(body) != i:
            raise SystemExit(f"multi-model-bench: {target}: {status} {body[:200]!r}")
    return times


def churn(server, endpoint, count, connections=16):
    """`count` distinct models, once each, at `connections`: failures and the most loaded."""
    next_index = [0]
    lock = threading.Lock()
    failures = []
    most = [0]
    done = threading.Event()

    def worker():
        c = server.connection()
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= count:
                return
            status, body = invoke(c, endpoint, f"m-{i}")
            if status != 200 or first_number(body) != i:
                with lock:
                    failures.append((i, status, body[:200]))

    def watch():
        while not done.is_set():
            most[0] = max(most[0], server.loaded(endpoint)["LoadedModelCount"])
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    done.set()
    watcher.join()
    most[0] = max(most[0], server.loaded(endpoint)["LoadedModelCount"])
    return failures, most[0], elapsed


def s3_prefix(work, count):
    """Upload `count` archives to moto; gives its endpoint, bucket and server env, or None."""
    python = os.path.join(ROOT, ".venv", "bin", "python")
    setup = os.path.join(ROOT, "tests", "python", "s3_setup.py")
    if not os.path.exists(python):
        return None
    moto = subprocess.Popen([python, setup, "serve", "--no-auth", "--forever"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = moto.stdout.readline().decode()
    match = re.match(r"listening on (http://\S+)", line)
    if not match:
        moto.kill()
        return None
    endpoint = match.group(1)
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    run_env = {**os.environ, **env}
    subprocess.run([python, setup, "create-bucket", endpoint, "bench"], check=True, env=run_env)
    for i in range(count):
        subprocess.run([python, setup, "put-bytes", endpoint, "bench", f"s3/m-{i}.tar.gz"],
                       input=tar_gz(iris_like([float(i), 0.5, -1.0])), check=True, env=run_env,
                       stdout=subprocess.DEVNULL)
    env["PLINTH_S3_ENDPOINT_URL"] = endpoint
    return moto, env


def main():
    for path in (PLINTH, COMPONENT):
        if not os.path.exists(path):
            raise SystemExit(f"multi-model-bench: {path} is missing; build it first")
    work = tempfile.mkdtemp(prefix="plinth-mm-bench-")
    moto = None
    try:
        report = []
        dirs = os.path.join(work, "dirs")
        archives = os.path.join(work, "archives")
        write_models(dirs, 0, max(COLD, LOADED, CYCLE), archives=False)
        write_models(archives, 0, COLD, archives=True)
        s3 = s3_prefix(work, min(COLD, 50))
        env = {}
        if s3:
            moto, env = s3
        server = Server(os.path.join(work, "one"), env)
        mm = {"Image": COMPONENT, "Mode": "MultiModel"}
        server.endpoint("mm-dirs", {**mm, "ModelDataUrl": dirs})
        server.endpoint("mm-archives", {**mm, "ModelDataUrl": archives})
        # The component compiled and cached before anything is timed.
        invoke(server.connection(), "mm-dirs", "m-0")

        report.append("| first request of a cold model | models | p50 | p99 |")
        report.append("|---|---:|---:|---:|")
        t = cold(server, "mm-dirs", [(i, f"m-{i}") for i in range(1, COLD)])
        report.append(f"| local directory | {len(t)} | {statistics.median(t):.2f} ms | "
                      f"{percentile(t, 99):.2f} ms |")
        t = cold(server, "mm-archives", [(i, f"m-{i}.tar.gz") for i in range(COLD)])
        report.append(f"| local `.tar.gz` (copied, hashed, unpacked) | {len(t)} | "
                      f"{statistics.median(t):.2f} ms | {percentile(t, 99):.2f} ms |")
        if s3:
            server.endpoint("mm-s3", {**mm, "ModelDataUrl": "s3://bench/s3/"})
            n = min(COLD, 50)
            t = cold(server, "mm-s3", [(i, f"m-{i}.tar.gz") for i in range(n)])
            report.append(f"| S3 test server (moto), `.tar.gz` | {n} | "
                          f"{statistics.median(t):.2f} ms | {percentile(t, 99):.2f} ms |")
            warm = cold(server, "mm-s3", [(i, f"m-{i}.tar.gz") for i in range(n)])
            report.append(f"| (the same S3 models again, loaded) | {n} | "
                          f"{statistics.median(warm):.2f} ms | {percentile(warm, 99):.2f} ms |")
        else:
            report.append("| S3 test server | skipped: no .venv with moto | | |")

        server.endpoint("single", {"Image": COMPONENT,
                                   "ModelDataUrl": os.path.join(dirs, "m-0")})
        ratios, singles, multis = [], [], []
        for r in range(ROUNDS):
            order = [("single", None), ("mm-dirs", "m-0")]
            if r % 2:
                order.reverse()
            got = {}
            for endpoint, target in order:
                got[endpoint] = bench(server, endpoint, target)[0]
            singles.append(got["single"])
            multis.append(got["mm-dirs"])
            ratios.append(got["mm-dirs"] / got["single"])
        report.append("")
        report.append("| warm, 16 connections | single-model req/s | multi-model req/s | ratio |")
        report.append("|---|---:|---:|---:|")
        report.append(f"| median of {ROUNDS} rounds, {DURATION:.0f} s each | "
                      f"{statistics.median(singles):.0f} | {statistics.median(multis):.0f} | "
                      f"{statistics.median(ratios):.3f} |")
        report.append("")
        report.append("Each round's ratio: " + ", ".join(f"{r:.3f}" for r in ratios) + ".")
        server.stop()

        # Memory: a fresh server, LOADED models loaded one after another.
        room = ["--max-instances", str(LOADED + 100)]
        server = Server(os.path.join(work, "two"), args=room)
        server.endpoint("mm", {**mm, "ModelDataUrl": dirs})
        invoke(server.connection(), "mm", "m-0")
        before = server.rss_kib()
        cold(server, "mm", [(i, f"m-{i}") for i in range(1, LOADED + 1)])
        after = server.rss_kib()
        cache = server.loaded("mm")
        per_model = (after - before) / LOADED
        size = cache["Models"][0]["SizeInBytes"]
        report.append("")
        report.append("| loaded models | RSS before | RSS after | RSS per model | "
                      "the cache's count per model |")
        report.append("|---:|---:|---:|---:|---:|")
        report.append(f"| {cache['LoadedModelCount']} | {before / 1024:.1f} MiB | "
                      f"{after / 1024:.1f} MiB | {per_model:.0f} KiB | {size / 1024:.0f} KiB |")
        server.stop()

        # Churn: CYCLE models through a budget of LOADED.
        server = Server(os.path.join(work, "three"), args=room)
        budget_mib = -(-LOADED * size // (1 << 20))
        server.endpoint("mm", {**mm, "ModelDataUrl": dirs},
                        {"PlinthModelCacheSizeInMB": budget_mib})
        failures, most, elapsed = churn(server, "mm", CYCLE)
        holds = budget_mib * (1 << 20) // size
        report.append("")
        report.append("| distinct models, once each, 16 connections | budget | holds | "
                      "most loaded at once | failures | time |")
        report.append("|---:|---:|---:|---:|---:|---:|")
        report.append(f"| {CYCLE} | {budget_mib} MiB | {holds} | {most} | {len(failures)} | "
                      f"{elapsed:.1f} s |")
        rss = server.rss_kib()
        report.append("")
        report.append(f"Server RSS after the churn: {rss / 1024:.1f} MiB.")
        server.stop()
        if failures:
            print("\n".join(report))
            raise SystemExit(f"multi-model-bench: {len(failures)} failures: {failures[:5]}")
        print("\n".join(report))
    finally:
        if moto:
            moto.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
