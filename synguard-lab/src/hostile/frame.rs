//! Frames built field by field, lies included: every length, offset, version and checksum can
//! be overridden, so the same description yields a valid SYN or any of its hostile variants.
//!
//! Checksums are the ones a correct sender would write for the lengths the headers declare
//! (so a lying length stays the frame's only lie): the IPv4 header checksum over IHL * 4
//! bytes, the TCP checksum over the TCP segment up to the declared end of the datagram.

use std::net::IpAddr;

use etherparse::checksum::Sum16BitWords;

use crate::capture::TcpSegment;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

pub const IPPROTO_TCP: u8 = 6;
pub const EXT_HOP_BY_HOP: u8 = 0;
pub const EXT_ROUTING: u8 = 43;
pub const EXT_FRAGMENT: u8 = 44;
pub const EXT_DEST_OPTS: u8 = 60;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0x1e, 0x47, 0x00, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0x5e, 0x7e, 0x40, 0x00, 0x02];
const VLAN_TCI: u16 = 100;
// Documentation prefixes (RFC 5737, RFC 3849): no socket on this host can match them, so
// an ACK is always judged by its cookie.
const CLIENT_V4: [u8; 4] = [192, 0, 2, 1];
const SERVER_V4: [u8; 4] = [198, 51, 100, 7];
const CLIENT_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const SERVER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// One Ethernet frame carrying (normally) a TCP segment.
#[derive(Clone, Debug)]
pub struct Spec {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// TPIDs of the VLAN tags, outermost first.
    pub tags: Vec<u16>,
    /// The ethertype after the tags; `None`: the one of the IP version.
    pub ethertype: Option<u16>,
    pub ip: Ip,
    pub tcp: Tcp,
    /// Bytes after the IP datagram (Ethernet padding).
    pub padding: usize,
    /// Truncate the frame to this many bytes.
    pub cut: Option<usize>,
}

#[derive(Clone, Debug)]
pub enum Ip {
    V4(V4),
    V6(V6),
}

#[derive(Clone, Debug)]
pub struct V4 {
    pub version: u8,
    /// Header length field in 32-bit words; `None`: the real one.
    pub ihl: Option<u8>,
    /// `None`: header, TCP segment and payload.
    pub total_len: Option<u16>,
    /// Flags and fragment offset (MF = 0x2000, DF = 0x4000).
    pub frag: u16,
    pub protocol: u8,
    /// Header checksum; `None`: the right one.
    pub check: Option<u16>,
    /// Option bytes, zero-padded to a multiple of 4.
    pub options: Vec<u8>,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

#[derive(Clone, Debug)]
pub struct V6 {
    pub version: u8,
    /// `None`: extension headers, TCP segment and payload.
    pub payload_len: Option<u16>,
    pub ext: Vec<Ext>,
    /// Next header after the extension headers.
    pub upper: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// An IPv6 extension header of `(units + 1) * 8` bytes: next header, length, zeros.
#[derive(Clone, Copy, Debug)]
pub struct Ext {
    pub kind: u8,
    pub units: u8,
}

#[derive(Clone, Debug)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Data offset field in 32-bit words; `None`: the real one.
    pub data_offset: Option<u8>,
    /// Checksum field; `None`: the right one.
    pub check: Option<u16>,
    /// Option bytes, zero-padded (EOL) to a multiple of 4.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Where the headers of a built frame start (before any cut).
#[derive(Clone, Debug)]
pub struct Layout {
    pub l3: usize,
    /// End of each IPv6 extension header.
    pub ext_ends: Vec<usize>,
    pub l4: usize,
    /// End of the TCP header with its options.
    pub tcp_end: usize,
    /// End of the IP datagram.
    pub end: usize,
}

impl Spec {
    /// A SYN from the client to `dport` with the given TCP options.
    pub fn syn(family: Family, tags: &[u16], dport: u16, options: &[u8]) -> Self {
        let ip = match family {
            Family::V4 => Ip::V4(V4 {
                version: 4,
                ihl: None,
                total_len: None,
                frag: 0x4000,
                protocol: IPPROTO_TCP,
                check: None,
                options: Vec::new(),
                src: CLIENT_V4,
                dst: SERVER_V4,
            }),
            Family::V6 => Ip::V6(V6 {
                version: 6,
                payload_len: None,
                ext: Vec::new(),
                upper: IPPROTO_TCP,
                src: CLIENT_V6,
                dst: SERVER_V6,
            }),
        };
        Self {
            dst_mac: SERVER_MAC,
            src_mac: CLIENT_MAC,
            tags: tags.to_vec(),
            ethertype: None,
            ip,
            tcp: Tcp {
                sport: 40_000,
                dport,
                seq: 0x1000_0000,
                ack: 0,
                flags: SYN,
                window: 64_240,
                data_offset: None,
                check: None,
                options: options.to_vec(),
                payload: Vec::new(),
            },
            padding: 0,
            cut: None,
        }
    }

    /// Puts a real link's MAC addresses in place of the built-in ones, keeping an address an
    /// edit chose on purpose (a broadcast destination), so that the frame can cross that link.
    pub fn on_link(&mut self, client_mac: [u8; 6], server_mac: [u8; 6]) {
        if self.src_mac == CLIENT_MAC {
            self.src_mac = client_mac;
        }
        if self.dst_mac == SERVER_MAC {
            self.dst_mac = server_mac;
        }
    }

    /// The ACK a client sends for `synack`: seq = the SYN-ACK's ack, ack = its sequence number
    /// (the cookie) + 1, the same VLAN tags, MAC and IP addresses and ports mirrored, no
    /// options.
    pub fn ack_for(synack: &TcpSegment) -> Self {
        let family = match synack.dst {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        };
        let mut ack = Self::syn(family, &synack.tpids, synack.sport, &[]);
        ack.dst_mac = synack.src_mac;
        ack.src_mac = synack.dst_mac;
        match (&mut ack.ip, synack.dst, synack.src) {
            (Ip::V4(ip), IpAddr::V4(src), IpAddr::V4(dst)) => {
                ip.src = src.octets();
                ip.dst = dst.octets();
            }
            (Ip::V6(ip), IpAddr::V6(src), IpAddr::V6(dst)) => {
                ip.src = src.octets();
                ip.dst = dst.octets();
            }
            _ => panic!("a SYN-ACK from {} to {}", synack.src, synack.dst),
        }
        ack.tcp.sport = synack.dport;
        ack.tcp.seq = synack.ack;
        ack.tcp.ack = synack.seq.wrapping_add(1);
        ack.tcp.flags = ACK;
        ack
    }

    pub fn v4(&mut self) -> Option<&mut V4> {
        match &mut self.ip {
            Ip::V4(v4) => Some(v4),
            Ip::V6(_) => None,
        }
    }

    pub fn v6(&mut self) -> Option<&mut V6> {
        match &mut self.ip {
            Ip::V6(v6) => Some(v6),
            Ip::V4(_) => None,
        }
    }

    pub fn layout(&self) -> Layout {
        let l3 = ETH_HLEN + VLAN_HLEN * self.tags.len();
        let mut ext_ends = Vec::new();
        let l4 = match &self.ip {
            Ip::V4(v4) => l3 + 20 + padded(&v4.options).len(),
            Ip::V6(v6) => {
                let mut end = l3 + 40;
                for ext in &v6.ext {
                    end += ext.len();
                    ext_ends.push(end);
                }
                end
            }
        };
        let tcp_end = l4 + 20 + padded(&self.tcp.options).len();
        Layout {
            l3,
            ext_ends,
            l4,
            tcp_end,
            end: tcp_end + self.tcp.payload.len(),
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(self.layout().end + self.padding);
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        let ethertype = self.ethertype.unwrap_or(match self.ip {
            Ip::V4(_) => ETHERTYPE_IPV4,
            Ip::V6(_) => ETHERTYPE_IPV6,
        });
        // Each tag is TCI then the next type; the Ethernet type field holds the first TPID.
        let types: Vec<u16> = self.tags.iter().copied().chain([ethertype]).collect();
        frame.extend_from_slice(&types[0].to_be_bytes());
        for next in &types[1..] {
            frame.extend_from_slice(&VLAN_TCI.to_be_bytes());
            frame.extend_from_slice(&next.to_be_bytes());
        }
        let segment = self.tcp.build();
        match &self.ip {
            Ip::V4(v4) => v4.build(&mut frame, &segment),
            Ip::V6(v6) => v6.build(&mut frame, &segment),
        }
        self.write_checksums(&mut frame);
        frame.resize(frame.len() + self.padding, 0);
        if let Some(cut) = self.cut {
            frame.truncate(cut);
        }
        frame
    }
}

impl Spec {
    /// The TCP checksum field of the built frame.
    pub fn tcp_check(&self) -> u16 {
        let frame = self.build();
        let at = self.layout().l4 + 16;
        u16::from_be_bytes([frame[at], frame[at + 1]])
    }

    /// The IPv4 header checksum field of the built frame (0 for IPv6).
    pub fn ip_check(&self) -> u16 {
        let frame = self.build();
        let at = self.layout().l3 + 10;
        match self.ip {
            Ip::V4(_) => u16::from_be_bytes([frame[at], frame[at + 1]]),
            Ip::V6(_) => 0,
        }
    }

    /// What a sender with checksum offload (a veth peer, a container) leaves in the TCP
    /// checksum field: the pseudo-header sum, folded, not complemented.
    pub fn offloaded_tcp_check(&self) -> u16 {
        let frame = self.build();
        let (pseudo, _) = self.tcp_pseudo_header(&frame);
        !u16::from_be_bytes(pseudo.ones_complement().to_ne_bytes())
    }

    /// The sum of the TCP pseudo header (addresses, protocol, TCP length) for the lengths the
    /// IP header declares, and the end of the TCP segment they give.
    fn tcp_pseudo_header(&self, frame: &[u8]) -> (Sum16BitWords, usize) {
        let l3 = self.layout().l3;
        let field = |at: usize| usize::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
        let (addrs, end) = match &self.ip {
            Ip::V4(v4) => ([&v4.src[..], &v4.dst[..]].concat(), l3 + field(l3 + 2)),
            Ip::V6(v6) => ([&v6.src[..], &v6.dst[..]].concat(), l3 + 40 + field(l3 + 4)),
        };
        let end = end.min(frame.len());
        let tcp_len = end.saturating_sub(self.layout().l4) as u16;
        let sum = Sum16BitWords::new()
            .add_slice(&addrs)
            .add_2bytes([0, IPPROTO_TCP])
            .add_2bytes(tcp_len.to_be_bytes());
        (sum, end)
    }

    /// Fills the TCP checksum, then the IPv4 header checksum (whose bytes may, with a lying
    /// IHL, cover the TCP header), each unless overridden.
    fn write_checksums(&self, frame: &mut [u8]) {
        let layout = self.layout();
        let (pseudo, tcp_end) = self.tcp_pseudo_header(frame);
        if tcp_end >= layout.l4 + 18 {
            let check = self.tcp.check.unwrap_or_else(|| {
                let sum = pseudo.add_slice(&frame[layout.l4..tcp_end]);
                u16::from_be_bytes(sum.ones_complement().to_ne_bytes())
            });
            frame[layout.l4 + 16..layout.l4 + 18].copy_from_slice(&check.to_be_bytes());
        }
        if let Ip::V4(v4) = &self.ip {
            let ihl = usize::from(frame[layout.l3] & 0x0f) * 4;
            let header_end = (layout.l3 + ihl).min(frame.len());
            if header_end >= layout.l3 + 12 {
                let check = v4.check.unwrap_or_else(|| {
                    let sum = Sum16BitWords::new().add_slice(&frame[layout.l3..header_end]);
                    u16::from_be_bytes(sum.ones_complement().to_ne_bytes())
                });
                frame[layout.l3 + 10..layout.l3 + 12].copy_from_slice(&check.to_be_bytes());
            }
        }
    }
}

impl V4 {
    fn build(&self, frame: &mut Vec<u8>, segment: &[u8]) {
        let options = padded(&self.options);
        let real_ihl = 5 + options.len() / 4;
        let ihl = self.ihl.unwrap_or(real_ihl as u8);
        let total_len = self
            .total_len
            .unwrap_or((real_ihl * 4 + segment.len()) as u16);
        frame.extend_from_slice(&[(self.version << 4) | (ihl & 0x0f), 0]);
        frame.extend_from_slice(&total_len.to_be_bytes());
        frame.extend_from_slice(&0x1234u16.to_be_bytes());
        frame.extend_from_slice(&self.frag.to_be_bytes());
        frame.extend_from_slice(&[64, self.protocol, 0, 0]);
        frame.extend_from_slice(&self.src);
        frame.extend_from_slice(&self.dst);
        frame.extend_from_slice(&options);
        frame.extend_from_slice(segment);
    }
}

impl V6 {
    fn build(&self, frame: &mut Vec<u8>, segment: &[u8]) {
        let ext_len: usize = self.ext.iter().map(Ext::len).sum();
        let payload_len = self.payload_len.unwrap_or((ext_len + segment.len()) as u16);
        let mut chain = self.ext.iter().map(|e| e.kind).chain([self.upper]);
        frame.extend_from_slice(&[self.version << 4, 0, 0, 0]);
        frame.extend_from_slice(&payload_len.to_be_bytes());
        frame.extend_from_slice(&[chain.next().unwrap_or(self.upper), 64]);
        frame.extend_from_slice(&self.src);
        frame.extend_from_slice(&self.dst);
        for (ext, next) in self.ext.iter().zip(chain) {
            let start = frame.len();
            frame.resize(start + ext.len(), 0);
            frame[start] = next;
            frame[start + 1] = ext.units;
        }
        frame.extend_from_slice(segment);
    }
}

impl Ext {
    pub const fn new(kind: u8, units: u8) -> Self {
        Self { kind, units }
    }

    fn len(&self) -> usize {
        (usize::from(self.units) + 1) * 8
    }
}

impl Tcp {
    fn build(&self) -> Vec<u8> {
        let options = padded(&self.options);
        let data_offset = self.data_offset.unwrap_or((5 + options.len() / 4) as u8);
        let mut segment = Vec::with_capacity(20 + options.len() + self.payload.len());
        segment.extend_from_slice(&self.sport.to_be_bytes());
        segment.extend_from_slice(&self.dport.to_be_bytes());
        segment.extend_from_slice(&self.seq.to_be_bytes());
        segment.extend_from_slice(&self.ack.to_be_bytes());
        segment.extend_from_slice(&[data_offset << 4, self.flags]);
        segment.extend_from_slice(&self.window.to_be_bytes());
        segment.extend_from_slice(&[0; 4]); // checksum, urgent pointer
        segment.extend_from_slice(&options);
        segment.extend_from_slice(&self.payload);
        segment
    }
}

fn padded(options: &[u8]) -> Vec<u8> {
    let mut bytes = options.to_vec();
    bytes.resize(options.len().next_multiple_of(4), 0);
    bytes
}

/// TCP option bytes, to be concatenated into [`Tcp::options`].
pub mod opt {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const SACK_PERM: [u8; 2] = [4, 2];

    pub fn mss(value: u16) -> Vec<u8> {
        let [hi, lo] = value.to_be_bytes();
        vec![2, 4, hi, lo]
    }

    pub fn wscale(shift: u8) -> Vec<u8> {
        vec![3, 3, shift]
    }

    pub fn timestamp(value: u32, echo: u32) -> Vec<u8> {
        [&[8u8, 10][..], &value.to_be_bytes(), &echo.to_be_bytes()].concat()
    }

    /// What Linux sends in a SYN: MSS, SACK-perm, timestamps, NOP, window scale 7.
    pub fn linux(mss_value: u16) -> Vec<u8> {
        [
            mss(mss_value),
            SACK_PERM.to_vec(),
            timestamp(0x0102_0304, 0),
            vec![NOP],
            wscale(7),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_carry_right_checksums_unless_told_otherwise() {
        for family in [Family::V4, Family::V6] {
            let mut spec = Spec::syn(family, &[TPID_8021Q], 8080, &opt::linux(1460));
            spec.tcp.payload = vec![0x5a; 101];
            spec.padding = 7;
            let segment = TcpSegment::parse(&spec.build()).unwrap().unwrap();
            assert!(segment.checksums_ok(), "{family:?}: {segment:?}");

            let mut wrong = spec.clone();
            wrong.tcp.check = Some(spec.tcp_check() ^ 1);
            let segment = TcpSegment::parse(&wrong.build()).unwrap().unwrap();
            assert!(
                segment.ip_checksum_ok && !segment.tcp_checksum_ok,
                "{family:?}"
            );
            if let Some(ip) = wrong.v4() {
                ip.check = Some(0);
                let segment = TcpSegment::parse(&wrong.build()).unwrap().unwrap();
                assert!(!segment.ip_checksum_ok);
            }
        }
    }

    #[test]
    fn the_offloaded_checksum_completes_to_the_right_one() {
        // The right checksum is the complement of the pseudo-header sum plus the segment.
        let spec = Spec::syn(Family::V4, &[], 8080, &[]);
        let frame = spec.build();
        let l4 = spec.layout().l4;
        let mut segment = frame[l4..].to_vec();
        segment[16..18].copy_from_slice(&[0, 0]);
        let sum = Sum16BitWords::new()
            .add_2bytes(spec.offloaded_tcp_check().to_be_bytes())
            .add_slice(&segment)
            .ones_complement();
        assert_eq!(sum.to_ne_bytes(), spec.tcp_check().to_be_bytes());
    }

    #[test]
    fn the_ack_for_a_syn_ack_mirrors_it() {
        for (family, tags) in [
            (Family::V4, &[][..]),
            (Family::V6, &[TPID_8021AD, TPID_8021Q][..]),
        ] {
            // A SYN-ACK as the server sends it: the client's SYN with ends swapped.
            let mut synack = Spec::syn(family, tags, 8080, &opt::mss(1460));
            (synack.src_mac, synack.dst_mac) = (synack.dst_mac, synack.src_mac);
            match &mut synack.ip {
                Ip::V4(ip) => (ip.src, ip.dst) = (ip.dst, ip.src),
                Ip::V6(ip) => (ip.src, ip.dst) = (ip.dst, ip.src),
            }
            (synack.tcp.sport, synack.tcp.dport) = (8080, 40_000);
            (synack.tcp.seq, synack.tcp.ack) = (0xc00c_1e00, 0x1000_0001);
            synack.tcp.flags = SYN | ACK;
            let segment = TcpSegment::parse(&synack.build()).unwrap().unwrap();
            assert_eq!(segment.tpids, tags, "{family:?}");

            let mut want = Spec::syn(family, tags, 8080, &[]);
            (want.tcp.seq, want.tcp.ack, want.tcp.flags) = (0x1000_0001, 0xc00c_1e01, ACK);
            assert_eq!(Spec::ack_for(&segment).build(), want.build(), "{family:?}");
        }
    }
}
