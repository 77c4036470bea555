//! `--syncookies off|always|auto`: who answers SYNs to a protected port.
//!
//! - `off`: the kernel answers every SYN (syn_to_kernel rises, XDP sends no SYN-ACK).
//! - `always`: XDP answers every SYN (syn_cookie_sent rises, nothing reaches the kernel).
//! - `auto`: the kernel answers while there is no flood; under a 10 s random-source SYN flood
//!   the port switches to XDP cookies within 1 s (log line, syn_cookie_sent), the legitimate
//!   client keeps ≥ 95 % of its connections (connections completed / attempted, each a full
//!   100 KiB download checked byte for byte), and the port goes back to the kernel after the
//!   cooldown.

use std::time::{Duration, Instant};

use anyhow::ensure;
use synguard_common::Counter;
use synguard_lab::client::{self, ClientConfig, LegitClient};
use synguard_lab::daemon::XdpMode;
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::kernel::Counters;
use synguard_lab::server::Protocol;
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 100 * 1024;
const CONNECTIONS: usize = 20;
const FLOOD: Duration = Duration::from_secs(10);
const COOLDOWN_SECS: u64 = 3;
const SWITCH_ON: &str = "SYNs now answered by XDP";
const SWITCH_BACK: &str = "SYNs go to the kernel again";

fn bench(mode: &str, extra: &[&str]) -> anyhow::Result<Bench> {
    let mut args = vec!["--syncookies", mode];
    args.extend(extra);
    Bench::start(
        Lab::new()?,
        PORT,
        PAYLOAD,
        &PORT.to_string(),
        XdpMode::Native,
        &args,
    )
}

/// `CONNECTIONS` connections, all of which must succeed; returns the counters' change.
fn connect(bench: &Bench, family: Family) -> anyhow::Result<Counters> {
    let lab = &bench.lab;
    let before = Counters::of(lab.server_iface())?;
    let config = ClientConfig::new(
        lab.server_addr(family, PORT),
        Protocol::RequestFirst,
        PAYLOAD,
        CONNECTIONS,
    );
    let report = client::run(lab.client(), config)?;
    ensure!(
        report.failures.is_empty(),
        "failures: {:?}",
        report.failures
    );
    Ok(Counters::of(lab.server_iface())?.since(&before))
}

#[test]
fn off_and_always() {
    let Some(_serial) = harness::start("modes off/always", &[Need::Daemon]) else {
        return;
    };
    let cases = Family::ALL
        .iter()
        .flat_map(|&f| ["off", "always"].map(move |m| (f, m)))
        .map(|(f, m)| Case(f, m));
    run_cases("modes off/always", cases, |Case(family, mode)| {
        let bench = bench(mode, &[])?;
        let delta = connect(&bench, *family)?;
        println!("{mode}: {delta}");
        let (kernel, xdp) = (kernel_answered(&delta), delta.get(Counter::SynCookieSent));
        match *mode {
            "off" => ensure!(
                kernel >= CONNECTIONS as u64 && xdp == 0,
                "off: the kernel must answer: {delta}"
            ),
            _ => ensure!(
                xdp >= CONNECTIONS as u64 && kernel == 0,
                "always: XDP must answer: {delta}"
            ),
        }
        bench.daemon.stop()?.ensure_success()
    });
}

struct Case(Family, &'static str);

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

#[test]
fn auto_switches_under_a_flood_and_back() {
    let Some(_serial) = harness::start(
        "modes auto",
        &[Need::Daemon, Need::Tool("hping3"), Need::Tool("timeout")],
    ) else {
        return;
    };
    run_cases("modes auto", Family::ALL, |&family| {
        let cooldown = COOLDOWN_SECS.to_string();
        let mut bench = bench("auto", &["--cooldown", &cooldown])?;
        let quiet = connect(&bench, family)?;
        println!("auto without a flood: {quiet}");
        ensure!(
            kernel_answered(&quiet) >= CONNECTIONS as u64 && quiet.get(Counter::SynCookieSent) == 0,
            "without a flood the kernel must answer: {quiet}"
        );
        ensure!(
            !bench.daemon.log().contains(SWITCH_ON),
            "switched without a flood"
        );

        let lab = &bench.lab;
        let target = lab.server_addr(family, PORT);
        let before = Counters::of(lab.server_iface())?;
        let started = Instant::now();
        let flood = Flood::start(lab, FloodKind::Syn, target.ip(), PORT, FLOOD)?;
        let legit = LegitClient::spawn(
            lab.client(),
            ClientConfig {
                connections: usize::MAX,
                ..ClientConfig::new(target, Protocol::RequestFirst, PAYLOAD, 0)
                    .interval(Duration::from_millis(40))
            },
        )?;
        let line = bench
            .daemon
            .wait_for_line(SWITCH_ON, Duration::from_secs(5))?;
        let switched_after = started.elapsed();
        println!("after {switched_after:.2?}: {line}");
        let sent = flood.wait()?;
        legit.stop();
        let report = legit.join()?;
        let delta = Counters::of(bench.lab.server_iface())?.since(&before);
        println!(
            "flood: {} SYNs ({:.0}/s); legit: {}; {:.1}% ok; synguard: {delta}",
            sent.sent,
            sent.rate(),
            report.summary(),
            report.success_percent()
        );
        ensure!(
            switched_after < Duration::from_secs(1),
            "switched after {switched_after:?}"
        );
        ensure!(
            delta.get(Counter::SynCookieSent) > 0,
            "no cookie SYN-ACKs: {delta}"
        );
        ensure!(
            report.success_percent() >= 95.0 && report.attempts() > 100,
            "legitimate client: {} ({:?})",
            report.summary(),
            report.failures.iter().take(5).collect::<Vec<_>>()
        );
        let back_started = Instant::now();
        let line = bench
            .daemon
            .wait_for_line(SWITCH_BACK, Duration::from_secs(COOLDOWN_SECS + 5))?;
        println!("{:.2?} after the flood: {line}", back_started.elapsed());
        let after = connect(&bench, family)?;
        ensure!(
            kernel_answered(&after) >= CONNECTIONS as u64,
            "after the cooldown the kernel must answer again: {after}"
        );
        bench.daemon.stop()?.ensure_success()
    });
}

/// SYNs the kernel answered: passed because of the port's mode, or because the kernel still
/// held their 4-tuple (a client reusing a port while the server's TIME_WAIT lasts).
fn kernel_answered(delta: &Counters) -> u64 {
    delta.get(Counter::SynToKernel) + delta.get(Counter::SynKnownSocket)
}
