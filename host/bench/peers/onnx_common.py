"""What the peer servers of Plinth's benchmark suite share: one onnxruntime session per model
and the same pre- and post-processing as Plinth's plugins and the native reference server
(host/bench/src/bin/native_onnx.rs), on V2-protocol tensors.

Models are named on the command line as ``NAME=KIND:PATH``; KIND picks the graph's inputs and
output and the post-processing:

- ``iris``: input "input" f32 [N,4] -> output "probabilities" f32 [N,3];
- ``mlp``: input "input" f32 [N,784] -> output "output" f32 [N,10];
- ``minilm``: inputs "input_ids" and "attention_mask" i64 [1,n] ("token_type_ids" is filled
  with 0, "attention_mask" with 1 when absent) -> "last_hidden_state" mean-pooled under the
  mask and L2-normalised -> output "embedding" f32 [1,384].
"""

import socket
import sys
import threading
import time
import urllib.request

import numpy as np
import onnxruntime as ort

KINDS = {
    "iris": ("probabilities", "probabilities"),
    "mlp": ("output", "output"),
    "minilm": ("last_hidden_state", "embedding"),
}


def parse_model(spec):
    """``NAME=KIND:PATH`` -> (name, kind, path)."""
    name, _, rest = spec.partition("=")
    kind, _, path = rest.partition(":")
    if not name or kind not in KINDS or not path:
        sys.exit(f"bad --model {spec!r}: expected NAME=KIND:PATH, KIND one of {sorted(KINDS)}")
    return name, kind, path


class Runner:
    """An onnxruntime session (one intra-op thread: the suite pins each server to one core)
    and the kind's pre- and post-processing."""

    def __init__(self, kind, path, threads=1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.kind = kind
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.graph_output, self.output_name = KINDS[kind]

    def __call__(self, inputs):
        """``inputs``: name -> numpy array. Returns (output name, float32 array)."""
        if self.kind == "minilm":
            ids = np.asarray(inputs["input_ids"], dtype=np.int64)
            mask = inputs.get("attention_mask")
            mask = np.ones_like(ids) if mask is None else np.asarray(mask, dtype=np.int64)
            types = inputs.get("token_type_ids")
            types = np.zeros_like(ids) if types is None else np.asarray(types, dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            (hidden,) = self.session.run([self.graph_output], feeds)
            m = mask.astype(np.float32)[..., None]
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            norm = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            return self.output_name, (pooled / norm).astype(np.float32)
        x = np.asarray(inputs["input"], dtype=np.float32)
        (y,) = self.session.run([self.graph_output], {"input": x})
        return self.output_name, y


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def announce_when_ready(port, names, timeout=300):
    """In a thread: once every model answers ready on the V2 protocol, print the line the
    suite's start_server waits for."""

    def poll():
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending and time.monotonic() < deadline:
            url = f"http://127.0.0.1:{port}/v2/models/{pending[0]}/ready"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        pending.pop(0)
                        continue
            except OSError:
                pass
            time.sleep(0.2)
        if not pending:
            print(f"listening on http://127.0.0.1:{port}", flush=True)
        else:
            print(f"models not ready after {timeout}s: {pending}", file=sys.stderr, flush=True)

    threading.Thread(target=poll, daemon=True).start()
