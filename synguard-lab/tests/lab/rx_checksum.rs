//! IPv6 handshake ACKs that arrive with unverified checksums (`CHECKSUM_NONE`: tx offload off
//! on the veths, and any frame sent from a packet socket). nft synproxy cannot verify an IPv6
//! checksum itself, so synguard's TC program verifies it: a crafted cookie ACK with a wrong
//! TCP checksum, which XDP passes (it checks the cookie, not the sum), is dropped in TC
//! (`tc_csum_bad`) and never reaches synproxy; the same ACK with the right checksum is marked
//! (`tc_csum_verified`) and synproxy opens the connection with it (`cookie_valid`).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use synguard_common::Counter;
use synguard_lab::capture::Capture;
use synguard_lab::craft::{OptionStyle, Segment, TcpFrame};
use synguard_lab::daemon::XdpMode;
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::kernel::{self, Counters};
use synguard_lab::packet::PacketSocket;
use synguard_lab::topology::{Family, Lab, Offloads};

const PORT: u16 = 8080;
const PAYLOAD: usize = 1024;
const CLIENT_PORT: u16 = 42_000;
const CLIENT_SEQ: u32 = 0x1000_0000;
/// The TCP checksum field of an untagged IPv6 frame: Ethernet 14, IPv6 40, field at 16.
const TCP_CHECK_OFFSET: usize = 14 + 40 + 16;
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a counter may take to move (it moves within microseconds).
const SETTLE: Duration = Duration::from_secs(2);
const SYNPROXY: &[&str] = &["cookie_valid", "cookie_invalid"];

#[test]
fn ipv6_ack_with_bad_checksum_is_dropped_and_good_one_marked() {
    let Some(_serial) = harness::start("rx checksum", &[Need::Daemon]) else {
        return;
    };
    run_cases("rx checksum", XdpMode::ALL, |&mode| check(mode));
}

fn check(mode: XdpMode) -> Result<()> {
    let lab = Lab::with_offloads(Offloads::TxOff)?;
    let bench = Bench::start(lab, PORT, PAYLOAD, &PORT.to_string(), mode, &[])?;
    let lab = &bench.lab;
    let socket = PacketSocket::open(lab.client(), lab.client_iface().name(), REPLY_TIMEOUT)?;
    let capture = Capture::start(lab.client(), lab.client_iface().name())?;
    let frame = |seq, segment| TcpFrame {
        l2: lab.client_to_server(None).expect("the lab's MAC addresses"),
        src: lab.client_ip(Family::V6),
        dst: lab.server_ip(Family::V6),
        sport: CLIENT_PORT,
        dport: PORT,
        seq,
        segment,
    };

    // MSS only: the cookie carries no timestamp, so a bare ACK without options completes it.
    let syn = Segment::Syn {
        style: OptionStyle::MssOnly,
        tsval: 0,
    };
    socket.send(&frame(CLIENT_SEQ, syn).build()?)?;
    let synack = capture
        .wait_for(1, REPLY_TIMEOUT, |s| {
            s.is_synack() && s.dport == CLIENT_PORT
        })?
        .pop()
        .ok_or_else(|| anyhow!("no SYN-ACK from XDP for the crafted IPv6 SYN"))?;
    let ack = Segment::Ack {
        ack: synack.seq.wrapping_add(1),
    };
    let good = frame(CLIENT_SEQ.wrapping_add(1), ack).build()?;
    let mut bad = good.clone();
    bad[TCP_CHECK_OFFSET] ^= 0x5a;

    let (iface, server) = (lab.server_iface(), lab.server());
    let send = |frame: &[u8], counter: Counter| {
        let before = Counters::of(iface)?;
        socket.send(frame)?;
        settled(
            || Ok(Counters::of(iface)?.since(&before)),
            |c| c.get(counter) > 0,
        )
    };
    let synproxy_before = kernel::synproxy(server)?;
    let counters = send(&bad, Counter::TcCsumBad)?;
    let synproxy = kernel::synproxy(server)?.since(&synproxy_before);
    println!(
        "bad ACK: synguard {counters}; synproxy {}",
        synproxy.show(SYNPROXY)
    );
    ensure!(
        counters.get(Counter::AckCookieValid) == 1,
        "XDP did not pass the cookie ACK with the bad checksum ({counters})"
    );
    ensure!(
        counters.get(Counter::TcCsumBad) == 1 && counters.get(Counter::TcCsumVerified) == 0,
        "the TC program did not drop the ACK with the bad checksum ({counters})"
    );
    ensure!(
        synproxy.get("cookie_valid") == 0,
        "SYNPROXY validated a cookie from an ACK with a bad checksum"
    );

    let counters = send(&good, Counter::TcCsumVerified)?;
    let synproxy = settled(
        || Ok(kernel::synproxy(server)?.since(&synproxy_before)),
        |s| s.get("cookie_valid") > 0,
    )?;
    println!(
        "good ACK: synguard {counters}; synproxy {}",
        synproxy.show(SYNPROXY)
    );
    ensure!(
        counters.get(Counter::TcCsumVerified) == 1 && counters.get(Counter::TcCsumBad) == 0,
        "the TC program did not mark the ACK with the right checksum ({counters})"
    );
    ensure!(
        synproxy.get("cookie_valid") == 1,
        "SYNPROXY did not take the marked cookie ACK: cookie_valid rose by {}",
        synproxy.get("cookie_valid")
    );
    capture.stop()?;
    let Bench { daemon, .. } = bench;
    daemon.stop()?.ensure_success()
}

/// What `read` returns once `done` holds for it, or after [`SETTLE`].
fn settled<T>(mut read: impl FnMut() -> Result<T>, done: impl Fn(&T) -> bool) -> Result<T> {
    let started = Instant::now();
    loop {
        let value = read()?;
        if done(&value) || started.elapsed() > SETTLE {
            return Ok(value);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
