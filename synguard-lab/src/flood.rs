//! Bounded floods at a server port from the client namespace, or from any other namespace on a
//! link of its own such as the lab's attacker ([`Flood::start_from`]).
//!
//! IPv4 uses hping3 (`-S` or `-A`, `--flood --rand-source`, at nice 10; sequence and acknowledgment
//! numbers are random per packet unless set), always under `timeout` and stopped with SIGINT
//! so it prints its summary. hping3 has no IPv6, so IPv6 floods are crafted here: the same
//! kind of segment from random sources in 2001:db8::/32, sent through an AF_PACKET socket.
//! A single-source flood ([`Flood::single_source`]) comes from the client's own address
//! instead (hping3 without `--rand-source`), with varying source ports.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use nix::sys::signal::Signal;

use crate::craft::{OptionStyle, Segment, TcpFrame, XorShift};
use crate::netns::join;
use crate::packet::PacketSocket;
use crate::process::{self, Process};
use crate::topology::{ClientLink, Family, Lab};

/// Extra time `timeout` grants hping3 after SIGINT before it kills it.
const KILL_AFTER: &str = "5";

/// The flood's niceness. In the lab the attacker shares the server's two CPUs, which a real
/// one does not: the server veth's NAPI (XDP included) runs in the softirq context of the
/// CPU that sent, so a flooding process competes with the receive path it floods, and the
/// veth's 256-slot ring overflows, taking legitimate segments with it. Nice 10 lets that
/// receive path go first more often. Measured per 10 s hping3 flood in native mode: with
/// other work on the machine 7 to 174 drops at nice 0 and 0 at nice 10; on an idle machine
/// (hping3 faster) 18,897 at nice 0 with a connect of 1.02 s, and 2,971 at nice 10 with
/// connects under 13 ms. It lowers the drops; it does not remove them.
const ATTACKER_NICE: i32 = 10;

/// Which segments to flood with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodKind {
    /// SYNs from random sources.
    Syn,
    /// Bare ACKs with random sequence and acknowledgment numbers from random sources.
    Ack,
}

/// What a finished flood sent.
#[derive(Clone, Copy, Debug)]
pub struct FloodReport {
    pub generator: &'static str,
    pub sent: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `N SYNs in 4.0s (64309/s)`.
impl std::fmt::Display for FloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} SYNs in {:.1?} ({:.0}/s)",
            self.sent,
            self.elapsed,
            self.rate()
        )
    }
}

enum Generator {
    Hping3(Process),
    Crafted {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<Result<u64>>,
    },
}

/// A running flood; stopped on drop.
pub struct Flood {
    generator: Option<Generator>,
    started: Instant,
}

impl Flood {
    /// Floods `port` on the lab's server address of the family of `dst` for at most
    /// `duration` from random sources: hping3 for IPv4, crafted frames for IPv6.
    pub fn start(
        lab: &Lab,
        kind: FloodKind,
        dst: IpAddr,
        port: u16,
        duration: Duration,
    ) -> Result<Self> {
        Self::launch(lab.first_client(), kind, false, dst, port, duration)
    }

    /// [`Self::start`] from the namespace of `link` (e.g. [`Lab::attacker`]) through its veth.
    pub fn start_from(
        link: &ClientLink,
        kind: FloodKind,
        dst: IpAddr,
        port: u16,
        duration: Duration,
    ) -> Result<Self> {
        Self::launch(link, kind, false, dst, port, duration)
    }

    /// [`Self::start`] from the first client's own address only: one source for synguard's
    /// per-source accounting.
    pub fn single_source(
        lab: &Lab,
        kind: FloodKind,
        dst: IpAddr,
        port: u16,
        duration: Duration,
    ) -> Result<Self> {
        Self::launch(lab.first_client(), kind, true, dst, port, duration)
    }

    fn launch(
        link: &ClientLink,
        kind: FloodKind,
        own_source: bool,
        dst: IpAddr,
        port: u16,
        duration: Duration,
    ) -> Result<Self> {
        let generator = match dst {
            IpAddr::V4(dst) => {
                let flag = match kind {
                    FloodKind::Syn => "-S",
                    FloodKind::Ack => "-A",
                };
                let mut cmd = link.netns().command("timeout");
                cmd.args([
                    "-s",
                    "INT",
                    "-k",
                    KILL_AFTER,
                    &format!("{:.3}", duration.as_secs_f64()),
                ])
                .args([
                    "nice",
                    "-n",
                    &ATTACKER_NICE.to_string(),
                    "hping3",
                    flag,
                    "--flood",
                    "-p",
                    &port.to_string(),
                ])
                .args((!own_source).then_some("--rand-source"))
                .arg(dst.to_string());
                Generator::Hping3(Process::spawn("hping3", cmd)?)
            }
            IpAddr::V6(dst) => {
                let socket = PacketSocket::open(
                    link.netns(),
                    link.iface().name(),
                    Duration::from_millis(100),
                )?;
                // Source address (unless random), source port, sequence number and segment are
                // filled in per frame.
                let template = TcpFrame {
                    l2: link.to_server(None)?,
                    src: link.ip(Family::V6),
                    dst: dst.into(),
                    sport: 0,
                    dport: port,
                    seq: 0,
                    segment: Segment::Ack { ack: 0 },
                };
                let stop = Arc::new(AtomicBool::new(false));
                let thread = {
                    let stop = Arc::clone(&stop);
                    std::thread::Builder::new()
                        .name("ipv6-flood".into())
                        .spawn(move || {
                            process::nice_this_thread(ATTACKER_NICE)?;
                            crafted_flood(&socket, template, kind, !own_source, duration, &stop)
                        })
                        .context("spawning the IPv6 flood thread")?
                };
                Generator::Crafted { stop, thread }
            }
        };
        Ok(Self {
            generator: Some(generator),
            started: Instant::now(),
        })
    }

    /// Waits for the flood to end by itself (its duration) and reports it.
    pub fn wait(mut self) -> Result<FloodReport> {
        self.finish(false)
    }

    /// Stops the flood now and reports it.
    pub fn stop(mut self) -> Result<FloodReport> {
        self.finish(true)
    }

    fn finish(&mut self, now: bool) -> Result<FloodReport> {
        let generator = self
            .generator
            .take()
            .ok_or_else(|| anyhow!("flood already finished"))?;
        let (name, sent) = match generator {
            Generator::Hping3(mut process) => {
                let grace = Duration::from_secs(30);
                let status = if now {
                    process.stop(Signal::SIGINT, grace)?
                } else {
                    match process.wait_timeout(grace + self.started.elapsed())? {
                        Some(status) => status,
                        None => process.stop(Signal::SIGINT, grace)?,
                    }
                };
                let output = process.output();
                let sent = parse_hping3_sent(&output)
                    .ok_or_else(|| anyhow!("hping3 ({status}) printed no summary:\n{output}"))?;
                ("hping3", sent)
            }
            Generator::Crafted { stop, thread } => {
                if now {
                    stop.store(true, Ordering::Relaxed);
                }
                ("crafted", join(thread)?)
            }
        };
        Ok(FloodReport {
            generator: name,
            sent,
            elapsed: self.started.elapsed(),
        })
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if self.generator.is_some()
            && let Err(e) = self.finish(true)
        {
            eprintln!("stopping flood: {e:#}");
        }
    }
}

/// `N packets transmitted` from hping3's closing statistics.
pub fn parse_hping3_sent(output: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let (count, rest) = line.trim().split_once(' ')?;
        rest.starts_with("packets transmitted")
            .then(|| count.parse().ok())?
    })
}

/// Sends `template` with a random source port, sequence number and (for ACKs) acknowledgment
/// number per frame, from random addresses in 2001:db8::/64 if `random_source`.
fn crafted_flood(
    socket: &PacketSocket,
    template: TcpFrame,
    kind: FloodKind,
    random_source: bool,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<u64> {
    let mut rng = XorShift::seeded();
    let deadline = Instant::now() + duration;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        // Check the clock every batch, not every frame.
        for _ in 0..256 {
            let host = rng.next_u64();
            let segment = match kind {
                FloodKind::Syn => Segment::Syn {
                    style: OptionStyle::MssOnly,
                    tsval: 0,
                },
                FloodKind::Ack => Segment::Ack {
                    ack: rng.next_u32(),
                },
            };
            let frame = TcpFrame {
                src: if random_source {
                    Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(host)).into()
                } else {
                    template.src
                },
                sport: (host as u16) | 1024,
                seq: rng.next_u32(),
                segment,
                ..template
            }
            .build()?;
            socket.send(&frame)?;
            sent += 1;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hping3_summary() {
        let out = "HPING 10.201.0.1 (lo 10.201.0.1): S set, 40 headers + 0 data bytes\n\
                   hping in flood mode, no replies will be shown\n\n\
                   --- 10.201.0.1 hping statistic ---\n\
                   171490 packets transmitted, 0 packets received, 100% packet loss\n\
                   round-trip min/avg/max = 0.0/0.0/0.0 ms";
        assert_eq!(parse_hping3_sent(out), Some(171_490));
        assert_eq!(parse_hping3_sent("HPING x"), None);
    }
}
