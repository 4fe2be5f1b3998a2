//! Target tracking, as Application Auto Scaling does it for a SageMaker variant: given a
//! policy (a target value for a per-instance metric, cooldowns, whether scale-in is allowed),
//! the scalable target's bounds, the variant's capacity and the metric's recent one-minute
//! datapoints, the capacity to set now, or why none.
//!
//! The rules are Application Auto Scaling's: a target-tracking policy scales out when the
//! metric has been above the target for [`HIGH_DATAPOINTS`] consecutive minutes and scales in
//! when it has been below [`LOW_RATIO`] of the target for [`LOW_DATAPOINTS`]; the new
//! capacity is the one that brings the metric back to the target
//! (`ceil(capacity * metric / target)`), within the bounds. A minute with no datapoint counts
//! as zero (a variant with no traffic scales in to its minimum); traffic at zero capacity
//! scales out to one at once. After a scale-out, further
//! scale-outs wait for `ScaleOutCooldown`; a scale-in waits for `ScaleInCooldown` after any
//! scaling activity, so that capacity never turns around within a cooldown. Capacity outside
//! the bounds (they changed) is brought inside at once.

/// Consecutive minutes above the target before a scale-out (the policy's high alarm).
pub const HIGH_DATAPOINTS: usize = 3;
/// Consecutive minutes below the low threshold before a scale-in (the low alarm).
pub const LOW_DATAPOINTS: usize = 15;
/// The low threshold, as a share of the target.
pub const LOW_RATIO: f64 = 0.9;
/// `ScaleOutCooldown` and `ScaleInCooldown` when the policy gives none, in seconds.
pub const DEFAULT_COOLDOWN_SECONDS: u64 = 300;
/// The largest cooldown Application Auto Scaling accepts, in seconds.
pub const MAX_COOLDOWN_SECONDS: u64 = 3600;

/// A target-tracking policy's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetTracking {
    /// `TargetValue`: the metric's value per instance the policy keeps.
    pub target_value: f64,
    /// `ScaleOutCooldown`, in seconds.
    pub scale_out_cooldown: u64,
    /// `ScaleInCooldown`, in seconds.
    pub scale_in_cooldown: u64,
    /// `DisableScaleIn`.
    pub disable_scale_in: bool,
}

/// Why a policy or target is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TargetTracking {
    /// Check the values as Application Auto Scaling does (naming the member at fault).
    pub fn validate(&self) -> Result<(), Invalid> {
        let target = self.target_value;
        if !target.is_finite() || !(8.515920e-109..=6.174271e+307).contains(&target) {
            return Err(Invalid(format!(
                "TargetValue {target} must be between 8.515920e-109 and 6.174271e+307"
            )));
        }
        for (name, value) in [
            ("ScaleOutCooldown", self.scale_out_cooldown),
            ("ScaleInCooldown", self.scale_in_cooldown),
        ] {
            if value > MAX_COOLDOWN_SECONDS {
                return Err(Invalid(format!(
                    "{name} {value} must be between 0 and {MAX_COOLDOWN_SECONDS} seconds"
                )));
            }
        }
        Ok(())
    }
}

/// A scalable target's `MinCapacity` and `MaxCapacity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

impl Bounds {
    /// Check them: `MinCapacity` at most `MaxCapacity`, and at least `least` (1 for a
    /// real-time variant's instance count, 0 where scaling to zero is allowed).
    pub fn validate(&self, least: u32) -> Result<(), Invalid> {
        if self.min < least {
            return Err(Invalid(format!(
                "MinCapacity {} must be at least {least}",
                self.min
            )));
        }
        if self.min > self.max {
            return Err(Invalid(format!(
                "MinCapacity {} must not be greater than MaxCapacity {}",
                self.min, self.max
            )));
        }
        Ok(())
    }
}

/// When the target last scaled, in the caller's seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastActivity {
    pub scale_out: Option<u64>,
    pub scale_in: Option<u64>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Set the capacity to this, for the reason given (the activity's cause).
    Scale { capacity: u32, cause: String },
    /// Leave it.
    Hold,
}

/// Which of the policy's two alarms the datapoints set off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// [`HIGH_DATAPOINTS`] consecutive minutes above the target.
    High,
    /// [`LOW_DATAPOINTS`] consecutive minutes below [`LOW_RATIO`] of it.
    Low,
    /// Neither.
    None,
}

/// The alarm `minutes` (oldest first, `None` counted as zero) set off for `policy`.
pub fn alarm(policy: &TargetTracking, minutes: &[Option<f64>]) -> Alarm {
    let value = |m: &Option<f64>| m.unwrap_or(0.0);
    let target = policy.target_value;
    let last = |n: usize| (minutes.len() >= n).then(|| &minutes[minutes.len() - n..]);
    if last(HIGH_DATAPOINTS).is_some_and(|m| m.iter().all(|m| value(m) > target)) {
        Alarm::High
    } else if last(LOW_DATAPOINTS).is_some_and(|m| m.iter().all(|m| value(m) < target * LOW_RATIO))
    {
        Alarm::Low
    } else {
        Alarm::None
    }
}

/// The capacity that brings the latest datapoint back to the target, before the bounds:
/// `ceil(capacity * latest / target)`, or from zero capacity 1 when there is traffic.
pub fn wanted(policy: &TargetTracking, capacity: u32, minutes: &[Option<f64>]) -> u32 {
    let latest = minutes.last().and_then(|m| *m).unwrap_or(0.0);
    if capacity == 0 {
        return u32::from(latest > 0.0);
    }
    let exact = f64::from(capacity) * latest / policy.target_value;
    // Rounded up, with a little slack so that a metric exactly at the target does not
    // ask for one more instance through floating-point noise.
    (exact - 1e-9).ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Capacity outside `bounds` (they changed, or someone set it) is brought inside at once,
/// whatever the policies say.
pub fn out_of_bounds(bounds: Bounds, capacity: u32) -> Option<Decision> {
    if capacity < bounds.min {
        return Some(Decision::Scale {
            capacity: bounds.min,
            cause: format!("capacity {capacity} is below MinCapacity {}", bounds.min),
        });
    }
    if capacity > bounds.max {
        return Some(Decision::Scale {
            capacity: bounds.max,
            cause: format!("capacity {capacity} is above MaxCapacity {}", bounds.max),
        });
    }
    None
}

/// Decide for one target: `capacity` is its capacity now, `minutes` the metric's one-minute
/// datapoints, oldest first (the last is the latest complete minute; `None`: no datapoint),
/// `now` and `last` in the same seconds.
pub fn decide(
    policy: &TargetTracking,
    bounds: Bounds,
    capacity: u32,
    minutes: &[Option<f64>],
    now: u64,
    last: LastActivity,
) -> Decision {
    if let Some(decision) = out_of_bounds(bounds, capacity) {
        return decision;
    }
    let target = policy.target_value;
    let latest = minutes.last().and_then(|m| *m).unwrap_or(0.0);
    let wanted = wanted(policy, capacity, minutes).clamp(bounds.min, bounds.max);
    let since = |at: Option<u64>| at.map_or(u64::MAX, |t| now.saturating_sub(t));
    if capacity == 0 && wanted > 0 {
        // Requests arrive and nothing can serve them: no need to wait for the alarm.
        if since(last.scale_out) < policy.scale_out_cooldown {
            return Decision::Hold;
        }
        return Decision::Scale {
            capacity: wanted,
            cause: format!("requests arrived with no capacity (latest {latest:.2}): 0 -> {wanted}"),
        };
    }
    match alarm(policy, minutes) {
        Alarm::High if wanted > capacity => {
            if since(last.scale_out) < policy.scale_out_cooldown {
                return Decision::Hold;
            }
            Decision::Scale {
                capacity: wanted,
                cause: format!(
                    "the metric was above the target {target} for {HIGH_DATAPOINTS} minutes \
                     (latest {latest:.2}): {capacity} -> {wanted}"
                ),
            }
        }
        Alarm::Low if wanted < capacity && !policy.disable_scale_in => {
            let quiet = since(last.scale_out).min(since(last.scale_in));
            if quiet < policy.scale_in_cooldown {
                return Decision::Hold;
            }
            Decision::Scale {
                capacity: wanted,
                cause: format!(
                    "the metric was below {:.2} ({LOW_RATIO} of the target {target}) for \
                     {LOW_DATAPOINTS} minutes (latest {latest:.2}): {capacity} -> {wanted}",
                    target * LOW_RATIO
                ),
            }
        }
        _ => Decision::Hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: TargetTracking = TargetTracking {
        target_value: 70.0,
        scale_out_cooldown: 300,
        scale_in_cooldown: 600,
        disable_scale_in: false,
    };
    const BOUNDS: Bounds = Bounds { min: 1, max: 20 };

    fn minutes(values: &[f64]) -> Vec<Option<f64>> {
        values.iter().map(|v| Some(*v)).collect()
    }

    fn capacity_of(d: &Decision) -> Option<u32> {
        match d {
            Decision::Scale { capacity, .. } => Some(*capacity),
            Decision::Hold => None,
        }
    }

    #[test]
    fn three_minutes_above_the_target_scale_out_to_bring_it_back() {
        // 2 instances at 140 per instance: 4 bring it to 70.
        let d = decide(
            &POLICY,
            BOUNDS,
            2,
            &minutes(&[140.0; 3]),
            10_000,
            LastActivity::default(),
        );
        assert_eq!(capacity_of(&d), Some(4), "{d:?}");
        // Two minutes above are not enough; nor is one minute below among three.
        let d = decide(
            &POLICY,
            BOUNDS,
            2,
            &minutes(&[60.0, 140.0, 140.0]),
            10_000,
            LastActivity::default(),
        );
        assert_eq!(d, Decision::Hold);
        // Never above the maximum.
        let d = decide(
            &POLICY,
            BOUNDS,
            10,
            &minutes(&[700.0; 3]),
            10_000,
            LastActivity::default(),
        );
        assert_eq!(capacity_of(&d), Some(20));
    }

    #[test]
    fn cooldowns_hold_further_scaling() {
        let out = LastActivity {
            scale_out: Some(9_900),
            scale_in: None,
        };
        // 100 s after a scale-out: no second scale-out (cooldown 300 s), no scale-in (600 s).
        assert_eq!(
            decide(&POLICY, BOUNDS, 4, &minutes(&[140.0; 3]), 10_000, out),
            Decision::Hold
        );
        assert_eq!(
            decide(&POLICY, BOUNDS, 4, &minutes(&[10.0; 15]), 10_000, out),
            Decision::Hold
        );
        // After the cooldowns.
        assert_eq!(
            capacity_of(&decide(
                &POLICY,
                BOUNDS,
                4,
                &minutes(&[140.0; 3]),
                10_200,
                out
            )),
            Some(8)
        );
        assert_eq!(
            capacity_of(&decide(
                &POLICY,
                BOUNDS,
                4,
                &minutes(&[10.0; 15]),
                10_500,
                out
            )),
            Some(1)
        );
    }

    #[test]
    fn fifteen_quiet_minutes_scale_in_and_no_traffic_goes_to_the_minimum() {
        // 8 instances at 35 each: 4 bring it to 70.
        let d = decide(
            &POLICY,
            BOUNDS,
            8,
            &minutes(&[35.0; 15]),
            10_000,
            LastActivity::default(),
        );
        assert_eq!(capacity_of(&d), Some(4), "{d:?}");
        // Fourteen quiet minutes are not enough.
        let mut m = minutes(&[35.0; 15]);
        m[0] = Some(70.0);
        assert_eq!(
            decide(&POLICY, BOUNDS, 8, &m, 10_000, LastActivity::default()),
            Decision::Hold
        );
        // No datapoints at all (no traffic): the minimum.
        let d = decide(
            &POLICY,
            BOUNDS,
            8,
            &[None; 15],
            10_000,
            LastActivity::default(),
        );
        assert_eq!(capacity_of(&d), Some(1));
        // Unless scale-in is disabled.
        let keep = TargetTracking {
            disable_scale_in: true,
            ..POLICY
        };
        assert_eq!(
            decide(
                &keep,
                BOUNDS,
                8,
                &[None; 15],
                10_000,
                LastActivity::default()
            ),
            Decision::Hold
        );
    }

    #[test]
    fn capacity_outside_changed_bounds_is_brought_inside_at_once() {
        let bounds = Bounds { min: 3, max: 5 };
        let recent = LastActivity {
            scale_out: Some(9_999),
            scale_in: Some(9_999),
        };
        assert_eq!(
            capacity_of(&decide(&POLICY, bounds, 1, &[], 10_000, recent)),
            Some(3)
        );
        assert_eq!(
            capacity_of(&decide(&POLICY, bounds, 9, &[], 10_000, recent)),
            Some(5)
        );
    }

    #[test]
    fn from_zero_any_traffic_asks_for_one() {
        let bounds = Bounds { min: 0, max: 4 };
        let d = decide(
            &POLICY,
            bounds,
            0,
            &minutes(&[5.0; 3]),
            10_000,
            LastActivity::default(),
        );
        assert_eq!(capacity_of(&d), Some(1));
    }

    #[test]
    fn bad_policies_and_bounds_name_the_member() {
        let bad = TargetTracking {
            target_value: 0.0,
            ..POLICY
        };
        assert!(bad.validate().unwrap_err().0.starts_with("TargetValue"));
        let bad = TargetTracking {
            scale_in_cooldown: 3601,
            ..POLICY
        };
        assert!(bad.validate().unwrap_err().0.starts_with("ScaleInCooldown"));
        assert!(POLICY.validate().is_ok());
        assert!(Bounds { min: 5, max: 2 }
            .validate(1)
            .unwrap_err()
            .0
            .contains("greater"));
        assert!(Bounds { min: 0, max: 2 }
            .validate(1)
            .unwrap_err()
            .0
            .contains("at least 1"));
        assert!(Bounds { min: 0, max: 2 }.validate(0).is_ok());
    }

    /// A stepped load ramp, minute by minute: the variant's invocations per minute go
    /// 0 -> 300 -> 1,400 -> 700 -> 0, each step held for 40 minutes, and the policy is asked
    /// every minute. The capacity stays within the bounds, never turns around within a
    /// cooldown, reaches what each step needs (ceil(load / 70)) before the step ends, and
    /// comes back to the minimum when the load stops.
    #[test]
    fn a_stepped_ramp_is_followed_within_the_cooldowns_without_flapping() {
        let steps = [0.0, 300.0, 1400.0, 700.0, 0.0];
        let mut capacity = 1u32;
        let mut last = LastActivity::default();
        let mut history: Vec<Option<f64>> = Vec::new();
        let mut changes: Vec<(u64, u32, u32)> = Vec::new();
        for (step, load) in steps.iter().enumerate() {
            for minute in 0..40u64 {
                let now = (step as u64 * 40 + minute) * 60 + 60;
                // The minute just ended, as the metric saw it: invocations per instance.
                history.push(Some(load / f64::from(capacity.max(1))));
                let window = &history[history.len().saturating_sub(LOW_DATAPOINTS)..];
                if let Decision::Scale { capacity: next, .. } =
                    decide(&POLICY, BOUNDS, capacity, window, now, last)
                {
                    assert!((BOUNDS.min..=BOUNDS.max).contains(&next));
                    if next > capacity {
                        last.scale_out = Some(now);
                    } else {
                        last.scale_in = Some(now);
                    }
                    changes.push((now, capacity, next));
                    capacity = next;
                }
            }
            let needed = ((load / POLICY.target_value).ceil() as u32).clamp(BOUNDS.min, BOUNDS.max);
            assert!(
                capacity >= needed,
                "step {step} ({load}/min): {capacity} instances, {needed} needed; {changes:?}"
            );
            if step == 2 {
                assert_eq!(capacity, 20, "1,400/min needs 20 at a target of 70");
            }
        }
        assert_eq!(capacity, BOUNDS.min, "{changes:?}");
        // No reversal within a cooldown: a scale-in never follows any activity by less than
        // the scale-in cooldown, a scale-out never follows a scale-out by less than its own.
        for pair in changes.windows(2) {
            let ((t0, a0, b0), (t1, a1, b1)) = (pair[0], pair[1]);
            let gap = t1 - t0;
            if b1 < a1 {
                assert!(gap >= POLICY.scale_in_cooldown, "{pair:?}");
            } else if b0 > a0 {
                assert!(gap >= POLICY.scale_out_cooldown, "{pair:?}");
            }
        }
    }
}
