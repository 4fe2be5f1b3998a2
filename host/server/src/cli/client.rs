//! The HTTP client side of the `plinth` CLI: control-plane operations and InvokeEndpoint
//! against a Plinth server (or anything that speaks the same API), signed with SigV4 when
//! credentials are given.

use crate::apply::{CallError, Control};
use crate::sigv4::{self, Credential};
use anyhow::Context;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// A server's address and how to sign for it.
pub(crate) struct Client {
    base: String,
    host: String,
    credential: Option<Credential>,
    region: String,
    http: reqwest::blocking::Client,
}

/// An InvokeEndpoint answer.
pub(crate) struct Answer {
    pub(crate) status: reqwest::StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Client {
    pub(crate) fn new(
        url: &str,
        credential: Option<Credential>,
        region: String,
    ) -> anyhow::Result<Self> {
        let parsed =
            reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a valid URL"))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => anyhow::bail!("{url:?} has no host"),
        };
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            host,
            credential,
            region,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(70))
                .build()?,
        })
    }

    /// POST `path` with `headers` and `body`, signed if there are credentials.
    fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> anyhow::Result<Answer> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("host", &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(credential) = &self.credential {
            for (name, value) in sigv4::sign(
                credential,
                &self.region,
                "POST",
                &self.host,
                path,
                headers,
                &body,
                SystemTime::now(),
            ) {
                request = request.header(name, value);
            }
        }
        let response = request
            .body(body)
            .send()
            .with_context(|| format!("cannot reach {}", self.base))?;
        Ok(Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes()?.to_vec(),
        })
    }

    /// InvokeEndpoint.
    pub(crate) fn invoke(
        &self,
        endpoint: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        self.post(&format!("/endpoints/{endpoint}/invocations"), headers, body)
    }
}

impl Control for Client {
    fn call(&mut self, operation: &str, input: Value) -> Result<Value, CallError> {
        let (service, content_type) =
            if plinth_policy::members::autoscaling_operations().any(|o| o == operation) {
                ("AnyScaleFrontendService", "application/x-amz-json-1.1")
            } else if plinth_policy::members::cloudwatch_operations().any(|o| o == operation) {
                (
                    "GraniteServiceVersion20100801",
                    "application/x-amz-json-1.0",
                )
            } else {
                ("SageMaker", "application/x-amz-json-1.1")
            };
        let target = format!("{service}.{operation}");
        let answer = self
            .post(
                "/",
                &[("content-type", content_type), ("x-amz-target", &target)],
                input.to_string().into_bytes(),
            )
            .map_err(|e| CallError {
                code: "ConnectionError".into(),
                message: format!("{e:#}"),
            })?;
        let output: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        if !answer.status.is_success() {
            return Err(CallError {
                code: output["__type"]
                    .as_str()
                    .unwrap_or(answer.status.as_str())
                    .to_string(),
                message: output["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned()),
            });
        }
        Ok(output)
    }
}
