//! Multi-armed bandit routing: turning each arm's outcome statistics into traffic shares.
//!
//! The request path never runs a bandit. Off the hot path, the server periodically calls
//! [`shares`] with every arm's statistics ([`Arm`]) and publishes the result as a
//! snapshot; each request then picks an arm from that snapshot with
//! [`crate::routing::pick_weighted`], which is lock-free and cheap. This module owns the
//! strategies ([`Strategy`]), the reward kinds ([`Metric`]), the minimum-share floor and
//! the validation of a bandit's settings ([`validate`]).

use crate::ab_test::{Arm, Metric};
use rand::Rng;
use rand_distr::{Beta, Distribution, Normal};

/// The most arms a bandit may have.
pub const MAX_ARMS: usize = 10;

/// Joint posterior draws Thompson sampling uses to estimate each arm's probability of
/// being best. The estimate's standard error is at most `0.5 / sqrt(2000)`, about 0.011.
pub const THOMPSON_DRAWS: usize = 2_000;

/// Pseudo-observations, placed at the pooled mean and variance of all arms' rewards, that
/// make up the weak prior of a [`Metric::Numeric`] arm's posterior under Thompson sampling.
pub const NUMERIC_PRIOR_WEIGHT: f64 = 1.0;

/// How traffic shares follow from the arms' statistics.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// Each arm's share is the posterior probability that it is the best arm.
    ThompsonSampling,
    /// `1 - epsilon` of traffic goes to the arm with the best mean (split among ties), and
    /// `epsilon` is split evenly over all arms. An arm with no observations counts as
    /// best, so every arm is tried.
    EpsilonGreedy {
        /// The fraction of traffic spread evenly for exploration, in `[0, 1]`.
        epsilon: f64,
    },
}

/// The population variance of an arm's rewards (never negative), or `None` before any
/// outcome.
fn population_variance(arm: &Arm) -> Option<f64> {
    let mean = arm.mean()?;
    Some((arm.sum_sq / arm.n as f64 - mean * mean).max(0.0))
}

/// Check a bandit's settings for `arms` arms; the message says what is wrong.
pub fn validate(strategy: Strategy, min_share: f64, arms: usize) -> Result<(), String> {
    if arms == 0 || arms > MAX_ARMS {
        return Err(format!(
            "a bandit needs between 1 and {MAX_ARMS} arms; this one has {arms}"
        ));
    }
    if let Strategy::EpsilonGreedy { epsilon } = strategy {
        if !(0.0..=1.0).contains(&epsilon) {
            return Err(format!(
                "epsilon must be between 0 and 1 (the fraction of traffic spread evenly for exploration); got {epsilon}"
            ));
        }
    }
    let most = 1.0 / arms as f64;
    // A little slack so that writing 1/3 as a decimal is accepted.
    if !(0.0..=most + 1e-9).contains(&min_share) {
        return Err(format!(
            "min_share must be between 0 and 1/{arms} = {most} (every arm gets at least min_share, \
             so {arms} arms cannot each get more than 1/{arms}); got {min_share}"
        ));
    }
    Ok(())
}

/// Traffic shares (sum 1, each >= min_share) for arms with these statistics.
///
/// The strategy's shares `p` are mixed with the floor: arm `i` gets
/// `min_share + (1 - len * min_share) * p[i]`, so every arm gets at least `min_share` and
/// the rest is distributed in proportion to `p`. Arms whose statistics are all identical
/// (e.g. before any outcome) get equal shares.
///
/// Settings are expected to have passed [`validate`]; out-of-range values are clamped
/// rather than panicking (`epsilon` to `[0, 1]`, `min_share` to `[0, 1 / len]`, NaN to 0).
/// No arms gives an empty vector.
///
/// Thompson sampling draws [`THOMPSON_DRAWS`] times from every arm's posterior and counts
/// how often each arm's draw is the largest (ties broken at random):
/// - [`Metric::Binary`]: `Beta(1 + successes, 1 + failures)`, a uniform prior; `sum` is
///   clamped to `[0, n]`.
/// - [`Metric::Numeric`]: a normal approximation with a weak empirical prior worth
///   [`NUMERIC_PRIOR_WEIGHT`] observation at the pooled mean `M` and pooled variance `V`
///   of all arms' rewards. Arm `i` with `n` rewards of mean `m` and variance `v` has
///   posterior `Normal((M + n m) / (1 + n), sqrt(s2 / (1 + n)))` where
///   `s2 = (V + n v) / (1 + n)`. For large `n` this is `Normal(m, sd / sqrt(n))`; an arm
///   with `n = 0` gets `Normal(M, sqrt(V))`, as wide as a single reward, so it is
///   explored. `V` is floored at a tiny positive value relative to `M` so that a posterior
///   is never a point when all rewards so far are equal.
pub fn shares(
    strategy: Strategy,
    reward: Metric,
    arms: &[Arm],
    min_share: f64,
    rng: &mut impl Rng,
) -> Vec<f64> {
    let k = arms.len();
    if k == 0 {
        return Vec::new();
    }
    let uniform = 1.0 / k as f64;
    let raw = if arms.iter().all(|a| a == &arms[0]) {
        vec![uniform; k]
    } else {
        match strategy {
            Strategy::ThompsonSampling => thompson(reward, arms, rng),
            Strategy::EpsilonGreedy { epsilon } => epsilon_greedy(epsilon, arms),
        }
    };
    let floor = if min_share.is_nan() {
        0.0
    } else {
        min_share.clamp(0.0, uniform)
    };
    let rest = (1.0 - k as f64 * floor).max(0.0);
    raw.into_iter().map(|p| floor + rest * p).collect()
}

/// Shares for epsilon-greedy (summing to 1).
fn epsilon_greedy(epsilon: f64, arms: &[Arm]) -> Vec<f64> {
    let epsilon = if epsilon.is_nan() {
        0.0
    } else {
        epsilon.clamp(0.0, 1.0)
    };
    // Untried arms are optimistic (best); a non-finite mean is never best.
    let means: Vec<f64> = arms
        .iter()
        .map(|a| match a.mean() {
            None => f64::INFINITY,
            Some(m) if m.is_finite() => m,
            Some(_) => f64::NEG_INFINITY,
        })
        .collect();
    let best = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tied = means.iter().filter(|m| **m == best).count() as f64;
    let explore = epsilon / arms.len() as f64;
    means
        .iter()
        .map(|m| {
            if *m == best {
                explore + (1.0 - epsilon) / tied
            } else {
                explore
            }
        })
        .collect()
}

/// One arm's posterior under Thompson sampling.
enum Posterior {
    Beta(Beta<f64>),
    Normal(Normal<f64>),
}

impl Posterior {
    fn sample(&self, rng: &mut impl Rng) -> f64 {
        match self {
            Self::Beta(d) => d.sample(rng),
            Self::Normal(d) => d.sample(rng),
        }
    }
}

/// Shares for Thompson sampling (summing to 1): the Monte Carlo estimate of each arm's
/// probability of being best.
fn thompson(reward: Metric, arms: &[Arm], rng: &mut impl Rng) -> Vec<f64> {
    let posteriors: Vec<Posterior> = match reward {
        Metric::Binary => arms.iter().map(beta_posterior).collect(),
        Metric::Numeric => normal_posteriors(arms),
    };
    let mut wins = vec![0u32; arms.len()];
    for _ in 0..THOMPSON_DRAWS {
        let mut best = 0;
        let mut best_draw = f64::NEG_INFINITY;
        let mut ties = 0u32;
        for (i, posterior) in posteriors.iter().enumerate() {
            let draw = posterior.sample(rng);
            if draw > best_draw {
                best = i;
                best_draw = draw;
                ties = 1;
            } else if draw == best_draw {
                // Reservoir sampling: each tied arm is kept with equal probability.
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        wins[best] += 1;
    }
    wins.into_iter()
        .map(|w| f64::from(w) / THOMPSON_DRAWS as f64)
        .collect()
}

/// `Beta(1 + successes, 1 + failures)`.
fn beta_posterior(arm: &Arm) -> Posterior {
    let n = arm.n as f64;
    let successes = if arm.sum.is_nan() {
        0.0
    } else {
        arm.sum.clamp(0.0, n)
    };
    let beta = Beta::new(1.0 + successes, 1.0 + n - successes)
        .unwrap_or_else(|_| Beta::new(1.0, 1.0).expect("Beta(1, 1) is valid"));
    Posterior::Beta(beta)
}

/// Normal posteriors with a weak prior at the pooled mean and variance (see [`shares`]).
fn normal_posteriors(arms: &[Arm]) -> Vec<Posterior> {
    let finite: Vec<&Arm> = arms
        .iter()
        .filter(|a| a.n > 0 && a.sum.is_finite() && a.sum_sq.is_finite())
        .collect();
    let total_n: f64 = finite.iter().map(|a| a.n as f64).sum();
    let (prior_mean, pooled_var) = if total_n > 0.0 {
        let mean = finite.iter().map(|a| a.sum).sum::<f64>() / total_n;
        let mean_sq = finite.iter().map(|a| a.sum_sq).sum::<f64>() / total_n;
        (mean, (mean_sq - mean * mean).max(0.0))
    } else {
        (0.0, 1.0)
    };
    let prior_var = pooled_var.max(1e-12 * prior_mean.abs().max(1.0).powi(2));
    let w0 = NUMERIC_PRIOR_WEIGHT;
    arms.iter()
        .map(|a| {
            let (n, mean, var) = match (a.mean(), population_variance(a)) {
                (Some(m), Some(v)) if m.is_finite() && v.is_finite() => (a.n as f64, m, v),
                _ => (0.0, 0.0, 0.0),
            };
            let post_mean = (w0 * prior_mean + n * mean) / (w0 + n);
            let s2 = (w0 * prior_var + n * var) / (w0 + n);
            let post_sd = (s2 / (w0 + n)).sqrt();
            let normal = Normal::new(post_mean, post_sd).unwrap_or_else(|_| {
                Normal::new(prior_mean, prior_var.sqrt()).expect("a finite prior is valid")
            });
            Posterior::Normal(normal)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::pick_weighted;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn binary(n: u64, successes: u64) -> Arm {
        Arm {
            n,
            sum: successes as f64,
            sum_sq: successes as f64,
        }
    }

    fn numeric(n: u64, mean: f64, sd: f64) -> Arm {
        let n_f = n as f64;
        Arm {
            n,
            sum: n_f * mean,
            sum_sq: n_f * (sd * sd + mean * mean),
        }
    }

    fn assert_sums_to_one(shares: &[f64]) {
        let total: f64 = shares.iter().sum();
        assert!(
            (total - 1.0).abs() < 1e-9,
            "shares {shares:?} sum to {total}"
        );
    }

    const STRATEGIES: [Strategy; 3] = [
        Strategy::ThompsonSampling,
        Strategy::EpsilonGreedy { epsilon: 0.1 },
        Strategy::EpsilonGreedy { epsilon: 1.0 },
    ];

    #[test]
    fn shares_sum_to_one_and_respect_the_floor() {
        let mut rng = StdRng::seed_from_u64(1);
        let arms = [
            binary(1000, 30),
            binary(1000, 150),
            binary(10, 1),
            binary(0, 0),
        ];
        for strategy in STRATEGIES {
            for reward in [Metric::Binary, Metric::Numeric] {
                for min_share in [0.0, 0.05, 0.1, 0.25] {
                    let s = shares(strategy, reward, &arms, min_share, &mut rng);
                    assert_eq!(s.len(), arms.len());
                    assert_sums_to_one(&s);
                    for share in &s {
                        assert!(*share >= min_share - 1e-12, "{s:?} below {min_share}");
                    }
                }
            }
        }
        // The largest floor leaves nothing to distribute: equal shares.
        let s = shares(
            Strategy::ThompsonSampling,
            Metric::Binary,
            &arms,
            0.25,
            &mut rng,
        );
        assert!(s.iter().all(|x| (x - 0.25).abs() < 1e-12), "{s:?}");
    }

    #[test]
    fn floor_distributes_the_rest_in_proportion() {
        let mut rng = StdRng::seed_from_u64(2);
        let arms = [binary(100, 10), binary(100, 20)];
        let strategy = Strategy::EpsilonGreedy { epsilon: 0.2 };
        // Without a floor: 0.1 and 0.9. With 0.1: 0.1 + 0.8 * p.
        let s = shares(strategy, Metric::Binary, &arms, 0.0, &mut rng);
        assert!(
            (s[0] - 0.1).abs() < 1e-12 && (s[1] - 0.9).abs() < 1e-12,
            "{s:?}"
        );
        let s = shares(strategy, Metric::Binary, &arms, 0.1, &mut rng);
        assert!(
            (s[0] - 0.18).abs() < 1e-12 && (s[1] - 0.82).abs() < 1e-12,
            "{s:?}"
        );
    }

    #[test]
    fn epsilon_greedy_splits_exploration_evenly_and_ties_share_the_rest() {
        let mut rng = StdRng::seed_from_u64(3);
        let eps = Strategy::EpsilonGreedy { epsilon: 0.3 };
        let arms = [binary(100, 5), binary(100, 20), binary(100, 10)];
        let s = shares(eps, Metric::Binary, &arms, 0.0, &mut rng);
        let expect = [0.1, 0.8, 0.1];
        for (got, want) in s.iter().zip(expect) {
            assert!((got - want).abs() < 1e-12, "{s:?}");
        }
        // Two arms tied for best split 1 - epsilon.
        let arms = [binary(100, 20), binary(50, 10), binary(100, 10)];
        let s = shares(eps, Metric::Numeric, &arms, 0.0, &mut rng);
        let expect = [0.45, 0.45, 0.1];
        for (got, want) in s.iter().zip(expect) {
            assert!((got - want).abs() < 1e-12, "{s:?}");
        }
        // epsilon = 0 is pure greedy; epsilon = 1 is uniform.
        let arms = [binary(100, 5), binary(100, 20)];
        let greedy = shares(
            Strategy::EpsilonGreedy { epsilon: 0.0 },
            Metric::Binary,
            &arms,
            0.0,
            &mut rng,
        );
        assert_eq!(greedy, vec![0.0, 1.0]);
        let uniform = shares(
            Strategy::EpsilonGreedy { epsilon: 1.0 },
            Metric::Binary,
            &arms,
            0.0,
            &mut rng,
        );
        assert_eq!(uniform, vec![0.5, 0.5]);
    }

    #[test]
    fn untried_arms_are_explored() {
        let mut rng = StdRng::seed_from_u64(4);
        // Binary: Beta(1, 1) against a well-measured 10% arm wins about 90% of draws.
        let arms = [binary(1000, 100), binary(0, 0)];
        let s = shares(
            Strategy::ThompsonSampling,
            Metric::Binary,
            &arms,
            0.0,
            &mut rng,
        );
        assert!(s[1] > 0.8, "{s:?}");
        // Numeric: the untried arm's prior is centred on the pooled mean, as wide as one
        // reward, so it wins about half the draws.
        let arms = [numeric(1000, 1.0, 1.0), numeric(0, 0.0, 0.0)];
        let s = shares(
            Strategy::ThompsonSampling,
            Metric::Numeric,
            &arms,
            0.0,
            &mut rng,
        );
        assert!(s[1] > 0.4 && s[1] < 0.6, "{s:?}");
        // Even against a clearly better arm, an untried one keeps real traffic.
        let arms = [
            numeric(1000, 1.0, 1.0),
            numeric(1000, 1.5, 1.0),
            numeric(0, 0.0, 0.0),
        ];
        let s = shares(
            Strategy::ThompsonSampling,
            Metric::Numeric,
            &arms,
            0.0,
            &mut rng,
        );
        assert!(s[2] > 0.2, "{s:?}");
        // Epsilon-greedy treats an untried arm as best.
        let eps = Strategy::EpsilonGreedy { epsilon: 0.1 };
        let arms = [binary(1000, 900), binary(0, 0), binary(0, 0)];
        let s = shares(eps, Metric::Binary, &arms, 0.0, &mut rng);
        assert!(s[0] < 0.04 && s[1] > 0.45 && s[2] > 0.45, "{s:?}");
        // Nothing observed anywhere: equal shares, for every strategy and reward.
        let arms = [Arm::default(); 3];
        for strategy in STRATEGIES {
            for reward in [Metric::Binary, Metric::Numeric] {
                let s = shares(strategy, reward, &arms, 0.0, &mut rng);
                assert!(s.iter().all(|x| (x - 1.0 / 3.0).abs() < 1e-12), "{s:?}");
            }
        }
    }

    #[test]
    fn thompson_favours_the_clearly_better_arm() {
        let mut rng = StdRng::seed_from_u64(5);
        let arms = [binary(2000, 100), binary(2000, 300)];
        let s = shares(
            Strategy::ThompsonSampling,
            Metric::Binary,
            &arms,
            0.0,
            &mut rng,
        );
        assert!(s[1] > 0.99, "{s:?}");
        let arms = [numeric(500, 1.0, 1.0), numeric(500, 1.5, 1.0)];
        let s = shares(
            Strategy::ThompsonSampling,
            Metric::Numeric,
            &arms,
            0.0,
            &mut rng,
        );
        assert!(s[1] > 0.99, "{s:?}");
        // Close arms share traffic.
        let arms = [binary(50, 5), binary(50, 6)];
        let s = shares(
            Strategy::ThompsonSampling,
            Metric::Binary,
            &arms,
            0.0,
            &mut rng,
        );
        assert!(s[0] > 0.2 && s[1] > 0.2, "{s:?}");
    }

    #[test]
    fn degenerate_statistics_do_not_panic() {
        let mut rng = StdRng::seed_from_u64(6);
        let arms = [
            Arm {
                n: 3,
                sum: f64::NAN,
                sum_sq: f64::INFINITY,
            },
            Arm {
                n: 2,
                sum: 7.0, // more successes than outcomes
                sum_sq: 7.0,
            },
            numeric(4, 2.0, 0.0), // no spread at all
        ];
        for strategy in STRATEGIES {
            for reward in [Metric::Binary, Metric::Numeric] {
                for min_share in [f64::NAN, -1.0, 0.0, 0.9] {
                    let s = shares(strategy, reward, &arms, min_share, &mut rng);
                    assert_sums_to_one(&s);
                    assert!(s.iter().all(|x| x.is_finite() && *x >= 0.0), "{s:?}");
                }
            }
        }
        let s = shares(
            Strategy::EpsilonGreedy { epsilon: f64::NAN },
            Metric::Binary,
            &arms,
            0.0,
            &mut rng,
        );
        assert_sums_to_one(&s);
        assert!(shares(
            Strategy::ThompsonSampling,
            Metric::Binary,
            &[],
            0.0,
            &mut rng
        )
        .is_empty());
    }

    #[test]
    fn validate_explains_what_is_wrong() {
        let ts = Strategy::ThompsonSampling;
        assert_eq!(validate(ts, 0.0, 1), Ok(()));
        assert_eq!(validate(ts, 0.1, 10), Ok(()));
        assert_eq!(validate(ts, 0.3333333333, 3), Ok(()));
        assert_eq!(
            validate(Strategy::EpsilonGreedy { epsilon: 0.0 }, 0.0, 2),
            Ok(())
        );
        assert_eq!(
            validate(Strategy::EpsilonGreedy { epsilon: 1.0 }, 0.5, 2),
            Ok(())
        );

        let err = validate(ts, 0.0, 0).unwrap_err();
        assert!(
            err.contains("between 1 and 10 arms") && err.contains("has 0"),
            "{err}"
        );
        let err = validate(ts, 0.0, 11).unwrap_err();
        assert!(err.contains("has 11"), "{err}");
        for epsilon in [-0.1, 1.5, f64::NAN] {
            let err = validate(Strategy::EpsilonGreedy { epsilon }, 0.0, 2).unwrap_err();
            assert!(err.starts_with("epsilon must be between 0 and 1"), "{err}");
        }
        for min_share in [-0.01, 0.34, f64::NAN, f64::INFINITY] {
            let err = validate(ts, min_share, 3).unwrap_err();
            assert!(
                err.starts_with("min_share must be between 0 and 1/3"),
                "{err}"
            );
        }
    }

    /// Route `batches * batch` requests to arms with the given true reward means, the
    /// shares recomputed by `policy` after each batch. Returns the cumulative regret, the
    /// final shares and the smallest share any arm had after a recomputation.
    fn simulate(
        means: &[f64],
        reward: Metric,
        seed: u64,
        mut policy: impl FnMut(&[Arm], &mut StdRng) -> Vec<f64>,
    ) -> (f64, Vec<f64>, f64) {
        const BATCHES: usize = 200;
        const BATCH: usize = 100;
        let mut rng = StdRng::seed_from_u64(seed);
        let best = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let mut arms = vec![Arm::default(); means.len()];
        let mut current = policy(&arms, &mut rng);
        let mut smallest = f64::INFINITY;
        let mut regret = 0.0;
        for _ in 0..BATCHES {
            for _ in 0..BATCH {
                let arm = pick_weighted(&current, rng.random()).unwrap();
                regret += best - means[arm];
                let outcome = match reward {
                    Metric::Binary => f64::from(u8::from(rng.random::<f64>() < means[arm])),
                    Metric::Numeric => means[arm] + noise.sample(&mut rng),
                };
                arms[arm].record(outcome);
            }
            current = policy(&arms, &mut rng);
            smallest = current.iter().copied().fold(smallest, f64::min);
        }
        (regret, current, smallest)
    }

    fn argmax(v: &[f64]) -> usize {
        (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
    }

    /// Regret of `strategy` relative to uniform routing, with and without a 5% floor;
    /// asserts the best arm ends with the largest share and the floor holds throughout.
    fn regret_ratios(strategy: Strategy, reward: Metric, means: &[f64], seed: u64) -> [f64; 2] {
        let k = means.len();
        let (uniform, _, _) = simulate(means, reward, seed, |_, _| vec![1.0 / k as f64; k]);
        let best = argmax(means);
        [0.0, 0.05].map(|min_share| {
            let (regret, last, smallest) = simulate(means, reward, seed, |arms, rng| {
                shares(strategy, reward, arms, min_share, rng)
            });
            let ratio = regret / uniform;
            println!(
                "{strategy:?} {reward:?} min_share {min_share}: regret {regret:.1} vs uniform \
                 {uniform:.1} = {ratio:.3}; final shares {last:?}; smallest share {smallest:.4}"
            );
            assert_eq!(argmax(&last), best, "final shares {last:?}");
            assert!(smallest >= min_share - 1e-12, "a share fell to {smallest}");
            ratio
        })
    }

    const RATES: [f64; 3] = [0.05, 0.10, 0.15];
    const NUMERIC_MEANS: [f64; 3] = [1.0, 1.2, 1.5];

    #[test]
    fn thompson_binary_simulation_beats_uniform() {
        for ratio in regret_ratios(Strategy::ThompsonSampling, Metric::Binary, &RATES, 10) {
            assert!(ratio < 0.3, "regret ratio {ratio}");
        }
    }

    #[test]
    fn epsilon_greedy_binary_simulation_beats_uniform() {
        let strategy = Strategy::EpsilonGreedy { epsilon: 0.1 };
        for ratio in regret_ratios(strategy, Metric::Binary, &RATES, 11) {
            assert!(ratio < 0.6, "regret ratio {ratio}");
        }
    }

    #[test]
    fn thompson_numeric_simulation_beats_uniform() {
        let strategy = Strategy::ThompsonSampling;
        for ratio in regret_ratios(strategy, Metric::Numeric, &NUMERIC_MEANS, 12) {
            assert!(ratio < 0.4, "regret ratio {ratio}");
        }
    }

    #[test]
    fn epsilon_greedy_numeric_simulation_beats_uniform() {
        let strategy = Strategy::EpsilonGreedy { epsilon: 0.1 };
        for ratio in regret_ratios(strategy, Metric::Numeric, &NUMERIC_MEANS, 13) {
            assert!(ratio < 0.7, "regret ratio {ratio}");
        }
    }
}
