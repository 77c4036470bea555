//! Verdict for an ACK to a protected port: the second half of a handshake.
//!
//! ACKs of connections the kernel already knows pass after a socket lookup; one that meets a
//! request socket completes a kernel handshake (accounted for `auto` mode and the source).
//! Anything else must carry a valid cookie: valid ones go on to nft synproxy, which opens the
//! real connection; the rest (an ACK flood) is dropped here, or only counted in mode `off`.
use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr, xdp_action},
    helpers::generated::{bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6},
    programs::XdpContext,
};
use synguard_common::{Counter, DatapathConfig, SyncookieMode};

use crate::{
    counters::count,
    load::{self, Event},
    parse::{Family, IPV4_HLEN, IPV6_HLEN, TCP_HLEN, TcpPacket, ptr_at},
    socket::{KernelSocket, kernel_socket},
    sources::Source,
};

#[inline(always)]
pub fn judge_ack(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig) -> (u32, Counter) {
    const PASS: u32 = xdp_action::XDP_PASS;
    const DROP: u32 = xdp_action::XDP_DROP;
    match kernel_socket(ctx, pkt) {
        Some(KernelSocket::Connection) => (PASS, Counter::AckEstablished),
        Some(KernelSocket::Request) => {
            load::record(pkt.dport, Event::HandshakeCompleted);
            if let Some(source) = Source::of(ctx, pkt, cfg) {
                source.completed();
            }
            (PASS, Counter::AckEstablished)
        }
        Some(KernelSocket::None) => {
            let enforce = cfg.syncookies != SyncookieMode::Off as u8;
            let source = Source::of(ctx, pkt, cfg);
            if enforce && source.as_ref().is_some_and(Source::blocked) {
                return (DROP, Counter::DropSourceBlocked);
            }
            match cookie_valid(ctx, pkt) {
                Some(true) => {
                    load::record(pkt.dport, Event::CookieValidated);
                    if let Some(source) = &source {
                        source.completed();
                    }
                    (PASS, Counter::AckCookieValid)
                }
                Some(false) => {
                    if let Some(source) = &source
                        && source.invalid_ack(cfg)
                        && enforce
                    {
                        source.block(cfg);
                        count(Counter::SourceBlocks);
                    }
                    if enforce {
                        (DROP, Counter::AckCookieInvalid)
                    } else {
                        (PASS, Counter::AckInvalidPassed)
                    }
                }
                None => (PASS, Counter::MalformedTcp),
            }
        }
        // Parsing already proved these headers are there; stay on the safe side regardless.
        None => (PASS, Counter::MalformedTcp),
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
