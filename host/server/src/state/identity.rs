//! How stored resources are named and dated as SageMaker shows them: ARNs (one account, one
//! region) and epoch timestamps.

use std::time::SystemTime;

/// The account id in messages and ARNs; Plinth has no accounts.
pub(crate) const ACCOUNT_ID: &str = "123456789012";

/// The region named in ARNs.
const REGION: &str = "us-east-1";

/// SageMaker's ARN for a resource (`kind` is `model`, `endpoint-config`, `endpoint` or
/// `alarm`).
pub(crate) fn arn(kind: &str, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:{kind}/{}",
        name.to_lowercase()
    )
}

/// Now, in epoch seconds to the millisecond (SageMaker's timestamps).
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}
