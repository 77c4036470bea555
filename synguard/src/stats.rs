//! Periodic log lines from the datapath's per-CPU counters (no per-packet logging).

use std::fmt::{self, Write as _};
use std::time::Instant;

use aya::maps::{MapData, PerCpuArray};
use synguard_common::Counter;
use tracing::{info, warn};

use crate::counters::CounterTotals;

/// The counters in the `systemctl status` line.
const STATUS_COUNTERS: [Counter; 6] = [
    Counter::Packets,
    Counter::SynCookieSent,
    Counter::SynToKernel,
    Counter::AckCookieValid,
    Counter::AckCookieInvalid,
    Counter::DropSourceBlocked,
];

pub struct Stats<'a> {
    map: &'a PerCpuArray<MapData, u64>,
    last: CounterTotals,
    last_at: Instant,
}

impl<'a> Stats<'a> {
    /// Rates start from the counters' current values: adopted (pinned) counters continue
    /// from an earlier run, whose totals are included in [`Self::log_totals`].
    pub fn new(map: &'a PerCpuArray<MapData, u64>) -> Self {
        Self {
            map,
            last: CounterTotals::read(map).unwrap_or_else(|_| CounterTotals::zero()),
            last_at: Instant::now(),
        }
    }

    /// The `systemctl status` line: the SYN-cookie mode and the main totals as of the last
    /// read.
    pub fn status(&self, mode: impl fmt::Display) -> String {
        let totals: Vec<String> = STATUS_COUNTERS
            .iter()
            .map(|&counter| format!("{}={}", counter.name(), self.last[counter]))
            .collect();
        format!("syncookies {mode}; {}", totals.join(" "))
    }

    /// Logs one line with the per-second rate of each counter that moved since the last call.
    pub fn log_rates(&mut self) {
        let now = match CounterTotals::read(self.map) {
            Ok(values) => values,
            Err(e) => {
                warn!("stats: reading {}: {e}", synguard_common::MAP_COUNTERS);
                return;
            }
        };
        let at = Instant::now();
        let seconds = at.duration_since(self.last_at).as_secs_f64();
        let deltas = now.since(&self.last);
        let line = format_nonzero(deltas.values().iter().copied(), |delta| {
            format_rate(delta as f64 / seconds)
        });
        info!("stats: {}", line.as_deref().unwrap_or("no packets"));
        self.last = now;
        self.last_at = at;
    }

    /// Logs one line with the totals since start, as of the last [`Self::log_rates`].
    pub fn log_totals(&self) {
        let line = format_nonzero(self.last.values().iter().copied(), |total| {
            total.to_string()
        });
        info!("stats total: {}", line.as_deref().unwrap_or("no packets"));
    }
}

/// `name=value` for each non-zero counter, in [`Counter::ALL`] order; `None` if all are zero.
fn format_nonzero(
    values: impl Iterator<Item = u64>,
    show: impl Fn(u64) -> String,
) -> Option<String> {
    let mut line = String::new();
    for (counter, value) in Counter::ALL.iter().zip(values) {
        if value != 0 {
            if !line.is_empty() {
                line.push(' ');
            }
            let _infallible = write!(line, "{}={}", counter.name(), show(value));
        }
    }
    (!line.is_empty()).then_some(line)
}

/// Whole numbers once rates are large; one decimal below 10/s so a trickle is not shown as 0.
fn format_rate(per_second: f64) -> String {
    if per_second >= 10.0 {
        format!("{per_second:.0}/s")
    } else {
        format!("{per_second:.1}/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nonzero_counters_are_shown() {
        let mut values = vec![0u64; Counter::ALL.len()];
        values[Counter::Packets as usize] = 6000;
        values[Counter::SynCookieSent as usize] = 5000;
        let line = format_nonzero(values.iter().copied(), |v| format_rate(v as f64 / 5.0));
        assert_eq!(
            line.as_deref(),
            Some("packets=1200/s syn_cookie_sent=1000/s")
        );
        assert_eq!(
            format_nonzero([0u64; 3].into_iter(), |v| v.to_string()),
            None
        );
    }

    #[test]
    fn small_rates_keep_a_decimal() {
        assert_eq!(format_rate(0.6), "0.6/s");
        assert_eq!(format_rate(12.4), "12/s");
    }
}
