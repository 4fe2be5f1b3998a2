//! IAM-style authorization per access key, against the real server: a credentials file whose
//! keys carry IAM JSON policies (README "Authentication").
//!
//! - `keys_do_only_what_their_policies_allow`: signed by the `plinth` CLI, an invoke-only key
//!   invokes but cannot CreateModel, DeleteEndpoint or DescribeEndpoint; a read-only key
//!   (`Describe*`, `List*`) describes and lists but cannot UpdateEndpointWeightsAndCapacities
//!   or invoke; a key allowed `sagemaker:*` with a `Deny` on deleting `endpoint/prod-*` is
//!   refused that (an explicit deny wins) and allowed the rest; a key without a policy does
//!   everything; every refusal is `AccessDeniedException` with IAM's message and changes
//!   nothing.
//! - `an_invalid_policy_stops_the_server`: a policy with an unknown `Effect` or a non-SageMaker
//!   action stops `plinth serve`, naming the key and the field.
//! - `boto3_sees_access_denied`: unmodified boto3 (`sagemaker`, `sagemaker-runtime`) with the
//!   README's two example keys gets `ClientError` with code `AccessDeniedException` and HTTP
//!   400 (`test_authorization_boto3.py`). Needs `.venv/bin/python` with boto3: skipped
//!   without it, failed without it when `CI=true`.

use plinth_tests::{
    expect_failure, expect_success, run_cli, toml_string, Config, Model, Options, Server, ECHO_WASM,
};
use serde_json::{json, Value};
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

const ADMIN: (&str, &str) = ("AKIDADMIN", "admin-secret");
const INVOKER: (&str, &str) = ("AKIDINVOKER", "invoker-secret");
const READER: (&str, &str) = ("AKIDREADER", "reader-secret");
const GUARDED: (&str, &str) = ("AKIDGUARDED", "guarded-secret");

/// The README's invoke-only policy.
const INVOKE_ONLY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [{
    "Effect": "Allow",
    "Action": "sagemaker:InvokeEndpoint",
    "Resource": "arn:aws:sagemaker:*:*:endpoint/*"
  }]
}"#;

/// The README's read-only policy.
const READ_ONLY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [{
    "Effect": "Allow",
    "Action": ["sagemaker:Describe*", "sagemaker:List*"],
    "Resource": "*"
  }]
}"#;

/// Everything, except deleting production endpoints.
const GUARDED_POLICY: &str = r#"{
  "Statement": [
    {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"},
    {"Effect": "Deny", "Action": "sagemaker:Delete*",
     "Resource": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/prod-*"}
  ]
}"#;

const ENDPOINT_ARN: &str = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/prod-echo";

/// One `[[credentials]]` table, with `policy` if given.
fn key((id, secret): (&str, &str), policy: Option<&str>) -> String {
    let mut table = format!(
        "[[credentials]]\naccess_key_id = {}\nsecret_access_key = {}\n",
        toml_string(id),
        toml_string(secret)
    );
    if let Some(policy) = policy {
        table.push_str(&format!("policy = '''\n{policy}\n'''\n"));
    }
    table
}

/// A server with the four keys and one echo endpoint, `prod-echo`.
fn server() -> Server {
    let credentials = [
        key(ADMIN, None),
        key(INVOKER, Some(INVOKE_ONLY)),
        key(READER, Some(READ_ONLY)),
        key(GUARDED, Some(GUARDED_POLICY)),
    ]
    .concat();
    Server::start_with(
        BIN,
        Options {
            config: Some(
                Config::new()
                    .endpoint(Model::new("prod-echo", ECHO_WASM), 1)
                    .to_toml(),
            ),
            credentials: Some(credentials),
            ..Options::default()
        },
    )
}

fn api(server: &Server, operation: &str, input: &Value, key: (&str, &str)) -> Output {
    run_cli(
        BIN,
        &[
            "api",
            operation,
            &input.to_string(),
            "--endpoint-url",
            server.url(),
        ],
        Some(key),
    )
}

fn invoke(server: &Server, key: (&str, &str)) -> Output {
    run_cli(
        BIN,
        &[
            "invoke",
            "--endpoint",
            "prod-echo",
            "--endpoint-url",
            server.url(),
            "--content-type",
            "text/plain",
            "--body",
            "hello",
        ],
        Some(key),
    )
}

/// IAM's message for an action no statement allows.
fn not_allowed(key: (&str, &str), action: &str, resource: &str) -> String {
    format!(
        "User: {} is not authorized to perform: {action} on resource: {resource} because no \
         identity-based policy allows the {action} action",
        key.0
    )
}

fn endpoint_status(server: &Server) -> Value {
    let stdout = expect_success(
        &api(
            server,
            "DescribeEndpoint",
            &json!({ "EndpointName": "prod-echo" }),
            ADMIN,
        ),
        "DescribeEndpoint (admin)",
    );
    let output: Value = serde_json::from_str(&stdout).expect("DescribeEndpoint JSON");
    output["EndpointStatus"].clone()
}

#[test]
fn keys_do_only_what_their_policies_allow() {
    let server = server();
    let model = json!({ "ModelName": "intruder", "PrimaryContainer": { "Image": ECHO_WASM } });
    let model_arn = "arn:aws:sagemaker:us-east-1:123456789012:model/intruder";
    let weights = json!({
        "EndpointName": "prod-echo",
        "DesiredWeightsAndCapacities": [{ "VariantName": "AllTraffic", "DesiredWeight": 2.0 }],
    });

    // The invoke-only key invokes, and nothing else.
    let stdout = expect_success(&invoke(&server, INVOKER), "invoke (invoke-only key)");
    assert_eq!(stdout.trim(), "hello");
    expect_failure(
        &api(&server, "CreateModel", &model, INVOKER),
        "CreateModel (invoke-only key)",
        &[
            "AccessDeniedException",
            &not_allowed(INVOKER, "sagemaker:CreateModel", model_arn),
        ],
    );
    expect_failure(
        &api(
            &server,
            "DeleteEndpoint",
            &json!({ "EndpointName": "prod-echo" }),
            INVOKER,
        ),
        "DeleteEndpoint (invoke-only key)",
        &[
            "AccessDeniedException",
            &not_allowed(INVOKER, "sagemaker:DeleteEndpoint", ENDPOINT_ARN),
        ],
    );
    expect_failure(
        &api(&server, "ListEndpoints", &json!({}), INVOKER),
        "ListEndpoints (invoke-only key)",
        &[
            "AccessDeniedException",
            &not_allowed(INVOKER, "sagemaker:ListEndpoints", "*"),
        ],
    );

    // The read-only key describes and lists, and changes nothing.
    expect_success(
        &api(
            &server,
            "DescribeEndpoint",
            &json!({ "EndpointName": "prod-echo" }),
            READER,
        ),
        "DescribeEndpoint (read-only key)",
    );
    for operation in ["ListEndpoints", "ListModels", "ListEndpointConfigs"] {
        expect_success(
            &api(&server, operation, &json!({}), READER),
            &format!("{operation} (read-only key)"),
        );
    }
    expect_failure(
        &api(
            &server,
            "UpdateEndpointWeightsAndCapacities",
            &weights,
            READER,
        ),
        "UpdateEndpointWeightsAndCapacities (read-only key)",
        &[
            "AccessDeniedException",
            &not_allowed(
                READER,
                "sagemaker:UpdateEndpointWeightsAndCapacities",
                ENDPOINT_ARN,
            ),
        ],
    );
    expect_failure(
        &invoke(&server, READER),
        "invoke (read-only key)",
        &[
            "AccessDeniedException",
            &not_allowed(READER, "sagemaker:InvokeEndpoint", ENDPOINT_ARN),
        ],
    );

    // An explicit deny overrides the allow of `sagemaker:*`; the rest stays allowed.
    expect_failure(
        &api(
            &server,
            "DeleteEndpoint",
            &json!({ "EndpointName": "prod-echo" }),
            GUARDED,
        ),
        "DeleteEndpoint (guarded key)",
        &[
            "AccessDeniedException",
            &format!(
                "User: {} is not authorized to perform: sagemaker:DeleteEndpoint on resource: \
                 {ENDPOINT_ARN} with an explicit deny in an identity-based policy",
                GUARDED.0
            ),
        ],
    );
    expect_success(
        &api(&server, "CreateModel", &model, GUARDED),
        "CreateModel (guarded key)",
    );
    expect_success(
        &api(
            &server,
            "DeleteModel",
            &json!({ "ModelName": "intruder" }),
            GUARDED,
        ),
        "DeleteModel (guarded key: not an endpoint)",
    );

    // Nothing refused changed anything: the endpoint is still there, serving.
    assert_eq!(endpoint_status(&server), "InService");
    let stdout = expect_success(
        &api(&server, "ListModels", &json!({}), ADMIN),
        "ListModels (admin)",
    );
    assert!(!stdout.contains("intruder"), "{stdout}");
    let stdout = expect_success(
        &api(
            &server,
            "DescribeEndpoint",
            &json!({ "EndpointName": "prod-echo" }),
            ADMIN,
        ),
        "DescribeEndpoint (admin)",
    );
    let output: Value = serde_json::from_str(&stdout).expect("DescribeEndpoint JSON");
    assert_eq!(
        output["ProductionVariants"][0]["CurrentWeight"],
        json!(1.0),
        "{output}"
    );

    // A key without a policy may do everything.
    expect_success(
        &api(
            &server,
            "UpdateEndpointWeightsAndCapacities",
            &weights,
            ADMIN,
        ),
        "UpdateEndpointWeightsAndCapacities (admin)",
    );
    expect_success(&invoke(&server, ADMIN), "invoke (admin)");
    assert!(
        server.stderr().contains("request refused: not authorized"),
        "the refusals are logged"
    );
}

#[test]
fn an_invalid_policy_stops_the_server() {
    for (policy, fragments) in [
        (
            r#"{"Statement": [{"Effect": "Permit", "Action": "*", "Resource": "*"}]}"#,
            &[
                "credentials #2 (AKIDINVOKER)",
                "Statement[0].Effect must be \"Allow\" or \"Deny\"; got \"Permit\"",
            ],
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}"#,
            &[
                "credentials #2 (AKIDINVOKER)",
                "Statement[0].Action is empty",
            ],
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}"#,
            &[
                "credentials #2 (AKIDINVOKER)",
                "Statement[0].Action \"ec2:*\" is not a SageMaker, Application Auto Scaling or CloudWatch action",
            ],
        ),
    ] {
        let credentials = [key(ADMIN, None), key(INVOKER, Some(policy))].concat();
        let result = Server::try_start_with(
            BIN,
            Options {
                credentials: Some(credentials),
                ..Options::default()
            },
        );
        let Err(e) = result else {
            panic!("plinth serve started with the policy {policy}");
        };
        for fragment in fragments {
            assert!(
                e.stderr.contains(fragment),
                "{policy}: stderr lacks {fragment:?}:\n{}",
                e.stderr
            );
        }
    }
}

#[test]
fn boto3_sees_access_denied() {
    let Some(python) = plinth_tests::venv_python("boto3_sees_access_denied") else {
        return;
    };
    let server = server();
    server.run_python(
        &python,
        "test_authorization_boto3.py",
        &[
            ("PLINTH_ADMIN_KEY", ADMIN.0),
            ("PLINTH_ADMIN_SECRET", ADMIN.1),
            ("PLINTH_INVOKE_KEY", INVOKER.0),
            ("PLINTH_INVOKE_SECRET", INVOKER.1),
            ("PLINTH_READ_KEY", READER.0),
            ("PLINTH_READ_SECRET", READER.1),
            ("ECHO_WASM", ECHO_WASM),
        ],
    );
}

/// The head is checked before the body is read: an unsigned request, or one signed with a
/// key the server does not know, announcing a 5 MB body it never sends, is refused at once
/// (a server that buffered first would wait for the body until its read timeout).
#[test]
fn a_request_is_refused_before_its_body_is_read() {
    use std::io::{Read, Write};
    let server = server();
    let heads = [
        "POST /endpoints/e/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_string(),
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.ListModels\r\n\
         X-Amz-Date: 20260101T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=AKIDSTRANGER/20260101/us-east-1/sagemaker/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=00\r\n"
            .to_string(),
    ];
    for head in heads {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(stream, "{head}Content-Length: 5000000\r\n\r\n").unwrap();
        let mut answer = [0u8; 256];
        let n = stream
            .read(&mut answer)
            .unwrap_or_else(|e| panic!("no answer before the body ({e}):\n{head}"));
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
}
