//! Reading control-plane answers: the names in a list, an item of a list by name, and
//! whether an answer contains an expected shape (shared with the fixture cases' runner).

use serde_json::Value;

/// The values of `field` in the list `output[list]`, in order; panics if `output[list]` is
/// not a list or an item has no string `field`.
///
/// `names(&list_models, "Models", "ModelName")`.
#[track_caller]
pub fn names(output: &Value, list: &str, field: &str) -> Vec<String> {
    output[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} list in {output}"))
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("no {field} in {item}"))
                .to_owned()
        })
        .collect()
}

/// The item of the list `output[list]` whose `field` is `name`; panics if there is none.
///
/// `item(&description, "ProductionVariants", "VariantName", "A")`.
#[track_caller]
pub fn item<'a>(output: &'a Value, list: &str, field: &str, name: &str) -> &'a Value {
    output[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} list in {output}"))
        .iter()
        .find(|item| item[field] == name)
        .unwrap_or_else(|| panic!("no item with {field} {name:?} in {list} of {output}"))
}

/// Whether `value` contains `wanted`: objects may have more keys than `wanted` names; lists
/// have the same length and match item by item; numbers are compared as numbers (`1` is
/// `1.0`); the string `"<any>"` matches any value that is there; `null` matches a key that
/// is `null` or absent.
pub fn contains(value: &Value, wanted: &Value) -> bool {
    match (value, wanted) {
        (_, Value::String(s)) if s == "<any>" => true,
        (Value::Object(value), Value::Object(wanted)) => {
            wanted.iter().all(|(k, w)| match value.get(k) {
                Some(v) => contains(v, w),
                None => w.is_null(),
            })
        }
        (Value::Array(value), Value::Array(wanted)) => {
            value.len() == wanted.len() && value.iter().zip(wanted).all(|(v, w)| contains(v, w))
        }
        (Value::Number(v), Value::Number(w)) => v.as_f64() == w.as_f64(),
        (value, wanted) => value == wanted,
    }
}
