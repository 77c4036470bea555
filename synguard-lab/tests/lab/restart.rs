//! A restart in the middle of a SYN flood has no gap: daemon A (`--on-exit keep`, pins on a
//! private bpffs) stops while hping3 floods and a legitimate client keeps connecting; daemon B
//! starts, adopts the pinned maps and link and swaps its program in with `bpf_link_update`.
//! No legitimate connection fails, the server's kernel answers no flood SYN (no kernel SYN
//! cookies, no listen overflows, no SYNPROXY SYNs), and the counters continue from A's values.
//!
//! In `--syncookies auto` the cookie ports are pinned too: once A switched the port to cookies
//! under the flood, B starts with it in cookie mode (log line) and no flood SYN reaches the
//! kernel across the restart (`syn_to_kernel`, kernel SYN cookies, SYNPROXY flat).

use std::thread::sleep;
use std::time::Duration;

use std::net::SocketAddr;

use anyhow::{Result, ensure};
use synguard_common::Counter;
use synguard_lab::client::{ClientConfig, ClientReport, LegitClient};
use synguard_lab::daemon::{Daemon, XdpMode};
use synguard_lab::flood::{Flood, FloodKind, FloodReport};
use synguard_lab::harness::{self, PINNED_FLOOD_NEEDS, PinnedBench, run_cases};
use synguard_lab::kernel::{self, Counters, Stats};
use synguard_lab::server::Protocol;
use synguard_lab::topology::Family;

const PORT: u16 = 8080;
const MODE: XdpMode = XdpMode::Native;
const PAYLOAD: usize = 10 * 1024;
const FLOOD: Duration = Duration::from_secs(8);

#[test]
fn restart_during_a_flood_has_no_gap() {
    let Some(_serial) = harness::start("restart", &PINNED_FLOOD_NEEDS) else {
        return;
    };
    run_cases("restart", [MODE.as_str()], |_| {
        let bench = RestartBench::new()?;
        let lab = &bench.pinned.lab;
        let a = bench.start("keep", &[])?;
        let flood = bench.flood(FLOOD)?;
        let legit = bench.legit_client()?;
        sleep(Duration::from_secs(2));

        let snmp_before = kernel::snmp(lab.server())?;
        let synproxy_before = kernel::synproxy(lab.server())?;
        a.stop()?.ensure_success()?;
        let counters_a = Counters::of(lab.server_iface())?;
        let b = bench.start("remove", &[])?;
        let snmp = kernel::snmp(lab.server())?.since(&snmp_before);
        let synproxy = kernel::synproxy(lab.server())?.since(&synproxy_before);
        let counters_b = Counters::of(lab.server_iface())?;

        let (sent, report, log) = finish(flood, legit, b)?;
        println!(
            "flood {} SYNs; legit {}; kernel during the restart: {}",
            sent.sent,
            report.summary(),
            kernel_view(&snmp, &synproxy)
        );
        ensure!(
            log.contains("pinned link adopted") && log.contains("adopting pinned maps"),
            "B did not adopt A's pins:\n{log}"
        );
        ensure!(sent.sent > 10_000, "the flood sent only {}", sent.sent);
        ensure!(
            report.failures.is_empty() && report.successes() > 100,
            "legitimate connections across the restart: {}; failures {:?}",
            report.summary(),
            report.failures.iter().take(5).collect::<Vec<_>>()
        );
        for (name, value) in [
            ("TcpExtSyncookiesSent", snmp.get("TcpExtSyncookiesSent")),
            ("TcpExtListenOverflows", snmp.get("TcpExtListenOverflows")),
            ("SYNPROXY syn_received", synproxy.get("syn_received")),
        ] {
            ensure!(
                value == 0,
                "{name} rose by {value} during the restart: flood SYNs reached the kernel"
            );
        }
        let (at_a, at_b) = (
            counters_a.get(Counter::SynCookieSent),
            counters_b.get(Counter::SynCookieSent),
        );
        ensure!(
            at_a > 0 && at_b >= at_a,
            "syn_cookie_sent went from {at_a} (A's exit) to {at_b} (B started): the counters did not continue"
        );
        Ok(())
    });
}

const AUTO_FLOOD: Duration = Duration::from_secs(10);
const SWITCH_ON: &str = "SYNs now answered by XDP";
const ADOPTED: &str = "starts with SYNs answered by XDP with cookies";

#[test]
fn auto_mode_restart_keeps_the_cookie_ports() {
    let Some(_serial) = harness::start("restart auto", &PINNED_FLOOD_NEEDS) else {
        return;
    };
    run_cases("restart auto", [MODE.as_str()], |_| {
        let bench = RestartBench::new()?;
        let lab = &bench.pinned.lab;
        let auto = ["--syncookies", "auto", "--max-syn-backlog", "64"];
        let mut a = bench.start("keep", &auto)?;
        let flood = bench.flood(AUTO_FLOOD)?;
        let switched = a.wait_for_line(SWITCH_ON, Duration::from_secs(5))?;
        println!("A: {switched}");
        // Connections before the switch may meet a full kernel backlog; from here on all must
        // succeed.
        let legit = bench.legit_client()?;
        sleep(Duration::from_secs(1));

        let snmp_before = kernel::snmp(lab.server())?;
        let synproxy_before = kernel::synproxy(lab.server())?;
        let counters_before = Counters::of(lab.server_iface())?;
        a.stop()?.ensure_success()?;
        let mut b = bench.start("remove", &auto)?;
        let adopted = b.wait_for_line(ADOPTED, Duration::from_secs(2))?;
        // B's first ticks included: a controller that forgot the port would hand it back to
        // the kernel at once, and its estimate would switch it again only later.
        sleep(Duration::from_secs(1));
        let snmp = kernel::snmp(lab.server())?.since(&snmp_before);
        let synproxy = kernel::synproxy(lab.server())?.since(&synproxy_before);
        let delta = Counters::of(lab.server_iface())?.since(&counters_before);

        let (sent, report, log) = finish(flood, legit, b)?;
        println!(
            "B: {adopted}\nflood {} SYNs; legit {}; across the restart: synguard {delta}; kernel {}",
            sent.sent,
            report.summary(),
            kernel_view(&snmp, &synproxy)
        );
        ensure!(
            log.contains("adopting pinned maps"),
            "B did not adopt A's pins:\n{log}"
        );
        ensure!(
            !log.contains(SWITCH_ON) || log.find(ADOPTED) < log.find(SWITCH_ON),
            "B switched the port again instead of starting in cookie mode:\n{log}"
        );
        ensure!(sent.sent > 10_000, "the flood sent only {}", sent.sent);
        ensure!(
            report.failures.is_empty() && report.successes() > 50,
            "legitimate connections across the restart: {}; failures {:?}",
            report.summary(),
            report.failures.iter().take(5).collect::<Vec<_>>()
        );
        ensure!(
            delta.get(Counter::SynCookieSent) > 1_000,
            "XDP did not keep answering the flood across the restart: {delta}"
        );
        for (name, value) in [
            ("syn_to_kernel", delta.get(Counter::SynToKernel)),
            ("TcpExtSyncookiesSent", snmp.get("TcpExtSyncookiesSent")),
            ("SYNPROXY syn_received", synproxy.get("syn_received")),
        ] {
            ensure!(
                value == 0,
                "{name} rose by {value} across the restart: flood SYNs reached the kernel"
            );
        }
        Ok(())
    });
}

/// What both restart tests run on: a [`PinnedBench`] serving [`PORT`], daemons in [`MODE`].
struct RestartBench {
    pinned: PinnedBench,
}

impl RestartBench {
    fn new() -> Result<Self> {
        Ok(Self {
            pinned: PinnedBench::new(PORT, PAYLOAD)?,
        })
    }

    /// A daemon protecting [`PORT`] with the shared pins, leaving them at exit or not.
    fn start(&self, on_exit: &str, extra: &[&str]) -> Result<Daemon> {
        let mut args = vec!["--on-exit", on_exit];
        args.extend_from_slice(extra);
        self.pinned.start(MODE, &args)
    }

    fn target(&self) -> SocketAddr {
        self.pinned.lab.server_addr(Family::V4, PORT)
    }

    fn flood(&self, duration: Duration) -> Result<Flood> {
        Flood::start(
            &self.pinned.lab,
            FloodKind::Syn,
            self.target().ip(),
            PORT,
            duration,
        )
    }

    /// A legitimate client connecting every 20 ms until stopped.
    fn legit_client(&self) -> Result<LegitClient> {
        LegitClient::spawn(
            self.pinned.lab.client(),
            ClientConfig {
                connections: usize::MAX,
                ..ClientConfig::new(self.target(), Protocol::RequestFirst, PAYLOAD, 0)
                    .interval(Duration::from_millis(20))
            },
        )
    }
}

/// Ends a run: the flood and the legitimate client finish, daemon B stops cleanly; returns what
/// the flood sent, the client's report and B's log.
fn finish(
    flood: Flood,
    legit: LegitClient,
    b: Daemon,
) -> Result<(FloodReport, ClientReport, String)> {
    let sent = flood.wait()?;
    legit.stop();
    let report = legit.join()?;
    let log = b.log();
    b.stop()?.ensure_success()?;
    Ok((sent, report, log))
}

/// The kernel counters that would show flood SYNs reaching the server's stack.
fn kernel_view(snmp: &Stats, synproxy: &Stats) -> String {
    format!(
        "{}; SYNPROXY {}",
        snmp.show(&[
            "TcpExtSyncookiesSent",
            "TcpExtListenOverflows",
            "TcpPassiveOpens"
        ]),
        synproxy.show(&["syn_received"])
    )
}
