//! Where a request goes: [`route`] chooses the fleet (during a deployment) and the variant
//! (an explicit `TargetVariant`, a sticky assignment key, an experiment's bandit shares, or
//! a weighted random draw where a variant's share is its weight over the sum of weights);
//! [`pick_instance`] chooses the instance within a variant. Random draws come from the
//! caller's generator, so every decision can be replayed with a seeded one.

use rand::Rng;

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

/// A variant as [`route`] sees it.
pub trait Candidate {
    /// The variant's name (`TargetVariant` and sticky assignment use it).
    fn name(&self) -> &str;
    /// Its current weight; its share is the weight over the fleet's sum.
    fn weight(&self) -> f64;
}

/// A fleet: its variants, and the traffic shares an experiment's bandit learned for them.
#[derive(Debug, Clone, Copy)]
pub struct FleetView<'a, C> {
    /// The variants, in order; [`Route::variant`] indexes them.
    pub variants: &'a [C],
    /// One share per variant, used instead of the weights for requests without a key.
    pub bandit_shares: Option<&'a [f64]>,
}

/// The new fleet of a deployment in progress, and the share of requests it takes.
#[derive(Debug, Clone, Copy)]
pub struct Deploying<'a, C> {
    /// The new config's variants.
    pub fleet: FleetView<'a, C>,
    /// Its share of requests, in `[0, 1]`.
    pub share: f64,
}

/// Where [`route`] sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// To the new fleet of a deployment, not the current one.
    pub to_new_fleet: bool,
    /// The variant's index in its fleet.
    pub variant: usize,
}

/// Choose the fleet and the variant for a request.
///
/// During a deployment the fleet comes first: the new one takes its share of requests (by
/// the assignment `key` when there is one, with [`crate::sticky::assign`] over the two
/// fleets, so a key stays on one fleet; a `target` variant only one fleet has goes there;
/// one both have is split like any request). A new fleet without variants takes nothing.
/// Within a fleet: the `target` variant if one is named; else, with a `key`, the variant
/// sticky assignment over the current weights gives it; else by the bandit's shares when
/// the fleet has them; else by weight.
pub fn route<C: Candidate>(
    current: &FleetView<'_, C>,
    new: Option<&Deploying<'_, C>>,
    target: Option<&str>,
    key: Option<&str>,
    rng: &mut impl Rng,
) -> Result<Route, RouteError> {
    if let Some(new) = new.filter(|n| !n.fleet.variants.is_empty()) {
        let has = |fleet: &FleetView<'_, C>, t: &str| fleet.variants.iter().any(|v| v.name() == t);
        let to_new = match target {
            Some(t) if !has(current, t) => has(&new.fleet, t),
            Some(t) if !has(&new.fleet, t) => false,
            _ => match key {
                Some(key) => {
                    crate::sticky::assign(key, &["current", "new"], &[1.0 - new.share, new.share])
                        == Some(1)
                }
                None => rng.random::<f64>() < new.share,
            },
        };
        if to_new {
            let variant = route_within(&new.fleet, target, key, rng)?;
            return Ok(Route {
                to_new_fleet: true,
                variant,
            });
        }
    }
    let variant = route_within(current, target, key, rng)?;
    Ok(Route {
        to_new_fleet: false,
        variant,
    })
}

/// The variant within one fleet (see [`route`]).
fn route_within<C: Candidate>(
    fleet: &FleetView<'_, C>,
    target: Option<&str>,
    key: Option<&str>,
    rng: &mut impl Rng,
) -> Result<usize, RouteError> {
    let variants = fleet.variants;
    if let Some(target) = target {
        return variants
            .iter()
            .position(|v| v.name() == target)
            .ok_or_else(|| RouteError::UnknownVariant {
                requested: target.to_string(),
                available: variants.iter().map(|v| v.name().to_string()).collect(),
            });
    }
    if let Some(key) = key {
        let sticky =
            crate::sticky::assign_with(key, variants.iter().map(|v| (v.name(), v.weight())));
        if let Some(index) = sticky {
            return Ok(index);
        }
    }
    if let Some(index) = fleet
        .bandit_shares
        .and_then(|shares| pick_weighted(shares, rng.random()))
    {
        return Ok(index);
    }
    pick_weighted_by(variants.iter().map(Candidate::weight), rng.random())
        .ok_or(RouteError::NoWeight)
}

/// Pick a variant index by weight. `draw` is uniform in `[0, 1)`.
pub fn pick_weighted(weights: &[f64], draw: f64) -> Option<usize> {
    pick_weighted_by(weights.iter().copied(), draw)
}

/// [`pick_weighted`] over weights given one by one (twice: once to sum them).
fn pick_weighted_by(weights: impl Iterator<Item = f64> + Clone, draw: f64) -> Option<usize> {
    let total: f64 = weights.clone().filter(|w| *w > 0.0).sum();
    if total <= 0.0 {
        return None;
    }
    let mut point = draw * total;
    let mut last_positive = None;
    for (i, w) in weights.enumerate() {
        if w <= 0.0 {
            continue;
        }
        if point < w {
            return Some(i);
        }
        point -= w;
        last_positive = Some(i);
    }
    // Rounding can leave `point` a hair above the last weight.
    last_positive
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

    /// A variant for the tests: a name and a weight.
    struct V(&'static str, f64);

    impl Candidate for V {
        fn name(&self) -> &str {
            self.0
        }
        fn weight(&self) -> f64 {
            self.1
        }
    }

    fn fleet(variants: &[V]) -> FleetView<'_, V> {
        FleetView {
            variants,
            bandit_shares: None,
        }
    }

    fn seeded(seed: u64) -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(seed)
    }

    #[test]
    fn target_overrides_weights() {
        let variants = [V("a", 1.0), V("b", 0.0)];
        let rng = &mut seeded(1);
        let route = route(&fleet(&variants), None, Some("b"), None, rng).unwrap();
        assert_eq!(route.variant, 1);
        let err = super::route(&fleet(&variants), None, Some("c"), None, rng).unwrap_err();
        assert_eq!(
            err,
            RouteError::UnknownVariant {
                requested: "c".into(),
                available: vec!["a".into(), "b".into()],
            }
        );
    }

    #[test]
    fn requests_split_by_weight_and_zero_weights_get_none() {
        let variants = [V("a", 1.0), V("b", 3.0), V("c", 0.0)];
        let rng = &mut seeded(2);
        let mut counts = [0u32; 3];
        for _ in 0..20_000 {
            counts[route(&fleet(&variants), None, None, None, rng)
                .unwrap()
                .variant] += 1;
        }
        assert_eq!(counts[2], 0);
        let share_b = f64::from(counts[1]) / 20_000.0;
        // 0.75 +- 5 standard deviations (sd = sqrt(0.75 * 0.25 / 20000) = 0.0031).
        assert!((share_b - 0.75).abs() < 0.016, "{counts:?}");
        let none = [V("a", 0.0), V("b", 0.0)];
        assert_eq!(
            route(&fleet(&none), None, None, None, rng),
            Err(RouteError::NoWeight)
        );
    }

    #[test]
    fn a_key_always_gets_the_same_variant_and_fleet() {
        let current = [V("a", 1.0), V("b", 1.0)];
        let new_variants = [V("x", 1.0), V("y", 1.0)];
        let new = Deploying {
            fleet: fleet(&new_variants),
            share: 0.5,
        };
        let mut seen = std::collections::HashSet::new();
        for key in ["user-1", "user-2", "user-3", "user-4", "user-5", "user-6"] {
            let first = route(
                &fleet(&current),
                Some(&new),
                None,
                Some(key),
                &mut seeded(3),
            )
            .unwrap();
            for seed in 4..40 {
                let again = route(
                    &fleet(&current),
                    Some(&new),
                    None,
                    Some(key),
                    &mut seeded(seed),
                )
                .unwrap();
                assert_eq!(again, first, "{key}");
            }
            seen.insert(first.to_new_fleet);
        }
        // Six keys at a 50% share land on both fleets.
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn the_new_fleet_takes_its_share() {
        let current = [V("a", 1.0)];
        let new_variants = [V("b", 1.0)];
        let rng = &mut seeded(5);
        let new = Deploying {
            fleet: fleet(&new_variants),
            share: 0.25,
        };
        let to_new = (0..20_000)
            .filter(|_| {
                route(&fleet(&current), Some(&new), None, None, rng)
                    .unwrap()
                    .to_new_fleet
            })
            .count();
        // 0.25 +- 5 standard deviations (sd = 0.0031).
        assert!((to_new as f64 / 20_000.0 - 0.25).abs() < 0.016, "{to_new}");

        // A new fleet with no variants (yet) takes nothing.
        let empty = Deploying {
            fleet: fleet(&[]),
            share: 1.0,
        };
        let r = route(&fleet(&current), Some(&empty), None, None, rng).unwrap();
        assert!(!r.to_new_fleet);
    }

    #[test]
    fn a_target_goes_to_the_fleet_that_has_it() {
        let current = [V("a", 1.0), V("shared", 1.0)];
        let new_variants = [V("b", 1.0), V("shared", 1.0)];
        let rng = &mut seeded(6);
        let new = Deploying {
            fleet: fleet(&new_variants),
            share: 0.5,
        };
        for _ in 0..100 {
            let to_b = route(&fleet(&current), Some(&new), Some("b"), None, rng).unwrap();
            assert_eq!(
                to_b,
                Route {
                    to_new_fleet: true,
                    variant: 0
                }
            );
            let to_a = route(&fleet(&current), Some(&new), Some("a"), None, rng).unwrap();
            assert_eq!(
                to_a,
                Route {
                    to_new_fleet: false,
                    variant: 0
                }
            );
        }
        // A name both fleets have is split by the share.
        let fleets: std::collections::HashSet<bool> = (0..100)
            .map(|_| {
                route(&fleet(&current), Some(&new), Some("shared"), None, rng)
                    .unwrap()
                    .to_new_fleet
            })
            .collect();
        assert_eq!(fleets.len(), 2);
        // Neither fleet has it: the current fleet's variants are named.
        let err = route(&fleet(&current), Some(&new), Some("zz"), None, rng).unwrap_err();
        assert!(err.to_string().contains("[\"a\", \"shared\"]"), "{err}");
    }

    #[test]
    fn bandit_shares_replace_weights_for_requests_without_a_key() {
        let variants = [V("a", 1.0), V("b", 0.0)];
        let shares = [0.0, 1.0];
        let view = FleetView {
            variants: &variants,
            bandit_shares: Some(&shares),
        };
        let rng = &mut seeded(7);
        for _ in 0..100 {
            assert_eq!(route(&view, None, None, None, rng).unwrap().variant, 1);
        }
        // A key is assigned over the weights, not the shares: b has weight 0.
        assert_eq!(route(&view, None, None, Some("k"), rng).unwrap().variant, 0);
        // A target still wins.
        assert_eq!(route(&view, None, Some("a"), None, rng).unwrap().variant, 0);
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
