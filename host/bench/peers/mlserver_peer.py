"""MLServer serving the benchmark suite's ONNX files with onnxruntime, for host/bench/suite.sh.

    python mlserver_peer.py --repository DIR [--parallel-workers 1] --model NAME=KIND:PATH ...

Writes an MLServer model repository under DIR (settings.json and one model-settings.json per
model, implementation `mlserver_runtime.OnnxRuntimeModel`), starts MLServer on a free port on
127.0.0.1 (HTTP; gRPC and metrics on free ports too), and prints
``listening on http://127.0.0.1:PORT`` once every model is ready. Requests use the V2
inference protocol: ``POST /v2/models/NAME/infer``.

One inference worker by default (MLServer's own default, `parallel_workers: 1`: the HTTP
process hands each request to one worker process); `--parallel-workers 0` runs inference in
the HTTP process instead. Per-request logging is off (`debug: false`), as on every server the
suite compares.
"""

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from onnx_common import announce_when_ready, free_port, parse_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--parallel-workers", type=int, default=1)
    args = parser.parse_args()
    models = [parse_model(spec) for spec in args.model]

    port = free_port()
    repo = args.repository
    repo.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": args.parallel_workers,
        "load_models_at_startup": True,
    }
    (repo / "settings.json").write_text(json.dumps(settings, indent=2))
    for name, kind, path in models:
        model_dir = repo / name
        model_dir.mkdir(exist_ok=True)
        (model_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "implementation": "mlserver_runtime.OnnxRuntimeModel",
                    "parameters": {"uri": str(Path(path).resolve()), "extra": {"kind": kind}},
                },
                indent=2,
            )
        )

    # The parallel worker processes import the runtime by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )

    from mlserver import MLServer
    from mlserver.cli.serve import load_settings

    async def serve():
        server_settings, model_settings = await load_settings(str(repo))
        server = MLServer(server_settings)
        announce_when_ready(port, [name for name, _, _ in models])
        await server.start(model_settings)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
