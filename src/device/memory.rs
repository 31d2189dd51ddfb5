//! The engine's own accounting of device memory: the bytes of the tensors it allocates (live now,
//! and the most at once since the last reset), so that what an operation holds can be measured on
//! any adapter (wgpu reports no per-buffer totals, and a discrete GPU's memory is not the RSS).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Live and peak bytes of one device's tensors.
#[derive(Default)]
pub(crate) struct MemoryCounter {
    live: AtomicU64,
    peak: AtomicU64,
}

impl MemoryCounter {
    pub(crate) fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The peak from now on starts at what is live now.
    pub(crate) fn reset_peak(&self) {
        self.peak.store(self.live(), Ordering::Relaxed);
    }
}

/// One counted allocation: its bytes are live until the last tensor over it (views and clones
/// share it) is dropped. The wgpu buffer itself may outlive it while a bind group still holds it.
pub(crate) struct Allocation {
    counter: Arc<MemoryCounter>,
    bytes: u64,
}

impl Allocation {
    pub(crate) fn new(counter: &Arc<MemoryCounter>, bytes: u64) -> Allocation {
        let live = counter.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        counter.peak.fetch_max(live, Ordering::Relaxed);
        Allocation { counter: counter.clone(), bytes }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.counter.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_falls_back_and_peak_keeps_the_most() {
        let counter = Arc::new(MemoryCounter::default());
        let a = Allocation::new(&counter, 100);
        let b = Allocation::new(&counter, 50);
        assert_eq!((counter.live(), counter.peak()), (150, 150));
        drop(a);
        assert_eq!((counter.live(), counter.peak()), (50, 150));
        counter.reset_peak();
        let c = Allocation::new(&counter, 10);
        assert_eq!((counter.live(), counter.peak()), (60, 60));
        drop((b, c));
        assert_eq!(counter.live(), 0);
    }
}
