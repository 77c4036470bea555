//! A fast, bounded SYN (or invalid-ACK) flood generator for the lab.
//!
//! One template frame ([`FloodSpec::template`]) is varied per packet: a random source inside
//! a prefix (a /32 or /128 is a fixed source), a random source port (≥ 1024) and a random
//! sequence number, and for ACK floods a random acknowledgment number. No checksum is
//! recomputed: one 16-bit word per checksum compensates the randomised words (the IPv4 ID
//! for the header checksum, the low half of the sequence number for the TCP checksum), so
//! every frame keeps the template's one's-complement sums and stays valid.
//!
//! Three ways to transmit ([`Method`]), measured side by side by `cargo xtask flood`:
//! - [`Method::LiveFrames`]: `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, as
//!   xdp-trafficgen does: a hand-assembled XDP program ([`generator_program`]) randomises
//!   each frame in the kernel and returns XDP_TX, which test-run turns into a redirect out of
//!   the interface. No skb is ever built on the sending side. The peer veth must have NAPI
//!   (an XDP program or GRO enabled), or veth drops the frames. A paced flood is paced inside
//!   the program ([`pacing`]): every test-run call waits for an RCU grace period (~30 ms
//!   here, whatever the frame count), so pacing by sleeping between small calls tops out
//!   at a few thousand frames per second.
//! - [`Method::TxRing`]: AF_PACKET with a `PACKET_TX_RING` (TPACKET_V2) and
//!   `PACKET_QDISC_BYPASS`, frames randomised in user space.
//! - [`Method::Sendmmsg`]: AF_PACKET `sendmmsg` of 64 frames per call, qdisc bypassed.
//!
//! Safety: [`run`] refuses any namespace or interface whose name lacks the lab's prefix
//! ([`crate::netns::PREFIX`]) and transmits only from a thread inside that namespace, so a
//! flood can never leave the lab. Every flood is bounded by a packet count and a duration.

pub mod bpf;
mod program;
mod ring;

pub use program::{Pacing, generator_program, pacing};

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::craft::{L2, OptionStyle, Segment, TcpFrame, XorShift};
use crate::flood::{FloodKind, FloodReport};
use crate::netns::{Netns, PREFIX};
use bpf::XdpProgram;
use program::{PACE_LIMIT, PACE_SENT, PaceMap};

/// How frames are transmitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    LiveFrames,
    TxRing,
    Sendmmsg,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::LiveFrames, Method::TxRing, Method::Sendmmsg];

    pub fn name(self) -> &'static str {
        match self {
            Method::LiveFrames => "xdp-live-frames",
            Method::TxRing => "af-packet-tx-ring",
            Method::Sendmmsg => "af-packet-sendmmsg",
        }
    }
}

/// What to send, how much and how fast.
#[derive(Clone, Debug)]
pub struct FloodSpec {
    pub kind: FloodKind,
    pub l2: L2,
    /// Sources: random addresses inside `src/src_prefix` (a full-length prefix: one source).
    pub src: IpAddr,
    pub src_prefix: u8,
    pub dst: IpAddr,
    pub dport: u16,
    /// SYN options (SYN floods only).
    pub options: OptionStyle,
    /// Stop after this many frames ...
    pub count: u64,
    /// ... or after this long, whichever comes first.
    pub duration: Duration,
    /// Frames per second to aim for; `None`: as fast as possible.
    pub rate: Option<u64>,
    /// Pin the sending thread to this CPU.
    pub cpu: Option<usize>,
}

/// Byte offsets of the fields the generator varies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offsets of the source address's 32-bit words that vary, with the mask of their
    /// fixed bits and the fixed bits' value (both as read from the frame, native order).
    pub src_words: Vec<(usize, u32, u32)>,
    /// IPv4: offset of the IP ID (the header checksum's compensating word).
    pub ip_id: Option<usize>,
    pub l4: usize,
    pub ack: bool,
    /// Folded one's-complement sums the compensation keeps: TCP and IPv4 header.
    pub tcp_sum: u16,
    pub ip_sum: u16,
}

fn word(frame: &[u8], at: usize) -> u32 {
    u32::from(u16::from_ne_bytes([frame[at], frame[at + 1]]))
}

fn fold(mut sum: u32) -> u32 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

impl FloodSpec {
    /// The template frame (valid checksums) and the layout of its varied fields.
    pub fn template(&self) -> Result<(Vec<u8>, Layout)> {
        let segment = match self.kind {
            FloodKind::Syn => Segment::Syn {
                style: self.options,
                tsval: 1,
            },
            FloodKind::Ack => Segment::Ack { ack: 0 },
        };
        let frame = TcpFrame {
            l2: self.l2,
            src: self.src,
            dst: self.dst,
            sport: 40_000,
            dport: self.dport,
            seq: 0,
            segment,
        }
        .build()?;
        let l3 = 14 + if self.l2.vlan.is_some() { 4 } else { 0 };
        let (addr_at, addr_len, l4) = match self.src {
            IpAddr::V4(_) => (l3 + 12, 4, l3 + 20),
            IpAddr::V6(_) => (l3 + 8, 16, l3 + 40),
        };
        ensure!(
            usize::from(self.src_prefix) <= addr_len * 8,
            "source prefix /{} is too long",
            self.src_prefix
        );
        // The prefix's fixed bits, byte by byte in wire order.
        let mask: Vec<u8> = (0..addr_len)
            .map(|i| {
                let bits = usize::from(self.src_prefix).saturating_sub(i * 8).min(8);
                (0xff00u16 >> bits) as u8
            })
            .collect();
        let src_words = (0..addr_len / 4)
            .filter_map(|w| {
                let at = addr_at + 4 * w;
                let m = u32::from_ne_bytes(mask[4 * w..4 * w + 4].try_into().ok()?);
                let base = u32::from_ne_bytes(frame[at..at + 4].try_into().ok()?) & m;
                (m != u32::MAX).then_some((at, m, base))
            })
            .collect::<Vec<_>>();
        let ack = self.kind == FloodKind::Ack;
        let ip_id = (self.src.is_ipv4() && !src_words.is_empty()).then_some(l3 + 4);
        let mut layout = Layout {
            src_words,
            ip_id,
            l4,
            ack,
            tcp_sum: 0,
            ip_sum: 0,
        };
        layout.tcp_sum = fold(
            layout
                .tcp_words()
                .iter()
                .map(|&at| word(&frame, at))
                .sum::<u32>()
                + word(&frame, l4 + 6),
        ) as u16;
        if let Some(id) = layout.ip_id {
            layout.ip_sum = fold(
                layout
                    .ip_words()
                    .iter()
                    .map(|&at| word(&frame, at))
                    .sum::<u32>()
                    + word(&frame, id),
            ) as u16;
        }
        Ok((frame, layout))
    }
}

impl Layout {
    fn ip_words(&self) -> Vec<usize> {
        self.src_words
            .iter()
            .flat_map(|&(at, ..)| [at, at + 2])
            .collect()
    }

    /// Varied 16-bit words under the TCP checksum, the compensating one (seq low half) aside.
    fn tcp_words(&self) -> Vec<usize> {
        let mut words = self.ip_words();
        words.extend([self.l4, self.l4 + 4]);
        if self.ack {
            words.extend([self.l4 + 8, self.l4 + 10]);
        }
        words
    }

    /// Varies `frame` (a copy of the template) like [`generator_program`] does.
    pub fn randomize(&self, frame: &mut [u8], rng: &mut XorShift) {
        for &(at, mask, base) in &self.src_words {
            let v = (rng.next_u32() & !mask) | base;
            frame[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        let r = rng.next_u64();
        let sport = ((r as u32) & 0xffff) | 0x0004;
        frame[self.l4..self.l4 + 2].copy_from_slice(&(sport as u16).to_ne_bytes());
        frame[self.l4 + 4..self.l4 + 6].copy_from_slice(&((r >> 16) as u16).to_ne_bytes());
        if self.ack {
            frame[self.l4 + 8..self.l4 + 12].copy_from_slice(&((r >> 32) as u32).to_ne_bytes());
        }
        let comp = |sum: u16, words: &[usize], frame: &[u8]| {
            let others = fold(words.iter().map(|&at| word(frame, at)).sum());
            fold(0xffff - others + u32::from(sum)) as u16
        };
        let c = comp(self.tcp_sum, &self.tcp_words(), frame);
        frame[self.l4 + 6..self.l4 + 8].copy_from_slice(&c.to_ne_bytes());
        if let Some(id) = self.ip_id {
            let c = comp(self.ip_sum, &self.ip_words(), frame);
            frame[id..id + 2].copy_from_slice(&c.to_ne_bytes());
        }
    }
}

/// Paces a sender to a rate.
pub(crate) struct Pacer {
    start: Instant,
    rate: Option<u64>,
}

impl Pacer {
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Self {
            start: Instant::now(),
            rate,
        }
    }

    /// Sleeps until `sent` frames are due.
    pub(crate) fn wait(&self, sent: u64) {
        if let Some(rate) = self.rate.filter(|&r| r > 0) {
            let due = self.start + Duration::from_secs_f64(sent as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
}

/// Refuses what the lab did not create.
fn check_lab(netns: &Netns, iface: &str) -> Result<()> {
    ensure!(
        netns.name().starts_with(PREFIX),
        "refusing to flood from namespace {}: not one the lab created (no `{PREFIX}` prefix)",
        netns.name()
    );
    ensure!(
        iface.starts_with(PREFIX),
        "refusing to flood out of interface {iface}: not one the lab created (no `{PREFIX}` prefix)"
    );
    ensure!(
        std::path::Path::new("/run/netns")
            .join(netns.name())
            .exists(),
        "no network namespace {}",
        netns.name()
    );
    Ok(())
}

fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; the CPU_* helpers index inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
        }
    }
    Ok(())
}

/// Floods out of `iface` of the lab namespace `netns` with `method`, until `spec.count`
/// frames, `spec.duration` or `stop`. Blocks; returns what was handed to the interface.
pub fn run(
    netns: &Netns,
    iface: &str,
    spec: &FloodSpec,
    method: Method,
    stop: &AtomicBool,
) -> Result<FloodReport> {
    check_lab(netns, iface)?;
    ensure!(spec.count > 0, "a flood needs a packet count");
    ensure!(
        spec.duration > Duration::ZERO && spec.duration <= Duration::from_secs(3600),
        "a flood needs a duration (at most an hour)"
    );
    let (template, layout) = spec.template()?;
    netns.run(|| {
        if let Some(cpu) = spec.cpu {
            pin_to(cpu)?;
        }
        let c_iface = std::ffi::CString::new(iface)?;
        // SAFETY: a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {iface} in {}", netns.name());
        }
        let started = Instant::now();
        let sent = match method {
            Method::LiveFrames => live(spec, &template, &layout, ifindex, stop)?,
            Method::TxRing => ring::tx_ring(spec, &template, &layout, ifindex, stop)?,
            Method::Sendmmsg => ring::sendmmsg(spec, &template, &layout, ifindex, stop)?,
        };
        Ok(FloodReport {
            generator: method.name(),
            sent,
            elapsed: started.elapsed(),
        })
    })
}

/// How long one `BPF_PROG_TEST_RUN` call runs at most, and frames per batch inside it. Each
/// call ends with an RCU grace period (~30 ms here), a gap in the flood: calls of 65,536
/// frames (33 ms at 2 Mpps) made the flood bursts of full speed with gaps as long between.
const LIVE_CALL: Duration = Duration::from_secs(1);
const LIVE_BATCH: u32 = 64;

/// A paced flood's map and its program's view of it.
struct Pace {
    map: PaceMap,
    rate: u64,
}

impl Pace {
    fn new(rate: u64, count: u64) -> Result<Self> {
        ensure!(
            (1..=1_000_000_000).contains(&rate),
            "a paced flood needs 1 to 10^9 frames per second, not {rate}"
        );
        let map = PaceMap::create()?;
        let mut state = [0u8; 24];
        state[PACE_LIMIT as usize..].copy_from_slice(&count.to_ne_bytes());
        map.write(state)?;
        Ok(Self { map, rate })
    }

    fn pacing(&self) -> Result<Pacing> {
        Ok(Pacing {
            map_fd: self.map.raw_fd(),
            interval_ns: i32::try_from(1_000_000_000 / self.rate)?,
        })
    }

    fn sent(&self) -> Result<u64> {
        let state = self.map.read()?;
        Ok(u64::from_ne_bytes(
            state[PACE_SENT as usize..PACE_LIMIT as usize].try_into()?,
        ))
    }
}

/// Calls of up to [`LIVE_CALL`], sized by the program's runs per second so far. Paced, the
/// program decides which runs send a frame and counts them; unpaced, every run does.
fn live(
    spec: &FloodSpec,
    template: &[u8],
    layout: &Layout,
    ifindex: u32,
    stop: &AtomicBool,
) -> Result<u64> {
    let pace = spec
        .rate
        .map(|rate| Pace::new(rate, spec.count))
        .transpose()?;
    let pacing = pace.as_ref().map(Pace::pacing).transpose()?;
    let prog = XdpProgram::load("sgl_flood", &generator_program(template, layout, pacing))?;
    let deadline = Instant::now() + spec.duration;
    // A first guess, then learned from every call.
    let mut runs_per_second = 4_000_000f64;
    let mut ran = 0u64;
    loop {
        let sent = pace.as_ref().map_or(Ok(ran), Pace::sent)?;
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Relaxed) || sent >= spec.count {
            return Ok(sent);
        }
        let mut runs = (runs_per_second * (deadline - now).min(LIVE_CALL).as_secs_f64())
            .clamp(f64::from(LIVE_BATCH), f64::from(u32::MAX)) as u64;
        if pace.is_none() {
            runs = runs.min(spec.count - sent);
        }
        bpf::live_frames(
            prog.fd(),
            template,
            ifindex,
            u32::try_from(runs)?,
            LIVE_BATCH,
        )?;
        ran += runs;
        runs_per_second = runs as f64 / now.elapsed().as_secs_f64().max(1e-6);
    }
}

use std::mem::size_of;

#[cfg(test)]
mod tests {
    use super::*;
    use bpf::{R0, XDP_DROP, asm::mov};
    use etherparse::{SlicedPacket, TransportSlice};

    fn spec(src: &str, prefix: u8, dst: &str, kind: FloodKind, vlan: Option<u16>) -> FloodSpec {
        FloodSpec {
            kind,
            l2: L2 {
                src_mac: [2, 0, 0, 0, 0, 2],
                dst_mac: [2, 0, 0, 0, 0, 1],
                vlan,
            },
            src: src.parse().unwrap(),
            src_prefix: prefix,
            dst: dst.parse().unwrap(),
            dport: 8080,
            options: OptionStyle::Linux,
            count: 1,
            duration: Duration::from_secs(1),
            rate: None,
            cpu: None,
        }
    }

    /// Checksums verified by recomputing them with etherparse.
    fn checksums_hold(frame: &[u8]) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("no TCP")
        };
        let expected = match &p.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                tcp.to_header()
                    .calc_checksum_ipv4(&h, tcp.payload())
                    .unwrap()
            }
            Some(etherparse::NetSlice::Ipv6(ip)) => tcp
                .to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
                .unwrap(),
            _ => panic!("no IP"),
        };
        assert_eq!(tcp.checksum(), expected);
    }

    #[test]
    fn randomised_frames_keep_valid_checksums() {
        let mut rng = XorShift::seeded();
        for s in [
            spec("100.64.0.0", 10, "10.201.0.1", FloodKind::Syn, None),
            spec("10.201.0.2", 32, "10.201.0.1", FloodKind::Syn, Some(7)),
            spec("100.64.0.0", 10, "10.201.0.1", FloodKind::Ack, None),
            spec("2001:db8::", 64, "fd00:201::1", FloodKind::Syn, None),
            spec("2001:db8::", 100, "fd00:201::1", FloodKind::Ack, Some(9)),
        ] {
            let (template, layout) = s.template().unwrap();
            checksums_hold(&template);
            for _ in 0..2000 {
                let mut frame = template.clone();
                layout.randomize(&mut frame, &mut rng);
                checksums_hold(&frame);
                let p = SlicedPacket::from_ethernet(&frame).unwrap();
                let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                    panic!()
                };
                assert!(tcp.source_port() >= 1024);
                match &p.net {
                    Some(etherparse::NetSlice::Ipv4(ip)) if s.src_prefix == 10 => {
                        let a = ip.header().source();
                        assert_eq!((a[0], a[1] & 0xc0), (100, 64), "{a:?}");
                    }
                    Some(etherparse::NetSlice::Ipv4(ip)) => {
                        assert_eq!(ip.header().source(), [10, 201, 0, 2]);
                    }
                    Some(etherparse::NetSlice::Ipv6(ip)) => {
                        assert_eq!(ip.header().source()[..4], [0x20, 0x01, 0x0d, 0xb8]);
                    }
                    _ => panic!(),
                }
            }
        }
    }

    #[test]
    fn pacing_jumps_to_its_drop_or_past_it() {
        let insns = pacing(Pacing {
            map_fd: 3,
            interval_ns: 4000,
        });
        let drop = insns
            .iter()
            .position(|&i| i == mov(R0, XDP_DROP as i32))
            .unwrap();
        let target = |at: usize| at as i64 + 1 + i64::from((insns[at].0 >> 16) as u16 as i16);
        let jumps: Vec<(u8, i64)> = (0..insns.len())
            .filter(|&at| matches!(insns[at].0 as u8, 0x05 | 0x15 | 0x2d | 0x3d))
            .map(|at| (insns[at].0 as u8, target(at)))
            .collect();
        // null value, limit reached, not due: to the drop; the slack clamp skips one
        // instruction; a due frame goes on past the drop's exit.
        assert_eq!(
            jumps.iter().filter(|&&(_, t)| t == drop as i64).count(),
            3,
            "{jumps:?}"
        );
        assert!(jumps.contains(&(0x05, insns.len() as i64)), "{jumps:?}");
    }

    #[test]
    fn the_generator_program_is_straight_line_and_small() {
        let (template, layout) = spec("2001:db8::", 64, "fd00:201::1", FloodKind::Ack, None)
            .template()
            .unwrap();
        assert!(generator_program(&template, &layout, None).len() < 120);
    }
}
