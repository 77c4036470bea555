//! Verdict for an ACK to a protected port: the second half of the cookie handshake.
//!
//! ACKs of connections the kernel already knows (established, closing, TIME_WAIT) pass after a
//! socket lookup. Anything else must carry a valid cookie: valid ones go on to nft synproxy,
//! which opens the real connection; the rest (an ACK flood) is dropped here.
use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr, xdp_action},
    helpers::generated::{bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6},
    programs::XdpContext,
};
use synguard_common::Counter;

use crate::{
    parse::{Family, IPV4_HLEN, IPV6_HLEN, TCP_HLEN, TcpPacket, ptr_at},
    socket::kernel_has_socket,
};

#[inline(always)]
pub fn judge_ack(ctx: &XdpContext, pkt: &TcpPacket) -> (u32, Counter) {
    let verdict = match kernel_has_socket(ctx, pkt) {
        Some(true) => Some(Counter::AckEstablished),
        Some(false) => cookie_valid(ctx, pkt).map(|valid| {
            if valid {
                Counter::AckCookieValid
            } else {
                Counter::AckCookieInvalid
            }
        }),
        None => None,
    };
    match verdict {
        Some(Counter::AckCookieInvalid) => (xdp_action::XDP_DROP, Counter::AckCookieInvalid),
        Some(counter) => (xdp_action::XDP_PASS, counter),
        // Parsing already proved these headers are there; stay on the safe side regardless.
        None => (xdp_action::XDP_PASS, Counter::MalformedTcp),
    }
}

/// Checks the cookie in the ACK number against the kernel's secret (the helper undoes the
/// `+1`s of sequence and acknowledgement numbers itself).
#[inline(always)]
fn cookie_valid(ctx: &XdpContext, pkt: &TcpPacket) -> Option<bool> {
    let th = ptr_at::<[u8; TCP_HLEN]>(ctx, pkt.l4_off)? as *mut tcphdr;
    // SAFETY: both pointers are bounds-checked headers of the sizes the helpers read.
    let status = match pkt.family {
        Family::V4 => {
            let ip = ptr_at::<[u8; IPV4_HLEN]>(ctx, pkt.l2_len)?;
            unsafe { bpf_tcp_raw_check_syncookie_ipv4(ip as *mut iphdr, th) }
        }
        Family::V6 => {
            let ip = ptr_at::<[u8; IPV6_HLEN]>(ctx, pkt.l2_len)?;
            unsafe { bpf_tcp_raw_check_syncookie_ipv6(ip as *mut ipv6hdr, th) }
        }
    };
    Some(status == 0)
}
