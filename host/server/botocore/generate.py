#!/usr/bin/env python3
"""Generates Plinth's botocore service model, `plinth/2017-07-24/`: `service-2.json`,
`paginators-1.json` and `waiters-2.json`, with which `boto3.client("plinth",
endpoint_url=...)` validates and sends SageMaker's operations as Plinth serves them and
Plinth's own.

It reads three files beside it, and nothing else (only the standard library):

  members.json           the member table of host/policy/src/members.rs: per operation, the
                         input members Plinth serves, refuses or adds, their ranges and
                         supported values. Written by tests/suites/plinth_service.rs
                         (PLINTH_BLESS=1); never edited by hand.
  plinth-shapes.json     hand-written, in botocore's syntax: the metadata, Plinth's own
                         operations and shapes, the members Plinth adds to SageMaker's shapes
                         ("add"), the members of SageMaker's output shapes Plinth returns
                         ("keep") and the errors of each operation.
  sagemaker-shapes.json  the parts of botocore's `sagemaker` model this generation uses
                         (operations, shapes with the members used, paginators, waiters),
                         copied from the installed botocore by --refresh. Kept in the
                         repository so that the output does not change with the botocore a
                         machine happens to have.

How the model is made:

  * Inputs follow the table. A served member is SageMaker's (its shape and documentation
    from sagemaker-shapes.json); a refused one is left out, so that botocore's client-side
    validation refuses it ("Unknown parameter") before anything is sent; an extension comes
    from plinth-shapes.json. Where the table gives a range, the member's shape has exactly
    that `min`/`max` (botocore itself checks only `min`), and where Plinth's range is wider
    than SageMaker's the documentation gives both; where it names the values Plinth
    supports of a string, that is the `enum` (of a boolean, the documentation says which). A SageMaker shape that Plinth narrows becomes
    a shape of its own, `Plinth<Name>`, and the member's documentation says what Plinth
    accepts.
  * Outputs are SageMaker's output shapes cut to the members Plinth returns, plus Plinth's.
  * Every operation answers with `ValidationException` and the errors plinth-shapes.json
    lists (SageMaker's `ResourceInUse`, `ResourceLimitExceeded`; `ResourceNotFound` is
    defined for code written against SageMaker's client, though Plinth answers a missing
    resource with `ValidationException`, as SageMaker does for these operations).

Usage:

  generate.py            write the generated files
  generate.py --check    exit 1, showing the difference, if the committed files are not
                         what it generates
  generate.py --refresh  copy sagemaker-shapes.json afresh from the installed botocore
                         (`.venv/bin/python generate.py --refresh`), then write

Output is deterministic: objects' keys sorted, except the members of a structure, which
keep the table's (or SageMaker's) order.
"""

import copy
import difflib
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = "plinth"
MEMBERS = os.path.join(HERE, "members.json")
PLINTH = os.path.join(HERE, "plinth-shapes.json")
SAGEMAKER = os.path.join(HERE, "sagemaker-shapes.json")

NUMERIC = ("integer", "long", "float", "double", "timestamp")


class GenerationError(Exception):
    """Something in the inputs that does not fit together; the message says what to do."""


def canonical(value, keep_order=False):
    """`value` with every object's keys sorted, except a structure's members (and the
    members Plinth adds to one), which keep their order."""
    if isinstance(value, dict):
        items = value.items() if keep_order else sorted(value.items())
        return {k: canonical(v, k in ("members", "add")) for k, v in items}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def dumps(value):
    return json.dumps(canonical(value), indent=2, ensure_ascii=False) + "\n"


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def number(x):
    """A bound as JSON writes it best: whole numbers without a fraction."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    return x


def paragraph(text):
    return f"<p>{text}</p>"


# ---------------------------------------------------------------------------------------
# SageMaker's model: from the snapshot, or (--refresh) from botocore, recording what is used.
# ---------------------------------------------------------------------------------------


class SageMaker:
    """Reads SageMaker's operations and shapes (from botocore or the snapshot), noting what
    it read, so that `snapshot()` holds exactly what the generation used."""

    def __init__(self, data):
        self.data = data
        self.used_operations = set()
        self.used_shapes = {}  # name -> set of members read (for structures)

    def operation(self, name):
        if name not in self.data["operations"]:
            raise GenerationError(
                f"SageMaker operation {name} is not in sagemaker-shapes.json; run "
                "`.venv/bin/python generate.py --refresh`"
            )
        self.used_operations.add(name)
        return copy.deepcopy(self.data["operations"][name])

    def shape(self, name):
        """The shape without its members (a structure's are read with `member`)."""
        if name not in self.data["shapes"]:
            raise GenerationError(
                f"SageMaker shape {name} is not in sagemaker-shapes.json; run "
                "`.venv/bin/python generate.py --refresh`"
            )
        self.used_shapes.setdefault(name, set())
        shape = copy.deepcopy(self.data["shapes"][name])
        shape.pop("members", None)
        return shape

    def member(self, shape, name):
        members = self.data["shapes"].get(shape, {}).get("members", {})
        if name not in members:
            raise GenerationError(
                f"{shape}.{name} is not in SageMaker's model as sagemaker-shapes.json has "
                "it; if botocore has it, run `.venv/bin/python generate.py --refresh`"
            )
        self.used_shapes.setdefault(shape, set()).add(name)
        return copy.deepcopy(members[name])

    def required(self, shape):
        return list(self.data["shapes"][shape].get("required", []))

    def snapshot(self, botocore_version):
        shapes = {}
        for name, used in self.used_shapes.items():
            shape = copy.deepcopy(self.data["shapes"][name])
            if "members" in shape:
                shape["members"] = {k: v for k, v in shape["members"].items() if k in used}
                required = [r for r in shape.get("required", []) if r in used]
                shape.pop("required", None)
                if required:
                    shape["required"] = required
            shapes[name] = shape
        operations = {n: self.data["operations"][n] for n in self.used_operations}
        paginators = {
            n: p for n, p in self.data["paginators"].items() if n in self.used_operations
        }
        waiters = {
            n: w
            for n, w in self.data["waiters"].items()
            if w["operation"] in self.used_operations
        }
        return {
            "$comment": "The parts of botocore's sagemaker model (service-2, paginators-1, "
            "waiters-2) that generate.py uses. Copied by `generate.py --refresh`; do not edit.",
            "botocore": botocore_version,
            "operations": operations,
            "paginators": paginators,
            "shapes": shapes,
            "waiters": waiters,
        }


def botocore_sagemaker():
    """SageMaker's model, paginators and waiters from the installed botocore."""
    try:
        import botocore
        import botocore.loaders
    except ImportError:
        sys.exit(
            "generate.py --refresh reads botocore's sagemaker model: run it with a Python "
            "that has boto3 (.venv/bin/python)"
        )
    loader = botocore.loaders.create_loader()
    model = loader.load_service_model("sagemaker", "service-2")
    data = {
        "operations": model["operations"],
        "shapes": model["shapes"],
        "paginators": loader.load_service_model("sagemaker", "paginators-1")["pagination"],
        "waiters": loader.load_service_model("sagemaker", "waiters-2")["waiters"],
    }
    # Plain dicts: botocore's are OrderedDicts, whose equality depends on key order.
    return json.loads(json.dumps(data)), botocore.__version__


# ---------------------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------------------


def describe_range(member):
    if "integer" in member or "number" in member:
        bounds = member.get("integer", member.get("number"))
        if not bounds:
            return None
        low, high = number(bounds["min"]), number(bounds["max"])
        less = "less than " if bounds.get("maxExcluded") else ""
        sagemaker = member.get("sagemaker")
        if sagemaker:
            wider = f" (SageMaker: {number(sagemaker['min'])} to {number(sagemaker['max'])})"
        else:
            wider = ""
        return f"Plinth accepts {low} to {less}{high}{wider}."
    if "oneOf" in member:
        values = ", ".join(f"<code>{v}</code>" for v in member["oneOf"])
        return f"Plinth supports {values} only."
    return None


class Builder:
    def __init__(self, table, plinth, sagemaker):
        self.table = table
        self.plinth = plinth
        self.sm = sagemaker
        self.shapes = {}

    # -- shapes --

    def is_plinth(self, name):
        return name in self.plinth["shapes"]

    def put(self, name, shape):
        if name in self.shapes and self.shapes[name] != shape:
            raise GenerationError(
                f"shape {name} comes out two ways:\n{json.dumps(self.shapes[name])}\n"
                f"{json.dumps(shape)}\n(a shape used in places the table treats apart "
                "needs a name of its own in plinth-shapes.json)"
            )
        self.shapes[name] = shape

    def definition(self, name):
        """A shape's definition without its members: Plinth's, or SageMaker's."""
        if self.is_plinth(name):
            shape = copy.deepcopy(self.plinth["shapes"][name])
            shape.pop("members", None)
            return shape
        return self.sm.shape(name)

    def plinth_member(self, shape, name):
        if self.is_plinth(shape):
            members = self.plinth["shapes"][shape].get("members", {})
        else:
            members = self.plinth["sagemaker"].get(shape, {}).get("add", {})
        if name not in members:
            where = "shapes" if self.is_plinth(shape) else "sagemaker." + shape + ".add"
            raise GenerationError(
                f"{shape}.{name} is a Plinth extension in the member table; describe it "
                f"in plinth-shapes.json ({where})"
            )
        return copy.deepcopy(members[name])

    # -- inputs: the member table decides --

    def input_structure(self, name, members, at):
        """Put structure `name` with the table's served and extension `members`."""
        shape = self.definition(name)
        if shape.get("type") != "structure":
            raise GenerationError(f"{at}: {name} is not a structure")
        out = {}
        for m in members:
            path = f"{at}{m['name']}"
            if m["state"] == "Refused":
                continue
            if m["state"] == "Served":
                if self.is_plinth(name):
                    raise GenerationError(f"{path}: a served member in Plinth's shape {name}")
                ref = self.sm.member(name, m["name"])
            else:
                ref = self.plinth_member(name, m["name"])
            out[m["name"]] = self.input_member(ref, m, path)
        if self.is_plinth(name):
            declared = self.plinth["shapes"][name].get("members", {})
        else:
            declared = self.plinth["sagemaker"].get(name, {}).get("add", {})
            if "keep" in self.plinth["sagemaker"].get(name, {}):
                raise GenerationError(
                    f"{name}: an input shape follows the member table; drop its `keep`"
                )
        for extra in declared:
            if extra not in out:
                raise GenerationError(
                    f"{at}{extra}: in plinth-shapes.json ({name}), but not a served or "
                    "extension member in the member table"
                )
        required = (
            self.plinth["shapes"][name].get("required", [])
            if self.is_plinth(name)
            else self.sm.required(name)
        )
        required = [r for r in required if r in out]
        shape.pop("required", None)
        if required:
            shape["required"] = required
        shape["members"] = out
        self.put(name, shape)

    def input_member(self, ref, m, path):
        target = ref["shape"]
        if "structure" in m:
            self.input_structure(target, self.table["shapes"][m["structure"]], f"{path}.")
            return ref
        if "list" in m:
            shape = self.definition(target)
            if shape.get("type") != "list":
                raise GenerationError(f"{path}: {target} is not a list")
            item = shape["member"]["shape"]
            self.input_structure(item, self.table["shapes"][m["list"]], f"{path}[].")
            self.put(target, shape)
            return ref
        shape = self.definition(target)
        narrowed = self.narrow(copy.deepcopy(shape), m, path)
        if "map" in m:
            self.leaf(shape["key"]["shape"])
            self.leaf(shape["value"]["shape"])
        elif shape.get("type") == "list":
            # A list of plain values (IncludeInferenceResponseIn): its item shape too.
            self.leaf(shape["member"]["shape"])
        if narrowed == shape:
            self.put(target, shape)
        elif self.is_plinth(target):
            # Plinth's own shapes take their ranges from the table.
            self.put(target, narrowed)
        else:
            ref["shape"] = "Plinth" + target
            self.put(ref["shape"], narrowed)
        note = describe_range(m)
        if note:
            ref["documentation"] = ref.get("documentation", "") + paragraph(note)
        return ref

    def narrow(self, shape, m, path):
        """`shape` with the table's range or values for member `m`."""
        kind = shape.get("type")
        if "integer" in m or "number" in m:
            bounds = m.get("integer", m.get("number"))
            allowed = ("integer", "long") if "integer" in m else ("float", "double", "timestamp")
            if kind not in allowed:
                raise GenerationError(f"{path}: the table has a range, the shape is a {kind}")
            shape.pop("min", None)
            shape.pop("max", None)
            if bounds:
                shape["min"] = number(bounds["min"])
                shape["max"] = number(bounds["max"])
        elif "boolean" in m:
            if kind != "boolean":
                raise GenerationError(f"{path}: a boolean in the table, a {kind} here")
        elif "oneOf" in m:
            if kind != "string":
                raise GenerationError(f"{path}: supported values of a {kind}")
            shape["enum"] = list(m["oneOf"])
        elif "map" in m:
            if kind != "map":
                raise GenerationError(f"{path}: a map in the table, a {kind} here")
        elif kind in NUMERIC:
            raise GenerationError(f"{path}: a {kind} without a range in the member table")
        return shape

    def leaf(self, name):
        self.put(name, self.definition(name))

    # -- outputs: what Plinth returns --

    def output_shape(self, name):
        if name in self.shapes:
            return
        shape = self.definition(name)
        kind = shape.get("type")
        if kind == "structure":
            if self.is_plinth(name):
                members = copy.deepcopy(self.plinth["shapes"][name].get("members", {}))
                required = self.plinth["shapes"][name].get("required", [])
            else:
                spec = self.plinth["sagemaker"].get(name, {})
                if "keep" not in spec:
                    raise GenerationError(
                        f"SageMaker's {name} is reached from an output: say in "
                        f"plinth-shapes.json (sagemaker.{name}.keep) which of its members "
                        "Plinth returns"
                    )
                members = {k: self.sm.member(name, k) for k in spec["keep"]}
                members.update(copy.deepcopy(spec.get("add", {})))
                required = self.sm.required(name)
            required = [r for r in required if r in members]
            shape.pop("required", None)
            if required:
                shape["required"] = required
            shape["members"] = members
            self.put(name, shape)
            for ref in members.values():
                self.output_shape(ref["shape"])
        else:
            self.put(name, shape)
            for key in ("member", "key", "value"):
                if key in shape:
                    self.output_shape(shape[key]["shape"])

    # -- the whole model --

    def build(self):
        table_ops = set(self.table["operations"])
        described = set(self.plinth["operations"])
        if table_ops != described:
            raise GenerationError(
                "the member table's operations and plinth-shapes.json's differ: "
                f"only in the table {sorted(table_ops - described)}, only in "
                f"plinth-shapes.json {sorted(described - table_ops)}"
            )
        operations = {}
        for name in sorted(table_ops):
            spec = self.plinth["operations"][name]
            if "input" in spec:
                op = {
                    "name": name,
                    "http": {"method": "POST", "requestUri": "/"},
                    "input": {"shape": spec["input"]},
                    "documentation": spec["documentation"],
                }
                if "output" in spec:
                    op["output"] = {"shape": spec["output"]}
            else:
                op = self.sm.operation(name)
            op["errors"] = [{"shape": e} for e in spec["errors"]]
            self.input_structure(op["input"]["shape"], self.table["operations"][name], "")
            operations[name] = op
        for op in operations.values():
            if "output" in op:
                self.output_shape(op["output"]["shape"])
        for name in self.plinth["exceptions"]:
            self.output_shape(name)
            self.shapes[name]["exception"] = True
        for op in operations.values():
            for error in op["errors"]:
                if not self.shapes.get(error["shape"], {}).get("exception"):
                    raise GenerationError(
                        f"{op['name']}: error {error['shape']} is not an exception"
                    )
        unused = set(self.plinth["shapes"]) - set(self.shapes)
        if unused:
            raise GenerationError(
                f"plinth-shapes.json defines shapes nothing uses: {sorted(unused)}"
            )
        service = {
            "version": "2.0",
            "metadata": self.plinth["metadata"],
            "documentation": self.plinth["documentation"],
            "operations": operations,
            "shapes": self.shapes,
        }
        paginators = {
            n: p for n, p in self.sm.data["paginators"].items() if n in operations
        }
        paginators.update(self.plinth["paginators"])
        waiters = {
            n: w for n, w in self.sm.data["waiters"].items() if w["operation"] in operations
        }
        return {
            "service-2.json": service,
            "paginators-1.json": {"pagination": paginators},
            "waiters-2.json": {"version": 2, "waiters": waiters},
        }


def generate(refresh=False):
    """{relative path: text} for every generated file (and, refreshing, the snapshot)."""
    table = load(MEMBERS)
    plinth = load(PLINTH)
    if refresh:
        data, version = botocore_sagemaker()
    else:
        data, version = load(SAGEMAKER), None
    sagemaker = SageMaker(data)
    files = Builder(table, plinth, sagemaker).build()
    api = plinth["metadata"]["apiVersion"]
    out = {os.path.join(SERVICE, api, name): dumps(v) for name, v in files.items()}
    if refresh:
        out["sagemaker-shapes.json"] = dumps(sagemaker.snapshot(version))
    return out


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".generate-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv):
    args = set(argv[1:])
    if args - {"--check", "--refresh"} or args == {"--check", "--refresh"}:
        sys.exit(__doc__)
    try:
        files = generate(refresh="--refresh" in args)
    except GenerationError as e:
        sys.exit(f"generate.py: {e}")
    if "--check" in args:
        stale = []
        for rel, text in sorted(files.items()):
            path = os.path.join(HERE, rel)
            try:
                with open(path, encoding="utf-8") as f:
                    committed = f.read()
            except FileNotFoundError:
                committed = ""
            if committed != text:
                stale.append(rel)
                diff = difflib.unified_diff(
                    committed.splitlines(), text.splitlines(), rel, "generated", lineterm="", n=2
                )
                print("\n".join(list(diff)[:60]))
        if stale:
            print(
                f"generate.py --check: {', '.join(stale)} differ from what generate.py "
                "writes; run `python3 host/server/botocore/generate.py` (after changing the "
                "member table: `PLINTH_BLESS=1 cargo test -p plinth-server --test "
                "integration plinth_service::`)",
                file=sys.stderr,
            )
            return 1
        return 0
    for rel, text in sorted(files.items()):
        write(os.path.join(HERE, rel), text)
        print(f"wrote {os.path.relpath(os.path.join(HERE, rel))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
