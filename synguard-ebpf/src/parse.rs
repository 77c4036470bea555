//! Header parsing: Ethernet with up to two VLAN tags, IPv4 (options, fragments), IPv6 (extension
//! headers), TCP. Every read goes through [`bytes_at`] (or [`ptr_at`] for a helper's pointer),
//! whose check proves the bounds to the verifier.
use core::mem::MaybeUninit;

use aya_ebpf::{helpers::generated::bpf_xdp_get_buff_len, programs::XdpContext};
use synguard_common::Counter;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
/// Ethernet header plus two VLAN tags.
pub const MAX_L2_LEN: usize = ETH_HLEN + 2 * VLAN_HLEN;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const TCP_HLEN: usize = 20;
pub const TCP_MAX_HLEN: usize = 60;

/// Offsets of header fields (RFC 791, RFC 8200, RFC 9293), from their header's start.
pub mod field {
    pub const IPV4_TOTAL_LEN: usize = 2;
    pub const IPV4_FLAGS: usize = 6;
    pub const IPV4_TTL: usize = 8;
    pub const IPV4_PROTOCOL: usize = 9;
    pub const IPV4_CHECK: usize = 10;
    pub const IPV4_SADDR: usize = 12;
    pub const IPV4_DADDR: usize = 16;
    pub const IPV6_PAYLOAD_LEN: usize = 4;
    pub const IPV6_NEXT_HEADER: usize = 6;
    pub const IPV6_HOP_LIMIT: usize = 7;
    pub const IPV6_SADDR: usize = 8;
    pub const IPV6_DADDR: usize = 24;
    pub const TCP_SPORT: usize = 0;
    pub const TCP_DPORT: usize = 2;
    pub const TCP_SEQ: usize = 4;
    pub const TCP_ACK_SEQ: usize = 8;
    pub const TCP_DATA_OFFSET: usize = 12;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_CHECK: usize = 16;
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPV4_MF_OFFSET_MASK: u16 = 0x3fff;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers walked before giving up (the packet then goes to the kernel, counted).
const MAX_IPV6_EXT_HEADERS: usize = 4;
/// Keeps every offset far below the verifier's MAX_PACKET_OFF (0xffff).
const MAX_OFFSET: usize = 0x3fff;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// A bounds-checked pointer to a `T` at `offset` bytes into the packet.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    if offset > MAX_OFFSET {
        return None;
    }
    let start = ctx.data();
    if start + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Hides `value`'s range from LLVM so a bound applied after it stays in the bytecode. LLVM can
/// prove a header length is in range from earlier checks and drop or fuse the re-check into a
/// form the verifier cannot follow; the verifier rejects a helper size it cannot bound.
#[inline(always)]
pub fn verifier_visible<T: Copy>(value: T) -> T {
    // SAFETY: reading a local.
    unsafe { core::ptr::read_volatile(&value) }
}

/// The `N` packet bytes at `offset`, if they are in the frame's linear part.
#[inline(always)]
pub fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<&[u8; N]> {
    // SAFETY: bounds-checked by ptr_at; the frame is not resized while `ctx` is borrowed here.
    ptr_at::<[u8; N]>(ctx, offset).map(|bytes| unsafe { &*bytes })
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum Family {
    #[default]
    V4,
    V6,
}

/// Where the headers of a TCP segment start, and the few TCP fields the dispatcher needs.
#[derive(Clone, Copy)]
pub struct TcpPacket {
    pub family: Family,
    /// Ethernet plus VLAN tags: 14, 18 or 22.
    pub l2_len: usize,
    pub l4_off: usize,
    /// TCP header length including options (data offset * 4), 20..=60.
    pub tcp_len: usize,
    pub flags: u8,
    /// Destination port, host order.
    pub dport: u16,
    /// The whole frame, including fragments of a multi-buffer (jumbo) frame.
    pub frame_len: usize,
    /// TCP payload bytes (up to the end of the IP datagram).
    pub payload_len: usize,
}

#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Parses down to the TCP header into `out` (written on `Ok`, so the caller need not zero it). `Err` names the pass counter for everything that
/// is not a complete, unfragmented TCP segment. A subprogram of its own: its temporaries stay
/// out of the dispatcher's frame, which is stacked with the SYN-ACK's (see
/// `synack::answer_syn`); an out-parameter, since BTF cannot describe a niche-packed
/// `Result<TcpPacket, _>`.
#[inline(never)]
pub fn parse_tcp(ctx: &XdpContext, out: &mut MaybeUninit<TcpPacket>) -> Result<(), Counter> {
    out.write(parse(ctx)?);
    Ok(())
}

#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<TcpPacket, Counter> {
    let (l2_len, ethertype) = parse_l2(ctx)?;
    let frame_len = frame_len(ctx);
    let (family, l4_off, l3_end) = match ethertype {
        ETH_P_IP => parse_ipv4(ctx, l2_len, frame_len)?,
        ETH_P_IPV6 => parse_ipv6(ctx, l2_len, frame_len)?,
        _ => return Err(Counter::PassNonIp),
    };
    let tcp = bytes_at::<TCP_HLEN>(ctx, l4_off).ok_or(Counter::MalformedTcp)?;
    let tcp_len = usize::from(tcp[12] >> 4) * 4;
    if tcp_len < TCP_HLEN || l4_off + tcp_len > l3_end {
        return Err(Counter::MalformedTcp);
    }
    Ok(TcpPacket {
        family,
        l2_len,
        l4_off,
        tcp_len,
        flags: tcp[13],
        dport: be16(tcp, 2),
        frame_len,
        payload_len: l3_end - l4_off - tcp_len,
    })
}

/// Length of the whole frame. Headers are read from the linear part (`data..data_end`), but a
/// multi-buffer frame (jumbo MTU, the program is `xdp.frags`) continues in fragments: lengths
/// in the headers are checked against all of it.
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: plain helper call on our own context.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}

/// Returns the L2 header length and the ethertype after the VLAN tags.
#[inline(always)]
fn parse_l2(ctx: &XdpContext) -> Result<(usize, u16), Counter> {
    let eth = bytes_at::<ETH_HLEN>(ctx, 0).ok_or(Counter::MalformedL2)?;
    let mut ethertype = be16(eth, 12);
    let mut l2_len = ETH_HLEN;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // A tag is TCI (2 bytes) then the next ethertype (2 bytes).
        let tag = bytes_at::<VLAN_HLEN>(ctx, l2_len).ok_or(Counter::MalformedL2)?;
        ethertype = be16(tag, 2);
        l2_len += VLAN_HLEN;
    }
    Ok((l2_len, ethertype))
}

/// Returns (family, TCP offset, end of the IP datagram).
#[inline(always)]
fn parse_ipv4(
    ctx: &XdpContext,
    l3_off: usize,
    frame_len: usize,
) -> Result<(Family, usize, usize), Counter> {
    let ip = bytes_at::<IPV4_HLEN>(ctx, l3_off).ok_or(Counter::MalformedIpv4)?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(be16(ip, 2));
    if ip[0] >> 4 != 4 || ihl < IPV4_HLEN || total_len < ihl || l3_off + total_len > frame_len {
        return Err(Counter::MalformedIpv4);
    }
    if be16(ip, 6) & IPV4_MF_OFFSET_MASK != 0 {
        return Err(Counter::PassFragment);
    }
    if ip[9] != IPPROTO_TCP {
        return Err(Counter::PassNonTcp);
    }
    Ok((Family::V4, l3_off + ihl, l3_off + total_len))
}

/// Walks hop-by-hop, routing and destination-options headers (bounded) to the TCP header.
#[inline(always)]
fn parse_ipv6(
    ctx: &XdpContext,
    l3_off: usize,
    frame_len: usize,
) -> Result<(Family, usize, usize), Counter> {
    let ip = bytes_at::<IPV6_HLEN>(ctx, l3_off).ok_or(Counter::MalformedIpv6)?;
    let end = l3_off + IPV6_HLEN + usize::from(be16(ip, 4));
    if ip[0] >> 4 != 6 || end > frame_len {
        return Err(Counter::MalformedIpv6);
    }
    let mut next = ip[6];
    let mut off = l3_off + IPV6_HLEN;
    for walked in 0..=MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_TCP => return Ok((Family::V6, off, end)),
            NEXTHDR_FRAGMENT => return Err(Counter::PassFragment),
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST if walked < MAX_IPV6_EXT_HEADERS => {
                // Next header (1 byte), then length in 8-byte units not counting the first 8.
                let ext = bytes_at::<2>(ctx, off).ok_or(Counter::MalformedIpv6)?;
                next = ext[0];
                off += (usize::from(ext[1]) + 1) * 8;
            }
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => break,
            _ => return Err(Counter::PassNonTcp),
        }
    }
    Err(Counter::MalformedIpv6)
}
