//! Variant selection: an explicit `TargetVariant`, or a weighted random draw where a
//! variant's share is its weight over the sum of weights.

/// Why no variant could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// `X-Amzn-SageMaker-Target-Variant` named a variant the endpoint does not have.
    #[error("the endpoint has no production variant named {requested:?}; its variants are {available:?}")]
    UnknownVariant {
        /// The name asked for.
        requested: String,
        /// The endpoint's variants.
        available: Vec<String>,
    },
    /// Every weight is zero (and no target variant was given).
    #[error(
        "every production variant has weight 0; name one with TargetVariant or raise a weight"
    )]
    NoWeight,
}

/// Pick a variant index by weight. `draw` is uniform in `[0, 1)`.
pub fn pick_weighted(weights: &[f64], draw: f64) -> Option<usize> {
    let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
    if total <= 0.0 {
        return None;
    }
    let mut point = draw * total;
    let mut last_positive = None;
    for (i, w) in weights.iter().enumerate() {
        if *w <= 0.0 {
            continue;
        }
        if point < *w {
            return Some(i);
        }
        point -= w;
        last_positive = Some(i);
    }
    // Rounding can leave `point` a hair above the last weight.
    last_positive
}

/// Choose the variant for a request: the target when one is named, otherwise by weight.
pub fn choose<'a>(
    names: impl Iterator<Item = &'a str> + Clone,
    weights: &[f64],
    target: Option<&str>,
    draw: f64,
) -> Result<usize, RouteError> {
    if let Some(target) = target {
        return names
            .clone()
            .position(|n| n == target)
            .ok_or_else(|| RouteError::UnknownVariant {
                requested: target.to_string(),
                available: names.map(str::to_string).collect(),
            });
    }
    pick_weighted(weights, draw).ok_or(RouteError::NoWeight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_draw_covers_shares() {
        let w = [1.0, 3.0];
        assert_eq!(pick_weighted(&w, 0.0), Some(0));
        assert_eq!(pick_weighted(&w, 0.249), Some(0));
        assert_eq!(pick_weighted(&w, 0.25), Some(1));
        assert_eq!(pick_weighted(&w, 0.999_999), Some(1));
    }

    #[test]
    fn zero_weights_are_skipped() {
        assert_eq!(pick_weighted(&[0.0, 2.0, 0.0], 0.9), Some(1));
        assert_eq!(pick_weighted(&[0.0, 0.0], 0.5), None);
    }

    #[test]
    fn target_overrides_weights() {
        let names = ["a", "b"];
        assert_eq!(
            choose(names.iter().copied(), &[1.0, 0.0], Some("b"), 0.0),
            Ok(1)
        );
        let err = choose(names.iter().copied(), &[1.0, 0.0], Some("c"), 0.0).unwrap_err();
        assert!(err.to_string().contains("\"c\""));
    }
}

/// How a variant spreads requests over its instances: SageMaker's
/// `RoutingConfig.RoutingStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoutingStrategy {
    /// The instance with the fewest outstanding requests (ties broken at random).
    #[default]
    LeastOutstandingRequests,
    /// An instance chosen uniformly at random.
    Random,
}

impl RoutingStrategy {
    /// SageMaker's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeastOutstandingRequests => "LEAST_OUTSTANDING_REQUESTS",
            Self::Random => "RANDOM",
        }
    }
}

/// Pick an instance given each instance's outstanding requests. `draw` is uniform in
/// `[0, 1)`. `None` only when there are no instances.
pub fn pick_instance(strategy: RoutingStrategy, outstanding: &[usize], draw: f64) -> Option<usize> {
    if outstanding.is_empty() {
        return None;
    }
    let n = outstanding.len();
    match strategy {
        RoutingStrategy::Random => Some(((draw * n as f64) as usize).min(n - 1)),
        RoutingStrategy::LeastOutstandingRequests => {
            let least = *outstanding.iter().min()?;
            let ties = outstanding.iter().filter(|o| **o == least).count();
            let nth = ((draw * ties as f64) as usize).min(ties - 1);
            outstanding
                .iter()
                .enumerate()
                .filter(|(_, o)| **o == least)
                .nth(nth)
                .map(|(i, _)| i)
        }
    }
}

#[cfg(test)]
mod instance_tests {
    use super::*;

    #[test]
    fn least_outstanding_picks_a_least_loaded_instance() {
        assert_eq!(
            pick_instance(RoutingStrategy::LeastOutstandingRequests, &[2, 0, 1], 0.7),
            Some(1)
        );
        // Ties are spread by the draw.
        let load = [1, 0, 0];
        assert_eq!(
            pick_instance(RoutingStrategy::LeastOutstandingRequests, &load, 0.1),
            Some(1)
        );
        assert_eq!(
            pick_instance(RoutingStrategy::LeastOutstandingRequests, &load, 0.9),
            Some(2)
        );
    }

    #[test]
    fn random_ignores_load() {
        assert_eq!(
            pick_instance(RoutingStrategy::Random, &[0, 5, 9], 0.99),
            Some(2)
        );
        assert_eq!(
            pick_instance(RoutingStrategy::Random, &[0, 5, 9], 0.0),
            Some(0)
        );
        assert_eq!(pick_instance(RoutingStrategy::Random, &[], 0.5), None);
    }
}
