//! Where a wasi-nn computation runs: inline on the async worker that runs the guest, or on
//! the bounded backend pool. A hop to the pool costs a few microseconds of thread switching,
//! more than a small model's whole computation (iris: about 5 µs), while a long computation
//! inline would hold a worker that HTTP, the control plane and other variants need. So a
//! graph's computations go to the pool until they have shown themselves short: one that
//! finished within [`INLINE_MAX`] makes later ones with inputs no larger run inline, and one
//! that took longer sends every later one of that graph to the pool.

use std::time::Duration;

/// The longest computation that may run inline: a tenth of the 10 ms a guest may run
/// between two yields anyway.
pub const INLINE_MAX: Duration = Duration::from_millis(1);

/// What is known of a graph's computations so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComputeHistory {
    /// The largest input, in bytes, of a computation that finished within [`INLINE_MAX`]
    /// (0: none yet).
    pub largest_fast_input: usize,
    /// A computation took longer than [`INLINE_MAX`].
    pub slow_seen: bool,
}

impl ComputeHistory {
    /// Whether a computation on `input_bytes` of input runs inline.
    pub fn inline(&self, input_bytes: usize) -> bool {
        !self.slow_seen && self.largest_fast_input > 0 && input_bytes <= self.largest_fast_input
    }

    /// The history after a computation on `input_bytes` that took `took`.
    pub fn after(self, input_bytes: usize, took: Duration) -> Self {
        if took > INLINE_MAX {
            Self {
                slow_seen: true,
                ..self
            }
        } else {
            Self {
                largest_fast_input: self.largest_fast_input.max(input_bytes.max(1)),
                ..self
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_micros(20);
    const SLOW: Duration = Duration::from_millis(5);

    /// The first computation goes to the pool; a fast one lets those with inputs no larger
    /// run inline, not larger ones.
    #[test]
    fn short_computations_earn_inline_for_inputs_no_larger() {
        let h = ComputeHistory::default();
        assert!(!h.inline(16));
        let h = h.after(16, FAST);
        assert!(h.inline(16));
        assert!(h.inline(8));
        assert!(!h.inline(17), "a larger input may take longer");
        let h = h.after(256, FAST);
        assert!(h.inline(200));
    }

    /// One slow computation sends every later one to the pool, whatever came before.
    #[test]
    fn one_slow_computation_sends_the_graph_to_the_pool_for_good() {
        let h = ComputeHistory::default().after(1024, FAST).after(16, SLOW);
        assert!(!h.inline(16));
        assert!(!h.after(16, FAST).inline(16));
        assert!(!ComputeHistory::default()
            .after(16, INLINE_MAX + Duration::from_nanos(1))
            .inline(16));
        assert!(ComputeHistory::default().after(16, INLINE_MAX).inline(16));
    }

    /// An empty input that was fast still counts as seen (it does not leave the history at
    /// "none yet").
    #[test]
    fn empty_inputs_count() {
        assert!(ComputeHistory::default().after(0, FAST).inline(0));
    }
}
