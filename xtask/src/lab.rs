//! `cargo xtask lab`: the demo. A lab with a server and synguard in one namespace, an hping3
//! SYN flood and a legitimate client in the other, progress every second, a final table.
//! Everything is held by drop guards, so an error or Ctrl-C removes it all.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use synguard_common::Counter;
use synguard_lab::client::{ClientConfig, LegitClient, Sample};
use synguard_lab::daemon::XdpMode;
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::Bench;
use synguard_lab::kernel::{self, Counters};
use synguard_lab::server::Protocol;
use synguard_lab::topology::Family;

const PORT: u16 = 8080;
const PAYLOAD: usize = 100 * 1024;
const LEGIT_INTERVAL: Duration = Duration::from_millis(20);

pub fn run(binary: &Path, seconds: Duration, mode: XdpMode) -> Result<()> {
    // SAFETY: the process is still single-threaded here (the Ctrl-C thread comes next).
    unsafe { std::env::set_var("SYNGUARD_BIN", binary) };
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = Arc::clone(&interrupted);
        ctrlc::set_handler(move || interrupted.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }

    println!("building the lab (two network namespaces, one veth pair) ...");
    let bench = Bench::protecting(PORT, PAYLOAD, mode)?;
    let lab = &bench.lab;
    let target = lab.server_addr(Family::V4, PORT);
    println!(
        "synguard protects {target} on {} ({} mode) in {}; flooding from {} for {seconds:?} (Ctrl-C stops)",
        lab.server_iface().name(),
        mode.as_str(),
        lab.server().name(),
        lab.client().name()
    );

    let counters_before = Counters::of(lab.server_iface())?;
    let snmp_before = kernel::snmp(lab.server())?;
    let flood = Flood::start(lab, FloodKind::Syn, target.ip(), PORT, seconds)?;
    let legit = LegitClient::spawn(
        lab.client(),
        ClientConfig {
            connections: usize::MAX,
            ..ClientConfig::new(target, Protocol::RequestFirst, PAYLOAD, 0).interval(LEGIT_INTERVAL)
        },
    )?;

    let started = Instant::now();
    let mut last = counters_before;
    let mut tick = started;
    while started.elapsed() < seconds && !interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if tick.elapsed() < Duration::from_secs(1) {
            continue;
        }
        tick = Instant::now();
        let now = Counters::of(lab.server_iface())?;
        let (ok, failed) = legit.progress().get();
        let since = now.since(&last);
        println!(
            "{:>4.0?}  legit ok {ok:>5} failed {failed:>3} | XDP: SYN-ACKs {:>9} (+{:>7}/s), valid ACKs {:>5}, dropped ACKs {:>5}",
            started.elapsed(),
            now.since(&counters_before).get(Counter::SynCookieSent),
            since.get(Counter::SynCookieSent),
            now.since(&counters_before).get(Counter::AckCookieValid),
            now.since(&counters_before).get(Counter::AckCookieInvalid),
        );
        last = now;
    }
    let flood = if interrupted.load(Ordering::Relaxed) {
        println!("interrupted: stopping and cleaning up");
        flood.stop()?
    } else {
        flood.wait()?
    };
    legit.stop();
    let report = legit.join()?;
    let counters = Counters::of(lab.server_iface())?.since(&counters_before);
    let snmp = kernel::snmp(lab.server())?.since(&snmp_before);

    let connect = |s: &Sample| s.connect;
    let rows = [
        (
            "flood SYNs sent",
            format!(
                "{} ({:.0}/s, {})",
                flood.sent,
                flood.rate(),
                flood.generator
            ),
        ),
        (
            "SYNs answered by XDP",
            format!(
                "{} (syn_cookie_sent, includes the legitimate SYNs)",
                counters.get(Counter::SynCookieSent)
            ),
        ),
        (
            "ACK cookies validated in XDP",
            counters.get(Counter::AckCookieValid).to_string(),
        ),
        (
            "legitimate connections",
            format!(
                "{} ok, {} failed: {:.2}% success",
                report.successes(),
                report.failures.len(),
                report.success_percent()
            ),
        ),
        (
            "connect latency p50 / p99",
            format!(
                "{:.2?} / {:.2?} (max {:.2?})",
                report.percentile(connect, 50.0),
                report.percentile(connect, 99.0),
                report.max(connect)
            ),
        ),
        (
            "server kernel during the run",
            snmp.show(&["IpInReceives", "TcpInSegs", "TcpExtSyncookiesSent"]),
        ),
    ];
    println!();
    for (name, value) in rows {
        println!("{name:<30} {value}");
    }
    if let Some(first) = report.failures.first() {
        println!("first failure: {first}");
    }
    let exit = bench.daemon.stop()?;
    println!("synguard stopped ({}); removing the lab", exit.status);
    Ok(())
}
