#!/usr/bin/env python3
"""Write the pipeline example's artifacts from the iris model:

- scaler/scaler.csv: the standard scaling the preprocessor applies, one row of means and one
  of standard deviations (population, as scikit-learn's StandardScaler) of the iris data
  set's four features;
- model/model.onnx: examples/iris/model/model.onnx taking the scaled features instead of
  the raw ones (the scaling folded into its first layer: x = z * std + mean, so
  x @ W1 + b1 = z @ (std[:, None] * W1) + (mean @ W1 + b1)); the pipeline therefore answers
  exactly what the iris model alone answers;
- labels/labels.txt: the class names the postprocessor gives, in the model's output order.

    python3 -m venv /tmp/mk && /tmp/mk/bin/pip install numpy onnx
    /tmp/mk/bin/python examples/pipeline/make_model.py
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
IRIS = HERE.parent / "iris" / "model" / "model.onnx"
# The iris data set's feature means and population standard deviations (sepal length,
# sepal width, petal length, petal width, in cm).
MEAN = np.array([5.8433333, 3.0573333, 3.7580000, 1.1993333], dtype=np.float32)
STD = np.array([0.8253013, 0.4344110, 1.7594041, 0.7596926], dtype=np.float32)
LABELS = ["setosa", "versicolor", "virginica"]


def main() -> None:
    model = onnx.load(IRIS)
    weights = {i.name: i for i in model.graph.initializer}
    w1 = numpy_helper.to_array(weights["w1"]).astype(np.float32)
    b1 = numpy_helper.to_array(weights["b1"]).astype(np.float32)
    folded_w1 = (STD[:, None] * w1).astype(np.float32)
    folded_b1 = (MEAN @ w1 + b1).astype(np.float32)
    weights["w1"].CopyFrom(numpy_helper.from_array(folded_w1, "w1"))
    weights["b1"].CopyFrom(numpy_helper.from_array(folded_b1, "b1"))
    onnx.checker.check_model(model)
    onnx.save(model, HERE / "model" / "model.onnx")
    with open(HERE / "scaler" / "scaler.csv", "w") as f:
        f.write(",".join(f"{v:.7f}" for v in MEAN) + "\n")
        f.write(",".join(f"{v:.7f}" for v in STD) + "\n")
    (HERE / "labels" / "labels.txt").write_text("\n".join(LABELS) + "\n")


if __name__ == "__main__":
    main()
