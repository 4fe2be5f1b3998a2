//! Shadow testing: how a shadow variant's response compares with production's for the
//! same request, so that a dashboard can say "the candidate answers the same, or nearly
//! the same, or at least predicts the same class".
//!
//! This module owns [`compare`]: which format a body is in, and how two parsed bodies
//! compare. The parsing itself is `plinth-codec`'s, the one the guest SDK decodes requests
//! with. Three kinds of body:
//!
//! * JSON (`application/json`, `*+json`, and JSON Lines as an array of its lines):
//!   structures must match exactly (same keys, same array lengths, equal strings,
//!   booleans and nulls); only numbers are compared with a [`Tolerance`].
//! * Text (`text/csv`, `application/csv`, `text/plain`): lines of cells separated by
//!   commas (and, for `text/plain`, whitespace). Numeric cells are compared with the
//!   tolerance, other cells must be equal.
//! * NumPy `.npy` (`application/x-npy`): format versions 1–3, little-endian floats
//!   (`f4`, `f8`) and integers (`i1`–`i8`, `u1`–`u8`), C or Fortran order. Shapes must be
//!   equal; values are compared with the tolerance.
//!
//! A body of any other content type is sniffed: the NPY magic string, else JSON, else text.
//! Everything here is a plain function of the two bodies; nothing is kept between calls.

use plinth_codec::csv::{self, Cell};
use plinth_codec::{json, npy};
use serde::{Deserialize, Serialize};

/// How far apart two numbers may be and still count as close: `|shadow - production| <=
/// absolute + relative * |production|`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// The part of the allowance proportional to production's value.
    pub relative: f64,
    /// The fixed part of the allowance (matters near zero).
    pub absolute: f64,
}

impl Default for Tolerance {
    /// Relative 1e-4, absolute 1e-6: float32 noise passes, a changed model does not.
    fn default() -> Self {
        Self {
            relative: 1e-4,
            absolute: 1e-6,
        }
    }
}

/// The result of [`compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Comparison {
    /// The bodies are byte-for-byte equal and so are the content types (ignoring ASCII
    /// case and surrounding whitespace).
    pub exact: bool,
    /// Both bodies hold numbers in the same format and structure, every pair within the
    /// tolerance. `None` when neither body is numeric output (or the formats differ and
    /// either one is not); `Some(false)` when only one of them is.
    pub close: Option<bool>,
    /// Both bodies yield the same number of rows of scores with the same argmax (the first
    /// largest value) in every row. `None` when neither yields rows of numbers;
    /// `Some(false)` when only one does. Compared across formats too.
    pub argmax: Option<bool>,
}

/// Compare a shadow variant's response with production's for the same request.
pub fn compare(
    production: &[u8],
    production_type: &str,
    shadow: &[u8],
    shadow_type: &str,
    tolerance: Tolerance,
) -> Comparison {
    let exact = production == shadow
        && production_type
            .trim()
            .eq_ignore_ascii_case(shadow_type.trim());
    let (production_format, production) = parse(production, production_type);
    let (shadow_format, shadow) = parse(shadow, shadow_type);
    let production_numeric = production.as_ref().is_some_and(Parsed::is_numeric);
    let shadow_numeric = shadow.as_ref().is_some_and(Parsed::is_numeric);

    let close = if production_format != shadow_format {
        (production_numeric && shadow_numeric).then_some(false)
    } else if !production_numeric && !shadow_numeric {
        None
    } else {
        Some(match (&production, &shadow) {
            (Some(p), Some(s)) => p.close_to(s, tolerance),
            _ => false,
        })
    };

    let production_rows = production.as_ref().and_then(Parsed::rows);
    let shadow_rows = shadow.as_ref().and_then(Parsed::rows);
    let argmax = match (production_rows, shadow_rows) {
        (None, None) => None,
        (Some(p), Some(s)) => {
            Some(p.len() == s.len() && p.iter().zip(&s).all(|(p, s)| argmax_of(p) == argmax_of(s)))
        }
        _ => Some(false),
    };

    Comparison {
        exact,
        close,
        argmax,
    }
}

/// The index of the first largest value of a row (NaN never wins).
fn argmax_of(row: &[f64]) -> usize {
    let mut best = 0;
    let mut best_value = f64::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best
}

fn numbers_close(production: f64, shadow: f64, tolerance: Tolerance) -> bool {
    if production == shadow || (production.is_nan() && shadow.is_nan()) {
        return true;
    }
    (shadow - production).abs() <= tolerance.absolute + tolerance.relative * production.abs()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
    Npy,
}

/// A parsed body.
#[derive(Debug)]
enum Parsed {
    Json(serde_json::Value),
    Text(Vec<Vec<Cell>>),
    Npy(npy::Array),
}

/// The body's format (from its content type, sniffed when the type says nothing) and its
/// parse, `None` when it is not valid in that format.
fn parse(body: &[u8], content_type: &str) -> (Format, Option<Parsed>) {
    let as_json = || json::decode_value(body).ok().map(Parsed::Json);
    let as_text = |whitespace_separates| {
        csv::decode_cells(body, whitespace_separates)
            .ok()
            .map(Parsed::Text)
    };
    let as_npy = || npy::decode_f64(body).ok().map(Parsed::Npy);
    match plinth_codec::media_type(content_type).as_str() {
        "application/json" | "text/json" => (Format::Json, as_json()),
        m if m.ends_with("+json") => (Format::Json, as_json()),
        "application/jsonlines" | "application/x-jsonlines" | "application/jsonl" => (
            Format::Json,
            json::decode_lines(body).ok().map(Parsed::Json),
        ),
        "text/csv" | "application/csv" => (Format::Text, as_text(false)),
        "text/plain" => (Format::Text, as_text(true)),
        "application/x-npy" | "application/npy" => (Format::Npy, as_npy()),
        _ if body.starts_with(npy::MAGIC) => (Format::Npy, as_npy()),
        _ => match as_json() {
            Some(value) => (Format::Json, Some(value)),
            None => (Format::Text, as_text(true)),
        },
    }
}

impl Parsed {
    /// Whether the body holds any number at all.
    fn is_numeric(&self) -> bool {
        match self {
            Self::Json(value) => json_has_number(value),
            Self::Text(rows) => rows.iter().flatten().any(|c| matches!(c, Cell::Number(_))),
            Self::Npy(_) => true,
        }
    }

    /// Same format, same structure, numbers within the tolerance.
    fn close_to(&self, shadow: &Self, tolerance: Tolerance) -> bool {
        match (self, shadow) {
            (Self::Json(p), Self::Json(s)) => json_close(p, s, tolerance),
            (Self::Text(p), Self::Text(s)) => {
                p.len() == s.len()
                    && p.iter().zip(s).all(|(p, s)| {
                        p.len() == s.len()
                            && p.iter().zip(s).all(|(p, s)| match (p, s) {
                                (Cell::Number(p), Cell::Number(s)) => {
                                    numbers_close(*p, *s, tolerance)
                                }
                                (Cell::Text(p), Cell::Text(s)) => p == s,
                                _ => false,
                            })
                    })
            }
            (Self::Npy(p), Self::Npy(s)) => {
                p.shape == s.shape
                    && p.data.len() == s.data.len()
                    && p.data
                        .iter()
                        .zip(&s.data)
                        .all(|(p, s)| numbers_close(*p, *s, tolerance))
            }
            _ => false,
        }
    }

    /// The rows of scores to take the argmax of, each non-empty; `None` when there are none.
    fn rows(&self) -> Option<Vec<Vec<f64>>> {
        match self {
            Self::Json(value) => json_rows(value),
            Self::Text(rows) => {
                let rows: Vec<Vec<f64>> = rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .filter_map(|c| match c {
                                Cell::Number(n) => Some(*n),
                                Cell::Text(_) => None,
                            })
                            .collect::<Vec<_>>()
                    })
                    .filter(|row| !row.is_empty())
                    .collect();
                (!rows.is_empty()).then_some(rows)
            }
            Self::Npy(array) => match *array.shape.as_slice() {
                [n] if n > 0 => Some(vec![array.data.clone()]),
                [rows, cols] if rows > 0 && cols > 0 => {
                    Some(array.data.chunks(cols).map(<[f64]>::to_vec).collect())
                }
                _ => None,
            },
        }
    }
}

fn json_has_number(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(_) => true,
        Value::Array(items) => items.iter().any(json_has_number),
        Value::Object(map) => map.values().any(json_has_number),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

fn json_close(
    production: &serde_json::Value,
    shadow: &serde_json::Value,
    tolerance: Tolerance,
) -> bool {
    use serde_json::Value;
    match (production, shadow) {
        (Value::Number(p), Value::Number(s)) => match (p.as_f64(), s.as_f64()) {
            (Some(p), Some(s)) => numbers_close(p, s, tolerance),
            _ => p == s,
        },
        (Value::Array(p), Value::Array(s)) => {
            p.len() == s.len() && p.iter().zip(s).all(|(p, s)| json_close(p, s, tolerance))
        }
        (Value::Object(p), Value::Object(s)) => {
            p.len() == s.len()
                && p.iter()
                    .all(|(key, p)| s.get(key).is_some_and(|s| json_close(p, s, tolerance)))
        }
        (p, s) => p == s,
    }
}

/// The keys under which a JSON object keeps its scores, in order of preference.
const SCORE_KEYS: [&str; 5] = [
    "predictions",
    "probabilities",
    "scores",
    "outputs",
    "logits",
];
/// The keys under which one prediction object keeps its scores.
const PREDICTION_KEYS: [&str; 2] = ["probabilities", "scores"];

/// The rows of scores in a JSON body: an array of arrays of numbers is one row each, a
/// flat array of numbers is one row, an array of objects is each object's
/// `probabilities` (or `scores`) array, and an object is the rows under the first of
/// [`SCORE_KEYS`] it has.
fn json_rows(value: &serde_json::Value) -> Option<Vec<Vec<f64>>> {
    use serde_json::Value;
    match value {
        Value::Object(map) => SCORE_KEYS
            .iter()
            .find_map(|key| map.get(*key))
            .and_then(json_rows),
        Value::Array(items) if !items.is_empty() => {
            if let Some(row) = number_row(items) {
                return Some(vec![row]);
            }
            items
                .iter()
                .map(|item| match item {
                    Value::Array(row) => number_row(row),
                    Value::Object(map) => PREDICTION_KEYS
                        .iter()
                        .find_map(|key| map.get(*key))
                        .and_then(Value::as_array)
                        .and_then(|row| number_row(row)),
                    _ => None,
                })
                .collect()
        }
        _ => None,
    }
}

/// A non-empty array of numbers.
fn number_row(items: &[serde_json::Value]) -> Option<Vec<f64>> {
    if items.is_empty() {
        return None;
    }
    items.iter().map(serde_json::Value::as_f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = "application/json";
    const CSV: &str = "text/csv";
    const NPY: &str = "application/x-npy";

    fn cmp(p: &str, pt: &str, s: &str, st: &str) -> Comparison {
        compare(p.as_bytes(), pt, s.as_bytes(), st, Tolerance::default())
    }

    fn comparison(exact: bool, close: Option<bool>, argmax: Option<bool>) -> Comparison {
        Comparison {
            exact,
            close,
            argmax,
        }
    }

    /// A `.npy` file, version `major`, of `descr` values given as raw bytes.
    fn npy_raw(descr: &str, fortran: bool, shape: &str, payload: &[u8], major: u8) -> Vec<u8> {
        let fortran = if fortran { "True" } else { "False" };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        let prefix = if major == 1 { 10 } else { 12 };
        while (prefix + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = npy::MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn npy_f32(data: &[f32], shape: &str) -> Vec<u8> {
        let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        npy_raw("<f4", false, shape, &payload, 1)
    }

    fn npy_f64(data: &[f64], shape: &str, major: u8) -> Vec<u8> {
        let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        npy_raw("<f8", false, shape, &payload, major)
    }

    #[test]
    fn exact_needs_equal_bytes_and_types() {
        assert_eq!(
            cmp("[0.5, 0.5]", JSON, "[0.5, 0.5]", JSON),
            comparison(true, Some(true), Some(true))
        );
        assert!(cmp("[1]", JSON, "[1]", " Application/JSON ").exact);
        assert!(!cmp("[1]", JSON, "[1]", "application/json; charset=utf-8").exact);
        // Equal as JSON, not as bytes.
        let c = cmp("[1, 2]", JSON, "[1,2]", JSON);
        assert_eq!(c, comparison(false, Some(true), Some(true)));
        // Same bytes, different formats.
        let c = cmp("1,2", CSV, "1,2", "text/plain");
        assert!(!c.exact);
        assert_eq!(
            c.close,
            Some(true),
            "CSV and plain text are the same format"
        );
    }

    #[test]
    fn close_within_and_outside_tolerance() {
        let c = cmp("[0.5, 100.0]", JSON, "[0.50000001, 100.005]", JSON);
        assert_eq!(c, comparison(false, Some(true), Some(true)));
        let c = cmp("[0.5, 100.0]", JSON, "[0.5, 100.02]", JSON);
        assert_eq!(c.close, Some(false));
        // Near zero the absolute part decides.
        assert_eq!(cmp("[0.0]", JSON, "[0.0000005]", JSON).close, Some(true));
        assert_eq!(cmp("[0.0]", JSON, "[0.000002]", JSON).close, Some(false));
        // A looser tolerance.
        let loose = Tolerance {
            relative: 0.01,
            absolute: 0.0,
        };
        let c = compare(b"[100.0]", JSON, b"[100.5]", JSON, loose);
        assert_eq!(c.close, Some(true));
        // Integers and floats are both numbers.
        assert_eq!(
            cmp("{\"n\": 3}", JSON, "{\"n\": 3.0}", JSON).close,
            Some(true)
        );
    }

    #[test]
    fn structure_mismatch_is_not_close() {
        for (p, s) in [
            ("[1, 2]", "[1, 2, 3]"),
            ("{\"a\": 1}", "{\"b\": 1}"),
            ("{\"a\": 1}", "{\"a\": 1, \"b\": 2}"),
            ("{\"a\": 1, \"l\": \"x\"}", "{\"a\": 1, \"l\": \"y\"}"),
            ("[1, true]", "[1, false]"),
            ("[1, null]", "[1, 0]"),
            ("[[1, 2]]", "[1, 2]"),
            ("{\"a\": 1}", "[1]"),
            ("[1]", "{\"error\": \"model failed\"}"),
        ] {
            assert_eq!(cmp(p, JSON, s, JSON).close, Some(false), "{p} vs {s}");
        }
        // Key order does not matter.
        assert_eq!(
            cmp(
                "{\"a\": 1, \"b\": [2]}",
                JSON,
                "{\"b\": [2], \"a\": 1}",
                JSON
            )
            .close,
            Some(true)
        );
    }

    #[test]
    fn argmax_agrees_while_not_close() {
        let c = cmp(
            "[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]",
            JSON,
            "[[0.5, 0.4, 0.1], [0.2, 0.2, 0.6]]",
            JSON,
        );
        assert_eq!(c, comparison(false, Some(false), Some(true)));
        let c = cmp(
            "[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]",
            JSON,
            "[[0.5, 0.4, 0.1], [0.2, 0.7, 0.1]]",
            JSON,
        );
        assert_eq!(c.argmax, Some(false));
        // A different number of rows never agrees.
        let c = cmp("[[0.7, 0.3]]", JSON, "[[0.7, 0.3], [0.7, 0.3]]", JSON);
        assert_eq!(c.argmax, Some(false));
        // Flat arrays are one row.
        assert_eq!(
            cmp("[0.1, 0.9]", JSON, "[0.3, 0.7]", JSON).argmax,
            Some(true)
        );
        // Keyed outputs, recursively.
        let c = cmp(
            "{\"outputs\": {\"logits\": [[1, 5], [3, 2]]}}",
            JSON,
            "{\"outputs\": {\"logits\": [[0, 4], [9, 2]]}}",
            JSON,
        );
        assert_eq!(c, comparison(false, Some(false), Some(true)));
        let c = cmp(
            "{\"scores\": [0.2, 0.8]}",
            JSON,
            "{\"probabilities\": [0.2, 0.8]}",
            JSON,
        );
        assert_eq!(c, comparison(false, Some(false), Some(true)));
        // Ties go to the first.
        assert_eq!(
            cmp("[0.5, 0.5]", JSON, "[0.6, 0.4]", JSON).argmax,
            Some(true)
        );
    }

    #[test]
    fn iris_shaped_json() {
        let production = r#"{"predictions":[{"label":"setosa","class_index":0,"probabilities":[0.97,0.02,0.01]},{"label":"virginica","class_index":2,"probabilities":[0.01,0.1,0.89]}]}"#;
        let shadow_close = r#"{"predictions":[{"label":"setosa","class_index":0,"probabilities":[0.970001,0.02,0.01]},{"label":"virginica","class_index":2,"probabilities":[0.01,0.1,0.89]}]}"#;
        let shadow_same_class = r#"{"predictions":[{"label":"setosa","class_index":0,"probabilities":[0.8,0.15,0.05]},{"label":"virginica","class_index":2,"probabilities":[0.05,0.3,0.65]}]}"#;
        let shadow_other_class = r#"{"predictions":[{"label":"setosa","class_index":0,"probabilities":[0.8,0.15,0.05]},{"label":"versicolor","class_index":1,"probabilities":[0.05,0.6,0.35]}]}"#;
        assert_eq!(
            cmp(production, JSON, production, JSON),
            comparison(true, Some(true), Some(true))
        );
        assert_eq!(
            cmp(production, JSON, shadow_close, JSON),
            comparison(false, Some(true), Some(true))
        );
        assert_eq!(
            cmp(production, JSON, shadow_same_class, JSON),
            comparison(false, Some(false), Some(true))
        );
        assert_eq!(
            cmp(production, JSON, shadow_other_class, JSON),
            comparison(false, Some(false), Some(false))
        );
        // One prediction per row: dropping one is a disagreement.
        let one = r#"{"predictions":[{"label":"setosa","class_index":0,"probabilities":[0.97,0.02,0.01]}]}"#;
        assert_eq!(cmp(production, JSON, one, JSON).argmax, Some(false));
        // The iris plugin's CSV: label, then the probabilities.
        let csv = "setosa,0.97,0.02,0.01\nvirginica,0.01,0.1,0.89\n";
        assert_eq!(
            cmp(production, JSON, csv, CSV),
            comparison(false, Some(false), Some(true)),
            "argmax is compared across formats, closeness is not"
        );
    }

    #[test]
    fn npy_f32_two_dimensional() {
        let p = npy_f32(&[0.7, 0.2, 0.1, 0.1, 0.3, 0.6], "(2, 3)");
        let same = npy_f32(&[0.7, 0.2, 0.1, 0.1, 0.3, 0.6], "(2, 3)");
        let near = npy_f32(&[0.70001, 0.2, 0.1, 0.1, 0.3, 0.6], "(2, 3)");
        let same_class = npy_f32(&[0.5, 0.4, 0.1, 0.2, 0.2, 0.6], "(2, 3)");
        let reshaped = npy_f32(&[0.7, 0.2, 0.1, 0.1, 0.3, 0.6], "(3, 2)");
        let c = compare(&p, NPY, &same, NPY, Tolerance::default());
        assert_eq!(c, comparison(true, Some(true), Some(true)));
        let c = compare(&p, NPY, &near, NPY, Tolerance::default());
        assert_eq!(c, comparison(false, Some(true), Some(true)));
        let c = compare(&p, NPY, &same_class, NPY, Tolerance::default());
        assert_eq!(c, comparison(false, Some(false), Some(true)));
        let c = compare(&p, NPY, &reshaped, NPY, Tolerance::default());
        assert_eq!(c, comparison(false, Some(false), Some(false)));

        // float64, version 2, against float32: values compared, not dtypes.
        let wide = npy_f64(&[0.5, 0.25, 0.25, 0.0], "(2, 2)", 2);
        let narrow = npy_f32(&[0.5, 0.25, 0.25, 0.0], "(2, 2)");
        let c = compare(&wide, NPY, &narrow, NPY, Tolerance::default());
        assert_eq!(c, comparison(false, Some(true), Some(true)));

        // 1-D is one row; the type is sniffed from the magic string.
        let flat = npy_f32(&[0.1, 0.9], "(2,)");
        let c = compare(
            &flat,
            "application/octet-stream",
            &flat,
            NPY,
            Tolerance::default(),
        );
        assert_eq!(c, comparison(false, Some(true), Some(true)));

        // Integers, and Fortran order reordered to C order.
        let ints: Vec<u8> = [1i32, 5, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let ints = npy_raw("<i4", false, "(1, 3)", &ints, 1);
        let c = compare(
            &ints,
            NPY,
            &npy_f32(&[1.0, 5.0, 2.0], "(1, 3)"),
            NPY,
            Tolerance::default(),
        );
        assert_eq!(c.close, Some(true));
        let column_major: Vec<u8> = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let fortran = npy_raw("<f4", true, "(2, 3)", &column_major, 1);
        let c_order = npy_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "(2, 3)");
        assert_eq!(
            compare(&fortran, NPY, &c_order, NPY, Tolerance::default()).close,
            Some(true)
        );
    }

    #[test]
    fn bad_npy_is_not_numeric() {
        let good = npy_f32(&[0.1, 0.9], "(2,)");
        let short = &good[..good.len() - 1];
        let big_endian = npy_raw(">f4", false, "(2,)", &good[good.len() - 8..], 1);
        let version_9 = {
            let mut v = good.clone();
            v[6] = 9;
            v
        };
        for bad in [
            short,
            &big_endian[..],
            &version_9[..],
            b"\x93NUMPY",
            b"not npy",
        ] {
            assert!(npy::decode_f64(bad).is_err());
            let c = compare(bad, NPY, bad, NPY, Tolerance::default());
            assert_eq!(c, comparison(true, None, None));
        }
        // Production numeric, shadow broken: not close, no agreement.
        let c = compare(&good, NPY, short, NPY, Tolerance::default());
        assert_eq!(c, comparison(false, Some(false), Some(false)));
    }

    #[test]
    fn csv() {
        let p = "0.7,0.2,0.1\n0.1,0.3,0.6\n";
        assert_eq!(
            cmp(p, CSV, p, CSV),
            comparison(true, Some(true), Some(true))
        );
        let near = "0.70000001, 0.2, 0.1\r\n0.1,0.3,0.6";
        assert_eq!(
            cmp(p, CSV, near, CSV),
            comparison(false, Some(true), Some(true))
        );
        let same_class = "0.5,0.4,0.1\n0.2,0.2,0.6\n";
        assert_eq!(
            cmp(p, CSV, same_class, CSV),
            comparison(false, Some(false), Some(true))
        );
        // Non-numeric cells must be equal.
        assert_eq!(cmp("a,1\n", CSV, "a,1.0\n", CSV).close, Some(true));
        assert_eq!(cmp("a,1\n", CSV, "b,1\n", CSV).close, Some(false));
        assert_eq!(cmp("1,2\n", CSV, "1,2,3\n", CSV).close, Some(false));
        assert_eq!(cmp("1\n2\n", CSV, "1\n", CSV).close, Some(false));
        // Plain text also splits on whitespace.
        assert_eq!(
            cmp("0.1 0.9", "text/plain", "0.1\t0.9\n", "text/plain"),
            comparison(false, Some(true), Some(true))
        );
        // A CSV of one number per line (a regressor) has one-cell rows.
        assert_eq!(
            cmp("1.5\n2.5\n", CSV, "1.5\n2.6\n", CSV),
            comparison(false, Some(false), Some(true))
        );
    }

    #[test]
    fn different_formats() {
        let npy = npy_f32(&[0.1, 0.9], "(1, 2)");
        let c = compare(b"[[0.1, 0.9]]", JSON, &npy, NPY, Tolerance::default());
        assert_eq!(c, comparison(false, Some(false), Some(true)));
        let c = compare(b"oops", "text/plain", &npy, NPY, Tolerance::default());
        assert_eq!(c, comparison(false, None, Some(false)));
    }

    #[test]
    fn garbage_and_non_numeric_give_none() {
        assert_eq!(
            cmp("not json", JSON, "also not json", JSON),
            comparison(false, None, None)
        );
        assert_eq!(
            cmp(
                "{\"label\": \"setosa\"}",
                JSON,
                "{\"label\": \"virginica\"}",
                JSON
            ),
            comparison(false, None, None)
        );
        assert_eq!(
            cmp("hello, world", CSV, "hello, there", CSV),
            comparison(false, None, None)
        );
        let c = compare(
            &[0xff, 0xfe, 0x00],
            "application/octet-stream",
            &[0xff],
            "application/octet-stream",
            Tolerance::default(),
        );
        assert_eq!(c, comparison(false, None, None));
        // Numbers under no known key: close is defined, argmax is not.
        let c = cmp("{\"value\": 1.0}", JSON, "{\"value\": 1.0}", JSON);
        assert_eq!(c, comparison(true, Some(true), None));
        // Production numeric, shadow an error page.
        let c = cmp("[0.2, 0.8]", JSON, "<html>502</html>", JSON);
        assert_eq!(c, comparison(false, Some(false), Some(false)));
        // Unknown types are sniffed as JSON, then text.
        let c = cmp("[0.2, 0.8]", "", "0.2,0.8", "");
        assert_eq!(c, comparison(false, Some(false), Some(true)));
    }

    #[test]
    fn empty_bodies() {
        assert_eq!(cmp("", JSON, "", JSON), comparison(true, None, None));
        assert_eq!(cmp("", CSV, "", CSV), comparison(true, None, None));
        assert_eq!(
            compare(b"", NPY, b"", NPY, Tolerance::default()),
            comparison(true, None, None)
        );
        assert_eq!(
            cmp("", JSON, "[1]", JSON),
            comparison(false, Some(false), Some(false))
        );
        assert_eq!(cmp("[]", JSON, "[]", JSON), comparison(true, None, None));
    }

    #[test]
    fn json_lines() {
        let p = "{\"probabilities\": [0.9, 0.1]}\n{\"probabilities\": [0.2, 0.8]}\n";
        let s = "{\"probabilities\": [0.6, 0.4]}\n\n{\"probabilities\": [0.4, 0.6]}";
        assert_eq!(
            cmp(p, "application/jsonlines", s, "application/jsonlines"),
            comparison(false, Some(false), Some(true))
        );
    }
}
