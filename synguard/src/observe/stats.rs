//! Periodic log lines from the datapath's per-CPU counters, and a summary of the sources
//! blocked (or under `--per-source-action log`, gone over a budget) since the last line (no
//! per-packet or per-source logging).

use std::fmt::Write as _;
use std::time::Instant;

use synguard_common::{Counter, PerSourceAction, SyncookieMode};
use tracing::{info, warn};

use crate::datapath::counters::CounterTotals;
use crate::datapath::snapshot::{MapReader, ReadError, monotonic_ns};
use crate::observe::report::over_budget_state;

/// How many sources a summary of blocks (or under action log, of sources over budget) names.
const BLOCK_SUMMARY_TOP: usize = 5;

/// The counters in the `systemctl status` line.
const STATUS_COUNTERS: [Counter; 6] = [
    Counter::Packets,
    Counter::SynCookieSent,
    Counter::SynToKernel,
    Counter::AckCookieValid,
    Counter::AckCookieInvalid,
    Counter::DropSourceBlocked,
];

pub struct Stats {
    reader: MapReader,
    last: CounterTotals,
    last_at: Instant,
}

impl Stats {
    /// Rates start from the counters' current values: adopted (pinned) counters continue
    /// from an earlier run, whose totals are included in [`Self::log_totals`].
    pub fn new(reader: MapReader) -> Self {
        Self {
            last: reader.counters().unwrap_or_else(|_| CounterTotals::zero()),
            reader,
            last_at: Instant::now(),
        }
    }

    /// The `systemctl status` line: the SYN-cookie mode and the main totals as of the last
    /// read.
    pub fn status(&self, mode: SyncookieMode) -> String {
        let totals: Vec<String> = STATUS_COUNTERS
            .iter()
            .map(|&counter| format!("{}={}", counter.name(), self.last[counter]))
            .collect();
        format!("syncookies {mode}; {}", totals.join(" "))
    }

    /// Logs one line with the per-second rate of each counter that moved since the last call,
    /// and one summarising the sources blocked since then, if any.
    pub fn log_rates(&mut self) {
        let now = match self.reader.counters() {
            Ok(values) => values,
            Err(e) => {
                warn!("stats: {e}");
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
        for (counter, action) in [
            (Counter::SourceBlocks, PerSourceAction::Drop),
            (Counter::SourceOverBudget, PerSourceAction::Log),
        ] {
            let events = deltas[counter];
            if events > 0
                && let Err(e) = self.log_over_budget(action, events, seconds)
            {
                warn!("stats: {e}");
            }
        }
        self.last = now;
        self.last_at = at;
    }

    /// `N source block(s) in the last Ss, M source(s) blocked now; top: A/32 (...), ...`, the
    /// blocked sources with the most half-open connections and invalid ACKs first; under
    /// action log the same for the sources that went over a budget and were not blocked.
    fn log_over_budget(
        &self,
        action: PerSourceAction,
        events: u64,
        seconds: f64,
    ) -> Result<(), ReadError> {
        let config = self.reader.config()?;
        let now_ns = monotonic_ns();
        let mut over_budget: Vec<_> = self
            .reader
            .sources()?
            .into_iter()
            .filter_map(|s| Some((s.over_budget_for(now_ns)?, s)))
            .collect();
        over_budget.sort_by_key(|(_, s)| {
            std::cmp::Reverse(u64::from(s.state.half_open) + u64::from(s.state.invalid_acks))
        });
        let top: Vec<String> = over_budget
            .iter()
            .take(BLOCK_SUMMARY_TOP)
            .map(|(left, s)| {
                format!(
                    "{} (half-open {}, invalid ACKs {}, {:.0}s left)",
                    s.prefix(&config),
                    s.state.half_open,
                    s.state.invalid_acks,
                    left.as_secs_f64()
                )
            })
            .collect();
        let events = match action {
            PerSourceAction::Drop => format!("blocks: {events} source block(s)"),
            PerSourceAction::Log => format!(
                "over budget, not blocked (--per-source-action log): {events} source(s) went over a budget"
            ),
        };
        info!(
            "{events} in the last {seconds:.0}s, {} source(s) {} now{}{}",
            over_budget.len(),
            over_budget_state(action),
            if top.is_empty() { "" } else { "; top: " },
            top.join(", ")
        );
        Ok(())
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
