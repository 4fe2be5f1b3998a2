//! An instance's memory budget: its linear memories and the host bytes it holds through
//! wasi-nn (tensors, graphs loaded from its bytes) count against one limit, so that a guest
//! cannot move its allocations into the host to escape it. [`InstanceLimiter`] is the
//! store's `ResourceLimiter` (memories, tables and core instances too); a [`Charge`] is a
//! host allocation held against the budget until it is dropped.

use crate::error::HostLimit;
use crate::limits::Limits;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The bytes one instance holds, against its limit.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    /// Linear memory, all memories together.
    linear: AtomicUsize,
    /// Host bytes held through wasi-nn.
    host: AtomicUsize,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            linear: AtomicUsize::new(0),
            host: AtomicUsize::new(0),
        })
    }

    /// Bytes held now, linear memory and host together.
    pub(crate) fn used(&self) -> usize {
        self.linear
            .load(Ordering::SeqCst)
            .saturating_add(self.host.load(Ordering::SeqCst))
    }

    /// Hold `bytes` of host memory for `what`, or refuse with the limit's error.
    pub(crate) fn charge(self: &Arc<Self>, bytes: usize, what: &str) -> Result<Charge, HostLimit> {
        self.reserve(&self.host, bytes, what)?;
        Ok(Charge {
            budget: self.clone(),
            bytes,
        })
    }

    /// Add `bytes` to `counter` if the total stays within the limit.
    fn reserve(&self, counter: &AtomicUsize, bytes: usize, what: &str) -> Result<(), HostLimit> {
        counter.fetch_add(bytes, Ordering::SeqCst);
        let total = self.used();
        if total > self.limit {
            counter.fetch_sub(bytes, Ordering::SeqCst);
            return Err(HostLimit::memory(self.limit, total, what));
        }
        Ok(())
    }
}

/// Host bytes held against an instance's budget; released when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.host.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// The store's resource limiter: linear memory against the instance's budget, and the
/// fixed caps on memories, tables and core instances ([`Limits`]).
pub(crate) struct InstanceLimiter {
    pub(crate) budget: Arc<MemoryBudget>,
}

impl wasmtime::ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        self.budget
            .reserve(&self.budget.linear, grow, "linear memory")
            .map_err(wasmtime::Error::new)?;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > Limits::MAX_TABLE_ELEMENTS {
            return Err(wasmtime::Error::new(HostLimit::TableElements {
                limit: Limits::MAX_TABLE_ELEMENTS,
                asked: desired,
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        Limits::MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        Limits::MAX_TABLES
    }

    fn memories(&self) -> usize {
        Limits::MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    /// Linear memory and host bytes share one limit; a refused charge holds nothing, and a
    /// dropped one gives its bytes back.
    #[test]
    fn linear_memory_and_host_bytes_share_the_limit() {
        let budget = MemoryBudget::new(100);
        let mut limiter = InstanceLimiter {
            budget: budget.clone(),
        };
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        let tensor = budget.charge(30, "a tensor").unwrap();
        assert_eq!(budget.used(), 90);
        let refused = budget.charge(20, "a tensor").unwrap_err();
        assert!(refused.to_string().contains("MemorySizeInMB"), "{refused}");
        assert_eq!(budget.used(), 90, "a refused charge holds nothing");
        let error = limiter.memory_growing(60, 80, None).unwrap_err();
        assert!(format!("{error:#}").contains("MemorySizeInMB"), "{error:#}");
        drop(tensor);
        assert_eq!(budget.used(), 60);
        assert!(limiter.memory_growing(60, 100, None).unwrap());
        assert!(budget.charge(1, "a tensor").is_err());
    }
}
