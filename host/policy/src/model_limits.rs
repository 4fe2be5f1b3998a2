//! What a model may ask of its sandbox, checked once for every way a model arrives
//! (CreateModel's `PlinthLimits` and `PrimaryContainer.Environment`, and the earlier
//! deployment-file spelling's `memory_mib`, `timeout_seconds` and `environment`): the ranges
//! and rules, and the problem found. Each caller names the field in its own spelling
//! ([`ModelProblem::field`]); the message says what is wrong and what is allowed. The
//! defaults are in the `config` module.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// Linear memory per instance, in MiB.
pub const MEMORY_MIB: RangeInclusive<u64> = 1..=4096;
/// The invocation deadline, in seconds (SageMaker's default is 60).
pub const TIMEOUT_SECONDS: RangeInclusive<u64> = 1..=3600;
/// The largest response body, in MiB (SageMaker's real-time cap is 6 MB, the default).
pub const MAX_RESPONSE_MIB: RangeInclusive<u64> = 1..=1024;
/// The most environment variables a model may set (SageMaker's).
pub const MAX_ENVIRONMENT: usize = 100;
/// The longest environment variable name and value (SageMaker's).
pub const MAX_ENVIRONMENT_LENGTH: usize = 1024;

/// Which setting a [`ModelProblem`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelField {
    /// The memory cap.
    Memory,
    /// The invocation deadline.
    Timeout,
    /// The cap on a response body.
    MaxResponse,
    /// The environment as a whole, or one of its entries.
    Environment,
}

/// A setting out of its range or rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelProblem {
    /// Memory outside [`MEMORY_MIB`].
    #[error("{0} MiB is out of range; use {start}-{end} MiB", start = MEMORY_MIB.start(), end = MEMORY_MIB.end())]
    Memory(u64),
    /// A deadline outside [`TIMEOUT_SECONDS`].
    #[error("{0} seconds is out of range; use {start}-{end} seconds", start = TIMEOUT_SECONDS.start(), end = TIMEOUT_SECONDS.end())]
    Timeout(u64),
    /// A response cap outside [`MAX_RESPONSE_MIB`].
    #[error("{0} MiB is out of range; use {start}-{end} MiB", start = MAX_RESPONSE_MIB.start(), end = MAX_RESPONSE_MIB.end())]
    MaxResponse(u64),
    /// More than [`MAX_ENVIRONMENT`] variables.
    #[error("{0} entries; the limit is {MAX_ENVIRONMENT}")]
    EnvironmentSize(usize),
    /// A name that is not `[a-zA-Z_][a-zA-Z0-9_]*` of at most [`MAX_ENVIRONMENT_LENGTH`].
    #[error(
        "key {0:?} must match [a-zA-Z_][a-zA-Z0-9_]* (at most {MAX_ENVIRONMENT_LENGTH} characters)"
    )]
    EnvironmentKey(String),
    /// A value longer than [`MAX_ENVIRONMENT_LENGTH`] bytes.
    #[error("the value of {key} is {length} bytes; the limit is {MAX_ENVIRONMENT_LENGTH}")]
    EnvironmentValue {
        /// The variable.
        key: String,
        /// Its value's length in bytes.
        length: usize,
    },
}

impl ModelProblem {
    /// The setting the problem is about.
    pub fn field(&self) -> ModelField {
        match self {
            Self::Memory(_) => ModelField::Memory,
            Self::Timeout(_) => ModelField::Timeout,
            Self::MaxResponse(_) => ModelField::MaxResponse,
            _ => ModelField::Environment,
        }
    }
}

/// A model's settings, in the units they are written in.
#[derive(Debug, Clone, Copy)]
pub struct ModelSettings<'a> {
    /// The memory cap, in MiB.
    pub memory_mib: u64,
    /// The invocation deadline, in seconds.
    pub timeout_seconds: u64,
    /// The cap on a response body, in MiB.
    pub max_response_mib: u64,
    /// The guest's environment.
    pub environment: &'a BTreeMap<String, String>,
}

/// Check a model's memory cap, deadline, response cap and environment, in that order.
pub fn check(settings: &ModelSettings<'_>) -> Result<(), ModelProblem> {
    let &ModelSettings {
        memory_mib,
        timeout_seconds,
        max_response_mib,
        environment,
    } = settings;
    if !MEMORY_MIB.contains(&memory_mib) {
        return Err(ModelProblem::Memory(memory_mib));
    }
    if !TIMEOUT_SECONDS.contains(&timeout_seconds) {
        return Err(ModelProblem::Timeout(timeout_seconds));
    }
    if !MAX_RESPONSE_MIB.contains(&max_response_mib) {
        return Err(ModelProblem::MaxResponse(max_response_mib));
    }
    if environment.len() > MAX_ENVIRONMENT {
        return Err(ModelProblem::EnvironmentSize(environment.len()));
    }
    for (key, value) in environment {
        let valid_key = key.len() <= MAX_ENVIRONMENT_LENGTH
            && key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(ModelProblem::EnvironmentKey(key.clone()));
        }
        if value.len() > MAX_ENVIRONMENT_LENGTH {
            return Err(ModelProblem::EnvironmentValue {
                key: key.clone(),
                length: value.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        memory_mib: u64,
        timeout_seconds: u64,
        environment: &BTreeMap<String, String>,
    ) -> Result<(), ModelProblem> {
        check_response(memory_mib, timeout_seconds, 6, environment)
    }

    fn check_response(
        memory_mib: u64,
        timeout_seconds: u64,
        max_response_mib: u64,
        environment: &BTreeMap<String, String>,
    ) -> Result<(), ModelProblem> {
        super::check(&ModelSettings {
            memory_mib,
            timeout_seconds,
            max_response_mib,
            environment,
        })
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limits_at_their_bounds_pass_and_beyond_fail() {
        let none = BTreeMap::new();
        assert_eq!(check(1, 1, &none), Ok(()));
        assert_eq!(check(4096, 3600, &none), Ok(()));
        assert_eq!(check(0, 60, &none), Err(ModelProblem::Memory(0)));
        assert_eq!(check(4097, 60, &none), Err(ModelProblem::Memory(4097)));
        assert_eq!(check(256, 0, &none), Err(ModelProblem::Timeout(0)));
        assert_eq!(check(256, 3601, &none), Err(ModelProblem::Timeout(3601)));
        assert_eq!(
            check(4097, 60, &none).unwrap_err().to_string(),
            "4097 MiB is out of range; use 1-4096 MiB"
        );
        assert_eq!(
            check(256, 0, &none).unwrap_err().field(),
            ModelField::Timeout
        );
        assert_eq!(check_response(256, 60, 1, &none), Ok(()));
        assert_eq!(check_response(256, 60, 1024, &none), Ok(()));
        for bad in [0, 1025] {
            let problem = check_response(256, 60, bad, &none).unwrap_err();
            assert_eq!(problem, ModelProblem::MaxResponse(bad));
            assert_eq!(problem.field(), ModelField::MaxResponse);
        }
        assert_eq!(
            check_response(256, 60, 1025, &none)
                .unwrap_err()
                .to_string(),
            "1025 MiB is out of range; use 1-1024 MiB"
        );
    }

    #[test]
    fn environment_follows_sagemakers_rules() {
        assert_eq!(check(256, 60, &env(&[("_A1", "x"), ("b", "")])), Ok(()));
        for bad in ["1A", "A-B", "", "Ä"] {
            let problem = check(256, 60, &env(&[(bad, "x")])).unwrap_err();
            assert_eq!(problem, ModelProblem::EnvironmentKey(bad.into()));
            assert_eq!(problem.field(), ModelField::Environment);
        }
        let long = "v".repeat(1025);
        assert_eq!(
            check(256, 60, &env(&[("K", &long)])),
            Err(ModelProblem::EnvironmentValue {
                key: "K".into(),
                length: 1025
            })
        );
        let many: BTreeMap<String, String> =
            (0..101).map(|i| (format!("K{i}"), String::new())).collect();
        assert_eq!(
            check(256, 60, &many),
            Err(ModelProblem::EnvironmentSize(101))
        );
    }
}
