#!/usr/bin/env python3
"""CloudWatch metrics: what storing them costs the serving path, and how much disk they take.

1. Throughput: two `plinth serve`, `stored` (the default `--metric-retention`: every
   variant's datapoints published each second and merged into the coarser resolutions) and
   `off` (`--metric-retention off`: nothing stored), each with one iris endpoint of
   INSTANCES instances; `plinth bench` at CONNECTIONS connections for DURATION seconds on
   each in turn (the order alternating), ROUNDS rounds; medians of requests/s and their
   ratio.
2. Disk: after the runs, `stored`'s metrics.db: datapoints per resolution and their mean
   encoded size; then a fresh database of the same schema filled with one busy variant's
   datapoints (this run's largest of each resolution, repeated), vacuumed and measured:
   what it adds per day once its 1-second data (kept 3 hours) is full (1,440 one-minute,
   288 five-minute and 24 one-hour datapoints), the 10,800 one-second datapoints it holds
   at any time, and everything at full retention.

    .venv/bin/python host/bench/cloudwatch-bench.py   # DURATION=10 ROUNDS=5 INSTANCES=2

Needs release builds of `plinth` and the iris plugin.
"""

import os
import sqlite3
import time
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
    time.sleep(13)
    data = os.path.join(work, "stored", "data")
    db = sqlite3.connect(os.path.join(data, "metrics.db"))
    rows = db.execute(
        "SELECT resolution, COUNT(*), AVG(LENGTH(datum)) FROM metric_points GROUP BY resolution"
    ).fetchall()
    for resolution, n, size in rows:
        print(f"  resolution {resolution:>4} s: {n} datapoints, {size:.0f} bytes encoded on average")
    # The bytes on disk: a fresh database of the same schema, filled with one variant's
    # datapoints (this run's largest of each resolution, repeated), vacuumed and measured.
    schema = [sql for (sql,) in db.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name LIKE 'metric_%'")]
    sample = {res: blob for res, blob in db.execute(
        "SELECT resolution, datum FROM metric_points p WHERE LENGTH(datum) = "
        "(SELECT MAX(LENGTH(datum)) FROM metric_points q WHERE q.resolution = p.resolution)")}

    def size_with(counts):
        path = os.path.join(work, "sized.db")
        if os.path.exists(path):
            os.remove(path)
        out = sqlite3.connect(path)
        for sql in schema:
            out.execute(sql)
        out.execute("INSERT INTO metric_series VALUES (1, 'AWS/SageMaker', "
                    "'[[\"EndpointName\",\"iris\"],[\"VariantName\",\"AllTraffic\"]]', '[]', 0)")
        for res, n in counts.items():
            out.executemany("INSERT INTO metric_points VALUES (1, ?, ?, ?)",
                            ((res, 1_800_000_000 + k * res, sample[res]) for k in range(n)))
        out.commit()
        out.execute("VACUUM")
        out.close()
        return os.path.getsize(path)

    empty = size_with({})
    day = size_with({60: 1440, 300: 288, 3600: 24}) - empty
    held = size_with({1: 10_800}) - empty
    print(f"one busy variant on disk: {day / 1024:.0f} KiB a day (1,440 one-minute, 288 "
          f"five-minute and 24 one-hour datapoints), plus {held / 1024 / 1024:.1f} MiB of "
          f"1-second datapoints held at any time (3 hours)")
    steady = size_with({1: 10_800, 60: 1440 * 15, 300: 288 * 63, 3600: 24 * 455}) - empty
    print(f"at full retention (3 h, 15, 63 and 455 days): {steady / 1024 / 1024:.1f} MiB")
    for server in servers.values():
        server.stop()


if __name__ == "__main__":
    main()
