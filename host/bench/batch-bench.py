#!/usr/bin/env python3
"""Batch transform: rows per second through a transform job of the iris plugin against the
native reference doing the same work in one process, and the peak memory of each.

ROWS iris rows (default 1,000,000) in one CSV file in local storage. Plinth: `plinth batch
--component iris.wasm` (no server; an in-process one runs the job), SplitType Line,
MultiRecord requests of at most MAX_PAYLOAD_MB (default 1), Accept text/csv, one instance
(INSTANCES), MAX_CONCURRENT requests prepared ahead (default 2), the output written as
`<input>.out`; the clock is the whole command (start, the component from the compile
cache, model load, the job, the output written and synced). A first run fills the cache
and is not counted. The reference: `native-iris-batch`
(the same model on tract, no WebAssembly, one thread): the same file packed into the same
requests, each parsed, run and written as the plugin writes `text/csv`. Both outputs are
compared line for line. Backends: ORT_DYLIB_PATH is cleared, so both run tract.

Peak memory is each process's maximum resident set (GNU time's %M), for ROWS and for
ROWS / 10: independent of the input's size if the input is streamed.

    .venv/bin/python host/bench/batch-bench.py
    ROWS=100000 ROUNDS=1 .venv/bin/python host/bench/batch-bench.py

Needs release builds: `plinth`, `native-iris-batch` (cargo build --release -p plinth-bench),
the iris plugin for wasm32-wasip2. Prints a Markdown report. Linux only.
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
from plinth_server import IRIS_MODEL, PLINTH, TARGET, WASM  # noqa: E402

ROWS = int(os.environ.get("ROWS", "1000000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
INSTANCES = int(os.environ.get("INSTANCES", "1"))
MAX_PAYLOAD_MB = int(os.environ.get("MAX_PAYLOAD_MB", "1"))
MAX_CONCURRENT = int(os.environ.get("MAX_CONCURRENT", "2"))
NATIVE = os.path.join(TARGET, "release", "native-iris-batch")
ENV = {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}


def rows_file(path, rows):
    """`rows` iris rows, varied, one per line."""
    with open(path, "w") as f:
        for i in range(rows):
            f.write(f"{4.3 + (i % 36) / 10:.1f},{2.0 + (i % 24) / 10:.1f},"
                    f"{1.0 + (i % 59) / 10:.1f},{0.1 + (i % 25) / 10:.1f}\n")


def timed(args):
    """Run `args` under /usr/bin/time: seconds, peak resident set (MiB), stdout."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "maxrss %M", *args], capture_output=True,
                          env=ENV)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"batch-bench: {args[0]} failed: {done.stderr.decode()[-2000:]}")
    rss = int(done.stderr.decode().strip().splitlines()[-1].split()[-1]) / 1024
    return seconds, rss, done.stdout.decode()


def plinth(input_dir, out_dir):
    shutil.rmtree(out_dir, ignore_errors=True)
    return timed([PLINTH, "batch", "--component", os.path.join(WASM, "iris.wasm"),
                  "--model-data", IRIS_MODEL, "--input", input_dir, "--output", out_dir,
                  "--content-type", "text/csv", "--accept", "text/csv",
                  "--split-type", "Line", "--batch-strategy", "MultiRecord",
                  "--max-payload-mb", str(MAX_PAYLOAD_MB), "--instances", str(INSTANCES),
                  "--max-concurrent-transforms", str(MAX_CONCURRENT), "--json"])


def native(input_file, out_file):
    return timed([NATIVE, "--model", os.path.join(IRIS_MODEL, "model.onnx"),
                  "--input", input_file, "--output", out_file,
                  "--max-payload-mb", str(MAX_PAYLOAD_MB)])


def main():
    for binary in (PLINTH, NATIVE):
        if not os.path.exists(binary):
            raise SystemExit(f"batch-bench: no release build at {binary}")
    work = tempfile.mkdtemp(prefix="plinth-batch-bench-")
    try:
        results = {}
        for rows in (ROWS, ROWS // 10):
            input_dir = os.path.join(work, f"in-{rows}")
            os.makedirs(input_dir)
            input_file = os.path.join(input_dir, "rows.csv")
            rows_file(input_file, rows)
            out_dir = os.path.join(work, f"out-{rows}")
            native_out = os.path.join(work, f"native-{rows}.csv")
            runs = {"plinth": [], "native": []}
            plinth(input_dir, out_dir)  # the compile cache
            for _ in range(ROUNDS):
                runs["native"].append(native(input_file, native_out)[:2])
                seconds, rss, described = plinth(input_dir, out_dir)
                described = json.loads(described)
                assert described["PlinthProgress"]["RecordsCompleted"] == rows, described
                runs["plinth"].append((seconds, rss))
            with open(os.path.join(out_dir, "rows.csv.out")) as a, open(native_out) as b:
                assert a.read() == b.read(), "Plinth's output and the native one differ"
            results[rows] = runs
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rate(runs, rows):
        return statistics.median(rows / s for s, _ in runs)

    def peak(runs):
        return max(r for _, r in runs)

    print(f"## Batch transform: {ROWS:,} iris rows, MultiRecord {MAX_PAYLOAD_MB} MB, "
          f"{INSTANCES} instance(s), tract\n")
    print("| rows | native rows/s | Plinth rows/s | ratio | native peak RSS | Plinth peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for rows, runs in results.items():
        n, p = rate(runs["native"], rows), rate(runs["plinth"], rows)
        print(f"| {rows:,} | {n:,.0f} | {p:,.0f} | {p / n:.2f}x | "
              f"{peak(runs['native']):.0f} MiB | {peak(runs['plinth']):.0f} MiB |")
    print("\nraw:", json.dumps({str(k): v for k, v in results.items()}))


if __name__ == "__main__":
    main()
