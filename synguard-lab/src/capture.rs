//! Captures the frames arriving on an interface (a thread reading an AF_PACKET socket inside
//! the namespace) and decodes TCP segments with etherparse, an independent parser: addresses,
//! VLAN tag, flags, sequence numbers, options, and whether the checksums are right.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use etherparse::{
    Ipv4Header, Ipv6Header, LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TcpHeader,
    TcpOptionElement, TransportSlice,
};

use crate::netns::{Netns, join};
use crate::packet::{Frame, PacketSocket};

#[derive(Default)]
struct Frames {
    list: Mutex<Vec<Frame>>,
    grew: Condvar,
}

impl Frames {
    fn list(&self) -> MutexGuard<'_, Vec<Frame>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running capture; stops on drop.
pub struct Capture {
    frames: Arc<Frames>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Capture {
    /// Starts capturing incoming frames on `iface` in `netns`. Frames sent after this returns
    /// are seen.
    pub fn start(netns: &Netns, iface: &str) -> Result<Self> {
        let socket = PacketSocket::open(netns, iface, Duration::from_millis(50))?;
        let frames = Arc::new(Frames::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (frames, stop) = (Arc::clone(&frames), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("capture-{iface}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(frame) = socket.recv()? {
                            frames.list().push(frame);
                            frames.grew.notify_all();
                        }
                    }
                    Ok(())
                })
                .context("spawning the capture thread")?
        };
        Ok(Self {
            frames,
            stop,
            thread: Some(thread),
        })
    }

    /// Every TCP segment captured so far that `keep` accepts (frames that are not TCP are
    /// skipped; a TCP frame etherparse cannot decode is an error).
    pub fn segments(&self, keep: impl Fn(&TcpSegment) -> bool) -> Result<Vec<TcpSegment>> {
        let mut segments = Vec::new();
        for frame in self.frames.list().iter() {
            if let Some(mut segment) = TcpSegment::parse(&frame.data)? {
                segment.checksum_offloaded = frame.checksum_offloaded;
                if keep(&segment) {
                    segments.push(segment);
                }
            }
        }
        Ok(segments)
    }

    /// Waits until at least `count` segments accepted by `keep` were captured, or `timeout`
    /// passes; returns what was found either way.
    pub fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
        keep: impl Fn(&TcpSegment) -> bool,
    ) -> Result<Vec<TcpSegment>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.segments(&keep)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if found.len() >= count || left.is_zero() {
                return Ok(found);
            }
            let list = self.frames.list();
            let _unused = self
                .frames
                .grew
                .wait_timeout(list, left.min(Duration::from_millis(50)))
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Stops the capture, reporting a failure of the capture thread.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(Ok(()), join)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("capture: {e:#}");
        }
    }
}

/// A decoded TCP segment.
#[derive(Clone, Debug)]
pub struct TcpSegment {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The outermost VLAN tag's id.
    pub vlan: Option<u16>,
    /// The TPIDs of the VLAN tags, outermost first.
    pub tpids: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub ack_flag: bool,
    pub rst: bool,
    pub fin: bool,
    pub window: u16,
    pub options: Vec<TcpOptionElement>,
    /// The raw option bytes (including padding).
    pub options_raw: Vec<u8>,
    /// An option etherparse could not decode.
    pub options_error: Option<String>,
    /// IPv4 header checksum correct (always true for IPv6, which has none).
    pub ip_checksum_ok: bool,
    /// The TCP checksum field is right (meaningless when `checksum_offloaded`).
    pub tcp_checksum_ok: bool,
    /// The sender left the TCP checksum to offload (see [`Frame`]); set by [`Capture`].
    pub checksum_offloaded: bool,
    pub payload_len: usize,
    /// The IP header as etherparse decodes it, for checks of every field.
    pub ip_header: IpHeader,
    /// The TCP header as etherparse decodes it (options included).
    pub tcp_header: TcpHeader,
}

/// The IP header of a [`TcpSegment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpHeader {
    V4(Ipv4Header),
    V6(Ipv6Header),
}

impl TcpSegment {
    pub fn is_synack(&self) -> bool {
        self.syn && self.ack_flag && !self.rst
    }

    /// Both checksums present in full and right, as XDP-built frames must be.
    pub fn checksums_ok(&self) -> bool {
        self.ip_checksum_ok && self.tcp_checksum_ok && !self.checksum_offloaded
    }

    pub fn mss(&self) -> Option<u16> {
        self.options.iter().find_map(|o| match o {
            TcpOptionElement::MaximumSegmentSize(mss) => Some(*mss),
            _ => None,
        })
    }

    pub fn wscale(&self) -> Option<u8> {
        self.options.iter().find_map(|o| match o {
            TcpOptionElement::WindowScale(ws) => Some(*ws),
            _ => None,
        })
    }

    /// (TSval, TSecr).
    pub fn timestamps(&self) -> Option<(u32, u32)> {
        self.options.iter().find_map(|o| match o {
            TcpOptionElement::Timestamp(val, ecr) => Some((*val, *ecr)),
            _ => None,
        })
    }

    pub fn sack_permitted(&self) -> bool {
        self.options
            .iter()
            .any(|o| matches!(o, TcpOptionElement::SelectiveAcknowledgementPermitted))
    }

    /// Decodes `frame`; `None` if it is not an IPv4/IPv6 TCP segment.
    pub fn parse(frame: &[u8]) -> Result<Option<Self>> {
        let Ok(packet) = SlicedPacket::from_ethernet(frame) else {
            return Ok(None);
        };
        let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
            return Ok(None);
        };
        let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
            return Ok(None);
        };
        // The Ethernet type field holds the first TPID, each tag the next one.
        let tpids: Vec<u16> = std::iter::once(eth.ether_type())
            .chain(packet.link_exts.iter().filter_map(|ext| match ext {
                LinkExtSlice::Vlan(vlan) => Some(vlan.ether_type()),
                LinkExtSlice::Macsec(_) => None,
            }))
            .take(packet.vlan_ids().len())
            .map(|tpid| tpid.0)
            .collect();
        let (src, dst, ttl, ip_checksum_ok, expected_tcp_checksum, ip_header) = match &packet.net {
            Some(NetSlice::Ipv4(ip)) => {
                let header = ip.header();
                let ip_ok = header.to_header().calc_header_checksum() == header.header_checksum();
                let sum = tcp.calc_checksum_ipv4(header.source(), header.destination());
                (
                    IpAddr::from(header.source_addr()),
                    IpAddr::from(header.destination_addr()),
                    header.ttl(),
                    ip_ok,
                    sum,
                    IpHeader::V4(header.to_header()),
                )
            }
            Some(NetSlice::Ipv6(ip)) => {
                let header = ip.header();
                let sum = tcp.calc_checksum_ipv6(header.source(), header.destination());
                (
                    IpAddr::from(header.source_addr()),
                    IpAddr::from(header.destination_addr()),
                    header.hop_limit(),
                    true,
                    sum,
                    IpHeader::V6(header.to_header()),
                )
            }
            _ => return Ok(None),
        };
        let expected = expected_tcp_checksum.map_err(|e| anyhow!("TCP checksum: {e}"))?;
        let mut options = Vec::new();
        let mut options_error = None;
        for option in tcp.options_iterator() {
            match option {
                Ok(option) => options.push(option),
                Err(e) => {
                    options_error = Some(format!("{e:?}"));
                    break;
                }
            }
        }
        Ok(Some(Self {
            src_mac: eth.source(),
            dst_mac: eth.destination(),
            vlan: packet.vlan_ids().first().map(|v| v.value()),
            tpids,
            src,
            dst,
            ttl,
            sport: tcp.source_port(),
            dport: tcp.destination_port(),
            seq: tcp.sequence_number(),
            ack: tcp.acknowledgment_number(),
            syn: tcp.syn(),
            ack_flag: tcp.ack(),
            rst: tcp.rst(),
            fin: tcp.fin(),
            window: tcp.window_size(),
            options,
            options_raw: tcp.options().to_vec(),
            options_error,
            ip_checksum_ok,
            tcp_checksum_ok: expected == tcp.checksum(),
            checksum_offloaded: false,
            payload_len: tcp.payload().len(),
            ip_header,
            tcp_header: tcp.to_header(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{L2, OptionStyle, Segment, TcpFrame};

    fn syn(src: &str, dst: &str, vlan: Option<u16>) -> Vec<u8> {
        TcpFrame {
            l2: L2 {
                src_mac: [2, 0, 0, 0, 0, 2],
                dst_mac: [2, 0, 0, 0, 0, 1],
                vlan,
            },
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40_000,
            dport: 8080,
            seq: 1000,
            segment: Segment::Syn {
                style: OptionStyle::Linux,
                tsval: 5,
            },
        }
        .build()
        .unwrap()
    }

    #[test]
    fn crafted_frames_decode_with_good_checksums() {
        for (src, dst, vlan) in [
            ("10.0.0.2", "10.0.0.1", None),
            ("fd00::2", "fd00::1", Some(7)),
        ] {
            let s = TcpSegment::parse(&syn(src, dst, vlan)).unwrap().unwrap();
            assert!(s.ip_checksum_ok && s.tcp_checksum_ok, "{s:?}");
            assert_eq!(
                (s.vlan, s.sport, s.seq, s.syn, s.ack_flag),
                (vlan, 40_000, 1000, true, false)
            );
            assert_eq!(s.mss(), Some(1460));
            assert_eq!(s.timestamps(), Some((5, 0)));
            assert_eq!(s.wscale(), Some(7));
            assert!(s.sack_permitted());
        }
    }

    #[test]
    fn a_corrupted_checksum_is_noticed() {
        let mut frame = syn("10.0.0.2", "10.0.0.1", None);
        let last = frame.len() - 1;
        frame[last] ^= 0xff;
        let s = TcpSegment::parse(&frame).unwrap().unwrap();
        assert!(s.ip_checksum_ok && !s.tcp_checksum_ok);
        frame[14 + 8] ^= 1; // IPv4 TTL
        assert!(!TcpSegment::parse(&frame).unwrap().unwrap().ip_checksum_ok);
    }
}
