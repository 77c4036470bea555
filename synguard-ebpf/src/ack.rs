//! Verdict for an ACK to a protected port: the second half of the cookie handshake.
//!
//! ACKs of connections the kernel already knows (established, closing, TIME_WAIT) pass after a
//! socket lookup. Anything else must carry a valid cookie: valid ones go on to nft synproxy,
//! which opens the real connection; the rest (an ACK flood) is dropped here.
use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_TCP_LISTEN, bpf_sock_tuple, iphdr, ipv6hdr, tcphdr, xdp_action,
    },
    cty::c_void,
    helpers::generated::{
        bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_raw_check_syncookie_ipv4,
        bpf_tcp_raw_check_syncookie_ipv6,
    },
    programs::XdpContext,
};
use synguard_common::Counter;

use crate::parse::{Family, IPV4_HLEN, IPV6_HLEN, TCP_HLEN, TcpPacket, ptr_at};

#[inline(always)]
pub fn judge_ack(ctx: &XdpContext, pkt: &TcpPacket) -> (u32, Counter) {
    match check(ctx, pkt) {
        Some(Verdict::Known) => (xdp_action::XDP_PASS, Counter::AckEstablished),
        Some(Verdict::ValidCookie) => (xdp_action::XDP_PASS, Counter::AckCookieValid),
        Some(Verdict::Invalid) => (xdp_action::XDP_DROP, Counter::AckCookieInvalid),
        // Parsing already proved these headers are there; stay on the safe side regardless.
        None => (xdp_action::XDP_PASS, Counter::MalformedTcp),
    }
}

enum Verdict {
    Known,
    ValidCookie,
    Invalid,
}

#[inline(always)]
fn check(ctx: &XdpContext, pkt: &TcpPacket) -> Option<Verdict> {
    // SAFETY: bounds-checked by ptr_at.
    let tcp = unsafe { &*ptr_at::<[u8; TCP_HLEN]>(ctx, pkt.l4_off)? };
    // SAFETY: all zeroes is a valid bpf_sock_tuple (plain integers).
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let sport = u16::from_ne_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_ne_bytes([tcp[2], tcp[3]]);
    let th = tcp as *const [u8; TCP_HLEN] as *mut tcphdr;
    let valid = match pkt.family {
        Family::V4 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV4_HLEN]>(ctx, pkt.l2_len)? };
            // SAFETY: writing plain integers into the union's IPv4 member.
            let t = unsafe { &mut tuple.__bindgen_anon_1.ipv4 };
            t.saddr = word(ip, 12);
            t.daddr = word(ip, 16);
            t.sport = sport;
            t.dport = dport;
            let tuple_size = size_of_val(t) as u32;
            if has_socket(ctx, &mut tuple, tuple_size) {
                return Some(Verdict::Known);
            }
            // SAFETY: both pointers are bounds-checked headers of the sizes the helper reads.
            unsafe { bpf_tcp_raw_check_syncookie_ipv4(ip as *const _ as *mut iphdr, th) == 0 }
        }
        Family::V6 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV6_HLEN]>(ctx, pkt.l2_len)? };
            // SAFETY: writing plain integers into the union's IPv6 member.
            let t = unsafe { &mut tuple.__bindgen_anon_1.ipv6 };
            for i in 0..4 {
                t.saddr[i] = word(ip, 8 + 4 * i);
                t.daddr[i] = word(ip, 24 + 4 * i);
            }
            t.sport = sport;
            t.dport = dport;
            let tuple_size = size_of_val(t) as u32;
            if has_socket(ctx, &mut tuple, tuple_size) {
                return Some(Verdict::Known);
            }
            // SAFETY: as above.
            unsafe { bpf_tcp_raw_check_syncookie_ipv6(ip as *const _ as *mut ipv6hdr, th) == 0 }
        }
    };
    Some(if valid {
        Verdict::ValidCookie
    } else {
        Verdict::Invalid
    })
}

/// Four header bytes as they lie in the packet (network order kept).
#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Whether the kernel has a non-listening socket (established, closing, TIME_WAIT or a request
/// socket) for the segment's 4-tuple in this network namespace.
#[inline(always)]
fn has_socket(ctx: &XdpContext, tuple: &mut bpf_sock_tuple, tuple_size: u32) -> bool {
    // SAFETY: tuple is initialised for tuple_size bytes; a returned socket is released below.
    unsafe {
        let sk = bpf_skc_lookup_tcp(
            ctx.ctx as *mut c_void,
            tuple,
            tuple_size,
            BPF_F_CURRENT_NETNS as i64 as u64,
            0,
        );
        if sk.is_null() {
            return false;
        }
        let state = (*sk).state;
        bpf_sk_release(sk as *mut c_void);
        state != BPF_TCP_LISTEN as u32
    }
}
