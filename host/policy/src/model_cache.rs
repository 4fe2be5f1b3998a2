//! Multi-model variants (SageMaker's `Mode: MultiModel`): what a `TargetModel` may name
//! under the model's prefix, which loaded models a variant unloads to make room for another
//! (least recently used first, never one serving a request), the default memory budget, and
//! how long a model whose load failed is refused before it is tried again.

use std::time::Duration;

/// The largest `PlinthModelCacheSizeInMB`: 1 TiB.
pub const MAX_BUDGET_MIB: u64 = 1 << 20;

/// The longest `TargetModel` (botocore's `TargetModelHeader`).
pub const MAX_TARGET_MODEL_LEN: usize = 1024;

/// A variant's model cache budget when `PlinthModelCacheSizeInMB` is not given: half of the
/// host's memory (the other half is left to the rest of the host: other variants, the
/// kernel's page cache of the artifacts), and never less than 64 MiB.
pub fn default_budget_bytes(host_memory_bytes: u64) -> u64 {
    (host_memory_bytes / 2).max(64 << 20)
}

/// Why a `TargetModel` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetModelError {
    /// Empty, or over [`MAX_TARGET_MODEL_LEN`] bytes.
    Length(usize),
    /// Starts with white space, or holds a character that is not printable.
    NotPrintable,
    /// Absolute, or with a `..`, `.` or empty component: it would leave the prefix or name
    /// it twice.
    Escapes,
}

impl std::fmt::Display for TargetModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Length(n) => write!(
                f,
                "is {n} characters long; it must be 1 to {MAX_TARGET_MODEL_LEN}"
            ),
            Self::NotPrintable => {
                f.write_str("must be printable characters and must not start with white space")
            }
            Self::Escapes => f.write_str(
                "must be a path relative to the model's ModelDataUrl prefix, without '..', \
                 '.', empty components or a leading '/'",
            ),
        }
    }
}

/// Check `target`, a `TargetModel`: a path relative to the prefix that stays inside it (by
/// name; links are the server's to check). Allocates nothing.
pub fn check_target_model(target: &str) -> Result<(), TargetModelError> {
    if target.is_empty() || target.len() > MAX_TARGET_MODEL_LEN {
        return Err(TargetModelError::Length(target.len()));
    }
    if target.starts_with(char::is_whitespace) || target.chars().any(char::is_control) {
        return Err(TargetModelError::NotPrintable);
    }
    if target
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\\'))
    {
        return Err(TargetModelError::Escapes);
    }
    Ok(())
}

/// A loaded model, as eviction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// What it costs against the budget, in bytes.
    pub bytes: u64,
    /// When it last served (any monotonic count: larger is later).
    pub last_used: u64,
    /// A request holds it now: it may not be unloaded.
    pub in_use: bool,
}

/// What a cache does to take a model of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// It fits once the models at these indexes (into the resident list) are unloaded
    /// (none, when it fits already).
    Fits { unload: Vec<usize> },
    /// It would fit, but only by unloading models in use: wait for one to be released.
    Wait,
    /// It is larger than the whole budget.
    TooLarge,
}

/// Admit a model of `wanted` bytes into a budget of `budget` bytes holding `resident` models
/// and `reserved` bytes for loads in progress: unload the least recently used idle models,
/// as few as make it fit. If even unloading every idle model would not make room, nothing
/// is unloaded and the caller waits.
pub fn admit(resident: &[Resident], reserved: u64, budget: u64, wanted: u64) -> Admission {
    if wanted > budget {
        return Admission::TooLarge;
    }
    let used: u64 = resident.iter().map(|r| r.bytes).sum::<u64>() + reserved;
    if used.saturating_add(wanted) <= budget {
        return Admission::Fits { unload: Vec::new() };
    }
    let mut idle: Vec<usize> = (0..resident.len())
        .filter(|&i| !resident[i].in_use)
        .collect();
    idle.sort_by_key(|&i| resident[i].last_used);
    let mut freed = 0u64;
    let mut unload = Vec::new();
    for i in idle {
        if used.saturating_sub(freed).saturating_add(wanted) <= budget {
            break;
        }
        freed += resident[i].bytes;
        unload.push(i);
    }
    if used.saturating_sub(freed).saturating_add(wanted) <= budget {
        Admission::Fits { unload }
    } else {
        Admission::Wait
    }
}

/// How long a model whose load failed `failures` times in a row is refused before the next
/// try: 1 s, doubling, at most 60 s.
pub fn retry_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(6);
    Duration::from_secs(1 << doublings).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(bytes: u64, last_used: u64, in_use: bool) -> Resident {
        Resident {
            bytes,
            last_used,
            in_use,
        }
    }

    #[test]
    fn a_model_that_fits_unloads_nothing() {
        let resident = [r(10, 1, false), r(10, 2, false)];
        assert_eq!(
            admit(&resident, 0, 40, 20),
            Admission::Fits { unload: vec![] }
        );
    }

    #[test]
    fn the_least_recently_used_idle_models_go_first_and_no_more_than_needed() {
        // Used: 40 of 40. Wanted 15: the two oldest idle (last_used 1 and 3) free 20; the
        // one in use (last_used 0) stays, and so does the newest.
        let resident = [
            r(10, 3, false),
            r(10, 0, true),
            r(10, 9, false),
            r(10, 1, false),
        ];
        assert_eq!(
            admit(&resident, 0, 40, 15),
            Admission::Fits { unload: vec![3, 0] }
        );
    }

    #[test]
    fn reservations_count_and_models_in_use_make_it_wait() {
        let resident = [r(10, 1, true), r(10, 2, false)];
        // 20 resident + 15 reserved of 40: unloading the idle one leaves 25 + 10 > 30.
        assert_eq!(
            admit(&resident, 15, 40, 10),
            Admission::Fits { unload: vec![1] }
        );
        assert_eq!(admit(&resident, 15, 40, 16), Admission::Wait);
        assert_eq!(admit(&resident, 0, 40, 41), Admission::TooLarge);
    }

    #[test]
    fn target_models_stay_inside_the_prefix() {
        assert_eq!(check_target_model("m-07.tar.gz"), Ok(()));
        assert_eq!(check_target_model("team/a/model..v2"), Ok(()));
        assert_eq!(check_target_model(&"a".repeat(1024)), Ok(()));
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/",
            "a\\..\\b",
        ] {
            assert_eq!(
                check_target_model(bad),
                Err(TargetModelError::Escapes),
                "{bad}"
            );
        }
        assert_eq!(check_target_model(""), Err(TargetModelError::Length(0)));
        let long = "a".repeat(1025);
        assert_eq!(
            check_target_model(&long),
            Err(TargetModelError::Length(1025))
        );
        assert_eq!(
            check_target_model(" a"),
            Err(TargetModelError::NotPrintable)
        );
        assert_eq!(
            check_target_model("a\nb"),
            Err(TargetModelError::NotPrintable)
        );
    }

    #[test]
    fn failed_loads_back_off_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn the_default_budget_is_half_the_host() {
        assert_eq!(default_budget_bytes(24 << 30), 12 << 30);
        assert_eq!(default_budget_bytes(0), 64 << 20);
    }
}
