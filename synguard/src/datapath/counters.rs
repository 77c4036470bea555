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

    #[cfg(test)]
    pub(crate) fn set(&mut self, counter: Counter, value: u64) {
        self.0[counter as usize] = value;
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

/// What the datapath did with the packets of an outcome counter: `pass` (to the kernel),
/// `tx` (answered from XDP), `drop` or `aborted`. `None` for the counters that are not
/// outcomes: `packets` (every packet), the ones counted in addition to an outcome, and the TC
/// program's, which sees packets XDP already counted.
pub const fn verdict(counter: Counter) -> Option<&'static str> {
    match counter {
        Counter::Packets
        | Counter::MalformedTcpOptions
        | Counter::SourceBlocks
        | Counter::SourceOverBudget
        | Counter::AckProbeRepaired
        | Counter::SynPeerLookup
        | Counter::TcCsumVerified
        | Counter::TcCsumBad => None,
        Counter::SynCookieSent => Some("tx"),
        Counter::AckCookieInvalid
        | Counter::DropDenylisted
        | Counter::DropSourceBlocked
        | Counter::DropBadChecksum => Some("drop"),
        Counter::Aborted => Some("aborted"),
        Counter::PassNonIp
        | Counter::PassNonTcp
        | Counter::PassFragment
        | Counter::PassUnprotectedPort
        | Counter::PassOtherFlags
        | Counter::SynToKernel
        | Counter::SynKnownSocket
        | Counter::AckEstablished
        | Counter::AckCookieValid
        | Counter::AckInvalidPassed
        | Counter::MalformedL2
        | Counter::MalformedIpv4
        | Counter::MalformedIpv6
        | Counter::MalformedTcp
        | Counter::PassAllowlisted => Some("pass"),
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

    #[test]
    fn verdicts_follow_the_counter_names() {
        for &counter in Counter::ALL {
            let name = counter.name();
            if name.starts_with("pass_") {
                assert_eq!(verdict(counter), Some("pass"), "{name}");
            }
            if name.starts_with("drop_") {
                assert_eq!(verdict(counter), Some("drop"), "{name}");
            }
        }
        assert_eq!(verdict(Counter::AckCookieInvalid), Some("drop"));
        assert_eq!(verdict(Counter::Packets), None);
    }
}
