//! A segment's 4-tuple as the socket lookup and the peer filter take it. Each reads it from the
//! packet in its own subprogram (a few loads), rather than the dispatcher's frame holding it.
use synguard_common::{TupleWords, V4_MAPPED_WORD};

use crate::parse::{
    Family, IPV4_HLEN, IPV6_HLEN, TCP_HLEN, TcpPacket, bytes_at,
    field::{IPV4_DADDR, IPV4_SADDR, IPV6_DADDR, IPV6_SADDR},
};
use aya_ebpf::programs::XdpContext;

/// The tuple's words; `None` if the headers are not there (parsing proved they are).
#[inline(always)]
pub fn tuple_of(ctx: &XdpContext, pkt: &TcpPacket) -> Option<TupleWords> {
    let tcp = bytes_at::<TCP_HLEN>(ctx, pkt.l4_off)?;
    let mut tuple = TupleWords {
        ports: word(tcp, 0),
        ..TupleWords::default()
    };
    match pkt.family {
        Family::V4 => {
            let ip = bytes_at::<IPV4_HLEN>(ctx, pkt.l2_len)?;
            tuple.src[2] = V4_MAPPED_WORD;
            tuple.src[3] = word(ip, IPV4_SADDR);
            tuple.dst[2] = V4_MAPPED_WORD;
            tuple.dst[3] = word(ip, IPV4_DADDR);
        }
        Family::V6 => {
            let ip = bytes_at::<IPV6_HLEN>(ctx, pkt.l2_len)?;
            for i in 0..4 {
                tuple.src[i] = word(ip, IPV6_SADDR + 4 * i);
                tuple.dst[i] = word(ip, IPV6_DADDR + 4 * i);
            }
        }
    }
    Some(tuple)
}

/// Four header bytes as they lie in the packet (network order kept).
#[inline(always)]
pub fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}
