//! Sticky assignment: the variant for a request that carries an assignment key (a user or
//! session id), by weighted rendezvous hashing (highest random weight).
//!
//! For each variant `i` with weight `w_i > 0`, `score_i = -ln(u_i) / w_i`, where `u_i` in
//! `(0, 1)` is a stable hash of the key and the variant's name; the variant with the
//! smallest score gets the key. `-ln(u_i)` is a unit exponential, so variant `i` wins with
//! probability `w_i / sum(w)`. The same key always gets the same variant for the same
//! names and weights, and a weight change moves only the keys it must: raising one weight
//! (or lowering another) only moves keys to the variant whose weight rose relative to the
//! others, and adding a variant only moves keys to it.
//!
//! The hash (FNV-1a 64 with a splitmix64 finalizer, over length-prefixed key and name) is
//! fixed here and independent of process, build and platform, so assignments are stable
//! across restarts and replicas. Changing it would reassign every key.

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The variant for `key` among `names` with `weights` (None if no weight is positive).
///
/// Variants whose weight is not a positive finite number never get keys. Names and
/// weights are paired by position (extra entries in the longer slice are ignored); the
/// result indexes both. Allocation-free: one hash of the key, then one short hash per
/// variant.
pub fn assign(key: &str, names: &[&str], weights: &[f64]) -> Option<usize> {
    assign_with(key, names.iter().copied().zip(weights.iter().copied()))
}

/// [`assign`] over `(name, weight)` pairs given one by one; the result is the position of
/// the chosen pair.
pub fn assign_with<'a>(key: &str, variants: impl Iterator<Item = (&'a str, f64)>) -> Option<usize> {
    let keyed = fnv1a(FNV_OFFSET, key);
    let mut best: Option<(usize, f64)> = None;
    for (i, (name, weight)) in variants.enumerate() {
        if !(weight > 0.0 && weight.is_finite()) {
            continue;
        }
        let score = -unit(fnv1a(keyed, name)).ln() / weight;
        if best.is_none_or(|(_, b)| score < b) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// The value of attribute `name` in SageMaker's `CustomAttributes` text (`name=value` items
/// separated by `,` or `;`, spaces around names and values ignored): the assignment key an
/// experiment reads from there. `None` when the attribute is absent or empty.
pub fn key_in_attributes<'a>(attributes: &'a str, name: &str) -> Option<&'a str> {
    attributes
        .split([',', ';'])
        .filter_map(|item| item.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Continue an FNV-1a hash with `s`, prefixed by its length (8 bytes, little-endian) so
/// that no two (key, name) pairs hash the same bytes.
fn fnv1a(mut hash: u64, s: &str) -> u64 {
    let len = (s.len() as u64).to_le_bytes();
    for byte in len.iter().chain(s.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The splitmix64 finalizer: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash as a number strictly inside `(0, 1)`: its top 53 bits, plus a half step.
fn unit(hash: u64) -> f64 {
    ((mix(hash) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_read_from_custom_attributes() {
        let attributes = "trace=abc; user = u-42 ,empty=, other=x=y";
        assert_eq!(key_in_attributes(attributes, "user"), Some("u-42"));
        assert_eq!(key_in_attributes(attributes, "trace"), Some("abc"));
        // A value may hold `=`; only the first one splits.
        assert_eq!(key_in_attributes(attributes, "other"), Some("x=y"));
        assert_eq!(key_in_attributes(attributes, "empty"), None);
        assert_eq!(key_in_attributes(attributes, "missing"), None);
        assert_eq!(key_in_attributes("user", "user"), None);
        // Names match exactly.
        assert_eq!(key_in_attributes("User=1", "user"), None);
    }

    const KEYS: u32 = 100_000;

    fn key(i: u32) -> String {
        format!("user-{i}")
    }

    /// Raw FNV-1a 64, for the published test vectors.
    fn plain_fnv(bytes: &[u8]) -> u64 {
        bytes.iter().fold(FNV_OFFSET, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
        })
    }

    #[test]
    fn hash_building_blocks_match_their_references() {
        assert_eq!(plain_fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(plain_fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(plain_fnv(b"foobar"), 0x8594_4171_f739_67e8);
        // The first splitmix64 output from seed 0.
        assert_eq!(mix(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            fnv1a(fnv1a(FNV_OFFSET, "ab"), "c"),
            fnv1a(fnv1a(FNV_OFFSET, "a"), "bc")
        );
        assert!(unit(0) > 0.0 && unit(u64::MAX) < 1.0);
    }

    #[test]
    fn assignments_are_pinned_across_versions() {
        // Pins the hash: if this fails, every deployed key would move.
        assert_eq!(
            fnv1a(fnv1a(FNV_OFFSET, "user-42"), "variant-a"),
            PINNED_HASH
        );
        let names = ["control", "treatment"];
        let got: Vec<Option<usize>> = ["alice", "bob", "carol", "dave", "erin", "user-1"]
            .iter()
            .map(|k| assign(k, &names, &[1.0, 1.0]))
            .collect();
        assert_eq!(got, PINNED_TWO);
        let names = ["a", "b", "c", "d"];
        let got: Vec<Option<usize>> = ["alice", "bob", "carol", "dave", "erin", "user-1"]
            .iter()
            .map(|k| assign(k, &names, &[0.1, 0.2, 0.3, 0.4]))
            .collect();
        assert_eq!(got, PINNED_FOUR);
    }

    // Cross-checked against an independent Python implementation of the same hash.
    const PINNED_HASH: u64 = 0xb837_844e_f5d2_f796;
    const PINNED_TWO: [Option<usize>; 6] = [Some(1), Some(1), Some(1), Some(0), Some(0), Some(1)];
    const PINNED_FOUR: [Option<usize>; 6] = [Some(3), Some(2), Some(1), Some(2), Some(3), Some(3)];

    #[test]
    fn the_same_key_gets_the_same_variant() {
        let names = ["a", "b", "c"];
        let weights = [0.2, 0.5, 0.3];
        for i in 0..1000 {
            let first = assign(&key(i), &names, &weights);
            assert!(first.is_some());
            for _ in 0..3 {
                assert_eq!(assign(&key(i), &names, &weights), first);
            }
            // Weights are relative: scaling them all changes nothing.
            assert_eq!(assign(&key(i), &names, &[2.0, 5.0, 3.0]), first);
        }
    }

    /// Pearson's chi-square statistic of the split of `KEYS` keys against `weights`.
    fn chi_square(names: &[&str], weights: &[f64]) -> f64 {
        let mut counts = vec![0u32; names.len()];
        for i in 0..KEYS {
            counts[assign(&key(i), names, weights).unwrap()] += 1;
        }
        let total: f64 = weights.iter().sum();
        let stat = counts
            .iter()
            .zip(weights)
            .map(|(c, w)| {
                let expected = f64::from(KEYS) * w / total;
                (f64::from(*c) - expected).powi(2) / expected
            })
            .sum();
        println!("split {counts:?} for weights {weights:?}: chi-square {stat:.3}");
        stat
    }

    #[test]
    fn the_split_matches_the_weights() {
        // Chi-square critical value, 1 degree of freedom, alpha = 0.001.
        const CRITICAL_1DF: f64 = 10.828;
        assert!(chi_square(&["a", "b"], &[1.0, 1.0]) < CRITICAL_1DF);
        assert!(chi_square(&["a", "b"], &[1.0, 3.0]) < CRITICAL_1DF);
        // 2 degrees of freedom, alpha = 0.001.
        assert!(chi_square(&["a", "b", "c"], &[0.2, 0.5, 0.3]) < 13.816);
    }

    #[test]
    fn a_weight_change_moves_only_the_keys_it_must() {
        let names = ["a", "b"];
        let mut moved = 0u32;
        for i in 0..KEYS {
            let before = assign(&key(i), &names, &[50.0, 50.0]).unwrap();
            let after = assign(&key(i), &names, &[60.0, 40.0]).unwrap();
            if before != after {
                assert_eq!((before, after), (1, 0), "key {i} moved the wrong way");
                moved += 1;
            }
        }
        let fraction = f64::from(moved) / f64::from(KEYS);
        println!("50/50 -> 60/40 moved {fraction:.4} of keys");
        assert!((0.09..=0.11).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn a_new_variant_only_takes_keys() {
        let mut moved = 0u32;
        for i in 0..KEYS {
            let before = assign(&key(i), &["a", "b"], &[1.0, 1.0]).unwrap();
            let after = assign(&key(i), &["a", "b", "c"], &[1.0, 1.0, 0.5]).unwrap();
            if before != after {
                assert_eq!(after, 2, "key {i} moved between old variants");
                moved += 1;
            }
        }
        let fraction = f64::from(moved) / f64::from(KEYS);
        println!("adding a weight-0.5 variant to 1:1 moved {fraction:.4} of keys (expect 0.2)");
        assert!((0.19..=0.21).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn zero_weight_gets_nothing() {
        let names = ["a", "off", "b", "nan"];
        let weights = [1.0, 0.0, 1.0, f64::NAN];
        for i in 0..10_000 {
            let got = assign(&key(i), &names, &weights).unwrap();
            assert!(got == 0 || got == 2, "key {i} got {got}");
        }
        assert_eq!(assign("k", &names, &[0.0, 0.0, -1.0, f64::NAN]), None);
        assert_eq!(assign("k", &[], &[]), None);
        assert_eq!(assign("k", &["only"], &[0.001]), Some(0));
        // The empty key is a key like any other.
        assert!(assign("", &names, &weights).is_some());
    }
}
