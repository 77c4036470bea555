//! An ACK flood with random sequence and acknowledgment numbers from random sources at the
//! protected port (hping3 `-A` for IPv4, crafted frames for IPv6): XDP finds no socket and no
//! valid cookie and drops it (`ack_cookie_invalid` ≈ packets sent), and the server's kernel
//! input counters barely move.

use std::time::Duration;

use anyhow::ensure;
use synguard_common::Counter;
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::kernel::{self, Counters, ip_in_receives, link_stats};

const PORT: u16 = 8080;
const FLOOD: Duration = Duration::from_secs(5);
/// Share of the flood XDP must have counted as invalid (the rest may be lost on the veth).
const DROPPED_SHARE: f64 = 0.95;
/// hping3's own count can lag the wire by a packet or so when it is interrupted.
const COUNT_SLACK: u64 = 16;
/// Largest share of the flood the server's kernel may see.
const KERNEL_SHARE: f64 = 0.01;

#[test]
fn ack_flood_is_dropped_in_xdp() {
    let Some(_serial) = harness::start(
        "ack_flood",
        &[Need::Daemon, Need::Tool("hping3"), Need::Tool("timeout")],
    ) else {
        return;
    };
    run_cases("ack_flood", harness::cases(), |case| {
        let bench = Bench::protecting(PORT, 1024, case.mode)?;
        let lab = &bench.lab;
        let iface = lab.server_iface();
        let ip_in = ip_in_receives(case.family);
        let snmp_before = kernel::snmp(lab.server())?;
        let counters_before = Counters::of(iface)?;
        let link_before = link_stats(iface)?;

        let flood =
            Flood::start(lab, FloodKind::Ack, lab.server_ip(case.family), PORT, FLOOD)?.wait()?;

        let counters = Counters::of(iface)?.since(&counters_before);
        let snmp = kernel::snmp(lab.server())?.since(&snmp_before);
        let link = link_stats(iface)?.since(&link_before);
        let invalid = counters.get(Counter::AckCookieInvalid);
        println!(
            "flood: {} sent {} ACKs in {:.1?} ({:.0}/s); ack_cookie_invalid {invalid} ({:.2}%)",
            flood.generator,
            flood.sent,
            flood.elapsed,
            flood.rate(),
            100.0 * invalid as f64 / flood.sent.max(1) as f64
        );
        println!("server veth: {}", link.show(&["rx_packets", "rx_dropped"]));
        println!(
            "server kernel: {}",
            snmp.show(&[ip_in, "TcpInSegs", "TcpOutRsts"])
        );
        println!("synguard counters: {counters}");

        ensure!(flood.sent > 0, "the flood sent nothing");
        ensure!(
            invalid as f64 >= DROPPED_SHARE * flood.sent as f64
                && invalid <= flood.sent + COUNT_SLACK,
            "ack_cookie_invalid rose by {invalid} for {} ACKs sent ({counters})",
            flood.sent
        );
        let limit = KERNEL_SHARE * flood.sent as f64;
        for name in [ip_in, "TcpInSegs"] {
            ensure!(
                (snmp.get(name) as f64) < limit,
                "the server's kernel counted {} {name} during an ACK flood of {}: more than 1%",
                snmp.get(name),
                flood.sent
            );
        }
        Ok(())
    });
}
