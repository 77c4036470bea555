//! A client downloads a payload byte for byte through synguard, and the counters prove the
//! path: XDP answered the SYNs (`syn_cookie_sent`) and validated the ACKs (`ack_cookie_valid`),
//! SYNPROXY saw no SYN (`syn_received` unchanged) but took the cookie ACKs (`cookie_valid`).
//! Also for a server that speaks first (SMTP, SSH): no client segment follows the handshake,
//! so the server side of the SYNPROXY hand-off must complete by itself. Downloads run with the
//! veths' offloads on and with tx offload off (every packet arrives `CHECKSUM_NONE`: IPv6
//! needs the TC program, `tc_csum_verified`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use synguard_common::Counter;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::daemon::Daemon;
use synguard_lab::daemon::XdpMode;
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::kernel::{self, Counters};
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{Family, Lab, Offloads, VLAN_LINK};

const PORT: u16 = 8080;
const PAYLOAD: usize = 256 * 1024;
const CONNECTIONS: usize = 5;
const VLAN_ID: u16 = 201;
/// A connection slower than this stalled (they take about a millisecond here).
const STALL: Duration = Duration::from_millis(200);

#[test]
fn download_through_synguard() {
    let Some(_serial) = harness::start("download", &[Need::Daemon]) else {
        return;
    };
    run_cases("download", harness::offload_cases(), |case| {
        let lab = Lab::with_offloads(case.offloads)?;
        let target = lab.server_addr(case.family, PORT);
        download(lab, target, case.mode, unverified_acks(case))
    });
}

#[test]
fn download_over_vlan_through_synguard() {
    let Some(_serial) = harness::start("download over VLAN", &[Need::Daemon, Need::Vlan]) else {
        return;
    };
    run_cases("download over VLAN", harness::cases(), |case| {
        let lab = Lab::with_vlan(VLAN_ID)?;
        let target = SocketAddr::new(VLAN_LINK.server(case.family), PORT);
        download(lab, target, case.mode, false)
    });
}

/// Whether the case's IPv6 handshake ACKs arrive with unverified checksums, which the TC
/// program must check and mark.
fn unverified_acks(case: &harness::Case) -> bool {
    case.family == Family::V6 && case.offloads == Offloads::TxOff
}

/// `marked`: the TC program must have marked at least one handshake ACK per connection.
fn download(lab: Lab, target: SocketAddr, mode: XdpMode, marked: bool) -> Result<()> {
    let bench = Bench::start(lab, PORT, PAYLOAD, &PORT.to_string(), mode, &[])?;
    let (server, iface) = (bench.lab.server(), bench.lab.server_iface());
    let counters_before = Counters::of(iface)?;
    let synproxy_before = kernel::synproxy(server)?;

    let config = ClientConfig::new(target, Protocol::RequestFirst, PAYLOAD, CONNECTIONS);
    let report = client::run(bench.lab.client(), config)?;

    let counters = Counters::of(iface)?.since(&counters_before);
    let synproxy = kernel::synproxy(server)?.since(&synproxy_before);
    println!("client: {}", report.summary());
    println!("synguard counters: {counters}");
    println!(
        "synproxy: {}",
        synproxy.show(&["syn_received", "cookie_valid", "cookie_invalid"])
    );
    ensure!(
        report.failures.is_empty(),
        "{} of {CONNECTIONS} downloads failed: {:?}\ndaemon log:\n{}",
        report.failures.len(),
        report.failures,
        bench.daemon.log()
    );
    let expected = CONNECTIONS as u64;
    let sent = counters.get(Counter::SynCookieSent);
    ensure!(
        sent >= expected,
        "syn_cookie_sent rose by {sent} for {expected} connections: the SYN-ACKs did not come from XDP ({counters})"
    );
    let valid = counters.get(Counter::AckCookieValid);
    ensure!(
        valid >= expected,
        "ack_cookie_valid rose by {valid} for {expected} connections ({counters})"
    );
    let syn_received = synproxy.get("syn_received");
    ensure!(
        syn_received == 0,
        "SYNPROXY received {syn_received} SYNs: they should have been answered in XDP"
    );
    let cookie_valid = synproxy.get("cookie_valid");
    ensure!(
        cookie_valid >= expected,
        "SYNPROXY validated {cookie_valid} cookies for {expected} connections"
    );
    let verified = counters.get(Counter::TcCsumVerified);
    ensure!(
        !marked || verified >= expected,
        "tc_csum_verified rose by {verified} for {expected} connections whose ACKs arrived unverified ({counters})"
    );
    let bad = counters.get(Counter::TcCsumBad);
    ensure!(bad == 0, "the TC program dropped {bad} segments as bad");
    bench.daemon.stop()?.ensure_success()?;
    Ok(())
}

#[test]
fn server_speaks_first_without_stall() {
    let Some(_serial) = harness::start("server speaks first", &[Need::Daemon]) else {
        return;
    };
    run_cases("server speaks first", harness::cases(), |case| {
        let lab = Lab::new()?;
        let _server = PayloadServer::start(lab.server(), PORT, PAYLOAD, Protocol::ServerFirst)?;
        let daemon = Daemon::start(
            lab.server(),
            lab.server_iface().name(),
            &PORT.to_string(),
            case.mode,
            &[],
        )?;
        let snmp_before = kernel::snmp(lab.server())?;
        let target = lab.server_addr(case.family, PORT);
        let config = ClientConfig::new(target, Protocol::ServerFirst, PAYLOAD, CONNECTIONS);
        let report = client::run(lab.client(), config)?;
        let snmp = kernel::snmp(lab.server())?.since(&snmp_before);
        println!("client: {}", report.summary());
        ensure!(
            report.failures.is_empty(),
            "failures: {:?}",
            report.failures
        );
        let total = |s: &client::Sample| s.total;
        let stalled = report.slower_than(total, STALL);
        ensure!(
            stalled == 0,
            "{stalled} of {CONNECTIONS} connections took longer than {STALL:?} (max {:.2?}); listener: {} \
             (the listener dropped the ACK that completes its side of the hand-off and waited for \
             its SYN-ACK retransmission)\ndistribution:\n{}",
            report.max(total),
            snmp.show(&[
                "TcpExtTSEcrRejected",
                "TcpExtTCPSynRetrans",
                "TcpRetransSegs"
            ]),
            report.distribution(total),
        );
        daemon.stop()?.ensure_success()?;
        Ok(())
    });
}
