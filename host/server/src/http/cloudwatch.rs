//! CloudWatch's two protocols on `POST /`, both calling `ops::cloudwatch`:
//!
//! - awsJson1.0 (`X-Amz-Target: GraniteServiceVersion20100801.<Operation>`), what boto3
//!   uses: JSON in and out; an error is `{"__type", "message"}` with the error's shape name
//!   and the `x-amzn-query-error` header (`InvalidParameterValue;Sender`) through which
//!   botocore gives it CloudWatch's code, as CloudWatch (`awsQueryCompatible`) answers.
//! - `query` (a form body with `Action` and `Version=2010-08-01`), what older SDKs and
//!   tools use: the form's keys (`Dimensions.member.1.Name`) become the operation's JSON
//!   input, each value typed by the member table (`plinth_policy::members::member_form`:
//!   numbers, booleans, strings; times are ISO 8601); the output is CloudWatch's XML
//!   (`<GetMetricStatisticsResponse>` with a `<...Result>` and `ResponseMetadata`), lists as
//!   `<member>` items, `ExtendedStatistics` as a map of `<entry>`s, members whose names end
//!   in `Timestamp`(`s`) as ISO 8601 times; an error is CloudWatch's `<ErrorResponse>`.

use super::server::Server;
use crate::error::ApiError;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_policy::members::{member_form, Form};
use serde_json::{Map, Value};
use std::sync::Arc;

/// `X-Amz-Target`'s prefix for CloudWatch's operations.
pub(crate) const TARGET_PREFIX: &str = "GraniteServiceVersion20100801.";

/// The `Version` the `query` protocol names.
const VERSION: &str = "2010-08-01";

/// CloudWatch's XML namespace.
const XMLNS: &str = "http://monitoring.amazonaws.com/doc/2010-08-01/";

/// The shape botocore names each of CloudWatch's error codes by (`__type`).
fn shape_of(code: &str) -> &str {
    match code {
        "InvalidParameterValue" => "InvalidParameterValueException",
        "InvalidParameterCombination" => "InvalidParameterCombinationException",
        "MissingParameter" => "MissingRequiredParameterException",
        "InternalServiceError" => "InternalServiceFault",
        "LimitExceeded" => "LimitExceededFault",
        other => other,
    }
}

/// Whether the client or the server is at fault, as `x-amzn-query-error` and `<Type>` say.
fn fault(status: StatusCode) -> &'static str {
    if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    }
}

/// An awsJson1.0 call: `operation`'s JSON input in `body`.
pub(crate) async fn json(server: &Arc<Server>, operation: &str, body: &[u8]) -> Response {
    let input: Value = if body.is_empty() {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return json_error(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    format!("the request body is not valid JSON: {e}"),
                ))
            }
        }
    };
    match crate::ops::cloudwatch::call(&server.fleet, operation, input).await {
        Ok(output) => (
            [("content-type", "application/x-amz-json-1.0")],
            axum::Json(output),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(operation, error = %e.message(), "CloudWatch call refused");
            json_error(e)
        }
    }
}

fn json_error(e: ApiError) -> Response {
    let (status, code) = (e.status(), e.code());
    let body = serde_json::json!({ "__type": shape_of(code), "message": e.message() });
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{code};{}", fault(status))) {
        headers.insert("x-amzn-query-error", v);
    }
    response
}

/// The operation a `query` form body names (`Action`), if it is one.
pub(crate) fn query_action(body: &[u8]) -> Option<String> {
    form(body)
        .into_iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v)
}

/// A form body's pairs, decoded (`+` is a space).
fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let spaced = s.replace('+', " ");
        String::from_utf8_lossy(&crate::sigv4::percent_decode(&spaced)).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// A `query` call: the form in `body`.
pub(crate) async fn query(server: &Arc<Server>, body: &[u8]) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let pairs = form(body);
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(operation) = field("Action").map(str::to_owned) else {
        return xml_error(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "MissingAction",
                "The request must contain the parameter Action.",
            ),
            &request_id,
        );
    };
    if field("Version") != Some(VERSION) {
        return xml_error(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
                format!(
                    "The parameter Version must be {VERSION}; got {:?}.",
                    field("Version").unwrap_or_default()
                ),
            ),
            &request_id,
        );
    }
    let input = match input_of(&operation, &pairs) {
        Ok(input) => input,
        Err(e) => return xml_error(e, &request_id),
    };
    match crate::ops::cloudwatch::call(&server.fleet, &operation, input).await {
        Ok(output) => {
            let mut xml = format!("<{operation}Response xmlns=\"{XMLNS}\"><{operation}Result>");
            if let Value::Object(members) = &output {
                for (name, value) in members {
                    element(&mut xml, name, value);
                }
            }
            xml.push_str(&format!(
                "</{operation}Result><ResponseMetadata><RequestId>{request_id}</RequestId>\
                 </ResponseMetadata></{operation}Response>"
            ));
            (
                [
                    ("content-type", "text/xml"),
                    ("x-amzn-requestid", request_id.as_str()),
                ],
                xml,
            )
                .into_response()
        }
        Err(e) => {
            tracing::info!(operation, error = %e.message(), "CloudWatch call refused");
            xml_error(e, &request_id)
        }
    }
}

/// The largest list index a form may give (`Dimensions.member.N`): more than any of
/// CloudWatch's lists holds, and small enough that a form cannot ask for a huge list.
const MAX_ITEMS: usize = 1000;

/// The most list items a whole form may make (nested lists multiply).
const MAX_TOTAL_ITEMS: usize = 20_000;

/// The JSON input the form's pairs stand for, each value typed by the member table.
fn input_of(operation: &str, pairs: &[(String, String)]) -> Result<Value, ApiError> {
    let mut input = Value::Object(Map::new());
    let mut items = 0usize;
    for (key, raw) in pairs {
        if key == "Action" || key == "Version" {
            continue;
        }
        let parts: Vec<&str> = key.split('.').collect();
        // The member path without list items: what the table is keyed by.
        let mut names: Vec<&str> = Vec::new();
        let mut at = &mut input;
        let mut i = 0;
        while i < parts.len() {
            let part = parts[i];
            let is_item = part == "member"
                && parts
                    .get(i + 1)
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n >= 1);
            if is_item {
                let n: usize = parts[i + 1].parse().unwrap_or(1);
                if n > MAX_ITEMS {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameterValue",
                        format!("{key}: a list holds at most {MAX_ITEMS} members."),
                    ));
                }
                if !at.is_array() {
                    *at = Value::Array(Vec::new());
                }
                let list = at.as_array_mut().expect("made an array above");
                if list.len() < n {
                    items += n - list.len();
                    if items > MAX_TOTAL_ITEMS {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidParameterValue",
                            format!(
                                "The form's lists hold more than {MAX_TOTAL_ITEMS} members in all."
                            ),
                        ));
                    }
                    list.resize(n, Value::Null);
                }
                at = &mut list[n - 1];
                i += 2;
                continue;
            }
            names.push(part);
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            at = at
                .as_object_mut()
                .expect("made an object above")
                .entry(part.to_owned())
                .or_insert(Value::Null);
            i += 1;
        }
        *at = match member_form(operation, &names) {
            Some(Form::Number(_)) => match raw.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => raw
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    // A time is ISO 8601 on this protocol.
                    .or_else(|| plinth_policy::metric_data::parse_iso8601(raw).map(Value::from))
                    // A bad number: the member check refuses it, naming it.
                    .unwrap_or_else(|| Value::String(raw.clone())),
            },
            Some(Form::Boolean(_)) => match raw.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(raw.clone()),
            },
            _ => Value::String(raw.clone()),
        };
    }
    Ok(input)
}

/// Escape `text` for XML; characters XML 1.0 cannot hold (control characters but tab and
/// line breaks) become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The members whose JSON objects are maps (`<entry><key/><value/></entry>`), not structures.
const MAPS: &[&str] = &["ExtendedStatistics"];

/// `value` as the element `name`, appended to `xml`.
fn element(xml: &mut String, name: &str, value: &Value) {
    let is_time = name.ends_with("Timestamp") || name.ends_with("Timestamps");
    match value {
        Value::Null => {}
        Value::Array(items) => {
            xml.push_str(&format!("<{name}>"));
            for item in items {
                if is_time {
                    xml.push_str(&format!("<member>{}</member>", iso(item)));
                } else {
                    element(xml, "member", item);
                }
            }
            xml.push_str(&format!("</{name}>"));
        }
        Value::Object(members) if MAPS.contains(&name) => {
            xml.push_str(&format!("<{name}>"));
            for (key, v) in members {
                xml.push_str(&format!("<entry><key>{}</key>", escape(key)));
                element(xml, "value", v);
                xml.push_str("</entry>");
            }
            xml.push_str(&format!("</{name}>"));
        }
        Value::Object(members) => {
            xml.push_str(&format!("<{name}>"));
            for (key, v) in members {
                element(xml, key, v);
            }
            xml.push_str(&format!("</{name}>"));
        }
        Value::String(s) => xml.push_str(&format!("<{name}>{}</{name}>", escape(s))),
        Value::Number(_) if is_time => xml.push_str(&format!("<{name}>{}</{name}>", iso(value))),
        Value::Number(n) => xml.push_str(&format!("<{name}>{n}</{name}>")),
        Value::Bool(b) => xml.push_str(&format!("<{name}>{b}</{name}>")),
    }
}

/// A time in seconds as ISO 8601.
fn iso(value: &Value) -> String {
    plinth_policy::async_inference::iso8601(value.as_f64().unwrap_or(0.0))
}

fn xml_error(e: ApiError, request_id: &str) -> Response {
    let status = e.status();
    let xml = format!(
        "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{}</Type><Code>{}</Code>\
         <Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        fault(status),
        e.code(),
        escape(e.message())
    );
    (
        status,
        [
            ("content-type", "text/xml"),
            ("x-amzn-requestid", request_id),
        ],
        xml,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_becomes_the_operations_input_typed_by_the_table() {
        let body = b"Action=GetMetricData&Version=2010-08-01\
            &MetricDataQueries.member.1.Id=m1\
            &MetricDataQueries.member.1.MetricStat.Metric.Namespace=AWS%2FSageMaker\
            &MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.2.Name=VariantName\
            &MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.2.Value=007\
            &MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.1.Name=EndpointName\
            &MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.1.Value=my+endpoint\
            &MetricDataQueries.member.1.MetricStat.Period=60\
            &MetricDataQueries.member.1.ReturnData=true\
            &StartTime=2026-12-07T21%3A00%3A00Z&MaxDatapoints=10";
        let pairs = form(body);
        assert_eq!(query_action(body).as_deref(), Some("GetMetricData"));
        let input = input_of("GetMetricData", &pairs).unwrap();
        assert_eq!(
            input,
            serde_json::json!({
                "MetricDataQueries": [{
                    "Id": "m1",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/SageMaker",
                            "Dimensions": [
                                {"Name": "EndpointName", "Value": "my endpoint"},
                                {"Name": "VariantName", "Value": "007"},
                            ],
                        },
                        "Period": 60,
                    },
                    "ReturnData": true,
                }],
                "StartTime": 1_796_677_200,
                "MaxDatapoints": 10,
            })
        );
    }

    #[test]
    fn a_huge_list_index_is_refused() {
        let pairs = form(b"Action=ListMetrics&Dimensions.member.1000000000.Name=x");
        let e = input_of("ListMetrics", &pairs).unwrap_err();
        assert_eq!(e.code(), "InvalidParameterValue");
        assert!(e.message().contains("at most 1000"), "{}", e.message());
    }

    #[test]
    fn nested_lists_cannot_make_a_huge_input() {
        let body: String = (1..=30)
            .map(|k| {
                format!(
                    "&MetricDataQueries.member.{k}.MetricStat.Metric.Dimensions.member.1000.Name=x"
                )
            })
            .collect();
        let pairs = form(format!("Action=GetMetricData{body}").as_bytes());
        let e = input_of("GetMetricData", &pairs).unwrap_err();
        assert!(e.message().contains("20000"), "{}", e.message());
        assert_eq!(escape("a\u{1}<b>"), "a\u{FFFD}&lt;b&gt;");
    }

    #[test]
    fn output_is_cloudwatch_xml() {
        let mut xml = String::new();
        let output = serde_json::json!({
            "Label": "ModelLatency",
            "Datapoints": [{"Timestamp": 0, "Sum": 2.5, "ExtendedStatistics": {"p99": 3.0}}],
        });
        for (name, value) in output.as_object().unwrap() {
            element(&mut xml, name, value);
        }
        assert_eq!(
            xml,
            "<Datapoints><member><ExtendedStatistics><entry><key>p99</key><value>3.0</value>\
             </entry></ExtendedStatistics><Sum>2.5</Sum><Timestamp>1970-01-01T00:00:00.000Z</Timestamp>\
             </member></Datapoints><Label>ModelLatency</Label>"
        );
    }
}
