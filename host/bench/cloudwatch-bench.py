#!/usr/bin/env python3
"""CloudWatch metrics: what storing them costs the serving path, and how much disk they take.

1. Throughput: two `plinth serve`, `stored` (the default `--metric-retention`: every
   variant's datapoints published each second and merged into the coarser resolutions) and
   `off` (`--metric-retention off`: nothing stored), each with one iris endpoint of
   INSTANCES instances; `plinth bench` at CONNECTIONS connections for DURATION seconds on
   each in turn (the order alternating), ROUNDS rounds; medians of requests/s and their
   ratio.
2. Disk: after the runs, `stored`'s metrics.db: datapoints per resolution and their mean
   encoded size, the file's bytes per datapoint, and from them the bytes one busy variant
   (a request every second) adds per day once its 1-second data (kept 3 hours) is full:
   1,440 one-minute, 288 five-minute and 24 one-hour datapoints a day, and the 10,800
   one-second datapoints it holds at any time.

    .venv/bin/python host/bench/cloudwatch-bench.py   # DURATION=10 ROUNDS=5 INSTANCES=2

Needs release builds of `plinth` and the iris plugin.
"""

import os
import sqlite3
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plinth_server import PLINTH, ROOT, WASM, IRIS_MODEL, Server  # noqa: E402

DURATION = int(os.environ.get("DURATION", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
INSTANCES = int(os.environ.get("INSTANCES", "2"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
ROW = "5.1,3.5,1.4,0.2"


def main():
    work = tempfile.mkdtemp(prefix="plinth-cloudwatch-bench-")
    roots = [ROOT, os.path.dirname(IRIS_MODEL)]
    servers = {
        "stored": Server(PLINTH, os.path.join(work, "stored"), roots, "stored"),
        "off": Server(PLINTH, os.path.join(work, "off"), roots, "off",
                      args=["--metric-retention", "off"]),
    }
    iris = {"Image": os.path.join(WASM, "iris.wasm"), "ModelDataUrl": IRIS_MODEL}
    for server in servers.values():
        server.endpoint("iris", iris, variant={"InitialInstanceCount": INSTANCES})
    rps = {name: [] for name in servers}
    for round_ in range(ROUNDS):
        order = ["stored", "off"] if round_ % 2 == 0 else ["off", "stored"]
        for name in order:
            rps[name].append(servers[name].bench(
                "iris", ROW, DURATION, headers=("--content-type", "text/csv"),
                connections=CONNECTIONS))
        print(f"round {round_ + 1}: stored {rps['stored'][-1]:.0f} req/s, "
              f"off {rps['off'][-1]:.0f} req/s", flush=True)
    stored, off = statistics.median(rps["stored"]), statistics.median(rps["off"])
    print(f"median: stored {stored:.0f} req/s, off {off:.0f} req/s, ratio {stored / off:.3f}")
    ratios = sorted(s / o for s, o in zip(rps["stored"], rps["off"]))
    print(f"per-round ratios: {', '.join(f'{r:.3f}' for r in ratios)}")

    # The publisher writes each second two seconds after it ends; merges every 10 s.
    import time
    time.sleep(13)
    data = os.path.join(work, "stored", "data")
    db = sqlite3.connect(os.path.join(data, "metrics.db"))
    rows = db.execute(
        "SELECT resolution, COUNT(*), AVG(LENGTH(datum)) FROM metric_points GROUP BY resolution"
    ).fetchall()
    files = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data)
                if f.startswith("metrics.db"))
    total = sum(n for _, n, _ in rows)
    print(f"metrics.db: {files} bytes for {total} datapoints ({files / max(total, 1):.0f} bytes each)")
    for resolution, n, size in rows:
        print(f"  resolution {resolution:>4} s: {n} datapoints, {size:.0f} bytes encoded on average")
    size = {resolution: avg for resolution, _, avg in rows}
    overhead = max(files / max(total, 1) - statistics.mean(size.values()), 0)
    per_day = sum(n * (size.get(res, size[max(size)]) + overhead)
                  for res, n in ((60, 1440), (300, 288), (3600, 24)))
    held = 10_800 * (size[1] + overhead)
    print(f"one busy variant: {per_day / 1024:.0f} KiB a day (1-minute, 5-minute and 1-hour "
          f"datapoints), plus {held / 1024 / 1024:.1f} MiB of 1-second datapoints held "
          f"(3 hours)")
    for server in servers.values():
        server.stop()


if __name__ == "__main__":
    main()
