//! Request authentication and authorization for the HTTP server: with credentials configured,
//! every control-plane and InvokeEndpoint request must carry a valid AWS Signature Version 4
//! for one of them (as boto3 signs it), or it is refused with 403 and an AWS error before
//! anything runs. The signature itself is checked by `sigv4`.
//!
//! Then, when the key has a policy, the request's IAM action (`sagemaker:<Operation>` or
//! `application-autoscaling:<Operation>` or `cloudwatch:<Operation>` from `X-Amz-Target` or
//! CloudWatch's form body, `sagemaker:InvokeEndpoint` for
//! invocations) and the resources it names
//! ([`requested`]) must be allowed by it (`plinth_policy::iam`), or it is refused with 400
//! `AccessDeniedException` and IAM's message, again before anything runs.

use super::body::read_body;
use super::control::CONTROL_BODY_LIMIT;
use super::server::Server;
use crate::error::ApiError;
use crate::sigv4::{self, Caller};
use crate::state::arn;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plinth_policy::iam::Denial;
use serde_json::Value;
use std::sync::Arc;

/// Middleware: pass a request on only with a valid signature (or when no credentials are
/// configured) by a key whose policy allows it. What the head shows is checked before the
/// body is read (`sigv4::Verifier::verify_head`: the key, the scope, the clock, and the
/// signature itself when the client declared its body's hash), so that an unsigned or
/// foreign client cannot make the server buffer a body; the body is then read once (within
/// the route's size limit) to check its hash and to find the resources it names.
pub(crate) async fn require_signature(
    State(server): State<Arc<Server>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(verifier) = &server.verifier else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let limit = if parts.uri.path() == "/" {
        CONTROL_BODY_LIMIT
    } else {
        server.max_payload_bytes
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let refused = |e: sigv4::AuthError| {
        tracing::warn!(path = %parts.uri.path(), code = e.code(), error = %e, "request refused: bad signature");
        ApiError::new(StatusCode::FORBIDDEN, e.code(), e.to_string()).into_response()
    };
    let pending = match verifier.verify_head(
        parts.method.as_str(),
        path_and_query,
        &parts.headers,
        std::time::SystemTime::now(),
    ) {
        Ok(pending) => pending,
        Err(e) => return refused(e),
    };
    let content_length = parts.headers.get(axum::http::header::CONTENT_LENGTH);
    let body = match read_body(content_length, body, limit, "").await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let caller = match pending.finish(&body) {
        Ok(caller) => caller,
        Err(e) => return refused(e),
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = authorize(caller, parts.uri.path(), target, &body) {
        tracing::warn!(
            path = %parts.uri.path(),
            access_key_id = caller.access_key_id,
            error = %e.message(),
            "request refused: not authorized"
        );
        return e.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// Whether `caller`'s policy allows the request (`path`, `X-Amz-Target`, body); a key without
/// a policy may do everything. The refusal is IAM's `AccessDeniedException` (400, as AWS
/// answers it on SageMaker's JSON protocols).
fn authorize(
    caller: Caller<'_>,
    path: &str,
    target: Option<&str>,
    body: &[u8],
) -> Result<(), ApiError> {
    let Some(policy) = caller.policy else {
        return Ok(());
    };
    // A request that names no SageMaker operation runs nothing; its handler refuses it.
    let Some((action, resources)) = requested(path, target, body) else {
        return Ok(());
    };
    policy
        .authorize(&action, &resources)
        .map_err(|denial| access_denied(caller.access_key_id, &action, &denial))
}

/// IAM's refusal, worded as IAM words it.
fn access_denied(access_key_id: &str, action: &str, denial: &Denial) -> ApiError {
    let Denial { resource, explicit } = denial;
    let why = if *explicit {
        "with an explicit deny in an identity-based policy".to_owned()
    } else {
        format!("because no identity-based policy allows the {action} action")
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "AccessDeniedException",
        format!(
            "User: {access_key_id} is not authorized to perform: {action} on resource: \
             {resource} {why}"
        ),
    )
}

/// The members that name a resource, with the ARN type each names.
const RESOURCE_MEMBERS: [(&str, &str); 4] = [
    ("EndpointName", "endpoint"),
    ("EndpointConfigName", "endpoint-config"),
    ("ModelName", "model"),
    ("AlarmName", "alarm"),
];

/// The IAM action and resource ARNs a request names, or `None` for one that names no
/// SageMaker operation:
///
/// - `POST /endpoints/<name>/invocations`: `sagemaker:InvokeEndpoint` on the endpoint's ARN;
/// - `POST /` with `X-Amz-Target: SageMaker.<Operation>`: `sagemaker:<Operation>` on the ARN
///   of each top-level `EndpointName`, `EndpointConfigName`, `ModelName` and `AlarmName`
///   string in the body; `List*` operations, and a body naming none of them (or not a JSON
///   object), are on `*`, as IAM has it for actions on no particular resource;
/// - `POST /` with `X-Amz-Target: AnyScaleFrontendService.<Operation>`:
///   `application-autoscaling:<Operation>` on `*`;
/// - `POST /` with `X-Amz-Target: GraniteServiceVersion20100801.<Operation>`, or a form body
///   with `Action=<Operation>` (CloudWatch's `query` protocol): `cloudwatch:<Operation>` on
///   `*`.
///
/// Names are lowercased in ARNs, as SageMaker's ARNs are (`state::arn`).
fn requested(path: &str, target: Option<&str>, body: &[u8]) -> Option<(String, Vec<String>)> {
    if let Some(rest) = path.strip_prefix("/endpoints/") {
        let (name, action) = match rest.strip_suffix("/async-invocations") {
            Some(name) => (name, "sagemaker:InvokeEndpointAsync"),
            None => (
                rest.strip_suffix("/invocations")?,
                "sagemaker:InvokeEndpoint",
            ),
        };
        // The router decodes the path's name before the handler sees it; so does the check.
        let name = String::from_utf8_lossy(&sigv4::percent_decode(name)).into_owned();
        return Some((action.to_owned(), vec![arn("endpoint", &name)]));
    }
    // An empty `X-Amz-Target` is none, as the router reads it.
    let Some(target) = target.filter(|t| !t.is_empty()) else {
        // CloudWatch's `query` protocol: the operation is the form body's `Action`.
        let action = super::cloudwatch::query_action(body)?;
        return Some((format!("cloudwatch:{action}"), vec!["*".to_owned()]));
    };
    if let Some(operation) = target.strip_prefix(super::cloudwatch::TARGET_PREFIX) {
        // CloudWatch's metric actions name no resource.
        return Some((format!("cloudwatch:{operation}"), vec!["*".to_owned()]));
    }
    if let Some(operation) = target.strip_prefix(super::control::AUTOSCALING_PREFIX) {
        // Application Auto Scaling's actions name no SageMaker resource.
        return Some((
            format!("application-autoscaling:{operation}"),
            vec!["*".to_owned()],
        ));
    }
    let operation = target.strip_prefix("SageMaker.")?;
    let action = format!("sagemaker:{operation}");
    if operation.starts_with("List") {
        return Some((action, vec!["*".to_owned()]));
    }
    let input: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    let resources: Vec<String> = RESOURCE_MEMBERS
        .iter()
        .filter_map(|(member, kind)| {
            let name = input.as_ref()?.get(*member)?.as_str()?;
            Some(arn(kind, name))
        })
        .collect();
    let resources = if resources.is_empty() {
        vec!["*".to_owned()]
    } else {
        resources
    };
    Some((action, resources))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_policy::iam::Policy;

    const PREFIX: &str = "arn:aws:sagemaker:us-east-1:123456789012";

    fn control(operation: &str, body: &str) -> Option<(String, Vec<String>)> {
        requested(
            "/",
            Some(&format!("SageMaker.{operation}")),
            body.as_bytes(),
        )
    }

    fn owned(action: &str, resources: &[&str]) -> Option<(String, Vec<String>)> {
        Some((
            action.to_owned(),
            resources.iter().map(|r| (*r).to_owned()).collect(),
        ))
    }

    #[test]
    fn invocations_name_their_endpoint() {
        assert_eq!(
            requested("/endpoints/Prod-A/invocations", None, b"anything"),
            owned(
                "sagemaker:InvokeEndpoint",
                &[&format!("{PREFIX}:endpoint/prod-a")]
            )
        );
        // An encoded name is decoded as the router decodes it, so it cannot slip past a rule.
        assert_eq!(
            requested("/endpoints/prod%2Da/invocations", None, b""),
            owned(
                "sagemaker:InvokeEndpoint",
                &[&format!("{PREFIX}:endpoint/prod-a")]
            )
        );
    }

    #[test]
    fn control_plane_names_its_members() {
        assert_eq!(
            control(
                "CreateModel",
                r#"{"ModelName": "m", "PrimaryContainer": {}}"#
            ),
            owned("sagemaker:CreateModel", &[&format!("{PREFIX}:model/m")])
        );
        assert_eq!(
            control(
                "CreateEndpoint",
                r#"{"EndpointName": "E", "EndpointConfigName": "c"}"#
            ),
            owned(
                "sagemaker:CreateEndpoint",
                &[
                    &format!("{PREFIX}:endpoint/e"),
                    &format!("{PREFIX}:endpoint-config/c")
                ]
            )
        );
        assert_eq!(
            control("CreateAlarm", r#"{"AlarmName": "a", "EndpointName": "e"}"#),
            owned(
                "sagemaker:CreateAlarm",
                &[
                    &format!("{PREFIX}:endpoint/e"),
                    &format!("{PREFIX}:alarm/a")
                ]
            )
        );
        // List* is on `*`, even when it filters by an endpoint.
        assert_eq!(
            control("ListEndpointEvents", r#"{"EndpointName": "e"}"#),
            owned("sagemaker:ListEndpointEvents", &["*"])
        );
        assert_eq!(
            control("ListModels", ""),
            owned("sagemaker:ListModels", &["*"])
        );
        // Not JSON, not an object, or a name of the wrong type: `*` (the handler refuses it).
        for body in ["not json", "[1]", r#"{"ModelName": 5}"#, ""] {
            assert_eq!(
                control("DescribeModel", body),
                owned("sagemaker:DescribeModel", &["*"]),
                "{body}"
            );
        }
        // No SageMaker operation: nothing to authorize; the handler refuses it.
        assert_eq!(requested("/", Some("Other.CreateModel"), b"{}"), None);
        assert_eq!(requested("/", None, b"{}"), None);
    }

    #[test]
    fn refusals_read_as_iam_words_them() {
        let policy = Policy::parse(
            r#"{"Statement": [
                {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "sagemaker:DeleteEndpoint",
                 "Resource": "arn:aws:sagemaker:*:*:endpoint/prod-*"}
            ]}"#,
        )
        .expect("valid");
        let caller = Caller {
            access_key_id: "AKIDLIMITED",
            policy: Some(&policy),
        };
        let e = authorize(
            caller,
            "/",
            Some("SageMaker.DeleteEndpoint"),
            br#"{"EndpointName": "prod-1"}"#,
        )
        .expect_err("explicit deny");
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::BAD_REQUEST, "AccessDeniedException")
        );
        assert_eq!(
            e.message(),
            format!(
                "User: AKIDLIMITED is not authorized to perform: sagemaker:DeleteEndpoint on \
                 resource: {PREFIX}:endpoint/prod-1 with an explicit deny in an identity-based \
                 policy"
            )
        );
        authorize(
            caller,
            "/",
            Some("SageMaker.DeleteEndpoint"),
            br#"{"EndpointName": "dev-1"}"#,
        )
        .expect("allowed");

        let invoke_only = Policy::parse(
            r#"{"Statement": {"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint",
                "Resource": "arn:aws:sagemaker:*:*:endpoint/*"}}"#,
        )
        .expect("valid");
        let caller = Caller {
            access_key_id: "AKIDINVOKE",
            policy: Some(&invoke_only),
        };
        authorize(caller, "/endpoints/e/invocations", None, b"1,2").expect("invoke");
        let e = authorize(
            caller,
            "/",
            Some("SageMaker.CreateModel"),
            br#"{"ModelName": "m"}"#,
        )
        .expect_err("implicit deny");
        assert_eq!(
            e.message(),
            format!(
                "User: AKIDINVOKE is not authorized to perform: sagemaker:CreateModel on \
                 resource: {PREFIX}:model/m because no identity-based policy allows the \
                 sagemaker:CreateModel action"
            )
        );

        // A key without a policy may do everything.
        let full = Caller {
            access_key_id: "AKIDFULL",
            policy: None,
        };
        authorize(full, "/", Some("SageMaker.DeleteEndpoint"), b"{}").expect("full access");
    }
}
