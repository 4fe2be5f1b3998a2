//! Inference pipelines (a model with `Containers`, SageMaker's multi-container models): what
//! a pipeline may be (2 to 15 containers, their hostnames, `InferenceExecutionConfig.Mode`),
//! which containers a request runs (`TargetContainerHostname`: required by a `Direct`
//! model, refused by a `Serial` one), what each stage of a chain is asked for (`Accept`),
//! and how much of the chain's deadline a stage has left.

use std::time::Duration;

/// The fewest containers `Containers` may hold.
pub const MIN_CONTAINERS: usize = 2;
/// The most (SageMaker's limit).
pub const MAX_CONTAINERS: usize = 15;
/// The longest hostname (SageMaker's).
pub const MAX_HOSTNAME_LEN: usize = 63;
/// The environment variable that sets what a stage that is not the last is asked for
/// (`Accept`), as SageMaker's framework containers read it.
pub const DEFAULT_ACCEPT_VARIABLE: &str = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT";
/// The most bytes of `Environment` keys and values, all containers together (SageMaker's).
pub const MAX_ENVIRONMENT_BYTES: usize = 32 * 1024;

/// `InferenceExecutionConfig.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Each container's response is the next one's request (the default).
    #[default]
    Serial,
    /// Each request names the one container that serves it.
    Direct,
}

impl Mode {
    /// The API's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Serial => "Serial",
            Mode::Direct => "Direct",
        }
    }

    /// `Mode` as given (absent: `Serial`).
    pub fn parse(given: Option<&str>) -> Result<Mode, String> {
        match given {
            None | Some("Serial") => Ok(Mode::Serial),
            Some("Direct") => Ok(Mode::Direct),
            Some(other) => Err(format!(
                "InferenceExecutionConfig.Mode {other:?} is not one of Serial, Direct"
            )),
        }
    }
}

/// The hostnames of a pipeline's containers, given for all or for none (then
/// `container-1`, `container-2`... by position), each matching SageMaker's pattern
/// (`^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`), no two alike (ignoring case: they are host
/// names). Also checks the container count.
pub fn hostnames(given: &[Option<&str>]) -> Result<Vec<String>, String> {
    let n = given.len();
    if !(MIN_CONTAINERS..=MAX_CONTAINERS).contains(&n) {
        return Err(format!(
            "Containers has {n} container definitions; a model with Containers has \
             {MIN_CONTAINERS} to {MAX_CONTAINERS} (give PrimaryContainer for one)"
        ));
    }
    let named = given.iter().filter(|h| h.is_some()).count();
    if named == 0 {
        return Ok((1..=n).map(|i| format!("container-{i}")).collect());
    }
    if named != n {
        return Err(format!(
            "Containers: ContainerHostname is given for {named} of {n} containers; give it \
             for every container of the pipeline or for none"
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(n);
    for (i, h) in given.iter().enumerate() {
        let h = h.unwrap_or_default();
        if !valid_hostname(h) {
            return Err(format!(
                "Containers[{i}].ContainerHostname {h:?} must be 1 to {MAX_HOSTNAME_LEN} \
                 letters, digits and hyphens, starting and ending with a letter or digit"
            ));
        }
        if let Some(j) = names.iter().position(|o| o.eq_ignore_ascii_case(h)) {
            return Err(format!(
                "Containers[{i}].ContainerHostname {h:?} is also the hostname of \
                 Containers[{j}]; hostnames must be unique"
            ));
        }
        names.push(h.to_owned());
    }
    Ok(names)
}

fn valid_hostname(h: &str) -> bool {
    let b = h.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_HOSTNAME_LEN
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// What a request runs on a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every stage, in order (a `Serial` model).
    Chain,
    /// The stage at this index alone (a `Direct` model, by `TargetContainerHostname`).
    One(usize),
}

/// The stages a request naming `given` (`TargetContainerHostname`) runs on a model of
/// `mode` whose containers are `hostnames`; a model with one container (`None`) refuses
/// the header.
pub fn target(
    model: &str,
    pipeline: Option<(Mode, &[String])>,
    given: Option<&str>,
) -> Result<Target, String> {
    match (pipeline, given) {
        (None, None) => Ok(Target::Chain),
        (None, Some(h)) => Err(format!(
            "TargetContainerHostname {h:?} was given, but model {model} has a single \
             container; leave TargetContainerHostname out"
        )),
        (Some((Mode::Serial, _)), None) => Ok(Target::Chain),
        (Some((Mode::Serial, _)), Some(h)) => Err(format!(
            "TargetContainerHostname {h:?} was given, but model {model} is a Serial inference \
             pipeline (its InferenceExecutionConfig.Mode is Serial): every request runs its \
             containers in order; leave TargetContainerHostname out"
        )),
        (Some((Mode::Direct, hosts)), None) => Err(format!(
            "Model {model} is a multi-container model with direct invocation \
             (InferenceExecutionConfig.Mode Direct): give TargetContainerHostname, one of {}",
            hosts.join(", ")
        )),
        (Some((Mode::Direct, hosts)), Some(h)) => hosts
            .iter()
            .position(|o| o == h)
            .map(Target::One)
            .ok_or_else(|| {
                format!(
                    "TargetContainerHostname {h:?} is not a container of model {model}; its \
                     containers are {}",
                    hosts.join(", ")
                )
            }),
    }
}

/// What stage `index` of a chain of `stages` is asked for: the request's `Accept` for the
/// last, and for the others what the stage's environment sets in
/// [`DEFAULT_ACCEPT_VARIABLE`] (empty: the stage's own default).
pub fn stage_accept<'a>(
    index: usize,
    stages: usize,
    request_accept: &'a str,
    stage_default: Option<&'a str>,
) -> &'a str {
    if index + 1 == stages {
        request_accept
    } else {
        stage_default.unwrap_or("")
    }
}

/// How long a stage may run once the stages before it used `used` (their time in the
/// guests) of a chain whose deadline is `total`: what is left; `None` once nothing is.
pub fn remaining(total: Duration, used: Duration) -> Option<Duration> {
    total.checked_sub(used).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_default_to_serial_and_refuse_others_by_name() {
        assert_eq!(Mode::parse(None), Ok(Mode::Serial));
        assert_eq!(Mode::parse(Some("Direct")), Ok(Mode::Direct));
        let e = Mode::parse(Some("Parallel")).unwrap_err();
        assert!(e.contains("InferenceExecutionConfig.Mode") && e.contains("Parallel"));
    }

    #[test]
    fn hostnames_are_given_for_all_or_none() {
        assert_eq!(
            hostnames(&[None, None, None]).unwrap(),
            ["container-1", "container-2", "container-3"]
        );
        assert_eq!(
            hostnames(&[Some("pre"), Some("model")]).unwrap(),
            ["pre", "model"]
        );
        let e = hostnames(&[Some("pre"), None]).unwrap_err();
        assert!(e.contains("1 of 2"), "{e}");
    }

    #[test]
    fn container_counts_outside_two_to_fifteen_are_refused() {
        assert!(hostnames(&[None]).unwrap_err().contains("1 container"));
        assert!(hostnames(&vec![None; 16]).unwrap_err().contains("16"));
        assert!(hostnames(&[]).is_err());
        assert_eq!(hostnames(&vec![None; 15]).unwrap().len(), 15);
    }

    #[test]
    fn hostnames_follow_the_pattern_and_are_unique() {
        for bad in ["", "-pre", "pre-", "pre_1", "pré", &"a".repeat(64)] {
            let e = hostnames(&[Some(bad), Some("b")]).unwrap_err();
            assert!(e.contains("Containers[0].ContainerHostname"), "{bad}: {e}");
        }
        assert!(hostnames(&[Some("a--b"), Some(&"b".repeat(63))]).is_ok());
        let e = hostnames(&[Some("model"), Some("pre"), Some("Model")]).unwrap_err();
        assert!(
            e.contains("Containers[2]") && e.contains("Containers[0]"),
            "{e}"
        );
    }

    #[test]
    fn direct_models_need_a_known_hostname_and_serial_ones_refuse_it() {
        let hosts = ["pre".to_string(), "model".to_string()];
        let direct = Some((Mode::Direct, &hosts[..]));
        let serial = Some((Mode::Serial, &hosts[..]));
        assert_eq!(target("m", direct, Some("model")), Ok(Target::One(1)));
        assert_eq!(target("m", serial, None), Ok(Target::Chain));
        assert_eq!(target("m", None, None), Ok(Target::Chain));
        let e = target("m", direct, None).unwrap_err();
        assert!(e.contains("give TargetContainerHostname") && e.contains("pre, model"));
        let e = target("m", direct, Some("post")).unwrap_err();
        assert!(e.contains("\"post\" is not a container of model m"), "{e}");
        // Hostnames are matched exactly, as the request names them.
        assert!(target("m", direct, Some("Model")).is_err());
        let e = target("m", serial, Some("pre")).unwrap_err();
        assert!(e.contains("Serial"), "{e}");
        let e = target("m", None, Some("pre")).unwrap_err();
        assert!(e.contains("single container"), "{e}");
    }

    #[test]
    fn only_the_last_stage_gets_the_requests_accept() {
        assert_eq!(
            stage_accept(2, 3, "text/csv", Some("application/x-npy")),
            "text/csv"
        );
        assert_eq!(
            stage_accept(0, 3, "text/csv", Some("application/x-npy")),
            "application/x-npy"
        );
        assert_eq!(stage_accept(1, 3, "text/csv", None), "");
    }

    #[test]
    fn a_stage_has_what_is_left_of_the_chains_deadline() {
        let s = Duration::from_secs;
        assert_eq!(remaining(s(60), s(0)), Some(s(60)));
        assert_eq!(remaining(s(60), s(45)), Some(s(15)));
        assert_eq!(remaining(s(60), s(60)), None);
        assert_eq!(remaining(s(60), s(61)), None);
    }
}
