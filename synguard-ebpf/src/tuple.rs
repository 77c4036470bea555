//! A segment's 4-tuple as the socket lookup and the peer filter take it. Each reads it from the
//! packet in its own subprogram (a few loads), rather than the dispatcher's frame holding it.
use synguard_common::{TupleWords, V4_MAPPED_WORD};

use crate::parse::{Family, IPV4_HLEN, IPV6_HLEN, TCP_HLEN, TcpPacket, ptr_at};
use aya_ebpf::programs::XdpContext;

/// The tuple's words; `None` if the headers are not there (parsing proved they are).
#[inline(always)]
pub fn tuple_of(ctx: &XdpContext, pkt: &TcpPacket) -> Option<TupleWords> {
    // SAFETY: bounds-checked by ptr_at.
    let tcp = unsafe { &*ptr_at::<[u8; TCP_HLEN]>(ctx, pkt.l4_off)? };
    let mut tuple = TupleWords {
        ports: word(tcp, 0),
        ..TupleWords::default()
    };
    match pkt.family {
        Family::V4 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV4_HLEN]>(ctx, pkt.l2_len)? };
            tuple.src[2] = V4_MAPPED_WORD;
            tuple.src[3] = word(ip, 12);
            tuple.dst[2] = V4_MAPPED_WORD;
            tuple.dst[3] = word(ip, 16);
        }
        Family::V6 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV6_HLEN]>(ctx, pkt.l2_len)? };
            for i in 0..4 {
                tuple.src[i] = word(ip, 8 + 4 * i);
                tuple.dst[i] = word(ip, 24 + 4 * i);
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
