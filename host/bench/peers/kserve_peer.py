"""KServe's Python model server serving the benchmark suite's ONNX files with onnxruntime, for
host/bench/suite.sh.

    python kserve_peer.py --model NAME=KIND:PATH ...

One `kserve.Model` per file (see onnx_common.py for the kinds and their processing), served
by `kserve.ModelServer` with one worker (uvicorn process) on a free port on 127.0.0.1 (its
REST server's hard-coded 0.0.0.0 is patched to loopback), gRPC off; prints ``listening on http://127.0.0.1:PORT`` once every model is ready. Requests use
the V2 inference protocol: ``POST /v2/models/NAME/infer``. Per-request logging is off
(latency logging and the access log), as on every server the suite compares.
"""

import argparse
import logging
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from onnx_common import Runner, announce_when_ready, free_port, parse_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", required=True)
    args = parser.parse_args()
    models = [parse_model(spec) for spec in args.model]
    # kserve parses sys.argv when imported: leave it nothing of ours to misread.
    sys.argv = sys.argv[:1]

    import uvicorn

    # KServe's REST server binds to 0.0.0.0; keep it on loopback like every other server here.
    config_init = uvicorn.Config.__init__

    def loopback_config(self, *a, **kw):
        kw["host"] = "127.0.0.1"
        config_init(self, *a, **kw)

    uvicorn.Config.__init__ = loopback_config

    import kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class OnnxRuntimeModel(kserve.Model):
        def __init__(self, name, kind, path):
            super().__init__(name)
            self.kind = kind
            self.path = path
            self.load()

        def load(self):
            self.runner = Runner(self.kind, self.path)
            self.ready = True
            return self.ready

        def predict(self, payload: InferRequest, headers=None, response_headers=None):
            inputs = {i.name: i.as_numpy() for i in payload.inputs}
            name, output = self.runner(inputs)
            out = InferOutput(
                name=name,
                shape=list(output.shape),
                datatype="FP32",
                data=output.reshape(-1).tolist(),
            )
            return InferResponse(
                response_id=payload.id or str(uuid.uuid4()),
                model_name=self.name,
                infer_outputs=[out],
            )

    port = free_port()
    served = [OnnxRuntimeModel(name, kind, path) for name, kind, path in models]
    announce_when_ready(port, [m.name for m in served])
    server = kserve.ModelServer(
        http_port=port,
        grpc_port=free_port(),
        workers=1,
        enable_grpc=False,
        enable_latency_logging=False,
    )
    for logger in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    server.start(served)


if __name__ == "__main__":
    main()
