//! SIGHUP reloads the config file in place while a random-source SYN flood and legitimate
//! clients run: a second protected port and a new MSS take effect with no legitimate failure,
//! and a broken config is logged and leaves the previous one in force.
//!
//! Version 1 protects port 8080 with MSS 1400/1380; version 2 adds port 9090 and MSS
//! 1300/1280. Two legitimate clients connect all along, to 8080 and to 9090 (the kernel's
//! until the reload, synguard's after; handshakes in flight across the switch must complete).
//! After the flood, a connection to each port must get an XDP cookie SYN-ACK (window 0) with
//! version 2's MSS, and `nft list table inet synguard` must show both ports and that MSS.
//!
//! The IPv4 case found a datapath bug: under the flood the veth dropped a client's handshake
//! ACK, and the zero-window probes that followed failed the cookie check, stalling the
//! connection. The datapath now repairs such probes (see `synguard-ebpf/src/ack.rs`).

use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use nix::sys::signal::Signal;
use synguard_common::Counter;
use synguard_lab::client::{self, ClientConfig, ClientReport, LegitClient};
use synguard_lab::daemon::Daemon;
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::kernel::Counters;
use synguard_lab::scratch::ScratchDir;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const ADDED: u16 = 9090;
const PAYLOAD: usize = 10 * 1024;
/// Connections that check who answers a port.
const PROBES: usize = 3;
const FLOOD: Duration = Duration::from_secs(8);
const RELOADED: &str = "reload done";
const REJECTED: &str = "reload failed, keeping the previous configuration";
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// (mss4, mss6) of version 1 and version 2.
const MSS_V1: (u16, u16) = (1400, 1380);
const MSS_V2: (u16, u16) = (1300, 1280);

fn config(ifaces: &[&str], ports: &[u16], (mss4, mss6): (u16, u16)) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let ifaces: Vec<String> = ifaces.iter().map(|i| format!("\"{i}\"")).collect();
    format!(
        "# synguard reload test\niface = [{}]\nports = [{}]\nxdp_mode = \"native\"\nsyncookies = \"always\"\nmss4 = {mss4}\nmss6 = {mss6}\n",
        ifaces.join(", "),
        ports.join(", ")
    )
}

fn mss(family: Family, (mss4, mss6): (u16, u16)) -> u16 {
    match family {
        Family::V4 => mss4,
        Family::V6 => mss6,
    }
}

/// Connections to `port` must work and their SYN-ACKs must be XDP cookie ones (window 0)
/// announcing `expected` as MSS.
fn xdp_answers(lab: &Lab, family: Family, port: u16, expected: u16) -> Result<()> {
    let before = Counters::of(lab.server_iface())?;
    let config = ClientConfig::new(
        lab.server_addr(family, port),
        Protocol::RequestFirst,
        PAYLOAD,
        PROBES,
    );
    let (report, synacks) = client::run_captured(lab.client(), lab.client_iface(), config)?;
    let delta = Counters::of(lab.server_iface())?.since(&before);
    ensure!(
        report.failures.is_empty(),
        "port {port}: {:?}",
        report.failures
    );
    // A SYN whose 4-tuple the server still holds (TIME_WAIT of an earlier connection on a
    // reused source port) is the kernel's to answer by design (`syn_known_socket`); every
    // other SYN-ACK must be XDP's (window 0) with the expected MSS.
    let (from_xdp, from_kernel): (Vec<_>, Vec<_>) = synacks.iter().partition(|s| s.window == 0);
    let shown: Vec<_> = synacks.iter().map(|s| (s.window, s.mss())).collect();
    ensure!(
        synacks.len() >= PROBES
            && !from_xdp.is_empty()
            && from_xdp.iter().all(|s| s.mss() == Some(expected))
            && from_kernel.len() as u64 <= delta.get(Counter::SynKnownSocket),
        "port {port}: SYN-ACKs (window, MSS) are not XDP's with MSS {expected}: {shown:?}; {delta}"
    );
    ensure!(
        delta.get(Counter::SynCookieSent) >= from_xdp.len() as u64,
        "port {port}: syn_cookie_sent did not move: {delta}"
    );
    println!(
        "port {port}: {} XDP SYN-ACKs with MSS {expected}; {delta}",
        synacks.len()
    );
    Ok(())
}

fn legit_all_ok(port: u16, report: &ClientReport, at_least: usize) -> Result<()> {
    println!("legit client on port {port}: {}", report.summary());
    ensure!(
        report.failures.is_empty() && report.successes() >= at_least,
        "legit client on port {port}: {} ({:?})",
        report.summary(),
        report.failures.iter().take(5).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn sighup_during_a_flood() {
    let Some(_serial) = harness::start(
        "reload",
        &[Need::Daemon, Need::Tool("hping3"), Need::Tool("timeout")],
    ) else {
        return;
    };
    run_cases("reload", Family::ALL, |&family| {
        // The flood comes from an attacker of its own, whose veth sinks the SYN-ACKs to its
        // spoofed sources: on the client's veth they overflowed its ring and lost legitimate
        // segments (a connection in ~130 stalled past the client's timeout).
        let lab = Lab::with_attacker()?;
        let scratch = ScratchDir::create()?;
        let _servers = [PORT, ADDED]
            .map(|port| PayloadServer::start(lab.server(), port, PAYLOAD, Protocol::RequestFirst))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        // The client's and the attacker's veth: both ends the server receives on.
        let iface = &[
            lab.server_iface().name(),
            lab.attacker()?.server_iface().name(),
        ][..];
        let path = scratch.write("synguard.toml", config(iface, &[PORT], MSS_V1))?;
        let mut daemon = Daemon::start_with_config(lab.server(), &path, &[])?;

        let flood = Flood::start_from(
            lab.attacker()?,
            FloodKind::Syn,
            lab.server_ip(family),
            PORT,
            FLOOD,
        )?;
        let legit = [PORT, ADDED]
            .map(|port| {
                LegitClient::spawn(
                    lab.client(),
                    ClientConfig {
                        connections: usize::MAX,
                        ..ClientConfig::new(
                            lab.server_addr(family, port),
                            Protocol::RequestFirst,
                            PAYLOAD,
                            0,
                        )
                        .interval(Duration::from_millis(40))
                    },
                )
            })
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        sleep(Duration::from_secs(2));
        scratch.write("synguard.toml", config(iface, &[PORT, ADDED], MSS_V2))?;
        daemon.signal(Signal::SIGHUP)?;
        let done = daemon.wait_for_line(RELOADED, RELOAD_TIMEOUT)?;
        println!("{done}");
        sleep(Duration::from_secs(2));
        let broken = config(iface, &[PORT, ADDED], MSS_V2).replace("mss4 = 1300", "mss4 = 100");
        scratch.write("synguard.toml", &broken)?;
        daemon.signal(Signal::SIGHUP)?;
        let rejected = daemon.wait_for_line(REJECTED, RELOAD_TIMEOUT)?;
        println!("{rejected}");

        let sent = flood.wait()?;
        let mut reports = Vec::new();
        for client in legit {
            client.stop();
            reports.push(client.join()?);
        }
        println!(
            "flood: {} SYNs ({:.0}/s, {})",
            sent.sent,
            sent.rate(),
            sent.generator
        );
        ensure!(sent.sent > 10_000, "the flood sent only {}", sent.sent);
        for (port, report) in [PORT, ADDED].into_iter().zip(&reports) {
            legit_all_ok(port, report, 100)?;
        }

        for port in [PORT, ADDED] {
            xdp_answers(&lab, family, port, mss(family, MSS_V2))?;
        }
        let table = lab
            .server()
            .exec("nft", &["list", "table", "inet", "synguard"])
            .context("listing the synguard table")?;
        for needle in [
            PORT.to_string(),
            ADDED.to_string(),
            format!("mss {}", MSS_V2.0),
            format!("mss {}", MSS_V2.1),
        ] {
            ensure!(
                table.contains(&needle),
                "no `{needle}` in the table:\n{table}"
            );
        }
        daemon.stop()?.ensure_success()
    });
}
