//! Monitor mode, `--per-source-action log`: the floods of `per_source` (one source, A, over
//! its half-open or invalid-ACK budget), but A is only reported, never blocked:
//!
//! - `synguard top` during the flood lists A among the monitored sources (over budget, not
//!   blocked) with the mark's time left, `source_over_budget` moved and `source_blocks` and
//!   `drop_source_blocked` did not, and the daemon logs an over-budget summary naming A;
//! - A connects and downloads its payload during its own flood (under the default `drop`,
//!   `per_source` shows that it cannot);
//! - the flood's packets are handled as anyone's: its SYNs get cookie SYN-ACKs, its invalid
//!   ACKs are dropped as invalid;
//! - a reload to `per_source_action = "drop"` turns A's live mark into a block: A cannot
//!   connect, `drop_source_blocked` moves.

use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use nix::sys::signal::Signal;
use synguard_common::Counter;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::daemon::{Daemon, run_once};
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::kernel::Counters;
use synguard_lab::scratch::ScratchDir;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::top::monitored_time_left;
use synguard_lab::topology::Lab;

use crate::per_source::{BLOCKED_SHARE, Case, FLOOD, PAYLOAD, PORT, PROBE_AFTER};

/// How long a source stays marked over budget: longer than the flood, so `top` lists A.
const MARK: Duration = Duration::from_secs(30);
/// A's connect during the flood may take TCP's retransmissions: a SYN or SYN-ACK the veth
/// lost under the flood is no block.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);
/// The config file holds the action alone (the flags the rest), so a reload switches it.
const CONFIG: &str = "synguard.toml";
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

fn action(action: &str) -> String {
    format!("per_source_action = \"{action}\"\n")
}

#[test]
fn a_source_over_budget_is_reported_and_still_connects() {
    let Some(_serial) = harness::start(
        "monitor_mode",
        &[Need::Daemon, Need::Tool("hping3"), Need::Tool("timeout")],
    ) else {
        return;
    };
    run_cases("monitor_mode", Case::all(), |case| {
        let family = case.family;
        let lab = Lab::new()?;
        let a = lab.first_client();
        let iface = a.server_iface().name();
        let _server = PayloadServer::start(lab.server(), PORT, PAYLOAD, Protocol::RequestFirst)?;
        let [flag, value] = case.budget();
        let mark = MARK.as_secs().to_string();
        let scratch = ScratchDir::create()?;
        let config = scratch.write(CONFIG, action("log"))?;
        let mut daemon = Daemon::start_with_config(
            lab.server(),
            &config,
            &[
                "--iface",
                iface,
                "--ports",
                &PORT.to_string(),
                "--syncookies",
                "always",
                &flag,
                &value,
                "--block-seconds",
                &mark,
                // A's own address is its source, as `top` shows it.
                "--source-prefix6",
                "128",
                "--stats-interval",
                "1",
                "--metrics-addr",
                "none",
            ],
        )?;
        let before = Counters::of(a.server_iface())?;
        let flood = Flood::single_source(&lab, case.kind, a.server_ip(family), PORT, FLOOD)?;
        sleep(PROBE_AFTER);
        let a_once = || {
            client::run(
                a.netns(),
                ClientConfig::new(
                    a.server_addr(family, PORT),
                    Protocol::RequestFirst,
                    PAYLOAD,
                    1,
                )
                .connect_timeout(PROBE_TIMEOUT),
            )
        };
        let during = a_once()?;
        let (ok, top) = run_once(lab.server(), &["top", "-n", "5", "--iface", iface])?;
        let sent = flood.wait()?;
        let delta = Counters::of(a.server_iface())?.since(&before);
        println!(
            "flood from A: {} sent {} in {:.1?} ({:.0}/s)",
            sent.generator,
            sent.sent,
            sent.elapsed,
            sent.rate()
        );
        println!("synguard counters: {delta}");
        println!("synguard top during the flood:\n{top}");

        ensure!(
            during.successes() == 1,
            "A could not connect during its own flood under --per-source-action log: {:?}",
            during.failures
        );
        ensure!(ok, "synguard top: {top}");
        let ip = a.ip(family);
        let source = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
        let left = monitored_time_left(&top, &source)?;
        ensure!(
            left > MARK.as_secs_f64() - 10.0 && left <= MARK.as_secs_f64(),
            "{source} marked for {left}s more, expected most of {MARK:?}"
        );
        ensure!(
            delta.get(Counter::SourceOverBudget) >= 1,
            "no source went over budget: {delta}"
        );
        ensure!(
            delta.get(Counter::SourceBlocks) == 0 && delta.get(Counter::DropSourceBlocked) == 0,
            "a source was blocked under --per-source-action log: {delta}"
        );
        // The flood fared as anyone's packets do: answered with cookies, or dropped as
        // invalid ACKs (what the veth lost aside).
        let handled = match case.kind {
            FloodKind::Syn => Counter::SynCookieSent,
            FloodKind::Ack => Counter::AckCookieInvalid,
        };
        ensure!(
            delta.get(handled) as f64 >= BLOCKED_SHARE * sent.sent as f64,
            "{} {} for a flood of {}: {delta}",
            handled.name(),
            delta.get(handled),
            sent.sent
        );
        let summary = daemon
            .wait_for_line("over budget, not blocked", Duration::from_secs(5))
            .context("no over-budget summary logged")?;
        ensure!(
            summary.contains(&source),
            "summary without {source}: {summary}"
        );
        println!("daemon: {summary}");

        scratch.write(CONFIG, action("drop"))?;
        daemon.signal(Signal::SIGHUP)?;
        daemon.wait_for_line("reload done", RELOAD_TIMEOUT)?;
        let before = Counters::of(a.server_iface())?;
        let after = a_once()?;
        let delta = Counters::of(a.server_iface())?.since(&before);
        ensure!(
            after.successes() == 0,
            "A connected after a reload to --per-source-action drop while marked over budget"
        );
        ensure!(
            delta.get(Counter::DropSourceBlocked) >= 1,
            "A's SYNs were not dropped as blocked after the reload: {delta}"
        );
        daemon.stop()?.ensure_success()
    });
}
