//! Per-CPU packet counters: no atomics needed, the daemon sums the CPUs when it reads.
use synguard_common::Counter;

use crate::maps::COUNTERS;

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the slot belongs to this CPU; XDP and TC ingress run with preemption disabled.
        unsafe { *slot += 1 }
    }
}
