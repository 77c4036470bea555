//! A 10 s SYN flood from random sources at the protected port (hping3 for IPv4, crafted frames
//! for IPv6), from the lab's attacker namespace, while a legitimate client keeps connecting: every legitimate connection connects
//! within 200 ms and downloads its payload byte-exact, and the server's kernel sees less than 1% of the flood (IP and TCP input
//! counters, net of what the legitimate traffic itself costs, measured just before; kernel
//! SYN cookies; SYNPROXY SYNs): XDP answered it. With the veths' offloads on and with tx
//! offload off (IPv6 handshake ACKs then arrive `CHECKSUM_NONE` and need the TC program).

use std::time::Duration;

use anyhow::ensure;
use synguard_common::Counter;
use synguard_lab::client::{self, ClientConfig, LegitClient, Sample};
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::kernel::{self, Counters, ip_in_receives};
use synguard_lab::server::Protocol;
use synguard_lab::topology::Lab;

const PORT: u16 = 8080;
const PAYLOAD: usize = 100 * 1024;
const FLOOD: Duration = Duration::from_secs(10);
/// 250 connections in 10 s.
const LEGIT_INTERVAL: Duration = Duration::from_millis(40);
const MIN_LEGIT: usize = 200;
const BASELINE_CONNECTIONS: usize = 20;
const STALL: Duration = Duration::from_millis(200);
/// Largest share of the flood the server's kernel may see.
const KERNEL_SHARE: f64 = 0.01;

#[test]
fn syn_flood_is_absorbed_in_xdp() {
    let Some(_serial) = harness::start(
        "flood",
        &[Need::Daemon, Need::Tool("hping3"), Need::Tool("timeout")],
    ) else {
        return;
    };
    run_cases("flood", harness::offload_cases(), |case| {
        // The flood comes from an attacker of its own: sharing the client's veth, it overflowed
        // that veth's queue and a lost legitimate SYN cost a 1 s retransmission (measured:
        // 242,129 tx drops in 10 s once the faster SYN path took 290,000 SYN/s).
        let lab = Lab::with_attacker()?.offloads(case.offloads)?;
        let attacker_end = lab.attacker()?.server_iface().name().to_owned();
        let extra = ["--iface", attacker_end.as_str()];
        let bench = Bench::start(lab, PORT, PAYLOAD, &PORT.to_string(), case.mode, &extra)?;
        let lab = &bench.lab;
        let target = lab.server_addr(case.family, PORT);
        let config = ClientConfig::new(
            target,
            Protocol::RequestFirst,
            PAYLOAD,
            BASELINE_CONNECTIONS,
        );
        let ip_in = ip_in_receives(case.family);
        let fields = [
            ip_in,
            "TcpInSegs",
            "TcpExtSyncookiesSent",
            "TcpExtListenOverflows",
            "TcpExtListenDrops",
        ];

        // What legitimate connections alone cost the kernel, per connection.
        let before = kernel::snmp(lab.server())?;
        let baseline = client::run(lab.client(), config.clone())?;
        ensure!(
            baseline.failures.is_empty(),
            "baseline connections failed: {:?}",
            baseline.failures
        );
        let cost = kernel::snmp(lab.server())?.since(&before);
        let per_connection = |name: &str| cost.get(name) as f64 / BASELINE_CONNECTIONS as f64;

        let snmp_before = kernel::snmp(lab.server())?;
        let synproxy_before = kernel::synproxy(lab.server())?;
        let counters_before = Counters::of(lab.server_iface())?;
        let links_before = [
            kernel::link_stats(lab.client_iface())?,
            kernel::link_stats(lab.server_iface())?,
        ];
        let flood = Flood::start_from(lab.attacker()?, FloodKind::Syn, target.ip(), PORT, FLOOD)?;
        let legit = LegitClient::spawn(
            lab.client(),
            ClientConfig {
                connections: usize::MAX,
                ..config.interval(LEGIT_INTERVAL)
            },
        )?;
        let sent = flood.wait()?;
        legit.stop();
        let report = legit.join()?;
        let snmp = kernel::snmp(lab.server())?.since(&snmp_before);
        let synproxy = kernel::synproxy(lab.server())?.since(&synproxy_before);
        let counters = Counters::of(lab.server_iface())?.since(&counters_before);
        let client_link = kernel::link_stats(lab.client_iface())?.since(&links_before[0]);
        let server_link = kernel::link_stats(lab.server_iface())?.since(&links_before[1]);

        let connections = report.attempts() as f64;
        let seen = |name: &str| snmp.get(name) as f64 - connections * per_connection(name);
        let limit = KERNEL_SHARE * sent.sent as f64;
        println!(
            "flood: {} sent {} SYNs in {:.1?} ({:.0}/s); XDP answered {} (syn_cookie_sent)",
            sent.generator,
            sent.sent,
            sent.elapsed,
            sent.rate(),
            counters.get(Counter::SynCookieSent)
        );
        println!("legit: {}", report.summary());
        println!(
            "server kernel during the flood: {}; SYNPROXY {}",
            snmp.show(&fields),
            synproxy.show(&["syn_received", "cookie_valid"])
        );
        println!(
            "net of legitimate traffic ({:.1} {ip_in} and {:.1} TcpInSegs per connection): {ip_in} {:.0}, TcpInSegs {:.0}; limit {limit:.0}",
            per_connection(ip_in),
            per_connection("TcpInSegs"),
            seen(ip_in),
            seen("TcpInSegs"),
        );
        println!("synguard counters: {counters}");
        let drops = ["rx_dropped", "tx_dropped"];
        println!(
            "veth drops: client {}; server {}",
            client_link.show(&drops),
            server_link.show(&drops)
        );

        ensure!(sent.sent > 0, "the flood sent nothing");
        ensure!(
            report.failures.is_empty(),
            "{} of {} legitimate connections failed during the flood: {:?}",
            report.failures.len(),
            report.attempts(),
            report.failures.iter().take(5).collect::<Vec<_>>()
        );
        ensure!(
            report.successes() >= MIN_LEGIT,
            "only {} legitimate connections in {FLOOD:?}",
            report.successes()
        );
        // The bound is on connecting. A whole connection is ~25 segments through a
        // veth ring that a flood can overflow (the `veth drops` line; see the attacker's
        // niceness in synguard_lab::flood): a lost data segment costs a retransmission
        // timeout (>= 200 ms) with nothing wrong in synguard, so the whole-connection times
        // are reported (summary) but not bounded.
        let slow = report.slower_than(|s: &Sample| s.connect, STALL);
        ensure!(
            slow == 0,
            "{slow} legitimate connections took longer than {STALL:?} to connect:\n{}",
            report.distribution(|s: &Sample| s.connect)
        );
        for name in [ip_in, "TcpInSegs"] {
            ensure!(
                seen(name) < limit,
                "the server's kernel saw {:.0} {name} from the flood of {}: more than 1%",
                seen(name),
                sent.sent
            );
        }
        for (name, value) in [
            ("TcpExtSyncookiesSent", snmp.get("TcpExtSyncookiesSent")),
            ("SYNPROXY syn_received", synproxy.get("syn_received")),
        ] {
            ensure!(
                (value as f64) < limit,
                "{name} rose by {value} during a flood of {}: more than 1%",
                sent.sent
            );
        }
        Ok(())
    });
}
