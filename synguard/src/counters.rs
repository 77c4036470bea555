//! The datapath's per-CPU packet counters (`SG_COUNTERS`), summed over CPUs.

use std::ops::Index;

use aya::maps::{MapData, MapError, PerCpuArray};
use synguard_common::Counter;

/// One total per [`Counter`], in [`Counter::ALL`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterTotals(Vec<u64>);

impl CounterTotals {
    pub fn zero() -> Self {
        Self(vec![0; Counter::ALL.len()])
    }

    /// Current value of every counter, summed over CPUs.
    pub fn read(map: &PerCpuArray<MapData, u64>) -> Result<Self, MapError> {
        Counter::ALL
            .iter()
            .map(|&counter| {
                let per_cpu = map.get(&(counter as u32), 0)?;
                Ok(per_cpu.iter().fold(0u64, |sum, v| sum.wrapping_add(*v)))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// How much each counter moved since `earlier` (counters wrap, so the difference does).
    pub fn since(&self, earlier: &Self) -> Self {
        Self(
            self.0
                .iter()
                .zip(&earlier.0)
                .map(|(now, then)| now.wrapping_sub(*then))
                .collect(),
        )
    }

    /// The totals in [`Counter::ALL`] order.
    pub fn values(&self) -> &[u64] {
        &self.0
    }
}

impl Index<Counter> for CounterTotals {
    type Output = u64;

    fn index(&self, counter: Counter) -> &u64 {
        &self.0[counter as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_wrap_and_index_by_counter() {
        let mut earlier = CounterTotals::zero();
        earlier.0[Counter::Packets as usize] = u64::MAX;
        let mut now = CounterTotals::zero();
        now.0[Counter::Packets as usize] = 1;
        now.0[Counter::Aborted as usize] = 3;
        let delta = now.since(&earlier);
        assert_eq!(delta[Counter::Packets], 2);
        assert_eq!(delta[Counter::Aborted], 3);
        assert_eq!(delta.values().iter().sum::<u64>(), 5);
    }
}
