//! How stored resources are named and dated as SageMaker and Application Auto Scaling show
//! them: ARNs (one account, one region) and epoch timestamps.

use std::time::SystemTime;

/// The account id in messages and ARNs; Plinth has no accounts.
pub(crate) const ACCOUNT_ID: &str = "123456789012";

/// The region named in ARNs.
pub(crate) const REGION: &str = "us-east-1";

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

/// Application Auto Scaling's ARN for a scalable target: its id is derived from the target's
/// key, so it is the same across restarts and re-registrations.
pub(crate) fn scalable_target_arn(resource_id: &str, dimension: &str) -> String {
    format!(
        "arn:aws:application-autoscaling:{REGION}:{ACCOUNT_ID}:scalable-target/{}",
        target_id(resource_id, dimension)
    )
}

/// Application Auto Scaling's ARN for a scaling policy.
pub(crate) fn scaling_policy_arn(resource_id: &str, dimension: &str, name: &str) -> String {
    format!(
        "arn:aws:autoscaling:{REGION}:{ACCOUNT_ID}:scalingPolicy:{}:resource/sagemaker/{resource_id}:policyName/{name}",
        target_id(resource_id, dimension)
    )
}

/// A scalable target's id: the first 128 bits of the SHA-256 of its key, as a UUID.
fn target_id(resource_id: &str, dimension: &str) -> uuid::Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{resource_id}\n{dimension}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}
