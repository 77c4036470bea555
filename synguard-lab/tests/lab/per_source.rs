//! Per-source budgets: a single flooding source (client A, its own address, no random
//! sources) goes over its budget and is blocked in XDP, while a legitimate client in another
//! namespace (B, its own veth and subnet) keeps connecting 100 %; once the block expires A can
//! connect again.
//!
//! - SYN flood with `--per-source-half-open`: `source_blocks` ≥ 1, `drop_source_blocked` ≈
//!   the flood.
//! - ACK flood (random sequence and acknowledgment numbers) with `--per-source-invalid-ack`:
//!   the same, and the block covers A's SYNs too (A cannot connect during the flood).
//!
//! IPv4 floods come from hping3 (without `--rand-source`), IPv6 floods are crafted frames from
//! A's address.

use std::fmt;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::ensure;
use synguard_common::Counter;
use synguard_lab::client::{self, ClientConfig, LegitClient};
use synguard_lab::daemon::{Daemon, XdpMode};
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::kernel::Counters;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{Family, Lab};

pub(crate) const PORT: u16 = 8080;
pub(crate) const PAYLOAD: usize = 10 * 1024;
/// Half-open connections per second and source. The legitimate client has at most one
/// handshake open at a time, far below it.
const HALF_OPEN: u32 = 50;
/// Invalid ACKs per second and source; a legitimate client sends none.
const INVALID_ACK: u32 = 100;
const BLOCK: Duration = Duration::from_secs(2);
pub(crate) const FLOOD: Duration = Duration::from_secs(4);
/// When A tries to connect during the flood, and how long it waits for the handshake: less
/// than TCP's first retransmission (1 s), so its one SYN lands in the middle of the first
/// block. (A 1 s wait let the retransmission land at 2 s, just as that block ended.)
pub(crate) const PROBE_AFTER: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Share of the flood that must be dropped as blocked: all but the segments before each
/// block (a budget's worth per block) and what the veth lost.
pub(crate) const BLOCKED_SHARE: f64 = 0.9;
/// hping3's count can lag the wire a little; A's own probe SYNs are dropped as blocked too.
const COUNT_SLACK: u64 = 20;

/// A flood from one source and the budget it trips.
pub(crate) struct Case {
    pub(crate) family: Family,
    pub(crate) kind: FloodKind,
}

impl Case {
    /// A SYN and an ACK flood, each over IPv4 and IPv6.
    pub(crate) fn all() -> impl Iterator<Item = Self> {
        [FloodKind::Syn, FloodKind::Ack]
            .into_iter()
            .flat_map(|kind| Family::ALL.map(|family| Case { family, kind }))
    }

    /// The budget flag this flood must trip.
    pub(crate) fn budget(&self) -> [String; 2] {
        match self.kind {
            FloodKind::Syn => ["--per-source-half-open".into(), HALF_OPEN.to_string()],
            FloodKind::Ack => ["--per-source-invalid-ack".into(), INVALID_ACK.to_string()],
        }
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [flag, value] = self.budget();
        write!(f, "{} {:?} flood, {flag} {value}", self.family, self.kind)
    }
}

#[test]
fn a_single_flooding_source_is_blocked_and_released() {
    let Some(_serial) = harness::start(
        "per_source",
        &[Need::Daemon, Need::Tool("hping3"), Need::Tool("timeout")],
    ) else {
        return;
    };
    run_cases("per_source", Case::all(), |case| {
        let family = case.family;
        let lab = Lab::with_second_client()?;
        let (a, b) = (lab.first_client(), lab.second_client()?);
        let _server = PayloadServer::start(lab.server(), PORT, PAYLOAD, Protocol::RequestFirst)?;
        let [flag, value] = case.budget();
        let block = BLOCK.as_secs().to_string();
        let daemon = Daemon::start(
            lab.server(),
            a.server_iface().name(),
            &PORT.to_string(),
            XdpMode::Native,
            &[
                "--iface",
                b.server_iface().name(),
                &flag,
                &value,
                "--block-seconds",
                &block,
            ],
        )?;
        let before = Counters::of(a.server_iface())?;
        let legit = LegitClient::spawn(
            b.netns(),
            ClientConfig {
                connections: usize::MAX,
                ..ClientConfig::new(
                    b.server_addr(family, PORT),
                    Protocol::RequestFirst,
                    PAYLOAD,
                    0,
                )
                .interval(Duration::from_millis(20))
            },
        )?;
        let a_once = |timeout| {
            ClientConfig::new(
                a.server_addr(family, PORT),
                Protocol::RequestFirst,
                PAYLOAD,
                1,
            )
            .connect_timeout(timeout)
        };
        let flood = Flood::single_source(&lab, case.kind, a.server_ip(family), PORT, FLOOD)?;
        sleep(PROBE_AFTER);
        let during = client::run(a.netns(), a_once(PROBE_TIMEOUT))?;
        let sent = flood.wait()?;
        let flood_end = Instant::now();
        legit.stop();
        let report = legit.join()?;
        let delta = Counters::of(a.server_iface())?.since(&before);
        let blocked = delta.get(Counter::DropSourceBlocked);
        println!(
            "flood from A: {} sent {} in {:.1?} ({:.0}/s); drop_source_blocked {blocked} ({:.1}%)",
            sent.generator,
            sent.sent,
            sent.elapsed,
            sent.rate(),
            100.0 * blocked as f64 / sent.sent.max(1) as f64
        );
        println!("legit client B: {}", report.summary());
        println!("synguard counters: {delta}");

        ensure!(
            during.successes() == 0,
            "A connected during its own flood: it was not blocked"
        );
        ensure!(
            delta.get(Counter::SourceBlocks) >= 1,
            "no source was blocked: {delta}"
        );
        ensure!(
            blocked as f64 >= BLOCKED_SHARE * sent.sent as f64
                && blocked <= sent.sent + COUNT_SLACK,
            "drop_source_blocked {blocked} for a flood of {}: {delta}",
            sent.sent
        );
        ensure!(
            report.failures.is_empty() && report.successes() >= 100,
            "legit client B during the flood: {} ({:?})",
            report.summary(),
            report.failures.iter().take(5).collect::<Vec<_>>()
        );

        // The last block began before the flood ended: it is over after BLOCK.
        sleep(
            (flood_end + BLOCK + Duration::from_millis(500))
                .saturating_duration_since(Instant::now()),
        );
        let after = client::run(a.netns(), a_once(Duration::from_secs(3)))?;
        ensure!(
            after.failures.is_empty(),
            "A cannot connect after its block expired: {:?}",
            after.failures
        );
        let exit = daemon.stop()?;
        exit.ensure_success()?;
        println!("daemon: {}", exit.totals().unwrap_or("(no totals)"));
        Ok(())
    });
}
