//! The SYN-ACKs synguard builds in XDP, checked with an independent parser (etherparse) on
//! frames captured in the client namespace: for crafted SYNs with Linux, Windows and minimal
//! option layouts, untagged and 802.1Q-tagged, IPv4 and IPv6, native and skb mode.
//!
//! A SYN-ACK must have valid IP and TCP checksums, mirror the SYN's addresses, ports and VLAN
//! tag, acknowledge seq + 1, carry a cookie as its sequence number (different for another
//! source port), and announce: MSS always (the configured one); SACK-permitted, window scale
//! and timestamps (TSecr = the client's TSval) only when the client offered timestamps, each
//! of SACK and window scale only if offered too — without timestamps a cookie cannot carry
//! them, so then the SYN-ACK has the MSS only.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use synguard_common::{Counter, DatapathConfig};
use synguard_lab::capture::{Capture, TcpSegment};
use synguard_lab::craft::{L2, OptionStyle, Segment, TcpFrame};
use synguard_lab::daemon::{Daemon, XdpMode};
use synguard_lab::harness::{self, run_cases};
use synguard_lab::kernel::Counters;
use synguard_lab::packet::PacketSocket;
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
/// Not the defaults, so the test sees that the daemon's settings reach the datapath.
const MSS4: u16 = 1400;
const MSS6: u16 = 1380;
const WSCALE: u8 = 9;
const VLAN_ID: u16 = 201;
const CLIENT_SEQ: u32 = 0x0102_0304;
const CLIENT_TSVAL: u32 = 0xa1b2_c3d4;
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

struct Case {
    family: Family,
    style: OptionStyle,
    vlan: Option<u16>,
    /// Source ports of the two SYNs; the second one is one higher.
    sport: u16,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.family, self.style)?;
        if let Some(vid) = self.vlan {
            write!(f, " VLAN {vid}")?;
        }
        Ok(())
    }
}

#[test]
fn synack_format() {
    let Some(_serial) = harness::start("synack_format", &[harness::Need::Daemon]) else {
        return;
    };
    for mode in XdpMode::ALL {
        let lab = Lab::new().expect("building the lab");
        let daemon = Daemon::start(
            lab.server(),
            lab.server_iface().name(),
            &PORT.to_string(),
            mode,
            &[
                "--mss4",
                &MSS4.to_string(),
                "--mss6",
                &MSS6.to_string(),
                "--wscale",
                &WSCALE.to_string(),
            ],
        )
        .expect("starting synguard");
        let socket = PacketSocket::open(
            lab.client(),
            lab.client_iface().name(),
            Duration::from_millis(100),
        )
        .expect("opening the sending socket");
        let mut cases = Vec::new();
        let mut sport = 41_000;
        for family in Family::ALL {
            for vlan in [None, Some(VLAN_ID)] {
                for style in OptionStyle::ALL {
                    cases.push(Case {
                        family,
                        style,
                        vlan,
                        sport,
                    });
                    sport += 2;
                }
            }
        }
        run_cases(&format!("synack_format {}", mode.as_str()), cases, |case| {
            check(&lab, &socket, case).with_context(|| format!("daemon log:\n{}", daemon.log()))
        });
        daemon.stop().expect("stopping synguard");
    }
}

fn check(lab: &Lab, socket: &PacketSocket, case: &Case) -> Result<()> {
    let capture = Capture::start(lab.client(), lab.client_iface().name())?;
    let counters_before = Counters::of(lab.server_iface())?;
    let l2 = lab.client_to_server(case.vlan)?;
    let syns: Vec<TcpFrame> = [case.sport, case.sport + 1]
        .into_iter()
        .map(|sport| TcpFrame {
            l2,
            src: lab.client_ip(case.family),
            dst: lab.server_ip(case.family),
            sport,
            dport: PORT,
            seq: CLIENT_SEQ,
            segment: Segment::Syn {
                style: case.style,
                tsval: CLIENT_TSVAL,
            },
        })
        .collect();
    for syn in &syns {
        socket.send(&syn.build()?)?;
    }
    let ports = [syns[0].sport, syns[1].sport];
    let replies = capture.wait_for(2, REPLY_TIMEOUT, |s| {
        s.is_synack() && ports.contains(&s.dport)
    })?;
    let counters = Counters::of(lab.server_iface())?.since(&counters_before);
    ensure!(
        replies.len() == 2,
        "sent 2 SYNs ({:?}, from ports {ports:?}), captured {} SYN-ACKs: {replies:?}; synguard counters: {counters}",
        case.style,
        replies.len()
    );
    let mut cookies = Vec::new();
    for syn in &syns {
        let reply = replies
            .iter()
            .find(|r| r.dport == syn.sport)
            .ok_or_else(|| anyhow!("no SYN-ACK for source port {}", syn.sport))?;
        check_reply(syn, reply, case, &l2)
            .with_context(|| format!("SYN-ACK to port {}: {reply:?}", syn.sport))?;
        cookies.push(reply.seq);
    }
    ensure!(
        cookies[0] != cookies[1],
        "same sequence number {:#x} for two source ports: not a cookie",
        cookies[0]
    );
    ensure!(
        counters.get(Counter::SynCookieSent) >= 2,
        "syn_cookie_sent did not count the 2 SYN-ACKs: {counters}"
    );
    capture.stop()
}

fn check_reply(syn: &TcpFrame, reply: &TcpSegment, case: &Case, l2: &L2) -> Result<()> {
    ensure!(
        reply.checksums_ok(),
        "bad checksum (IP ok: {}, TCP ok: {}, TCP offloaded: {})",
        reply.ip_checksum_ok,
        reply.tcp_checksum_ok,
        reply.checksum_offloaded
    );
    ensure!(
        (reply.src_mac, reply.dst_mac) == (l2.dst_mac, l2.src_mac),
        "MAC addresses not swapped"
    );
    ensure!(
        reply.vlan == case.vlan,
        "VLAN {:?}, the SYN had {:?}",
        reply.vlan,
        case.vlan
    );
    ensure!(
        (reply.src, reply.dst, reply.sport, reply.dport)
            == (syn.dst, syn.src, syn.dport, syn.sport),
        "addresses or ports not mirrored"
    );
    ensure!(
        reply.ack == syn.seq.wrapping_add(1),
        "ack {:#x}, expected seq + 1 = {:#x}",
        reply.ack,
        syn.seq.wrapping_add(1)
    );
    ensure!(
        reply.ttl == DatapathConfig::DEFAULT.ttl,
        "TTL/hop limit {}, expected {}",
        reply.ttl,
        DatapathConfig::DEFAULT.ttl
    );
    ensure!(
        reply.payload_len == 0,
        "{} payload bytes",
        reply.payload_len
    );
    ensure!(
        reply.options_error.is_none(),
        "options do not parse: {:?}",
        reply.options_error
    );

    let style = case.style;
    let mss = match case.family {
        Family::V4 => MSS4,
        Family::V6 => MSS6,
    };
    ensure!(
        reply.mss() == Some(mss),
        "MSS {:?}, expected {mss}",
        reply.mss()
    );
    if style.offers_timestamps() {
        let (_, tsecr) = reply
            .timestamps()
            .ok_or_else(|| anyhow!("no timestamps, the client offered them"))?;
        ensure!(
            tsecr == CLIENT_TSVAL,
            "TSecr {tsecr:#x}, the client's TSval was {CLIENT_TSVAL:#x}"
        );
        ensure!(
            reply.sack_permitted() == style.offers_sack(),
            "SACK-permitted {}, offered {}",
            reply.sack_permitted(),
            style.offers_sack()
        );
        let expected_ws = style.offers_wscale().then_some(WSCALE);
        ensure!(
            reply.wscale() == expected_ws,
            "window scale {:?}, expected {expected_ws:?}",
            reply.wscale()
        );
    } else {
        ensure!(
            reply.timestamps().is_none() && !reply.sack_permitted() && reply.wscale().is_none(),
            "options beyond MSS although the client offered no timestamps"
        );
    }
    Ok(())
}
