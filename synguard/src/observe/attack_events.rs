//! Attack start and end events: every [`SAMPLE`] the daemon reads each port's `SG_PORT_LOAD`
//! totals and the counters, the [`AttackDetector`] turns them into starts and ends, and each
//! is one log line with structured fields (`event = "attack_started"` / `"attack_ended"`; with
//! `--log-format json` they are the JSON object's fields) and the `/metrics` gauges of an
//! [`AttackBoard`].
//!
//! The end line sums up the attack: its peak SYN rate, duration and the port's counts during
//! it, what the interface dropped meanwhile (drops happen before a SYN is counted per port,
//! so they are the interface's, not the port's), and the top sources of the heavy-hitter table
//! (`SG_SOURCES`) as it is at the end: each source's last one-second window.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use synguard_common::Counter;
use tracing::warn;

use crate::datapath::counters::CounterTotals;
use crate::datapath::snapshot::{MapReader, ReadError, monotonic_ns};
use crate::observe::attack_detector::{
    AttackDetector, Reading, Summary, Thresholds, Transition, Trigger,
};
use crate::settings::merge::Settings;

/// How often the ports are read: the SYN rates are per this period.
pub const SAMPLE: Duration = Duration::from_secs(1);
/// How many sources an end line names.
const TOP_SOURCES: usize = 5;

/// One port's attacks, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortAttacks {
    pub active: bool,
    /// Attacks started since the daemon started.
    pub started: u64,
}

/// The attack state per port, shared with the metrics exporter.
#[derive(Clone, Debug, Default)]
pub struct AttackBoard(Arc<Mutex<BTreeMap<u16, PortAttacks>>>);

impl AttackBoard {
    /// Ports that had an attack since start.
    pub fn read(&self) -> BTreeMap<u16, PortAttacks> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, port: u16, active: bool) {
        let mut ports = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = ports.entry(port).or_default();
        entry.started += u64::from(active);
        entry.active = active;
        drop(ports);
    }
}

/// Reads the maps for the detector and logs what it finds; call [`Self::tick`] every
/// [`SAMPLE`].
pub struct AttackEvents {
    reader: MapReader,
    detector: AttackDetector,
    board: AttackBoard,
    /// The counters at the last tick.
    counters: Option<CounterTotals>,
    /// The counters at the tick before each ongoing attack's start.
    at_start: BTreeMap<u16, CounterTotals>,
}

impl AttackEvents {
    pub fn new(reader: MapReader, board: AttackBoard) -> Self {
        Self {
            reader,
            detector: AttackDetector::default(),
            board,
            counters: None,
            at_start: BTreeMap::new(),
        }
    }

    /// One reading of every port, with the thresholds of `settings` (`attack_syn_rate`,
    /// `cooldown`). `auto_cookies`: the ports the auto controller answers with cookies now
    /// (none outside mode auto). Errors are logged; the next tick tries again.
    pub fn tick(&mut self, settings: &Settings, auto_cookies: &[u16]) {
        let thresholds = Thresholds {
            syn_rate: f64::from(settings.attack_syn_rate),
            cooldown: settings.cooldown,
        };
        if let Err(e) = self.try_tick(thresholds, auto_cookies) {
            warn!("attacks: {e}");
        }
    }

    fn try_tick(&mut self, thresholds: Thresholds, auto_cookies: &[u16]) -> Result<(), ReadError> {
        let at = Instant::now();
        let counters = self.reader.counters()?;
        let loads = self.reader.port_loads()?;
        let before = self.counters.replace(counters.clone());
        let before = before.unwrap_or_else(|| counters.clone());
        for (port, load) in loads {
            let reading = Reading {
                at,
                load,
                cookies: auto_cookies.contains(&port),
            };
            match self.detector.observe(port, reading, thresholds) {
                Some(Transition::Started { trigger, syn_rate }) => {
                    self.at_start.insert(port, before.clone());
                    self.board.set(port, true);
                    let why = match trigger {
                        Trigger::Cookies => {
                            "the auto controller answers its SYNs with cookies".to_owned()
                        }
                        Trigger::SynRate => {
                            format!("at or above attack_syn_rate {:.0}", thresholds.syn_rate)
                        }
                    };
                    warn!(
                        event = "attack_started",
                        port,
                        trigger = trigger.as_str(),
                        syn_rate = syn_rate.round() as u64,
                        "attack on port {port} started: {syn_rate:.0} SYNs/s, {why}"
                    );
                }
                Some(Transition::Ended(summary)) => {
                    let start = self
                        .at_start
                        .remove(&port)
                        .unwrap_or_else(|| before.clone());
                    self.board.set(port, false);
                    self.log_end(port, &summary, &counters.since(&start));
                }
                None => {}
            }
        }
        self.detector.round_done(at);
        Ok(())
    }

    fn log_end(&self, port: u16, summary: &Summary, during: &CounterTotals) {
        let top = self
            .top_sources()
            .unwrap_or_else(|e| format!("unknown ({e})"));
        let load = &summary.load;
        let syns = load.syns_to_kernel.wrapping_add(load.cookies_sent);
        let duration = summary.duration.as_secs_f64();
        let peak = summary.peak_syn_rate.round() as u64;
        let blocks = during[Counter::SourceBlocks];
        let over_budget = during[Counter::SourceOverBudget];
        let blocked = during[Counter::DropSourceBlocked];
        let denied = during[Counter::DropDenylisted];
        let bad_checksum = during[Counter::DropBadChecksum];
        let invalid_acks = during[Counter::AckCookieInvalid];
        warn!(
            event = "attack_ended",
            port,
            trigger = summary.trigger.as_str(),
            duration_secs = (duration * 10.0).round() / 10.0,
            calm_secs = summary.calm_for.as_secs(),
            peak_syn_rate = peak,
            syns,
            cookies_sent = load.cookies_sent,
            cookies_validated = load.cookies_validated,
            syns_to_kernel = load.syns_to_kernel,
            kernel_handshakes = load.handshakes_completed,
            source_blocks = blocks,
            source_over_budget = over_budget,
            drop_source_blocked = blocked,
            drop_denylisted = denied,
            drop_bad_checksum = bad_checksum,
            ack_cookie_invalid = invalid_acks,
            top_sources = top.as_str(),
            "attack on port {port} ended: lasted {duration:.1}s (calm for {}s since), peak {peak} SYNs/s, {syns} SYNs; XDP answered {} with cookies ({} handshakes completed), the kernel got {} ({} completed); on the interface meanwhile {blocks} source blocks, {over_budget} sources over a budget reported (monitor mode), dropped {blocked} packets of blocked sources, {denied} of denylisted ones, {bad_checksum} SYNs with bad checksums and {invalid_acks} invalid ACKs; top sources: {top}",
            summary.calm_for.as_secs(),
            load.cookies_sent,
            load.cookies_validated,
            load.syns_to_kernel,
            load.handshakes_completed,
        );
    }

    /// `PREFIX (SYNs N, half-open N[, over budget]), ...`: the sources with the most SYNs in
    /// their last window, or `none`. Over budget: blocked, or under `--per-source-action log`
    /// monitored.
    fn top_sources(&self) -> Result<String, ReadError> {
        let config = self.reader.config()?;
        let now_ns = monotonic_ns();
        let mut sources = self.reader.sources()?;
        sources.retain(|s| s.state.syns > 0);
        sources.sort_by_key(|s| std::cmp::Reverse((s.state.syns, s.state.half_open)));
        let mut top = String::new();
        for source in sources.iter().take(TOP_SOURCES) {
            if !top.is_empty() {
                top.push_str(", ");
            }
            let _infallible = write!(
                top,
                "{} (SYNs {}, half-open {}{})",
                source.prefix(&config),
                source.state.syns,
                source.state.half_open,
                if source.over_budget_for(now_ns).is_some() {
                    ", over budget"
                } else {
                    ""
                }
            );
        }
        if top.is_empty() {
            top.push_str("none");
        }
        Ok(top)
    }
}
