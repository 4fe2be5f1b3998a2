//! What the List operations share: name and time filters, sorting, and pagination tokens.

use super::common::validation;
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::cmp::Ordering;

/// The inputs the List operations share.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListInput {
    sort_by: Option<String>,
    sort_order: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    name_contains: Option<String>,
    creation_time_before: Option<f64>,
    creation_time_after: Option<f64>,
    last_modified_time_before: Option<f64>,
    last_modified_time_after: Option<f64>,
    pub(crate) status_equals: Option<String>,
}

/// One resource as a List operation sees it.
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) created: f64,
    pub(crate) modified: f64,
    pub(crate) status: &'static str,
    pub(crate) summary: Value,
}

/// A sort key: the `SortBy` field's value, then the name.
#[derive(serde::Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
enum Key {
    Number(f64),
    Text(String),
}

impl Key {
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Number(a), Key::Number(b)) => a.total_cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (Key::Number(_), Key::Text(_)) => Ordering::Less,
            (Key::Text(_), Key::Number(_)) => Ordering::Greater,
        }
    }
}

pub(crate) fn enum_error(field: &str, value: &str, allowed: &[&str]) -> ApiError {
    validation(format!(
        "1 validation error detected: Value {value:?} at '{field}' failed to satisfy \
         constraint: Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    ))
}

/// Filter, sort and page `items` as SageMaker's List operations do: `SortBy` (default
/// `CreationTime`), `SortOrder` (default `Descending`), `MaxResults` 1-100 (default 10), and
/// an opaque `NextToken` that resumes after the last item returned (stable while items are
/// added or removed).
pub(crate) fn list(
    mut items: Vec<Listed>,
    input: ListInput,
    sort_keys: &[&str],
    output_key: &str,
) -> Result<Value, ApiError> {
    let sort_by = input.sort_by.as_deref().unwrap_or("CreationTime");
    if !sort_keys.contains(&sort_by) {
        return Err(enum_error("sortBy", sort_by, sort_keys));
    }
    let descending = match input.sort_order.as_deref().unwrap_or("Descending") {
        "Descending" => true,
        "Ascending" => false,
        other => return Err(enum_error("sortOrder", other, &["Ascending", "Descending"])),
    };
    let max = input.max_results.unwrap_or(10);
    if !(1..=100).contains(&max) {
        return Err(validation(format!(
            "1 validation error detected: Value {max} at 'maxResults' failed to satisfy \
             constraint: Member must have value between 1 and 100"
        )));
    }
    let key = |item: &Listed| match sort_by {
        "Name" => Key::Text(item.name.clone()),
        "Status" => Key::Text(item.status.to_string()),
        _ => Key::Number(item.created),
    };
    let order = |a: &(Key, String), b: &(Key, String)| {
        let o = a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1));
        if descending {
            o.reverse()
        } else {
            o
        }
    };
    items.retain(|i| {
        input
            .name_contains
            .as_deref()
            .is_none_or(|s| i.name.to_lowercase().contains(&s.to_lowercase()))
            && input.creation_time_before.is_none_or(|t| i.created < t)
            && input.creation_time_after.is_none_or(|t| i.created > t)
            && input
                .last_modified_time_before
                .is_none_or(|t| i.modified < t)
            && input
                .last_modified_time_after
                .is_none_or(|t| i.modified > t)
            && input.status_equals.as_deref().is_none_or(|s| i.status == s)
    });
    let mut keyed: Vec<((Key, String), Value)> = items
        .into_iter()
        .map(|i| ((key(&i), i.name), i.summary))
        .collect();
    keyed.sort_by(|a, b| order(&a.0, &b.0));
    if let Some(token) = &input.next_token {
        let after = decode_token(token, sort_by, descending)?;
        keyed.retain(|(k, _)| order(k, &after) == Ordering::Greater);
    }
    let more = keyed.len() > max as usize;
    keyed.truncate(max as usize);
    let mut output = json!({ output_key: keyed.iter().map(|(_, s)| s).collect::<Vec<_>>() });
    if more {
        if let Some((last, _)) = keyed.last() {
            output["NextToken"] = json!(encode_token(last, sort_by, descending));
        }
    }
    Ok(output)
}

fn encode_token(last: &(Key, String), sort_by: &str, descending: bool) -> String {
    hex::encode(json!([sort_by, descending, last.0, last.1]).to_string())
}

fn decode_token(token: &str, sort_by: &str, descending: bool) -> Result<(Key, String), ApiError> {
    let invalid = || {
        validation("Invalid pagination token: NextToken does not come from this listing with these SortBy and SortOrder values.")
    };
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let (by, desc, key, name): (String, bool, Key, String) =
        serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if by != sort_by || desc != descending {
        return Err(invalid());
    }
    Ok((key, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn items(n: usize) -> Vec<Listed> {
        (0..n)
            .map(|i| Listed {
                name: format!("m{i:02}"),
                created: 1000.0 + (i % 5) as f64,
                modified: 2000.0 + i as f64,
                status: if i % 2 == 0 { "InService" } else { "Failed" },
                summary: json!(format!("m{i:02}")),
            })
            .collect()
    }

    fn input(v: Value) -> ListInput {
        serde_json::from_value(v).unwrap()
    }

    fn names(output: &Value) -> Vec<String> {
        output["Things"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn pages_cover_every_item_once_in_order() {
        for (sort_by, order) in [
            ("Name", "Ascending"),
            ("CreationTime", "Descending"),
            ("Status", "Ascending"),
        ] {
            let mut seen = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut request = json!({"SortBy": sort_by, "SortOrder": order, "MaxResults": 7});
                if let Some(t) = &token {
                    request["NextToken"] = json!(t);
                }
                let out = list(
                    items(23),
                    input(request),
                    &["Name", "CreationTime", "Status"],
                    "Things",
                )
                .unwrap();
                seen.extend(names(&out));
                match out["NextToken"].as_str() {
                    Some(t) => token = Some(t.to_string()),
                    None => break,
                }
            }
            let mut expected: Vec<String> = (0..23).map(|i| format!("m{i:02}")).collect();
            let mut sorted = seen.clone();
            sorted.sort();
            expected.sort();
            assert_eq!(sorted, expected, "{sort_by} {order}");
            if sort_by == "Name" {
                assert_eq!(seen, expected);
            }
        }
    }

    #[test]
    fn default_is_newest_first_ten() {
        let out = list(
            items(23),
            input(json!({})),
            &["Name", "CreationTime"],
            "Things",
        )
        .unwrap();
        let got = names(&out);
        assert_eq!(got.len(), 10);
        // Created 1004 (i % 5 == 4), names descending.
        assert_eq!(&got[..2], ["m19", "m14"]);
        assert!(out["NextToken"].is_string());
    }

    #[test]
    fn filters_apply() {
        let out = list(
            items(23),
            input(json!({"NameContains": "M1", "StatusEquals": "Failed", "SortBy": "Name", "SortOrder": "Ascending", "CreationTimeAfter": 1000.5})),
            &["Name", "CreationTime", "Status"],
            "Things",
        )
        .unwrap();
        assert_eq!(names(&out), ["m11", "m13", "m17", "m19"]);
        assert!(out.get("NextToken").is_none());
    }

    #[test]
    fn bad_list_inputs_are_validation_errors() {
        for bad in [
            json!({"SortBy": "Size"}),
            json!({"SortOrder": "Up"}),
            json!({"MaxResults": 0}),
            json!({"MaxResults": 101}),
            json!({"NextToken": "zz"}),
            json!({"NextToken": hex::encode("[\"Name\",true,\"a\",\"a\"]"), "SortBy": "CreationTime"}),
        ] {
            let e = list(
                items(3),
                input(bad.clone()),
                &["Name", "CreationTime"],
                "Things",
            )
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
