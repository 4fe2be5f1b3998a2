"""Check one server's answer against the expected output of a model (expected.json, written by
models.py), for host/bench/suite.sh.

    python check_answer.py EXPECTED_JSON MODEL ANSWER_FILE

ANSWER_FILE is the body of a JSON answer in any of the suite's formats: Plinth's plugins and
the native reference (`{"predictions":[{"probabilities":[...]}]}`, `{"outputs":[[...]]}`,
`{"embedding":[...]}`) or the V2 inference protocol (`{"outputs":[{"data":[...]}]}`). Exits 0
when every number is within 1e-3 (absolute) of the expected one, else prints why and exits 1.
"""

import json
import sys


def numbers(answer):
    if "predictions" in answer:
        return [p for row in answer["predictions"] for p in row["probabilities"]]
    if "embedding" in answer:
        return answer["embedding"]
    outputs = answer.get("outputs")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        return outputs[0]["data"]
    if isinstance(outputs, list):
        return [v for row in outputs for v in row]
    raise ValueError(f"unrecognised answer: {json.dumps(answer)[:200]}")


def main():
    expected_path, model, answer_path = sys.argv[1:4]
    expected = json.load(open(expected_path))[model]
    try:
        with open(answer_path) as f:
            got = numbers(json.load(f))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        with open(answer_path, errors="replace") as f:
            print(f"not an answer ({e}): {f.read(300)}")
        sys.exit(1)
    if len(got) != len(expected):
        print(f"{len(got)} numbers, expected {len(expected)}")
        sys.exit(1)
    worst = max(abs(a - b) for a, b in zip(got, expected))
    if worst > 1e-3:
        print(f"differs from the expected output by up to {worst:.3g}")
        sys.exit(1)
    print(f"ok (max difference {worst:.2g})")


if __name__ == "__main__":
    main()
