//! A port synguard does not protect is left to the kernel: a SYN to it gets the listener's own
//! SYN-ACK (the kernel's MSS and a non-zero window, where XDP and SYNPROXY answer with the
//! configured MSS and window 0), neither synguard's cookie counters nor SYNPROXY move, and
//! real connections work.

use std::time::Duration;

use anyhow::{anyhow, ensure};
use synguard_common::Counter;
use synguard_lab::capture::Capture;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::craft::{OptionStyle, Segment, TcpFrame};
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::kernel::{self, Counters};
use synguard_lab::packet::PacketSocket;
use synguard_lab::server::Protocol;
use synguard_lab::topology::Lab;

const PROTECTED: u16 = 8080;
const OPEN: u16 = 9090;
const PAYLOAD: usize = 128 * 1024;
const CONNECTIONS: usize = 5;
/// Distinct from the kernel's 1460/1440 so a SYN-ACK from XDP would show.
const MSS4: u16 = 1400;
const MSS6: u16 = 1380;
const CLIENT_TSVAL: u32 = 777;

#[test]
fn unprotected_port_is_left_to_the_kernel() {
    let Some(_serial) = harness::start("unprotected", &[Need::Daemon]) else {
        return;
    };
    run_cases("unprotected", harness::cases(), |case| {
        let bench = Bench::start(
            Lab::new()?,
            OPEN,
            PAYLOAD,
            &PROTECTED.to_string(),
            case.mode,
            &["--mss4", &MSS4.to_string(), "--mss6", &MSS6.to_string()],
        )?;
        let lab = &bench.lab;
        let counters_before = Counters::of(lab.server_iface())?;
        let synproxy_before = kernel::synproxy(lab.server())?;

        // A crafted SYN, so its sequence number and timestamp are known.
        let capture = Capture::start(lab.client(), lab.client_iface().name())?;
        let socket = PacketSocket::open(
            lab.client(),
            lab.client_iface().name(),
            Duration::from_millis(100),
        )?;
        let syn = TcpFrame {
            l2: lab.client_to_server(None)?,
            src: lab.client_ip(case.family),
            dst: lab.server_ip(case.family),
            sport: 45_000,
            dport: OPEN,
            seq: 0x5555_0000,
            segment: Segment::Syn {
                style: OptionStyle::Linux,
                tsval: CLIENT_TSVAL,
            },
        };
        socket.send(&syn.build()?)?;
        let replies = capture.wait_for(1, Duration::from_secs(2), |s| {
            s.is_synack() && s.dport == syn.sport
        })?;
        let reply = replies
            .first()
            .ok_or_else(|| anyhow!("no SYN-ACK to a SYN for unprotected port {OPEN}"))?;
        ensure!(
            reply.ack == syn.seq.wrapping_add(1),
            "ack {:#x} for seq {:#x}",
            reply.ack,
            syn.seq
        );
        ensure!(
            reply.ip_checksum_ok && (reply.tcp_checksum_ok || reply.checksum_offloaded),
            "bad checksum: {reply:?}"
        );
        ensure!(
            reply.timestamps().map(|t| t.1) == Some(CLIENT_TSVAL),
            "TSecr is not the client's TSval: {reply:?}"
        );
        ensure!(
            reply.window != 0 && reply.mss().is_some_and(|m| m != MSS4 && m != MSS6),
            "this SYN-ACK looks like synguard's or SYNPROXY's (window 0 or the configured MSS), not the kernel's: {reply:?}"
        );
        capture.stop()?;

        let config = ClientConfig::new(
            lab.server_addr(case.family, OPEN),
            Protocol::RequestFirst,
            PAYLOAD,
            CONNECTIONS,
        );
        let report = client::run(lab.client(), config)?;
        println!("client: {}", report.summary());
        ensure!(
            report.failures.is_empty(),
            "connections to port {OPEN} failed: {:?}",
            report.failures
        );

        let counters = Counters::of(lab.server_iface())?.since(&counters_before);
        let synproxy = kernel::synproxy(lab.server())?.since(&synproxy_before);
        println!("synguard counters: {counters}");
        for counter in [
            Counter::SynCookieSent,
            Counter::AckCookieValid,
            Counter::AckCookieInvalid,
        ] {
            ensure!(
                counters.get(counter) == 0,
                "{} moved: {counters}",
                counter.name()
            );
        }
        ensure!(
            counters.get(Counter::PassUnprotectedPort) > CONNECTIONS as u64,
            "pass_unprotected_port did not count the traffic to port {OPEN}: {counters}"
        );
        let columns = [
            "syn_received",
            "cookie_valid",
            "cookie_invalid",
            "cookie_retrans",
        ];
        ensure!(
            columns.iter().all(|c| synproxy.get(c) == 0),
            "SYNPROXY moved: {}",
            synproxy.show(&columns)
        );
        bench.daemon.stop()?.ensure_success()?;
        Ok(())
    });
}
