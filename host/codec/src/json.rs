//! JSON. [`decode_json`] reads SageMaker's `application/json` tensors (a nested array, or one
//! under `"instances"` / `"inputs"`); [`encode_json`], [`json_number`] and
//! [`push_json_number`] write numbers the way the `f32` prints. [`decode_value`] and
//! [`decode_lines`] read any JSON or JSON Lines body as a `serde_json::Value`, for comparing
//! bodies of any structure (the host's shadow comparison).

use std::fmt::Write as _;

use crate::tensor::{require_body, require_values};
use crate::{HandlerError, Tensor};

/// Decode JSON: a nested array of numbers (a flat array is one row, shape `[1, n]`), or an
/// object whose `"instances"` or `"inputs"` member is such an array. Ragged arrays are
/// rejected.
///
/// # Examples
///
/// ```
/// use plinth_codec::decode_json;
///
/// let t = decode_json(br#"{"instances": [[1, 2], [3, 4]]}"#).unwrap();
/// assert_eq!((t.shape, t.data), (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
/// assert_eq!(decode_json(b"[1, 2, 3]").unwrap().shape, vec![1, 3]);
/// assert!(decode_json(b"[[1, 2], [3]]").is_err());
/// ```
pub fn decode_json(body: &[u8]) -> Result<Tensor, HandlerError> {
    require_body(body)?;
    let value = decode_value(body)?;
    let array = match &value {
        serde_json::Value::Array(_) => &value,
        serde_json::Value::Object(map) => map
            .get("instances")
            .or_else(|| map.get("inputs"))
            .ok_or_else(|| {
                HandlerError::bad_request(
                    "expected a JSON array of numbers or an object with an \"instances\" or \
                     \"inputs\" array",
                )
            })?,
        _ => {
            return Err(HandlerError::bad_request(
                "expected a JSON array of numbers or an object with an \"instances\" or \
                 \"inputs\" array",
            ))
        }
    };
    let tensor = json_to_tensor(array)?;
    let tensor = if tensor.shape.len() == 1 {
        tensor.into_matrix()?
    } else {
        tensor
    };
    require_values(tensor)
}

/// The most values [`json_to_tensor`] allocates for before it has read them: 1 MiB of `f32`.
const MAX_PREALLOCATED_VALUES: usize = 1 << 18;

/// Convert a JSON value (a number or a nested array of numbers) into a tensor of its shape.
///
/// # Examples
///
/// ```
/// use plinth_codec::json_to_tensor;
///
/// let body = serde_json::json!({"features": [[1, 2], [3, 4]], "top_k": 1});
/// let t = json_to_tensor(&body["features"]).unwrap();
/// assert_eq!(t.shape, vec![2, 2]);
/// ```
pub fn json_to_tensor(value: &serde_json::Value) -> Result<Tensor, HandlerError> {
    let mut shape = Vec::new();
    let mut probe = value;
    while let serde_json::Value::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    // The shape is what the first elements promise; a ragged body holds far fewer values
    // (a product that overflows is always ragged), so it bounds the first allocation only
    // up to a cap.
    let promised = shape
        .iter()
        .try_fold(1usize, |count, &d| count.checked_mul(d))
        .unwrap_or(0);
    let mut data = Vec::with_capacity(promised.min(MAX_PREALLOCATED_VALUES));
    let mut path = String::new();
    collect_json(value, &shape, &mut path, &mut data)?;
    Tensor::new(data, shape)
}

fn collect_json(
    value: &serde_json::Value,
    shape: &[usize],
    path: &mut String,
    out: &mut Vec<f32>,
) -> Result<(), HandlerError> {
    match (value, shape.split_first()) {
        (serde_json::Value::Array(items), Some((&len, rest))) => {
            if items.len() != len {
                return Err(HandlerError::bad_request(format!(
                    "ragged JSON array: {} has {} elements, expected {len}",
                    display_path(path),
                    items.len()
                )));
            }
            for (i, item) in items.iter().enumerate() {
                let mark = path.len();
                let _ = write!(path, "[{i}]");
                collect_json(item, rest, path, out)?;
                path.truncate(mark);
            }
            Ok(())
        }
        (serde_json::Value::Number(n), None) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        (serde_json::Value::Array(_), None) | (serde_json::Value::Number(_), Some(_)) => {
            Err(HandlerError::bad_request(format!(
                "ragged JSON array: {} does not match the shape of the first element",
                display_path(path)
            )))
        }
        (other, _) => Err(HandlerError::bad_request(format!(
            "expected a number at {}, found {}",
            display_path(path),
            json_kind(other)
        ))),
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "the top level".to_owned()
    } else {
        format!("element {path}")
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parse any JSON body.
///
/// # Examples
///
/// ```
/// let v = plinth_codec::json::decode_value(br#"{"label": "setosa", "score": 0.97}"#).unwrap();
/// assert_eq!(v["label"], "setosa");
/// ```
pub fn decode_value(body: &[u8]) -> Result<serde_json::Value, HandlerError> {
    serde_json::from_slice(body)
        .map_err(|e| HandlerError::bad_request(format!("invalid JSON: {e}")))
}

/// Parse a JSON Lines body (`application/jsonlines`) as an array of its values, one per
/// non-blank line.
///
/// # Examples
///
/// ```
/// let v = plinth_codec::json::decode_lines(b"{\"p\": 0.9}\n\n{\"p\": 0.1}\n").unwrap();
/// assert_eq!(v, serde_json::json!([{"p": 0.9}, {"p": 0.1}]));
/// ```
pub fn decode_lines(body: &[u8]) -> Result<serde_json::Value, HandlerError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| HandlerError::bad_request(format!("JSON Lines body is not UTF-8: {e}")))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                HandlerError::bad_request(format!("JSON Lines line {}: invalid JSON: {e}", i + 1))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(serde_json::Value::Array)
}

/// `tensor` as JSON nested arrays of its shape (a scalar is a bare number). NaN and
/// infinities become `null`.
///
/// # Examples
///
/// ```
/// use plinth_codec::{encode_json, Tensor};
///
/// let t = Tensor::new(vec![1.0, 0.5, f32::NAN, 0.25], vec![2, 2]).unwrap();
/// assert_eq!(encode_json(&t), b"[[1,0.5],[null,0.25]]");
/// ```
pub fn encode_json(tensor: &Tensor) -> Vec<u8> {
    fn write(out: &mut String, data: &[f32], shape: &[usize]) {
        match shape.split_first() {
            None => write_json_number(out, data.first().copied().unwrap_or(f32::NAN)),
            Some((&len, rest)) => {
                let step: usize = rest.iter().product();
                out.push('[');
                for i in 0..len {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, &data[i * step..(i + 1) * step], rest);
                }
                out.push(']');
            }
        }
    }
    let mut out = String::with_capacity(tensor.data.len() * 8 + 2);
    write(&mut out, &tensor.data, &tensor.shape);
    out.into_bytes()
}

/// Append `value` to `out` as a JSON number (shortest round-trip form), or `null` if it is not
/// finite.
///
/// # Examples
///
/// ```
/// let mut out = String::from("[");
/// plinth_codec::write_json_number(&mut out, 0.97);
/// out.push(',');
/// plinth_codec::write_json_number(&mut out, f32::INFINITY);
/// out.push(']');
/// assert_eq!(out, "[0.97,null]");
/// ```
#[inline]
pub fn write_json_number(out: &mut String, value: f32) {
    if value.is_finite() {
        let _ = write!(out, "{value}");
    } else {
        out.push_str("null");
    }
}

/// `value` as a JSON number that prints the way the `f32` does (`0.97`, not
/// `0.9700000286102295`); `null` if it is not finite.
///
/// # Examples
///
/// ```
/// use plinth_codec::json_number;
///
/// let scores = serde_json::json!([json_number(0.97), json_number(f32::NAN)]);
/// assert_eq!(scores.to_string(), "[0.97,null]");
/// // Not the f64 nearest the f32: `0.9700000286102295`.
/// assert_eq!(serde_json::json!(0.97f32).to_string(), "0.9700000286102295");
/// ```
pub fn json_number(value: f32) -> serde_json::Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Append `value` to JSON text being written by hand, as [`json_number`] would write it (the
/// shortest decimal that reads back as the `f32`; `null` if it is not finite), without
/// building a `serde_json::Value` — for handlers on a hot path. Two details may differ, never
/// the `f32` read back: below 10^-5 and from 10^13 up, whether the number is written out or
/// with an exponent (`0.0000012` against `1.2e-6`); and where two shortest decimals are
/// equally close (`2017.7812` and `2017.7813` for 2017.78125), which one is written.
///
/// # Examples
///
/// ```
/// let mut out = String::from(r#"{"score":"#);
/// plinth_codec::push_json_number(&mut out, 0.97);
/// out.push('}');
/// assert_eq!(out, r#"{"score":0.97}"#);
/// ```
#[inline]
pub fn push_json_number(out: &mut String, value: f32) {
    if value.is_finite() {
        // The shortest round-trip digits, by the formatter serde_json itself uses.
        out.push_str(zmij::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

/// Any JSON value as an `application/json` body.
///
/// # Examples
///
/// ```
/// use plinth_codec::{encode_json_value, json_number};
///
/// let value = serde_json::json!({"label": "setosa", "score": json_number(0.97)});
/// assert_eq!(encode_json_value(&value), br#"{"label":"setosa","score":0.97}"#);
/// ```
pub fn encode_json_value(value: &serde_json::Value) -> Vec<u8> {
    // Serialising a `Value` to memory cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, is_bad_request};

    #[test]
    fn json_good() {
        let t = decode(b"[[1, 2.5], [3, 4]]", "application/json").unwrap();
        assert_eq!((t.shape, t.data), (vec![2, 2], vec![1.0, 2.5, 3.0, 4.0]));
        let t = decode_json(b"[1, 2, 3]").unwrap();
        assert_eq!(t.shape, vec![1, 3]);
        let t = decode_json(br#"{"instances": [[1, 2], [3, 4], [5, 6]]}"#).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        let t = decode_json(br#"{"inputs": [7, 8]}"#).unwrap();
        assert_eq!((t.shape, t.data), (vec![1, 2], vec![7.0, 8.0]));
        let t = decode_json(b"[[[1],[2]],[[3],[4]]]").unwrap();
        assert_eq!(t.shape, vec![2, 2, 1]);
    }

    #[test]
    fn json_malformed() {
        is_bad_request(decode_json(b"[[1, 2], [3"), "invalid JSON");
        is_bad_request(
            decode_json(b"[1, \"x\"]"),
            "expected a number at element [1], found a string",
        );
        is_bad_request(decode_json(b"{\"data\": [1]}"), "\"instances\"");
        is_bad_request(decode_json(b"42"), "expected a JSON array");
    }

    #[test]
    fn json_ragged() {
        is_bad_request(
            decode_json(b"[[1, 2], [3]]"),
            "element [1] has 1 elements, expected 2",
        );
        is_bad_request(decode_json(b"[[1, 2], 3]"), "element [1] does not match");
        is_bad_request(decode_json(b"[1, [2]]"), "element [1] does not match");
    }

    /// Found by `tests/fuzz.rs`: first elements nested 64 deep, each array of two, promise
    /// 2^64 values in a body of a few hundred bytes. The product overflowed (a panic in a
    /// debug build) and was the first allocation (an abort for 2^40 in any build).
    #[test]
    fn a_shape_promised_by_first_elements_is_not_allocated() {
        for depth in [40, 64, 100] {
            let body = "[".repeat(depth) + "1" + &",1]".repeat(depth);
            is_bad_request(decode_json(body.as_bytes()), "ragged JSON array");
        }
        let t = json_to_tensor(&serde_json::json!([[1, 2], [3, 4]])).unwrap();
        assert_eq!((t.shape, t.data), (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
    }

    #[test]
    fn hand_written_json_numbers_match_serde_json() {
        let values = [
            0.0f32,
            -0.0,
            1.0,
            0.97,
            0.02,
            0.1,
            1e-7,
            3.4028235e38,
            -1.5e-45,
            123456.79,
            0.3333333,
        ];
        for value in values {
            let mut out = String::new();
            push_json_number(&mut out, value);
            let expected = serde_json::to_string(&json_number(value)).unwrap();
            assert_eq!(out, expected, "{value}");
            assert_eq!(out.parse::<f32>().unwrap(), value);
        }
        let mut out = String::new();
        push_json_number(&mut out, f32::NAN);
        assert_eq!(out, "null");
    }

    /// `push_json_number` against `json_number` written by serde_json, over f32 bit patterns
    /// spread across the whole range (subnormals and both signs included) and pseudo-random
    /// values in [0, 1), where probabilities live: it reads back as the same `f32`, and is
    /// exactly serde_json's text outside the two cases `push_json_number` documents.
    #[test]
    fn hand_written_json_numbers_match_serde_json_across_the_range() {
        let check = |value: f32| {
            if !value.is_finite() {
                return;
            }
            let mut out = String::new();
            push_json_number(&mut out, value);
            let expected = serde_json::to_string(&json_number(value)).unwrap();
            let shown = format!("{value:e} ({:#x})", value.to_bits());
            assert_eq!(out.parse::<f32>().ok(), Some(value), "{shown}");
            // Where the two differ in more than notation, it is a tie between two shortest
            // decimals, which both read back as `value` (checked above).
            let same_number = out.parse::<f64>().ok() == expected.parse::<f64>().ok();
            if same_number && (1e-5..1e13).contains(&value.abs()) {
                assert_eq!(out, expected, "{shown}");
            }
        };
        for bits in (0..=u32::MAX).step_by(40_009) {
            check(f32::from_bits(bits));
        }
        let mut state = 0x9e37_79b9u32;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            check((state >> 8) as f32 / (1u32 << 24) as f32);
        }
    }

    #[test]
    fn values_and_lines() {
        assert_eq!(
            decode_value(br#"{"a": [1, "x"]}"#).unwrap(),
            serde_json::json!({"a": [1, "x"]})
        );
        is_bad_request(decode_value(b""), "invalid JSON");
        let lines = decode_lines(b"{\"p\": [0.9]}\n\n  \n[1]\r\n").unwrap();
        assert_eq!(lines, serde_json::json!([{"p": [0.9]}, [1]]));
        assert_eq!(decode_lines(b"").unwrap(), serde_json::json!([]));
        is_bad_request(decode_lines(b"[1]\n{oops\n"), "line 2: invalid JSON");
    }
}
