//! The datapath microbench behind `cargo xtask bench`: `BPF_PROG_TEST_RUN` time per packet of
//! synguard's XDP program (loaded by the daemon's own loader, not attached) per kind of
//! packet, next to two floors measured in the same run: `return XDP_DROP` and a "reflect"
//! program that swaps MACs, IPs and ports and returns XDP_TX.
//!
//! Every case is many separate calls with `repeat` 1 (a SYN becomes a SYN-ACK in place, so a
//! repeated run would time the SYN-ACK path), each on a fresh copy of the frame; SYNs come
//! from 4096 distinct sources, and in the `cold` case from a new source every call (what a
//! spoofed flood is), in the `one_source` case all from one (a heavy source, tracked exactly).
//! The figure is the median of the kernel's own per-call timing.
//! Runs inside a scratch lab namespace so the "established" case can use a real socket.
//!
//! Prints one `{"name","value","unit"}` JSON object per line. Needs root.

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd as _, BorrowedFd};

use anyhow::{Context as _, Result, bail, ensure};
use etherparse::PacketBuilder;
use synguard::datapath::load::Datapath;
use synguard::datapath::maps::DatapathState;
use synguard::settings::ports::PortSet;
use synguard_common::DatapathConfig;
use synguard_lab::craft::{L2, OptionStyle, Segment, TcpFrame};
use synguard_lab::floodgen::bpf::{
    XDP_DROP, XDP_PASS, XDP_TX, XdpProgram, drop_program, reflect_program, test_run,
};
use synguard_lab::netns::{Netns, unique_id};

const PORT: u16 = 8080;
const CALLS: usize = 20_000;
const WARM_UP: usize = 1000;
const SOURCES: u32 = 4096;
/// The TCP checksum of an untagged IPv4 frame without IP options.
const TCP_CHECKSUM_V4: usize = 14 + 20 + 16;
const L2_PLAIN: L2 = L2 {
    src_mac: [2, 0, 0, 0, 0, 2],
    dst_mac: [2, 0, 0, 0, 0, 1],
    vlan: None,
};

fn emit(name: &str, value: f64, unit: &str) {
    println!(
        "{}",
        serde_json::json!({"name": name, "value": value, "unit": unit})
    );
}

fn syn(src: IpAddr, dst: IpAddr, sport: u16, vlan: Option<u16>) -> Result<Vec<u8>> {
    TcpFrame {
        l2: L2 { vlan, ..L2_PLAIN },
        src,
        dst,
        sport,
        dport: PORT,
        seq: 1_000,
        segment: Segment::Syn {
            style: OptionStyle::Linux,
            tsval: 7,
        },
    }
    .build()
}

fn ack(src: IpAddr, dst: IpAddr, sport: u16, seq: u32, ack: u32) -> Result<Vec<u8>> {
    TcpFrame {
        l2: L2_PLAIN,
        src,
        dst,
        sport,
        dport: PORT,
        seq,
        segment: Segment::Ack { ack },
    }
    .build()
}

fn v4(i: u32) -> IpAddr {
    Ipv4Addr::from(0x6440_0000 + i).into()
}

/// Median and mean of the kernel's per-call time over `CALLS` calls cycling through
/// `frames` (after `WARM_UP` untimed calls), checking the verdict of each.
fn time(prog: BorrowedFd<'_>, frames: &[Vec<u8>], want: u32) -> Result<(f64, f64)> {
    let mut out = vec![0u8; 512];
    let mut ns = Vec::with_capacity(CALLS);
    // Warm caches and branch predictors (and synguard's sketch and tables).
    for frame in frames.iter().cycle().take(WARM_UP) {
        test_run(prog, frame, Some(&mut out), 1)?;
    }
    for i in WARM_UP..WARM_UP + CALLS {
        let r = test_run(prog, &frames[i % frames.len()], Some(&mut out), 1)?;
        ensure!(r.retval == want, "verdict {} instead of {want}", r.retval);
        ns.push(r.duration.as_nanos() as f64);
    }
    let mean = ns.iter().sum::<f64>() / ns.len() as f64;
    ns.sort_by(f64::total_cmp);
    Ok((ns[ns.len() / 2], mean))
}

fn run() -> Result<()> {
    let datapath = Datapath::load(&DatapathState::new(
        DatapathConfig::DEFAULT,
        PortSet::new(&[PORT..=PORT]),
    ))
    .context("loading synguard's XDP program")?;
    let program = datapath.program()?;
    if let Ok(info) = program.info() {
        if let Some(n) = info.verified_instruction_count() {
            emit(
                "micro.synguard.verified_insns",
                f64::from(n),
                "instructions",
            );
        }
        if let Some(n) = info.size_translated() {
            emit("micro.synguard.xlated_bytes", f64::from(n), "bytes");
        }
    }
    let sg = program.fd()?.as_fd();
    let drop = XdpProgram::load("sgl_floor_drop", &drop_program())?;
    let reflect = XdpProgram::load("sgl_floor_refl", &reflect_program())?;

    let server4: IpAddr = Ipv4Addr::new(10, 201, 0, 1).into();
    let server6: IpAddr = "fd00:201::1".parse()?;
    let syns4: Vec<Vec<u8>> = (0..SOURCES)
        .map(|i| syn(v4(i), server4, 40_000, None))
        .collect::<Result<_>>()?;
    // Never a source twice, warm-up included.
    let syns_cold: Vec<Vec<u8>> = (0..(CALLS + WARM_UP) as u32)
        .map(|i| syn(v4(SOURCES + i), server4, 40_000, None))
        .collect::<Result<_>>()?;
    let syn_one_source = vec![syn(v4(1 << 20), server4, 40_000, None)?];
    let syns_vlan: Vec<Vec<u8>> = (0..SOURCES)
        .map(|i| syn(v4(i), server4, 40_000, Some(42)))
        .collect::<Result<_>>()?;
    let syns6: Vec<Vec<u8>> = (0..SOURCES)
        .map(|i| {
            let src: IpAddr =
                std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i)).into();
            syn(src, server6, 40_000, None)
        })
        .collect::<Result<_>>()?;

    // Valid ACKs: complete the handshake of each SYN with the cookie its SYN-ACK carried.
    let mut valid = Vec::new();
    let mut out = vec![0u8; 512];
    for (i, frame) in syns4.iter().enumerate().take(1024) {
        let r = test_run(sg, frame, Some(&mut out), 1)?;
        ensure!(r.retval == XDP_TX, "SYN not answered ({})", r.retval);
        let cookie = u32::from_be_bytes(out[38..42].try_into()?);
        valid.push(ack(
            v4(i as u32),
            server4,
            40_000,
            1_001,
            cookie.wrapping_add(1),
        )?);
    }
    // The same SYNs with one bit of the TCP checksum flipped: verified and dropped.
    let corrupt: Vec<Vec<u8>> = syns4
        .iter()
        .map(|frame| {
            let mut frame = frame.clone();
            frame[TCP_CHECKSUM_V4] ^= 1;
            frame
        })
        .collect();
    let invalid: Vec<Vec<u8>> = (0..SOURCES)
        .map(|i| ack(v4(i), server4, 40_000, 1_001, 0x1234_5678 ^ i))
        .collect::<Result<_>>()?;

    // An established connection on loopback: its ACKs must reach the kernel untouched.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, PORT))?;
    let client = TcpStream::connect((Ipv4Addr::LOCALHOST, PORT))?;
    let (_server_side, _) = listener.accept()?;
    let local = client.local_addr()?;
    let established = vec![ack(local.ip(), local.ip(), local.port(), 1, 1)?];
    // Non-TCP: a UDP datagram to the protected port number.
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(L2_PLAIN.src_mac, L2_PLAIN.dst_mac)
        .ipv4([100, 64, 0, 1], [10, 201, 0, 1], 64)
        .udp(40_000, PORT)
        .write(&mut udp, &[0u8; 18])?;

    let cases: [(&str, BorrowedFd<'_>, &[Vec<u8>], u32); 12] = [
        ("floor_drop", drop.fd(), &syns4, XDP_DROP),
        ("floor_reflect", reflect.fd(), &syns4, XDP_TX),
        ("syn_synack", sg, &syns4, XDP_TX),
        ("syn_synack_cold", sg, &syns_cold, XDP_TX),
        ("syn_synack_one_source", sg, &syn_one_source, XDP_TX),
        ("syn_bad_checksum_drop", sg, &corrupt, XDP_DROP),
        ("valid_ack", sg, &valid, XDP_PASS),
        ("invalid_ack", sg, &invalid, XDP_DROP),
        ("established_pass", sg, &established, XDP_PASS),
        ("non_tcp_pass", sg, std::slice::from_ref(&udp), XDP_PASS),
        ("vlan_syn_synack", sg, &syns_vlan, XDP_TX),
        ("ipv6_syn_synack", sg, &syns6, XDP_TX),
    ];
    let mut medians = std::collections::BTreeMap::new();
    for (name, prog, frames, want) in cases {
        let (median, mean) = time(prog, frames, want).with_context(|| format!("case {name}"))?;
        emit(&format!("micro.{name}.ns_per_packet"), median, "ns");
        emit(&format!("micro.{name}.mean_ns_per_packet"), mean, "ns");
        medians.insert(name, median);
    }
    for case in [
        "syn_synack",
        "syn_synack_cold",
        "syn_synack_one_source",
        "vlan_syn_synack",
        "ipv6_syn_synack",
        "invalid_ack",
        "valid_ack",
    ] {
        for floor in ["drop", "reflect"] {
            emit(
                &format!("micro.{case}.ratio_to_{floor}"),
                medians[case] / medians[&*format!("floor_{floor}")],
                "ratio",
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the microbench needs root (BPF_PROG_TEST_RUN, a network namespace)");
    }
    let ns = Netns::create(&format!("{}-mb", unique_id()))?;
    ns.run(|| {
        std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()?;
        run()
    })
}
