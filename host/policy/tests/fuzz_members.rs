//! Property-based fuzzing of the awsJson member checker (`members::check_input`), which reads
//! every control-plane request body: for every operation, no JSON value makes it panic, an
//! error names a member that is in the input, inputs built from the member table within its
//! rules pass, and one fault planted in such an input is the one reported, at its path.
//!
//! Each property runs `PLINTH_FUZZ_CASES` cases (100,000 unless set):
//! `PLINTH_FUZZ_CASES=1000000 cargo test -p plinth-policy --test fuzz_members`. Failures are
//! not persisted to files; proptest prints the minimal input.

use plinth_policy::members::{self, check_input, Form, Problem, Range, Row, State};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Value};

/// `PLINTH_FUZZ_CASES` cases (100,000 by default), no failure files in the source tree.
fn config() -> ProptestConfig {
    let cases = std::env::var("PLINTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every member name in the table, so that random objects reach the nested checks.
fn member_names() -> Vec<String> {
    let mut names: Vec<String> = members::rows()
        .map(|r| {
            r.path
                .rsplit(['.', ']'])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Any JSON value, its keys mostly the table's member names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            0.5,
            -1.0,
            1e300,
            1e-300,
            2.5e11,
            9.007_199_254_740_993e15
        ])
        .prop_map(Value::from),
        "[a-zA-Z_]{0,8}".prop_map(Value::String),
        prop::sample::select(vec!["SingleModel", "RANDOM", "true", "1"]).prop_map(Value::from),
    ];
    let names = member_names();
    leaf.prop_recursive(5, 64, 6, move |inner| {
        let key = prop_oneof![
            4 => prop::sample::select(names.clone()),
            1 => "[a-zA-Z]{0,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Walk `path` (`A.B[0].C`, the last key perhaps a JSON string: `A."b.c"`) in `value`.
fn at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let quoted = path.ends_with('"').then(|| {
        path.match_indices('"')
            .map(|(i, _)| i)
            .filter(|&i| i == 0 || path.as_bytes()[i - 1] == b'.')
            .find_map(|i| {
                serde_json::from_str::<String>(&path[i..])
                    .ok()
                    .map(|key| (i, key))
            })
    });
    let (path, last) = match quoted {
        Some(Some((0, key))) => return value.as_object()?.get(&key),
        Some(Some((i, key))) => (&path[..i - 1], Some(key)),
        Some(None) => return None,
        None => (path, None),
    };
    let mut here = value;
    for part in path.split('.') {
        let (key, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        here = here.as_object()?.get(key)?;
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            here = here.as_array()?.get(i)?;
        }
    }
    match last {
        Some(key) => here.as_object()?.get(&key),
        None => Some(here),
    }
}

fn operations() -> Vec<&'static str> {
    members::operations().collect()
}

proptest! {
    #![proptest_config(config())]

    /// Any JSON value, as the input of every operation (and one the table does not know):
    /// no panic, and an error names a member present in the input, at the start of its
    /// message.
    #[test]
    fn arbitrary_inputs_never_panic(
        input in prop_oneof![
            3 => json_value(),
            1 => prop::collection::vec((prop::sample::select(member_names()), json_value()), 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ],
    ) {
        for operation in operations().into_iter().chain(["NotAnOperation", ""]) {
            if let Err(e) = check_input(operation, &input) {
                prop_assert!(!e.path.is_empty(), "{operation}: {e:?}");
                prop_assert!(e.message.starts_with(&e.path), "{operation}: {e:?}");
                // An unknown key is named whatever its value; a member given `null` is absent.
                let found = at(&input, &e.path);
                let named = found.is_some_and(|v| e.problem == Problem::Unknown || !v.is_null());
                prop_assert!(named, "{operation}: {} not in {input}", e.path);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inputs built from the table.
// ---------------------------------------------------------------------------------------

/// A value the member's form accepts.
fn valid_value(form: Form) -> BoxedStrategy<Value> {
    match form {
        Form::Value => prop_oneof![
            4 => "[a-zA-Z0-9._/:-]{0,12}".prop_map(Value::String),
            // A string member given another type is the server's parse's to report.
            1 => any::<i32>().prop_map(Value::from),
        ]
        .boxed(),
        Form::Map => prop::collection::btree_map(
            prop_oneof![Just("CoreDumpConfig".to_owned()), "[A-Za-z_]{1,6}"],
            prop_oneof![
                "[a-z]{0,4}".prop_map(Value::String),
                Just(Value::from(1)),
                Just(Value::Null)
            ],
            0..3,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed(),
        Form::Number(Range::Integer { min, max }) => prop_oneof![
            (min..=max).prop_map(Value::from),
            Just(Value::from(min)),
            Just(Value::from(max)),
        ]
        .boxed(),
        Form::Number(Range::Number {
            min,
            max,
            max_excluded,
        }) => {
            let inside = if min == f64::MIN && max == f64::MAX {
                any::<f64>()
                    .prop_filter("finite", |x| x.is_finite())
                    .boxed()
            } else {
                (min..max).boxed()
            };
            let mut edges = vec![min];
            if !max_excluded {
                edges.push(max);
            }
            prop_oneof![
                inside.prop_map(Value::from),
                prop::sample::select(edges).prop_map(Value::from),
            ]
            .boxed()
        }
        Form::OneOf(values) => prop::sample::select(values).prop_map(Value::from).boxed(),
        Form::Boolean(Some(only)) => Just(Value::Bool(only)).boxed(),
        Form::Boolean(None) => any::<bool>().prop_map(Value::Bool).boxed(),
        Form::Structure(shape) => valid_object(shape.members).prop_map(Value::Object).boxed(),
        Form::List(shape) => prop::collection::vec(
            prop_oneof![
                4 => valid_object(shape.members).prop_map(Value::Object),
                // Items that are not structures are the server's parse's to report.
                1 => Just(Value::from(7)),
            ],
            0..3,
        )
        .prop_map(Value::Array)
        .boxed(),
    }
}

/// An object of `members` within the table's rules: each member not refused present or
/// not, some as `null` (absent).
fn valid_object(members: &'static [members::Member]) -> BoxedStrategy<Map<String, Value>> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = members
        .iter()
        .filter(|m| m.state != State::Refused)
        .map(|m| {
            let name = m.name.to_owned();
            prop_oneof![
                2 => Just(None),
                1 => Just(Some((name.clone(), Value::Null))),
                3 => valid_value(m.form).prop_map(move |v| Some((name.clone(), v))),
            ]
            .boxed()
        })
        .collect();
    fields
        .prop_map(|fields| fields.into_iter().flatten().collect())
        .boxed()
}

/// The top-level members of `operation`'s input, as a `Member` table is not public per
/// operation: its rows whose path has no parent.
fn top_level(operation: &str) -> Vec<Row> {
    members::rows()
        .filter(|r| r.operation == operation && !r.path.contains(['.', '[']))
        .collect()
}

/// A valid input of `operation`.
fn valid_input(operation: &'static str) -> BoxedStrategy<Value> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = top_level(operation)
        .into_iter()
        .filter(|r| r.state != State::Refused)
        .map(|r| {
            let name = r.path.clone();
            prop_oneof![
                1 => Just(None),
                3 => valid_value(r.form).prop_map(move |v| Some((name.clone(), v))),
            ]
            .boxed()
        })
        .collect();
    fields
        .prop_map(|f| Value::Object(f.into_iter().flatten().collect()))
        .boxed()
}

/// One fault: where it goes (a row's path, list items `[]`), the value planted, and the
/// problem it must be reported as.
#[derive(Debug, Clone)]
struct Fault {
    path: String,
    value: Value,
    problem: Problem,
}

/// The faults that can be planted at `row`: the member itself when refused; otherwise a
/// value its form refuses, and a key beside it that no shape has.
fn faults(row: &Row) -> Vec<Fault> {
    let fault = |path: &str, value: Value, problem| Fault {
        path: path.to_owned(),
        value,
        problem,
    };
    if row.state == State::Refused {
        return vec![fault(&row.path, serde_json::json!({}), Problem::Refused)];
    }
    let parent = row.path.rfind('.').map_or("", |i| &row.path[..=i]);
    let mut out = vec![fault(
        &format!("{parent}NotAMember"),
        Value::from(1),
        Problem::Unknown,
    )];
    let mut bad = |value: Value, problem| out.push(fault(&row.path, value, problem));
    match row.form {
        Form::Value | Form::Map => {}
        Form::Number(Range::Integer { min, max }) => {
            bad(Value::from(min as f64 - 1.0), Problem::Range);
            bad(Value::from(max as f64 + 1.0), Problem::Range);
            bad(Value::from(min as f64 + 0.5), Problem::Range);
            bad(Value::from("1"), Problem::Range);
            bad(Value::Bool(true), Problem::Range);
        }
        Form::Number(Range::Number {
            min,
            max,
            max_excluded,
        }) => {
            if min != f64::MIN {
                bad(Value::from(min - 1.0), Problem::Range);
                bad(Value::from(max + 1.0), Problem::Range);
            }
            if max_excluded {
                bad(Value::from(max), Problem::Range);
            }
            bad(Value::from("0.5"), Problem::Range);
            bad(serde_json::json!([1]), Problem::Range);
        }
        Form::OneOf(_) => {
            bad(Value::from("NotAValue"), Problem::Value);
            bad(Value::from(1), Problem::Value);
        }
        Form::Boolean(only) => {
            bad(Value::from("true"), Problem::Value);
            bad(Value::from(1), Problem::Value);
            if let Some(only) = only {
                bad(Value::Bool(!only), Problem::Value);
            }
        }
        Form::Structure(_) => bad(Value::from("x"), Problem::Value),
        Form::List(_) => bad(serde_json::json!({}), Problem::Value),
    }
    out
}

/// Plant `value` at `path` (list items `[]`: the first item, made a structure if needed)
/// in `input`; the reported path has `[0]` for `[]`.
fn plant(input: &mut Value, path: &str, value: Value) -> String {
    let mut here = input;
    let parts: Vec<&str> = path.split('.').collect();
    let mut reported = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let (key, list) = match part.strip_suffix("[]") {
            Some(key) => (key, true),
            None => (*part, false),
        };
        reported.push(if list {
            format!("{key}[0]")
        } else {
            key.to_owned()
        });
        if !here.is_object() {
            *here = Value::Object(Map::new());
        }
        let map = here.as_object_mut().expect("an object");
        if last {
            map.insert(key.to_owned(), value);
            break;
        }
        let slot = map.entry(key.to_owned()).or_insert(Value::Null);
        if list {
            if !slot
                .as_array()
                .is_some_and(|a| a.first().is_some_and(Value::is_object))
            {
                *slot = serde_json::json!([{}]);
            }
            here = &mut slot.as_array_mut().expect("an array")[0];
        } else {
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            here = slot;
        }
    }
    reported.join(".")
}

/// An operation, a valid input of it, and one fault from its rows.
fn planted() -> impl Strategy<Value = (&'static str, Value, Fault)> {
    prop::sample::select(operations()).prop_flat_map(|operation| {
        let faults: Vec<Fault> = members::rows()
            .filter(|r| r.operation == operation)
            .flat_map(|r| faults(&r))
            .collect();
        (
            Just(operation),
            valid_input(operation),
            prop::sample::select(faults),
        )
    })
}

proptest! {
    #![proptest_config(config())]

    /// Inputs built from the table within its rules pass, for every operation.
    #[test]
    fn valid_inputs_pass(
        (operation, input) in prop::sample::select(operations())
            .prop_flat_map(|op| (Just(op), valid_input(op))),
    ) {
        prop_assert_eq!(check_input(operation, &input), Ok(()), "{} {}", operation, input);
    }

    /// One fault planted in a valid input is reported, at its path, as its problem.
    #[test]
    fn a_planted_fault_is_the_one_reported((operation, mut input, fault) in planted()) {
        let path = plant(&mut input, &fault.path, fault.value.clone());
        let e = check_input(operation, &input)
            .err()
            .ok_or_else(|| TestCaseError::fail(format!("{operation} {input} was accepted")))?;
        prop_assert_eq!(&e.path, &path, "{} {}: {:?}", operation, input, e);
        prop_assert_eq!(e.problem, fault.problem, "{} {}: {:?}", operation, input, e);
        prop_assert!(e.message.starts_with(&path), "{:?}", e);
    }
}
