#!/usr/bin/env python3
"""Train a tiny MLP on the iris data set and write it as examples/iris/model/model.onnx.

The ONNX graph is written by hand from the learned weights, so the only dependencies are
numpy, onnx and scikit-learn:

    python3 -m venv /tmp/mkmodel
    /tmp/mkmodel/bin/pip install numpy onnx scikit-learn
    /tmp/mkmodel/bin/python examples/iris/make_model.py

Graph: input "input" float32 [N, 4] (sepal length, sepal width, petal length, petal width,
in cm) -> MatMul/Add/Relu -> MatMul/Add -> Softmax(axis=1) -> output "probabilities"
float32 [N, 3] (setosa, versicolor, virginica). Opset 13.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HIDDEN = 12
SEED = 0
OUT = Path(__file__).resolve().parent / "model" / "model.onnx"


def main() -> None:
    iris = load_iris()
    x = iris.data.astype(np.float32)
    y = iris.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=SEED, stratify=y
    )
    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        activation="relu",
        solver="lbfgs",
        max_iter=2000,
        random_state=SEED,
    )
    clf.fit(x_train, y_train)
    train_acc = clf.score(x_train, y_train)
    test_acc = clf.score(x_test, y_test)

    w1, w2 = (w.astype(np.float32) for w in clf.coefs_)
    b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)
    initializers = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h_mm"]),
        helper.make_node("Add", ["h_mm", "b1"], ["h_pre"]),
        helper.make_node("Relu", ["h_pre"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["logits_mm"]),
        helper.make_node("Add", ["logits_mm", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "iris_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="plinth-examples-iris",
        doc_string=f"iris MLP (4-{HIDDEN}-3, relu, softmax); test accuracy {test_acc:.3f}",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)

    # Check the hand-written graph against scikit-learn with a numpy forward pass.
    h = np.maximum(x @ w1 + b1, 0)
    logits = h @ w2 + b2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    max_diff = float(np.abs(probs - clf.predict_proba(x)).max())
    assert max_diff < 1e-4, f"forward pass differs from predict_proba by {max_diff}"

    OUT.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    print(f"train accuracy {train_acc:.3f}, test accuracy {test_acc:.3f} (30% hold-out, stratified)")
    print(f"max |numpy - predict_proba| = {max_diff:.2e}")
    print("first row", x[0].tolist(), "->", [round(float(p), 4) for p in probs[0]])


if __name__ == "__main__":
    main()
