//! Hand-made TCP frames (SYNs with a chosen option layout, bare ACKs), built with etherparse
//! and sent from the client namespace through an AF_PACKET socket on the client veth.

use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};
use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder, TcpOptionElement};

/// The SYN options a client offers, in a given operating system's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionStyle {
    /// Linux: MSS, SACK_PERM, TS, NOP, WS.
    Linux,
    /// MSS alone.
    MssOnly,
    /// An empty option list.
    NoOptions,
    /// Windows: MSS, NOP, WS, NOP, NOP, SACK_PERM (no timestamps).
    Windows,
    /// MSS, NOP, NOP, TS: timestamps without SACK or window scaling.
    MssTimestamps,
}

impl OptionStyle {
    pub const ALL: [OptionStyle; 5] = [
        OptionStyle::Linux,
        OptionStyle::MssOnly,
        OptionStyle::NoOptions,
        OptionStyle::Windows,
        OptionStyle::MssTimestamps,
    ];

    /// The MSS the crafted SYNs offer.
    pub const CLIENT_MSS: u16 = 1460;
    /// The window scale the crafted SYNs offer.
    pub const CLIENT_WSCALE: u8 = 7;

    /// The option list, with `tsval` as the timestamp value where there is one.
    pub fn options(self, tsval: u32) -> Vec<TcpOptionElement> {
        use TcpOptionElement::{
            MaximumSegmentSize as Mss, Noop, SelectiveAcknowledgementPermitted as SackPerm,
            Timestamp, WindowScale,
        };
        let mss = Mss(Self::CLIENT_MSS);
        let ws = WindowScale(Self::CLIENT_WSCALE);
        match self {
            OptionStyle::Linux => vec![mss, SackPerm, Timestamp(tsval, 0), Noop, ws],
            OptionStyle::MssOnly => vec![mss],
            OptionStyle::NoOptions => vec![],
            OptionStyle::Windows => vec![mss, Noop, ws, Noop, Noop, SackPerm],
            OptionStyle::MssTimestamps => vec![mss, Noop, Noop, Timestamp(tsval, 0)],
        }
    }

    fn has(self, wanted: fn(&TcpOptionElement) -> bool) -> bool {
        self.options(0).iter().any(wanted)
    }

    pub fn offers_timestamps(self) -> bool {
        self.has(|o| matches!(o, TcpOptionElement::Timestamp(..)))
    }

    pub fn offers_sack(self) -> bool {
        self.has(|o| matches!(o, TcpOptionElement::SelectiveAcknowledgementPermitted))
    }

    pub fn offers_wscale(self) -> bool {
        self.has(|o| matches!(o, TcpOptionElement::WindowScale(_)))
    }
}

/// Ethernet addressing of a crafted frame.
#[derive(Clone, Copy, Debug)]
pub struct L2 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// 802.1Q VLAN id to tag the frame with.
    pub vlan: Option<u16>,
}

/// What kind of segment to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A SYN with the given options and timestamp value.
    Syn { style: OptionStyle, tsval: u32 },
    /// A bare ACK acknowledging `ack`.
    Ack { ack: u32 },
}

/// One TCP frame to craft.
#[derive(Clone, Copy, Debug)]
pub struct TcpFrame {
    pub l2: L2,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub segment: Segment,
}

impl TcpFrame {
    const TTL: u8 = 64;
    const WINDOW: u16 = 64_240;

    /// Serialises the frame with correct IP and TCP checksums.
    pub fn build(&self) -> Result<Vec<u8>> {
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => IpHeaders::Ipv4(
                Ipv4Header::new(0, Self::TTL, IpNumber::TCP, src.octets(), dst.octets())?,
                Default::default(),
            ),
            (IpAddr::V6(src), IpAddr::V6(dst)) => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: 0,
                    flow_label: Default::default(),
                    payload_length: 0,
                    next_header: IpNumber::TCP,
                    hop_limit: Self::TTL,
                    source: src.octets(),
                    destination: dst.octets(),
                },
                Default::default(),
            ),
            _ => bail!("mixed address families: {} -> {}", self.src, self.dst),
        };
        let ethernet = PacketBuilder::ethernet2(self.l2.src_mac, self.l2.dst_mac);
        let ip = match self.l2.vlan {
            Some(vid) => ethernet
                .single_vlan(vid.try_into().map_err(|e| anyhow!("VLAN id {vid}: {e}"))?)
                .ip(ip),
            None => ethernet.ip(ip),
        };
        let tcp = ip.tcp(self.sport, self.dport, self.seq, Self::WINDOW);
        let tcp = match self.segment {
            Segment::Syn { style, tsval } => tcp
                .syn()
                .options(&style.options(tsval))
                .map_err(|e| anyhow!("TCP options of {style:?}: {e}"))?,
            Segment::Ack { ack } => tcp.ack(ack),
        };
        let mut frame = Vec::with_capacity(tcp.size(0));
        tcp.write(&mut frame, &[])?;
        Ok(frame)
    }
}

/// A small xorshift generator: crafted floods need cheap, varied numbers, not good ones.
pub struct XorShift(u64);

impl XorShift {
    pub fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Self(nanos | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{SlicedPacket, TransportSlice};

    fn frame(src: IpAddr, dst: IpAddr, vlan: Option<u16>, segment: Segment) -> Vec<u8> {
        TcpFrame {
            l2: L2 {
                src_mac: [2, 0, 0, 0, 0, 2],
                dst_mac: [2, 0, 0, 0, 0, 1],
                vlan,
            },
            src,
            dst,
            sport: 40_000,
            dport: 8080,
            seq: 1000,
            segment,
        }
        .build()
        .unwrap()
    }

    #[test]
    fn option_layouts_have_the_documented_sizes() {
        let sizes: Vec<usize> = OptionStyle::ALL
            .iter()
            .map(|s| {
                let f = frame(
                    "10.0.0.2".parse().unwrap(),
                    "10.0.0.1".parse().unwrap(),
                    None,
                    Segment::Syn {
                        style: *s,
                        tsval: 7,
                    },
                );
                f.len() - 14 - 20 - 20
            })
            .collect();
        assert_eq!(sizes, [20, 4, 0, 12, 16]);
    }

    #[test]
    fn a_tagged_ipv6_syn_parses_back() {
        let f = frame(
            "fd00::2".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            Some(42),
            Segment::Syn {
                style: OptionStyle::Linux,
                tsval: 99,
            },
        );
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert_eq!(p.vlan_ids().first().map(|v| v.value()), Some(42));
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("no TCP")
        };
        assert!(tcp.syn() && !tcp.ack());
        assert!(
            tcp.options_iterator()
                .any(|o| o == Ok(TcpOptionElement::Timestamp(99, 0)))
        );
        assert!(
            OptionStyle::Linux.offers_timestamps() && !OptionStyle::Windows.offers_timestamps()
        );
    }
}
