//! IAM-style authorization of one access key: which SageMaker (and Application Auto Scaling
//! and CloudWatch) actions it may perform on which resources.
//!
//! A key's policy is an IAM JSON policy document (`{"Version": "2012-10-17", "Statement":
//! [...]}`), parsed strictly and validated once ([`Policy::parse`]); each statement has an
//! `Effect` (`Allow` or `Deny`), an `Action` (`sagemaker:<Operation>`,
//! `application-autoscaling:<Operation>` or `cloudwatch:<Operation>`, with `*` and `?` wildcards, or `*`) and a `Resource` (ARNs with wildcards, or `*`), each a string or a list.
//! `Sid` is allowed and ignored; `NotAction`, `NotResource`, `Principal` and `Condition` are
//! refused rather than ignored.
//!
//! The decision ([`Policy::decide`]) is IAM's evaluation for identity-based policies: an
//! explicit `Deny` that matches the action and the resource wins; otherwise an `Allow` that
//! matches allows; otherwise the request is denied implicitly. A request naming several
//! resources is allowed only when each one is ([`Policy::authorize`]). As in IAM, actions match
//! case-insensitively and resources case-sensitively; `*` matches any run of characters (also
//! none, also across `:` and `/`) and `?` exactly one.

use serde::Deserialize;

/// The services whose actions a policy may name, as actions begin.
const SERVICES: [&str; 3] = ["sagemaker:", "application-autoscaling:", "cloudwatch:"];

/// A validated policy: the statements of one key, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// One validated statement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    /// Action patterns, lowercased (actions match case-insensitively).
    actions: Vec<String>,
    /// Resource patterns, as written.
    resources: Vec<String>,
}

/// A statement's `Effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The statement grants.
    Allow,
    /// The statement forbids, whatever else grants.
    Deny,
}

/// The outcome of evaluating one action on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An `Allow` statement matches and no `Deny` does.
    Allow,
    /// A `Deny` statement matches.
    ExplicitDeny,
    /// No statement matches.
    ImplicitDeny,
}

/// Why a request was not authorized: the first resource that is not allowed, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The resource (an ARN or `*`) that was denied.
    pub resource: String,
    /// True for an explicit `Deny`, false when nothing allowed it.
    pub explicit: bool,
}

/// Why a policy document was refused. Each message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not JSON, or not the IAM policy shape (an unknown or unsupported key, a wrong type).
    #[error("is not a valid IAM policy document: {0}")]
    Shape(String),
    /// `Version` is neither "2012-10-17" nor "2008-10-17".
    #[error("Version must be \"2012-10-17\"; got {0:?}")]
    Version(String),
    /// `Statement` is empty.
    #[error("Statement is empty: add at least one statement with Effect, Action and Resource")]
    NoStatements,
    /// An `Effect` other than `Allow` or `Deny`.
    #[error("Statement[{index}].Effect must be \"Allow\" or \"Deny\"; got {effect:?}")]
    Effect {
        /// The statement's index.
        index: usize,
        /// What was written.
        effect: String,
    },
    /// An empty `Action` or `Resource` (an empty list or an empty string).
    #[error("Statement[{index}].{field} is empty: name at least one")]
    Empty {
        /// The statement's index.
        index: usize,
        /// `Action` or `Resource`.
        field: &'static str,
    },
    /// An action that is neither `*` nor `sagemaker:<something>` nor
    /// `application-autoscaling:<something>` nor `cloudwatch:<something>`.
    #[error(
        "Statement[{index}].Action {action:?} is not a SageMaker, Application Auto Scaling or \
         CloudWatch action: write \"sagemaker:<Operation>\", \
         \"application-autoscaling:<Operation>\" or \"cloudwatch:<Operation>\" (wildcards \
         allowed) or \"*\""
    )]
    Action {
        /// The statement's index.
        index: usize,
        /// What was written.
        action: String,
    },
    /// A resource that is neither `*` nor an ARN.
    #[error(
        "Statement[{index}].Resource {resource:?} is not an ARN: write \
         \"arn:aws:sagemaker:<region>:<account>:<type>/<name>\" (wildcards allowed) or \"*\""
    )]
    Resource {
        /// The statement's index.
        index: usize,
        /// What was written.
        resource: String,
    },
}

/// The document as written (IAM's keys, PascalCase).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(rename = "Version")]
    version: Option<String>,
    #[serde(rename = "Id")]
    _id: Option<String>,
    /// A statement or a list of them; each is parsed alone so that its error names it.
    #[serde(rename = "Statement")]
    statement: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    #[serde(rename = "Sid")]
    _sid: Option<String>,
    #[serde(rename = "Effect")]
    effect: String,
    #[serde(rename = "Action")]
    action: OneOrMany<String>,
    #[serde(rename = "Resource")]
    resource: OneOrMany<String>,
}

/// IAM's "a string or a list of strings".
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

impl Policy {
    /// Parse and validate an IAM JSON policy document.
    pub fn parse(document: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_str(document).map_err(|e| PolicyError::Shape(e.to_string()))?;
        if let Some(version) = raw.version {
            if version != "2012-10-17" && version != "2008-10-17" {
                return Err(PolicyError::Version(version));
            }
        }
        let raw_statements = match raw.statement {
            serde_json::Value::Array(list) => list,
            one => vec![one],
        };
        if raw_statements.is_empty() {
            return Err(PolicyError::NoStatements);
        }
        let mut statements = Vec::with_capacity(raw_statements.len());
        for (index, s) in raw_statements.into_iter().enumerate() {
            let s: RawStatement = serde_json::from_value(s)
                .map_err(|e| PolicyError::Shape(format!("Statement[{index}]: {e}")))?;
            let effect = match s.effect.as_str() {
                "Allow" => Effect::Allow,
                "Deny" => Effect::Deny,
                _ => {
                    return Err(PolicyError::Effect {
                        index,
                        effect: s.effect,
                    })
                }
            };
            let actions = s.action.into_vec();
            if actions.is_empty() || actions.iter().any(String::is_empty) {
                return Err(PolicyError::Empty {
                    index,
                    field: "Action",
                });
            }
            for action in &actions {
                let valid = action == "*"
                    || SERVICES.iter().any(|service| {
                        action
                            .get(..service.len())
                            .is_some_and(|p| p.eq_ignore_ascii_case(service))
                            && action.len() > service.len()
                    });
                if !valid {
                    return Err(PolicyError::Action {
                        index,
                        action: action.clone(),
                    });
                }
            }
            let resources = s.resource.into_vec();
            if resources.is_empty() || resources.iter().any(String::is_empty) {
                return Err(PolicyError::Empty {
                    index,
                    field: "Resource",
                });
            }
            if let Some(resource) = resources
                .iter()
                .find(|r| *r != "*" && !r.starts_with("arn:"))
            {
                return Err(PolicyError::Resource {
                    index,
                    resource: resource.clone(),
                });
            }
            statements.push(Statement {
                effect,
                actions: actions.iter().map(|a| a.to_ascii_lowercase()).collect(),
                resources,
            });
        }
        Ok(Self { statements })
    }

    /// IAM's decision for `action` (e.g. "sagemaker:CreateModel") on `resource` (an ARN, or
    /// `*` for actions on no particular resource).
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        let action = action.to_ascii_lowercase();
        let mut allowed = false;
        for s in &self.statements {
            let matches = s.actions.iter().any(|p| wildcard_match(p, &action))
                && s.resources.iter().any(|p| wildcard_match(p, resource));
            if matches {
                match s.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }

    /// Allow `action` only if it is allowed on every one of `resources`; otherwise the first
    /// resource denied explicitly, or else the first denied at all. No resources is `*`.
    pub fn authorize(&self, action: &str, resources: &[String]) -> Result<(), Denial> {
        let star = ["*".to_owned()];
        let resources = if resources.is_empty() {
            &star[..]
        } else {
            resources
        };
        let mut implicit = None;
        for resource in resources {
            match self.decide(action, resource) {
                Decision::Allow => {}
                Decision::ExplicitDeny => {
                    return Err(Denial {
                        resource: resource.clone(),
                        explicit: true,
                    })
                }
                Decision::ImplicitDeny => {
                    implicit.get_or_insert_with(|| resource.clone());
                }
            }
        }
        match implicit {
            None => Ok(()),
            Some(resource) => Err(Denial {
                resource,
                explicit: false,
            }),
        }
    }
}

/// IAM's wildcard match of a whole `text` against `pattern`: `*` matches any run of characters
/// (none included), `?` exactly one, anything else itself. Linear backtracking over the last
/// `*`, so no pattern takes more than `O(pattern × text)` steps.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/prod-a";

    fn policy(statements: &str) -> Policy {
        Policy::parse(&format!(
            r#"{{"Version": "2012-10-17", "Statement": {statements}}}"#
        ))
        .unwrap_or_else(|e| panic!("{statements}: {e}"))
    }

    #[test]
    fn wildcards() {
        let cases = [
            ("*", "", true),
            ("*", "anything/at:all", true),
            ("", "", true),
            ("", "a", false),
            ("a", "", false),
            ("?", "", false),
            ("?", "a", true),
            ("?", "ab", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*c", "ac", true),
            ("a*c", "abbbc", true),
            ("a*c", "abcd", false),
            ("**", "x", true),
            ("*?", "", false),
            ("*?", "x", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXcYb", false),
            ("*endpoint/*", EP, true),
            ("arn:aws:sagemaker:*:*:endpoint/prod-*", EP, true),
            ("arn:aws:sagemaker:*:*:endpoint/prod-?", EP, true),
            ("arn:aws:sagemaker:*:*:endpoint/prod-??", EP, false),
            ("arn:aws:sagemaker:*:*:endpoint/prod", EP, false),
            ("arn:aws:sagemaker:*:*:endpoint/*", "*", false),
            // `*` crosses `:` and `/`, and a literal in the pattern is only itself.
            ("arn:*/prod-a", EP, true),
            (
                "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/*",
                EP,
                false,
            ),
            // Resources are case-sensitive.
            ("arn:aws:sagemaker:*:*:endpoint/PROD-*", EP, false),
            // Multi-byte characters are one character for `?`.
            ("caf?", "café", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                wildcard_match(pattern, text),
                expected,
                "{pattern:?} against {text:?}"
            );
        }
        // Pathological patterns stay fast.
        let text = "a".repeat(2000);
        assert!(!wildcard_match(&format!("{}b", "*a".repeat(50)), &text));
    }

    #[test]
    fn allow_deny_and_default() {
        let p = policy(
            r#"[
                {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"},
                {"Sid": "NoProdDeletes", "Effect": "Deny", "Action": ["sagemaker:Delete*"],
                 "Resource": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/prod-*"}
            ]"#,
        );
        assert_eq!(
            p.decide("sagemaker:DeleteEndpoint", EP),
            Decision::ExplicitDeny
        );
        assert_eq!(
            p.decide(
                "sagemaker:DeleteEndpoint",
                "arn:aws:sagemaker:us-east-1:123456789012:endpoint/dev-a"
            ),
            Decision::Allow
        );
        assert_eq!(p.decide("sagemaker:InvokeEndpoint", EP), Decision::Allow);
        // The order of statements does not matter: a deny first still wins.
        let reversed = policy(
            r#"[
                {"Effect": "Deny", "Action": "sagemaker:DeleteEndpoint", "Resource": "*"},
                {"Effect": "Allow", "Action": "*", "Resource": "*"}
            ]"#,
        );
        assert_eq!(
            reversed.decide("sagemaker:DeleteEndpoint", EP),
            Decision::ExplicitDeny
        );
        // Nothing matching: implicit deny.
        let invoke_only = policy(
            r#"{"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint",
                "Resource": "arn:aws:sagemaker:*:*:endpoint/*"}"#,
        );
        assert_eq!(
            invoke_only.decide("sagemaker:InvokeEndpoint", EP),
            Decision::Allow
        );
        assert_eq!(
            invoke_only.decide("sagemaker:CreateModel", EP),
            Decision::ImplicitDeny
        );
        assert_eq!(
            invoke_only.decide(
                "sagemaker:InvokeEndpoint",
                "arn:aws:sagemaker:us-east-1:123456789012:model/prod-a"
            ),
            Decision::ImplicitDeny
        );
        // Actions match case-insensitively, as in IAM.
        assert_eq!(
            invoke_only.decide("SageMaker:invokeendpoint", EP),
            Decision::Allow
        );
    }

    #[test]
    fn read_only_key() {
        let p = policy(
            r#"[{"Effect": "Allow", "Action": ["sagemaker:Describe*", "sagemaker:List*"],
                 "Resource": "*"}]"#,
        );
        assert_eq!(p.decide("sagemaker:DescribeEndpoint", EP), Decision::Allow);
        assert_eq!(p.decide("sagemaker:ListEndpoints", "*"), Decision::Allow);
        assert_eq!(
            p.decide("sagemaker:UpdateEndpointWeightsAndCapacities", EP),
            Decision::ImplicitDeny
        );
        // `Describe*` does not reach an action that merely contains "Describe".
        assert_eq!(
            p.decide("sagemaker:UndescribeX", EP),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn authorize_every_resource() {
        let p = policy(
            r#"[
                {"Effect": "Allow", "Action": "sagemaker:CreateEndpoint",
                 "Resource": "arn:aws:sagemaker:*:*:endpoint/*"},
                {"Effect": "Deny", "Action": "*",
                 "Resource": "arn:aws:sagemaker:*:*:endpoint-config/secret"}
            ]"#,
        );
        let endpoint = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e".to_owned();
        let config = "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c".to_owned();
        let secret = "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/secret".to_owned();
        assert_eq!(
            p.authorize("sagemaker:CreateEndpoint", std::slice::from_ref(&endpoint)),
            Ok(())
        );
        assert_eq!(
            p.authorize(
                "sagemaker:CreateEndpoint",
                &[endpoint.clone(), config.clone()]
            ),
            Err(Denial {
                resource: config.clone(),
                explicit: false
            })
        );
        // An explicit deny is reported even after an implicit one.
        assert_eq!(
            p.authorize(
                "sagemaker:CreateEndpoint",
                &[config, secret.clone(), endpoint]
            ),
            Err(Denial {
                resource: secret,
                explicit: true
            })
        );
        // No resources is `*`, which `endpoint/*` does not match.
        assert_eq!(
            p.authorize("sagemaker:CreateEndpoint", &[]),
            Err(Denial {
                resource: "*".into(),
                explicit: false
            })
        );
    }

    #[test]
    fn invalid_documents_name_the_field() {
        let check = |document: &str, expected: &str| {
            let e = Policy::parse(document).expect_err(document).to_string();
            assert!(e.contains(expected), "{document}: {e}");
        };
        let one = |statement: &str| format!(r#"{{"Statement": [{statement}]}}"#);
        check("not json", "not a valid IAM policy document");
        check(r#"{"Statement": []}"#, "Statement is empty");
        check(r#"{}"#, "missing field `Statement`");
        check(
            r#"{"Version": "2020-01-01", "Statement": []}"#,
            "Version must be",
        );
        check(
            &one(r#"{"Effect": "allow", "Action": "*", "Resource": "*"}"#),
            r#"Statement[0].Effect must be "Allow" or "Deny"; got "allow""#,
        );
        check(
            &one(r#"{"Effect": "Allow", "Action": [], "Resource": "*"}"#),
            "Statement[0].Action is empty",
        );
        check(
            &one(r#"{"Effect": "Allow", "Action": "", "Resource": "*"}"#),
            "Statement[0].Action is empty",
        );
        check(
            &one(r#"{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}"#),
            r#"Statement[0].Action "s3:GetObject" is not a SageMaker, Application Auto Scaling or CloudWatch action"#,
        );
        check(
            &one(r#"{"Effect": "Allow", "Action": "sagemaker:", "Resource": "*"}"#),
            "is not a SageMaker, Application Auto Scaling or CloudWatch action",
        );
        check(
            &one(r#"{"Effect": "Allow", "Action": "application-autoscaling:", "Resource": "*"}"#),
            "is not a SageMaker, Application Auto Scaling or CloudWatch action",
        );
        let scaling = Policy::parse(
            r#"{"Statement": {"Effect": "Allow", "Action": "application-autoscaling:Describe*",
                "Resource": "*"}}"#,
        )
        .unwrap();
        assert_eq!(
            scaling.decide("application-autoscaling:DescribeScalableTargets", "*"),
            Decision::Allow
        );
        assert_eq!(
            scaling.decide("application-autoscaling:PutScalingPolicy", "*"),
            Decision::ImplicitDeny
        );
        check(
            &one(r#"{"Effect": "Allow", "Action": "*", "Resource": []}"#),
            "Statement[0].Resource is empty",
        );
        check(
            &one(r#"{"Effect": "Allow", "Action": "*", "Resource": "endpoint/x"}"#),
            r#"Statement[0].Resource "endpoint/x" is not an ARN"#,
        );
        check(
            &one(r#"{"Effect": "Allow", "Action": "*"}"#),
            "missing field `Resource`",
        );
        check(
            &one(r#"{"Effect": "Allow", "Action": "*", "Resource": "*",
                    "Condition": {"Bool": {"aws:SecureTransport": "true"}}}"#),
            "unknown field `Condition`",
        );
        check(
            &one(r#"{"Effect": "Allow", "NotAction": "*", "Resource": "*"}"#),
            "unknown field `NotAction`",
        );
        // The second statement is named by its index.
        check(
            r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"},
                              {"Effect": "Permit", "Action": "*", "Resource": "*"}]}"#,
            "Statement[1].Effect",
        );
    }

    #[test]
    fn single_statement_and_strings() {
        let p =
            Policy::parse(r#"{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#)
                .expect("a single statement object is IAM's shorthand");
        assert_eq!(p.decide("sagemaker:Anything", EP), Decision::Allow);
    }
}
