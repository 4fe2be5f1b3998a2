//! SageMaker's naming rules for models, endpoint configs, endpoints and variants.

/// The longest name SageMaker accepts.
pub const MAX_NAME_LEN: usize = 63;

/// Whether `name` is a valid SageMaker resource name: 1-63 characters matching
/// `^[a-zA-Z0-9](-*[a-zA-Z0-9])*$`.
pub fn is_valid(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// The rule, for error messages.
pub const RULE: &str =
    "use 1-63 letters, digits and hyphens, starting and ending with a letter or digit";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sagemaker_names() {
        for ok in [
            "a",
            "iris",
            "Iris-v2",
            "a--b",
            "AllTraffic",
            &"x".repeat(63),
        ] {
            assert!(is_valid(ok), "{ok}");
        }
    }

    #[test]
    fn rejects_others() {
        for bad in ["", "-a", "a-", "a_b", "a b", "é", &"x".repeat(64)] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
