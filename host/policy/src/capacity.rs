//! Validating SageMaker's `UpdateEndpointWeightsAndCapacities`: which variants change to
//! which weight and instance count, and whether the result can still route traffic.

use std::collections::HashSet;

/// One variant's requested change (`DesiredWeightAndCapacity`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `VariantName`.
    pub variant: String,
    /// `DesiredWeight`.
    pub weight: Option<f64>,
    /// `DesiredInstanceCount`.
    pub instance_count: Option<i64>,
}

/// A variant's weight and instance count.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// The variant's name.
    pub variant: String,
    /// Its weight.
    pub weight: f64,
    /// Its instance count.
    pub instance_count: usize,
}

/// The largest instance count a variant may ask for.
pub const MAX_INSTANCE_COUNT: i64 = 1000;

/// Apply `changes` to `current`, or say why they are invalid. Unnamed variants keep their
/// values. A variant may have 0 instances only when its weight is 0, and at least one
/// variant must keep a positive weight.
pub fn apply(current: &[Capacity], changes: &[Change]) -> Result<Vec<Capacity>, String> {
    if changes.is_empty() {
        return Err("DesiredWeightsAndCapacities must name at least one variant".into());
    }
    let mut seen = HashSet::new();
    let mut next = current.to_vec();
    for change in changes {
        if !seen.insert(change.variant.as_str()) {
            return Err(format!(
                "variant {:?} is named more than once",
                change.variant
            ));
        }
        let Some(target) = next.iter_mut().find(|c| c.variant == change.variant) else {
            return Err(format!(
                "the endpoint has no variant named {:?}; its variants are {:?}",
                change.variant,
                current
                    .iter()
                    .map(|c| c.variant.as_str())
                    .collect::<Vec<_>>()
            ));
        };
        if change.weight.is_none() && change.instance_count.is_none() {
            return Err(format!(
                "variant {:?}: give DesiredWeight, DesiredInstanceCount or both",
                change.variant
            ));
        }
        if let Some(weight) = change.weight {
            if !weight.is_finite() || weight < 0.0 {
                return Err(format!(
                    "variant {:?}: DesiredWeight {weight} is not a weight; use a number >= 0",
                    change.variant
                ));
            }
            target.weight = weight;
        }
        if let Some(count) = change.instance_count {
            if !(0..=MAX_INSTANCE_COUNT).contains(&count) {
                return Err(format!(
                    "variant {:?}: DesiredInstanceCount {count} is out of range; use 0-{MAX_INSTANCE_COUNT}",
                    change.variant
                ));
            }
            target.instance_count = count as usize;
        }
    }
    for c in &next {
        if c.instance_count == 0 && c.weight > 0.0 {
            return Err(format!(
                "variant {:?} would have 0 instances but weight {}; set its DesiredWeight to 0 as well",
                c.variant, c.weight
            ));
        }
    }
    if next.iter().all(|c| c.weight == 0.0) {
        return Err("every variant would have weight 0, so no request could be routed".into());
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Vec<Capacity> {
        vec![
            Capacity {
                variant: "A".into(),
                weight: 1.0,
                instance_count: 2,
            },
            Capacity {
                variant: "B".into(),
                weight: 1.0,
                instance_count: 1,
            },
        ]
    }

    fn change(v: &str, w: Option<f64>, n: Option<i64>) -> Change {
        Change {
            variant: v.into(),
            weight: w,
            instance_count: n,
        }
    }

    #[test]
    fn applies_weights_and_counts() {
        let next = apply(&current(), &[change("B", Some(3.0), Some(4))]).unwrap();
        assert_eq!(next[0], current()[0]);
        assert_eq!(next[1].weight, 3.0);
        assert_eq!(next[1].instance_count, 4);
    }

    #[test]
    fn zero_instances_only_with_zero_weight() {
        let e = apply(&current(), &[change("B", None, Some(0))]).unwrap_err();
        assert!(e.contains("0 instances but weight 1"), "{e}");
        let next = apply(&current(), &[change("B", Some(0.0), Some(0))]).unwrap();
        assert_eq!(next[1].instance_count, 0);
    }

    #[test]
    fn rejects_bad_input() {
        for (changes, expected) in [
            (vec![change("C", Some(1.0), None)], "no variant named \"C\""),
            (vec![change("A", Some(-1.0), None)], "-1 is not a weight"),
            (
                vec![change("A", Some(f64::NAN), None)],
                "NaN is not a weight",
            ),
            (vec![change("A", None, Some(-2))], "-2 is out of range"),
            (vec![change("A", None, None)], "give DesiredWeight"),
            (
                vec![change("A", Some(1.0), None), change("A", Some(2.0), None)],
                "more than once",
            ),
            (
                vec![change("A", Some(0.0), None), change("B", Some(0.0), None)],
                "every variant would have weight 0",
            ),
            (vec![], "at least one variant"),
        ] {
            let e = apply(&current(), &changes).unwrap_err();
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }
}
