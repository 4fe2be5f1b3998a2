//! Plinth's botocore service model (`host/server/botocore/`), with which
//! `boto3.client("plinth", endpoint_url=...)` validates and sends Plinth's own operations
//! and members as well as SageMaker's:
//!
//! - `the_service_model_follows_the_member_table`: the model is generated from the member
//!   table of `host/policy/src/members.rs` and stays equal to it. Three steps:
//!   1. the table's dump (`members.json`, what `generate.py` reads) is what this build's
//!      table dumps;
//!   2. `generate.py --check`: the committed model is what the script generates (from
//!      `members.json`, `plinth-shapes.json` and `sagemaker-shapes.json`);
//!   3. every operation's input in `service-2.json`, read here without the script, has
//!      exactly the table's served and extension members (refused ones left out, so that
//!      boto3 refuses them before sending), of the table's kind, with the table's ranges as
//!      `min`/`max` and its supported values as `enum`.
//!
//!   After changing the table, `PLINTH_BLESS=1 cargo test -p plinth-server --test
//!   integration plinth_service::` rewrites `members.json` and runs `generate.py`.
//! - `the_comparison_reports_drift`: step 3 is not vacuous: a range, a refused member, a
//!   missing extension, an enum, a number's type and a boolean's type changed in a copy of the
//!   model are each named.
//! - `boto3_plinth_client_end_to_end`: `tests/python/test_plinth_service.py` against a
//!   server with SigV4 credentials: models, an experiment, outcomes, alarms, events, shadow
//!   promotion through the `plinth` client, and its client-side refusals.
//!
//! Python comes from the repository's `.venv` (or `python3` for step 2): without it those
//! parts are skipped, unless `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use plinth_policy::members::{self, Form, Range, Shape, State};
use plinth_tests::{
    skipped, venv_python, Options, Server, ECHO_WASM, IRIS_MODEL_DIR, IRIS_WASM, WORKSPACE_ROOT,
};
use serde_json::{json, Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// The folder botocore is pointed at (`AWS_DATA_PATH`), and what it holds.
const MODEL_DIR: &str = "host/server/botocore";
const API_VERSION: &str = "2017-07-24";
const MEMBERS_JSON: &str = "members.json";
const GENERATE_PY: &str = "generate.py";

/// Set to `1` to rewrite `members.json` and the generated files instead of checking them.
const BLESS: &str = "PLINTH_BLESS";

const ACCESS_KEY: &str = "AKIDPLINTHSERVICE";
const SECRET_KEY: &str = "plinth-service-model-test-secret";

fn model_dir() -> PathBuf {
    Path::new(WORKSPACE_ROOT).join(MODEL_DIR)
}

fn blessing() -> bool {
    std::env::var(BLESS).as_deref() == Ok("1")
}

/// An interpreter for `generate.py`, which needs only the standard library.
fn any_python(test: &str) -> Option<PathBuf> {
    let venv = Path::new(WORKSPACE_ROOT).join(".venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    let found = Command::new("python3").arg("--version").output();
    if found.is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from("python3"));
    }
    skipped(
        test,
        "python3 (or .venv/bin/python) is missing",
        "install Python 3, or run `tests/run` to create .venv",
    )
}

// ---------------------------------------------------------------------------------------
// The member table as generate.py reads it.
// ---------------------------------------------------------------------------------------

fn state_name(state: State) -> &'static str {
    match state {
        State::Served => "Served",
        State::Refused => "Refused",
        State::Extension => "Extension",
    }
}

fn unbounded(range: &Range) -> bool {
    matches!(*range, Range::Number { min, max, .. } if min == f64::MIN && max == f64::MAX)
}

/// One member: `{"name", "state"}` and its form: `"integer"` or `"number"` (`{"min",
/// "max", "maxExcluded"?}`; `{}` for any number) with `"sagemaker"` (SageMaker's `{"min",
/// "max"}`) where Plinth's range is wider, `"oneOf"` (a string's supported values),
/// `"boolean"` (with `"oneOf"`, `["true"]` or `["false"]`, where Plinth supports one value),
/// `"map"`, or the name of the `"structure"` (or `"list"` item) whose members `shapes` lists.
fn member_json(
    name: &str,
    state: State,
    form: Form,
    sagemaker_range: Option<Range>,
    shapes: &mut BTreeMap<&'static str, Value>,
) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("state".into(), json!(state_name(state)));
    if let Some(Range::Integer { min, max }) = sagemaker_range {
        m.insert("sagemaker".into(), json!({"min": min, "max": max}));
    } else if let Some(Range::Number { min, max, .. }) = sagemaker_range {
        m.insert("sagemaker".into(), json!({"min": min, "max": max}));
    }
    match form {
        Form::Value => {}
        Form::Map => {
            m.insert("map".into(), json!(true));
        }
        Form::Number(Range::Integer { min, max }) => {
            m.insert("integer".into(), json!({"min": min, "max": max}));
        }
        Form::Number(range @ Range::Number { .. }) if unbounded(&range) => {
            m.insert("number".into(), json!({}));
        }
        Form::Number(Range::Number {
            min,
            max,
            max_excluded,
        }) => {
            let mut bounds = json!({"min": min, "max": max});
            if max_excluded {
                bounds["maxExcluded"] = json!(true);
            }
            m.insert("number".into(), bounds);
        }
        Form::OneOf(values) => {
            m.insert("oneOf".into(), json!(values));
        }
        Form::Boolean(only) => {
            m.insert("boolean".into(), json!(true));
            if let Some(value) = only {
                m.insert("oneOf".into(), json!([value.to_string()]));
            }
        }
        Form::Structure(shape) => {
            m.insert("structure".into(), json!(shape.name));
            shape_json(shape, shapes);
        }
        Form::List(shape) => {
            m.insert("list".into(), json!(shape.name));
            shape_json(shape, shapes);
        }
    }
    Value::Object(m)
}

fn shape_json(shape: &'static Shape, shapes: &mut BTreeMap<&'static str, Value>) {
    if shapes.contains_key(shape.name) {
        return;
    }
    // Placeholder first: a structure never contains itself, but be safe.
    shapes.insert(shape.name, Value::Null);
    let members: Vec<Value> = shape
        .members
        .iter()
        .map(|m| member_json(m.name, m.state, m.form, m.sagemaker_range, shapes))
        .collect();
    shapes.insert(shape.name, Value::Array(members));
}

/// `members.json`: every operation's input members (in the table's order) and the
/// structures they name, by the table's shape names.
fn table_dump() -> String {
    let mut operations = BTreeMap::new();
    let mut shapes = BTreeMap::new();
    for op in members::operations() {
        let top: Vec<Value> = members::rows()
            .filter(|r| r.operation == op && !r.path.contains('.'))
            .map(|r| member_json(&r.path, r.state, r.form, r.sagemaker_range, &mut shapes))
            .collect();
        operations.insert(op, Value::Array(top));
    }
    let dump = json!({
        "$comment": "The member table of host/policy/src/members.rs, for generate.py. Written \
                     by tests/suites/plinth_service.rs (PLINTH_BLESS=1); do not edit.",
        "operations": operations,
        "shapes": shapes,
    });
    serde_json::to_string_pretty(&dump).expect("the dump serializes") + "\n"
}

// ---------------------------------------------------------------------------------------
// The service model against the table.
// ---------------------------------------------------------------------------------------

/// Every member of `shape` (a structure of the model), by path as `members::rows` writes
/// paths, with the shape it targets: members of structures and of list items follow their
/// parent.
fn model_members(
    shapes: &Map<String, Value>,
    shape: &str,
    prefix: &str,
    out: &mut Vec<(String, Value)>,
) {
    assert!(
        prefix.len() < 1000,
        "{prefix}: the model's shapes nest without end"
    );
    let Some(members) = shapes[shape]["members"].as_object() else {
        return;
    };
    for (name, member) in members {
        let target_name = member["shape"].as_str().unwrap_or_default();
        let Some(target) = shapes.get(target_name) else {
            out.push((format!("{prefix}{name}"), json!({"type": "missing shape"})));
            continue;
        };
        let path = format!("{prefix}{name}");
        let mut seen = target.clone();
        if target["type"] == "list" {
            // A list of plain values is compared by its items' type.
            let item = target["member"]["shape"].as_str().unwrap_or_default();
            seen["itemType"] = shapes.get(item).map_or(Value::Null, |s| s["type"].clone());
        }
        out.push((path.clone(), seen));
        match target["type"].as_str() {
            Some("structure") => model_members(shapes, target_name, &format!("{path}."), out),
            Some("list") => {
                let item = target["member"]["shape"].as_str().unwrap_or_default();
                if shapes.get(item).is_some_and(|s| s["type"] == "structure") {
                    model_members(shapes, item, &format!("{path}[]."), out);
                }
            }
            _ => {}
        }
    }
}

/// What is wrong with `target` (the model's shape for a member) given the table's form.
fn compare_form(form: Form, target: &Value) -> Option<String> {
    let kind = target["type"].as_str().unwrap_or_default();
    let has = |k: &str| target.get(k).is_some();
    let numeric = matches!(kind, "integer" | "long" | "float" | "double" | "timestamp");
    let bounds = |min: f64, max: f64| -> Option<String> {
        let (lo, hi) = (target["min"].as_f64(), target["max"].as_f64());
        (lo != Some(min) || hi != Some(max)).then(|| {
            format!(
                "the table's range is {min} to {max}; the model's min/max are {} and {}",
                target["min"], target["max"]
            )
        })
    };
    match form {
        Form::Structure(_) if kind != "structure" => Some(format!("a structure, not {kind}")),
        Form::List(_) if kind != "list" => Some(format!("a list of structures, not {kind}")),
        Form::Map if kind != "map" => Some(format!("a map, not {kind}")),
        Form::Structure(_) | Form::List(_) | Form::Map => None,
        Form::Number(Range::Integer { min, max }) => {
            if !matches!(kind, "integer" | "long") {
                return Some(format!(
                    "a whole number in the table; the model says {kind}"
                ));
            }
            bounds(min as f64, max as f64)
        }
        Form::Number(range @ Range::Number { min, max, .. }) => {
            if !matches!(kind, "float" | "double" | "timestamp") {
                return Some(format!("a number in the table; the model says {kind}"));
            }
            if unbounded(&range) {
                (has("min") || has("max"))
                    .then(|| "any number in the table; the model has a min or max".into())
            } else {
                bounds(min, max)
            }
        }
        Form::Boolean(_) => (kind != "boolean" || has("enum"))
            .then(|| format!("a boolean in the table; the model says {kind}")),
        Form::OneOf(values) => match kind {
            "string" => {
                let model: Vec<&str> = target["enum"]
                    .as_array()
                    .map(|e| e.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let (mut want, mut got) = (values.to_vec(), model);
                want.sort_unstable();
                got.sort_unstable();
                (want != got).then(|| {
                    format!(
                        "the table supports {values:?}; the model's enum is {}",
                        target["enum"]
                    )
                })
            }
            other => Some(format!(
                "the table supports {values:?}; the model says {other}"
            )),
        },
        Form::Value if numeric => Some(format!(
            "the model says {kind}, but the table has no range for it"
        )),
        Form::Value if kind == "boolean" => {
            Some("a boolean in the model; the table types it as a string (use .boolean())".into())
        }
        // A list of strings (IncludeInferenceResponseIn): its values are checked by the
        // operation.
        Form::Value if kind == "list" && target["itemType"] == "string" => None,
        Form::Value if kind != "string" => {
            Some(format!("a string in the table; the model says {kind}"))
        }
        Form::Value => None,
    }
}

/// Every difference between `service-2.json` and the table.
fn model_problems(model: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let metadata = &model["metadata"];
    for (key, want) in [
        ("protocol", "json"),
        ("jsonVersion", "1.1"),
        ("targetPrefix", "SageMaker"),
        // What host/server/src/sigv4.rs verifies credential scopes against.
        ("signingName", "sagemaker"),
        ("serviceId", "Plinth"),
        ("apiVersion", API_VERSION),
    ] {
        if metadata[key] != want {
            problems.push(format!("metadata.{key} is {}, not {want:?}", metadata[key]));
        }
    }
    let shapes = model["shapes"].as_object().expect("the model has shapes");
    let operations = model["operations"]
        .as_object()
        .expect("the model has operations");
    let table_ops: Vec<&str> = members::operations().collect();
    for name in operations.keys() {
        if !table_ops.contains(&name.as_str()) {
            problems.push(format!(
                "{name}: in the model, not an operation of the table"
            ));
        }
    }
    for op in table_ops {
        let Some(input) = operations
            .get(op)
            .and_then(|o| o["input"]["shape"].as_str())
        else {
            problems.push(format!(
                "{op}: an operation of the table, not in the model (with an input)"
            ));
            continue;
        };
        let mut in_model = Vec::new();
        model_members(shapes, input, "", &mut in_model);
        let in_model: BTreeMap<String, Value> = in_model.into_iter().collect();
        let rows: BTreeMap<String, members::Row> = members::rows()
            .filter(|r| r.operation == op)
            .map(|r| (r.path.clone(), r))
            .collect();
        for path in in_model.keys() {
            match rows.get(path) {
                None => problems.push(format!("{op} {path}: in the model, not in the table")),
                Some(r) if r.state == State::Refused => problems.push(format!(
                    "{op} {path}: refused by the table, so the model must leave it out"
                )),
                Some(_) => {}
            }
        }
        for (path, row) in &rows {
            if row.state == State::Refused {
                continue;
            }
            let Some(target) = in_model.get(path) else {
                problems.push(format!(
                    "{op} {path}: {} in the table, not in the model",
                    row.state.as_str()
                ));
                continue;
            };
            if let Some(problem) = compare_form(row.form, target) {
                problems.push(format!("{op} {path}: {problem}"));
            }
        }
    }
    problems
}

/// Run `generate.py` (with `--check` unless blessing); panics with its output on failure.
fn run_generate(python: &Path) {
    let mut command = Command::new(python);
    command.arg(model_dir().join(GENERATE_PY));
    if !blessing() {
        command.arg("--check");
    }
    let output = command.output().expect("run generate.py");
    assert!(
        output.status.success(),
        "{} {}failed ({}): the committed service model is not what generate.py \
         writes.\nstdout:\n{}\nstderr:\n{}",
        GENERATE_PY,
        if blessing() { "" } else { "--check " },
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_service_model_follows_the_member_table() {
    let test = "the_service_model_follows_the_member_table";
    // 1. members.json is this build's table.
    let dump = table_dump();
    let path = model_dir().join(MEMBERS_JSON);
    if blessing() {
        std::fs::write(&path, &dump).expect("write members.json");
    } else {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == dump,
            "{} is not the member table of host/policy/src/members.rs; regenerate it and \
             the service model with `{BLESS}=1 cargo test -p plinth-server --test \
             integration plinth_service::`",
            path.display()
        );
    }
    // 2. The committed model is what generate.py makes of it.
    if let Some(python) = any_python(test) {
        run_generate(&python);
    }
    // 3. The model's inputs are the table's, read straight from service-2.json.
    let service = model_dir()
        .join("plinth")
        .join(API_VERSION)
        .join("service-2.json");
    let text = std::fs::read_to_string(&service)
        .unwrap_or_else(|e| panic!("read {}: {e}", service.display()));
    let model: Value = serde_json::from_str(&text).expect("service-2.json is JSON");
    let problems = model_problems(&model);
    assert!(
        problems.is_empty(),
        "{} differs from the member table in host/policy/src/members.rs:\n{}\nRegenerate it \
         with `{BLESS}=1 cargo test -p plinth-server --test integration plinth_service::`",
        service.display(),
        problems.join("\n")
    );
}

/// The check above fails on drift: a range, a refused member, a missing extension, an
/// enum, a number's type and a boolean's type changed in a copy of the model are each
/// reported.
#[test]
fn the_comparison_reports_drift() {
    let service = model_dir()
        .join("plinth")
        .join(API_VERSION)
        .join("service-2.json");
    let text = std::fs::read_to_string(&service)
        .unwrap_or_else(|e| panic!("read {}: {e}", service.display()));
    let model: Value = serde_json::from_str(&text).expect("service-2.json is JSON");
    let shapes = &model["shapes"];
    let target = |shape: &str, member: &str| -> String {
        shapes[shape]["members"][member]["shape"]
            .as_str()
            .unwrap_or_else(|| panic!("{shape}.{member} is in the model"))
            .to_string()
    };
    let queue = target("ProductionVariant", "PlinthMaxQueueLength");
    let mode = target("ContainerDefinition", "Mode");
    let outcome = target("PlinthOutcome", "Value");
    let graphs = target("PlinthLimits", "AllowGraphsFromBytes");
    let mut drifted = model.clone();
    let s = &mut drifted["shapes"];
    s[&queue]["max"] = json!(999);
    s["CreateEndpointConfigInput"]["members"]["ExplainerConfig"] = json!({"shape": "Boolean"});
    s["PlinthLimits"]["members"]
        .as_object_mut()
        .expect("PlinthLimits has members")
        .remove("InvocationTimeoutInSeconds");
    s[&mode]["enum"] = json!(["SingleModel"]);
    s[&outcome]["type"] = json!("integer");
    s[&graphs]["type"] = json!("string");
    let problems = model_problems(&drifted).join("\n");
    for expected in [
        "CreateEndpointConfig ProductionVariants[].PlinthMaxQueueLength: the table's range is 0",
        "CreateEndpointConfig ShadowProductionVariants[].PlinthMaxQueueLength: the table's range",
        "CreateEndpointConfig ExplainerConfig: refused by the table",
        "CreateModel PlinthLimits.InvocationTimeoutInSeconds: Plinth extension in the table",
        "CreateModel PrimaryContainer.Mode: the table supports [\"SingleModel\", \"MultiModel\"]",
        "RecordInferenceOutcomes Outcomes[].Value: a number in the table; the model says integer",
        "CreateModel PlinthLimits.AllowGraphsFromBytes: a boolean in the table; the model says string",
    ] {
        assert!(
            problems.contains(expected),
            "expected a problem {expected:?}; got:\n{problems}"
        );
    }
    assert_eq!(model_problems(&model), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// boto3 end to end.
// ---------------------------------------------------------------------------------------

#[test]
fn boto3_plinth_client_end_to_end() {
    let test = "boto3_plinth_client_end_to_end";
    let Some(python) = venv_python(test) else {
        return;
    };
    let credentials = plinth_tests::credentials_toml(ACCESS_KEY, SECRET_KEY);
    let server = Server::start_with(
        BIN,
        Options {
            credentials: Some(credentials),
            ..Options::default()
        },
    );
    let model_dir = model_dir();
    server.run_python(
        &python,
        "test_plinth_service.py",
        &[
            ("PLINTH_ACCESS_KEY", ACCESS_KEY),
            ("PLINTH_SECRET_KEY", SECRET_KEY),
            ("IRIS_WASM", IRIS_WASM),
            ("IRIS_MODEL_DIR", IRIS_MODEL_DIR),
            ("ECHO_WASM", ECHO_WASM),
            // What the README tells users to set.
            ("AWS_DATA_PATH", model_dir.to_str().expect("a UTF-8 path")),
        ],
    );
}
