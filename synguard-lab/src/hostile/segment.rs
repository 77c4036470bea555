//! The model's own reading of a frame, written from the protocol specifications and not from
//! the eBPF parser: Ethernet with VLAN tags, IPv4 or IPv6 with extension headers, the TCP
//! header, and the options a SYN offers.

use etherparse::checksum::Sum16BitWords;
use synguard_common::Counter;

use super::frame::Family;
use super::model::{Addrs, Tuple};

/// The TCP header of a frame the program parses down to TCP.
pub(super) struct Segment<'a> {
    pub(super) family: Family,
    /// Offset of the IP header (length of Ethernet header and VLAN tags).
    pub(super) l3: usize,
    pub(super) tuple: Tuple,
    /// The IPv4 header with its options, or the fixed IPv6 header.
    pub(super) ip_header: &'a [u8],
    /// The TCP header with its options.
    pub(super) tcp: &'a [u8],
    /// The TCP header and payload, up to the end of the IP datagram.
    pub(super) tcp_segment: &'a [u8],
    /// TCP payload bytes, up to the end of the IP datagram.
    pub(super) payload_len: usize,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const VLAN_TPIDS: [u16; 2] = [0x8100, 0x88a8];
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXT_HEADERS: usize = 4;

impl<'a> Segment<'a> {
    /// Spec items a-d: Ethernet, VLAN tags, IPv4 or IPv6, TCP header; `Err` names the pass
    /// counter of a frame that is not a whole, unfragmented TCP header.
    pub(super) fn find(frame: &'a [u8]) -> Result<Self, Counter> {
        let mut ethertype = be16(frame.get(..14).ok_or(Counter::MalformedL2)?, 12);
        let mut l3 = 14;
        let mut tags = 0;
        while VLAN_TPIDS.contains(&ethertype) && tags < MAX_VLAN_TAGS {
            let tag = frame.get(l3..l3 + 4).ok_or(Counter::MalformedL2)?;
            ethertype = be16(tag, 2);
            l3 += 4;
            tags += 1;
        }
        match ethertype {
            ETHERTYPE_IPV4 => Self::ipv4(frame, l3),
            ETHERTYPE_IPV6 => Self::ipv6(frame, l3),
            _ => Err(Counter::PassNonIp),
        }
    }

    pub(super) fn ipv4(frame: &'a [u8], l3: usize) -> Result<Self, Counter> {
        let ip = frame.get(l3..l3 + 20).ok_or(Counter::MalformedIpv4)?;
        let header_len = usize::from(ip[0] & 0x0f) * 4;
        let total_len = usize::from(be16(ip, 2));
        if ip[0] >> 4 != 4 || header_len < 20 || total_len < header_len {
            return Err(Counter::MalformedIpv4);
        }
        if l3 + total_len > frame.len() {
            return Err(Counter::MalformedIpv4);
        }
        let more_fragments = ip[6] & 0x20 != 0;
        let fragment_offset = be16(ip, 6) & 0x1fff;
        if more_fragments || fragment_offset != 0 {
            return Err(Counter::PassFragment);
        }
        if ip[9] != 6 {
            return Err(Counter::PassNonTcp);
        }
        let addrs = Addrs::V4 {
            src: ip[12..16].try_into().unwrap(),
            dst: ip[16..20].try_into().unwrap(),
        };
        Self::tcp(
            frame,
            (Family::V4, l3, &frame[l3..l3 + header_len]),
            addrs,
            l3 + header_len,
            l3 + total_len,
        )
    }

    pub(super) fn ipv6(frame: &'a [u8], l3: usize) -> Result<Self, Counter> {
        let ip = frame.get(l3..l3 + 40).ok_or(Counter::MalformedIpv6)?;
        let end = l3 + 40 + usize::from(be16(ip, 4));
        if ip[0] >> 4 != 6 || end > frame.len() {
            return Err(Counter::MalformedIpv6);
        }
        let mut next = ip[6];
        let mut offset = l3 + 40;
        let mut walked = 0;
        while next != 6 {
            match next {
                44 => return Err(Counter::PassFragment),
                0 | 43 | 60 if walked == MAX_IPV6_EXT_HEADERS => {
                    return Err(Counter::MalformedIpv6);
                }
                0 | 43 | 60 => {
                    let ext = frame
                        .get(offset..offset + 2)
                        .ok_or(Counter::MalformedIpv6)?;
                    next = ext[0];
                    offset += (usize::from(ext[1]) + 1) * 8;
                    walked += 1;
                }
                _ => return Err(Counter::PassNonTcp),
            }
        }
        let addrs = Addrs::V6 {
            src: ip[8..24].try_into().unwrap(),
            dst: ip[24..40].try_into().unwrap(),
        };
        Self::tcp(frame, (Family::V6, l3, ip), addrs, offset, end)
    }

    /// `ip`: family, offset and header of the IP header.
    pub(super) fn tcp(
        frame: &'a [u8],
        (family, l3, ip_header): (Family, usize, &'a [u8]),
        addrs: Addrs,
        offset: usize,
        end: usize,
    ) -> Result<Self, Counter> {
        let fixed = frame
            .get(offset..offset + 20)
            .ok_or(Counter::MalformedTcp)?;
        let header_len = usize::from(fixed[12] >> 4) * 4;
        if header_len < 20 || offset + header_len > end {
            return Err(Counter::MalformedTcp);
        }
        Ok(Self {
            family,
            l3,
            tuple: Tuple {
                addrs,
                sport: be16(fixed, 0),
                dport: be16(fixed, 2),
            },
            ip_header,
            tcp: &frame[offset..offset + header_len],
            tcp_segment: &frame[offset..end],
            payload_len: end - offset - header_len,
        })
    }

    /// What the kernel checks before it answers a SYN: the IPv4 header checksum (over IHL * 4
    /// bytes; IPv6 has none) and the TCP checksum over pseudo header, TCP header and payload.
    /// A TCP checksum field holding the pseudo-header sum alone is what a local sender with
    /// checksum offload sends (CHECKSUM_PARTIAL, which the kernel trusts); the program cannot
    /// tell the two apart, so it is accepted as well.
    pub(super) fn checksums_ok(&self) -> bool {
        let addrs = match self.family {
            Family::V4 => &self.ip_header[12..20],
            Family::V6 => &self.ip_header[8..40],
        };
        let ip_ok = self.family == Family::V6
            || Sum16BitWords::new()
                .add_slice(self.ip_header)
                .ones_complement()
                == 0;
        let pseudo = Sum16BitWords::new()
            .add_slice(addrs)
            .add_2bytes([0, 6])
            .add_2bytes((self.tcp_segment.len() as u16).to_be_bytes());
        let tcp_ok = pseudo.clone().add_slice(self.tcp_segment).ones_complement() == 0;
        let field = [self.tcp[16], self.tcp[17]];
        let offloaded = field == (!pseudo.ones_complement()).to_ne_bytes();
        ip_ok && (tcp_ok || offloaded)
    }
}

/// What a SYN's options offer, read like the kernel's `tcp_parse_options`: the scan stops at
/// EOL, or at an option whose length is < 2 or runs past the header (a fault).
#[derive(Default)]
pub(super) struct Offered {
    /// Last non-zero MSS (kind 2, length 4).
    pub(super) mss: Option<u16>,
    /// Last window scale (kind 3, length 3), clamped to 14.
    pub(super) wscale: Option<u8>,
    /// SACK permitted (kind 4, length 2).
    pub(super) sack: bool,
    /// Last TSval (kind 8, length 10).
    pub(super) timestamp: Option<u32>,
    pub(super) fault: bool,
}

impl Offered {
    pub(super) fn parse(mut rest: &[u8]) -> Self {
        let mut offered = Self::default();
        loop {
            match rest {
                [] | [0, ..] => break,
                [1, tail @ ..] => rest = tail,
                [kind, len, ..] if *len >= 2 && usize::from(*len) <= rest.len() => {
                    let (option, tail) = rest.split_at(usize::from(*len));
                    offered.note(*kind, &option[2..]);
                    rest = tail;
                }
                _ => {
                    offered.fault = true;
                    break;
                }
            }
        }
        offered
    }

    pub(super) fn note(&mut self, kind: u8, body: &[u8]) {
        match (kind, body) {
            (2, &[hi, lo]) if u16::from_be_bytes([hi, lo]) != 0 => {
                self.mss = Some(u16::from_be_bytes([hi, lo]));
            }
            (3, &[shift]) => self.wscale = Some(shift.min(14)),
            (4, []) => self.sack = true,
            (8, &[a, b, c, d, _, _, _, _]) => {
                self.timestamp = Some(u32::from_be_bytes([a, b, c, d]))
            }
            _ => {}
        }
    }
}

pub(super) fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

pub(super) fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}
