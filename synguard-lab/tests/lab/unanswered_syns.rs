//! SYNs that must get no SYN-ACK, sent over a real veth to the running daemon, IPv4 and IPv6,
//! native and skb mode:
//!
//! - SYN+FIN, SYN+RST and SYN+ACK: XDP passes them and conntrack marks them invalid; the
//!   kernel alone discards the first two and answers SYN+ACK on a listener with a RST, so
//!   synguard's nftables rules must not hand them to synproxy (which answers any segment with
//!   SYN set). A RST is acceptable for SYN+ACK, a SYN-ACK for none of them.
//! - A SYN with a wrong TCP checksum, an IPv4 SYN with a wrong header checksum: XDP must not
//!   answer them (the kernel drops them) and counts them in `drop_bad_checksum`.
//!
//! Afterwards SYNPROXY has seen no SYN, and legitimate connections still work.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use synguard_common::Counter;
use synguard_lab::capture::Capture;
use synguard_lab::client;
use synguard_lab::harness::{self, Bench, Case, Need, run_cases};
use synguard_lab::hostile::frame::{self, ACK, FIN, Ip, RST, SYN, Spec, opt};
use synguard_lab::kernel::{self, Counters};
use synguard_lab::packet::PacketSocket;
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 1024;
/// Each kind of segment is sent this many times, from consecutive source ports.
const COPIES: u16 = 3;
/// synproxy and XDP answer within microseconds; a SYN-ACK later than this would still be seen
/// by the capture, which runs until the check ends.
const REPLY_WAIT: Duration = Duration::from_secs(1);
const LEGIT_CONNECTIONS: usize = 3;
/// Where the checksum field is in a TCP header.
const TCP_CHECKSUM_OFFSET: u16 = 16;

type Edit = fn(&mut Spec);

/// A kind of segment: name, edit of a valid SYN, whether it exists for IPv6, and the XDP
/// counter it must move. The flag kinds (those XDP passes) are sent twice: with a full
/// checksum, and as a local sender with checksum offload sends them (CHECKSUM_PARTIAL). nft
/// `synproxy` drops IPv6 segments whose checksum is not marked verified (docs/design.md), so on a
/// veth only the second kind reaches it in IPv6.
const KINDS: [(&str, Edit, bool, Counter); 5] = [
    (
        "SYN+FIN",
        |s| s.tcp.flags = SYN | FIN,
        true,
        Counter::PassOtherFlags,
    ),
    (
        "SYN+RST",
        |s| s.tcp.flags = SYN | RST,
        true,
        Counter::PassOtherFlags,
    ),
    (
        "SYN+ACK",
        |s| s.tcp.flags = SYN | ACK,
        true,
        Counter::PassOtherFlags,
    ),
    (
        "SYN with a wrong TCP checksum",
        |s| s.tcp.check = Some(s.tcp_check() ^ 1),
        true,
        Counter::DropBadChecksum,
    ),
    (
        "SYN with a wrong IPv4 header checksum",
        |s| {
            let check = s.ip_check() ^ 1;
            if let Some(ip) = s.v4() {
                ip.check = Some(check);
            }
        },
        false,
        Counter::DropBadChecksum,
    ),
];

#[test]
fn bad_syns_get_no_synack() {
    let Some(_serial) = harness::start("unanswered_syns", &[Need::Daemon]) else {
        return;
    };
    run_cases("unanswered_syns", harness::cases(), check);
}

fn check(case: &Case) -> Result<()> {
    let bench = Bench::protecting(PORT, PAYLOAD, case.mode)?;
    let lab = &bench.lab;
    let (client_mac, server_mac) = (lab.client_iface().mac()?, lab.server_iface().mac()?);
    let socket = PacketSocket::open(
        lab.client(),
        lab.client_iface().name(),
        Duration::from_millis(100),
    )?;
    let offloading = PacketSocket::open_offloading(lab.client(), lab.client_iface().name())?;
    let capture = Capture::start(lab.client(), lab.client_iface().name())?;
    let before = Counters::of(lab.server_iface())?;
    let synproxy_before = kernel::synproxy(lab.server())?;

    let mut sport = 42_000;
    let mut sent: Vec<(&str, u16)> = Vec::new();
    let mut want = vec![0u64; Counter::ALL.len()];
    for (name, edit, in_v6, counter) in KINDS {
        if case.family == Family::V6 && !in_v6 {
            continue;
        }
        let passed = counter == Counter::PassOtherFlags;
        for offloaded in [false, true].into_iter().filter(|&o| !o || passed) {
            for _ in 0..COPIES {
                let mut spec = syn_from_client(lab, case.family, sport)?;
                spec.on_link(client_mac, server_mac);
                edit(&mut spec);
                if offloaded {
                    spec.tcp.check = Some(spec.offloaded_tcp_check());
                    let l4 = spec.layout().l4 as u16;
                    offloading.send_offloaded(&spec.build(), l4, TCP_CHECKSUM_OFFSET)?;
                } else {
                    socket.send(&spec.build())?;
                }
                sent.push((name, sport));
                want[counter as usize] += 1;
                sport += 1;
            }
        }
    }
    let ports: Vec<u16> = sent.iter().map(|(_, port)| *port).collect();
    let replies = capture.wait_for(1, REPLY_WAIT, |s| ports.contains(&s.dport))?;
    let counters = Counters::of(lab.server_iface())?.since(&before);
    let synproxy = kernel::synproxy(lab.server())?.since(&synproxy_before);
    for reply in &replies {
        let name = sent
            .iter()
            .find(|(_, port)| *port == reply.dport)
            .map_or("?", |s| s.0);
        // The kernel may answer a SYN+ACK with a RST; nothing else may come back.
        if !(reply.rst && name == "SYN+ACK") {
            bail!(
                "{name} from port {} was answered: {reply:?}; counters: {counters}",
                reply.dport
            );
        }
    }
    for &counter in &[Counter::PassOtherFlags, Counter::DropBadChecksum] {
        ensure!(
            counters.get(counter) == want[counter as usize],
            "{}: {}, want {}; counters: {counters}",
            counter.name(),
            counters.get(counter),
            want[counter as usize]
        );
    }
    ensure!(
        counters.get(Counter::SynCookieSent) == 0,
        "XDP answered: {counters}"
    );
    ensure!(
        synproxy.get("syn_received") == 0,
        "SYNPROXY took {} of them for SYNs: {}",
        synproxy.get("syn_received"),
        synproxy.show(&["syn_received", "cookie_invalid", "cookie_valid"])
    );
    println!(
        "{} segments sent, {} RSTs back; {counters}",
        sent.len(),
        replies.len()
    );
    capture.stop()?;

    let target = lab.server_addr(case.family, PORT);
    client::ensure_all_connect(lab.client(), target, PAYLOAD, LEGIT_CONNECTIONS)
        .context("legitimate connections afterwards")?;
    let Bench { daemon, .. } = bench;
    daemon.stop()?.ensure_success()
}

/// A valid SYN (Linux's options) from the lab's client to the protected port, from `sport`.
fn syn_from_client(lab: &Lab, family: Family, sport: u16) -> Result<Spec> {
    let frame_family = match family {
        Family::V4 => frame::Family::V4,
        Family::V6 => frame::Family::V6,
    };
    let mut spec = Spec::syn(frame_family, &[], PORT, &opt::linux(1460));
    match (&mut spec.ip, lab.client_ip(family), lab.server_ip(family)) {
        (Ip::V4(ip), IpAddr::V4(client), IpAddr::V4(server)) => {
            (ip.src, ip.dst) = (client.octets(), server.octets());
        }
        (Ip::V6(ip), IpAddr::V6(client), IpAddr::V6(server)) => {
            (ip.src, ip.dst) = (client.octets(), server.octets());
        }
        (_, client, server) => bail!("{family}: addresses {client} and {server}"),
    }
    spec.tcp.sport = sport;
    Ok(spec)
}
