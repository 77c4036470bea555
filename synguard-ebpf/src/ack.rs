//! Verdict for an ACK to a protected port: the second half of a handshake.
//!
//! ACKs of connections the kernel already knows pass after a socket lookup; one that meets a
//! request socket completes a kernel handshake (accounted for `auto` mode and the source).
//! Anything else must carry a valid cookie: valid ones go on to nft synproxy, which opens the
//! real connection; the rest (an ACK flood) is dropped here, or only counted in mode `off`.
//!
//! A lost handshake ACK needs care. Our SYN-ACK announces window 0 (as synproxy's does), so a
//! client whose ACK was lost sends no data, only zero-window probes with `seq = ISN`, one less
//! than the handshake ACK: the cookie check reads the MSS index from `ack - seq` and fails
//! (index 3, MSS 1460 and up). Dropping them stalled the connection until the client gave up
//! (measured under a 130k SYN/s flood that made the veth drop ACKs). Such a probe is rewritten
//! into the handshake ACK it stands for, so synproxy opens the connection.
use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr},
    helpers::generated::{bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6},
    programs::XdpContext,
};
use synguard_common::{Counter, DatapathConfig, SyncookieMode};

use crate::{
    counters::count,
    csum,
    parse::{
        Family, IPV4_HLEN, IPV6_HLEN, TCP_ACK, TCP_FIN, TCP_HLEN, TCP_RST, TCP_SYN, TcpPacket,
        field::{TCP_CHECK, TCP_SEQ},
        ptr_at,
    },
    peers,
    port_load::{self, Event},
    socket::{KernelSocket, kernel_socket},
    sources,
    verdict::Verdict,
    verify,
};

/// A subprogram of its own: its locals stay out of the dispatcher's frame, which the SYN-ACK's
/// frame is stacked on (see `synack::answer_syn`).
#[inline(never)]
pub fn judge_ack(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig, now: u64) -> Verdict {
    match kernel_socket(ctx, pkt) {
        Some(KernelSocket::Connection) => {
            peers::remember(ctx, pkt, cfg.hash_seed, now);
            Verdict::pass(Counter::AckEstablished)
        }
        Some(KernelSocket::Request) => {
            peers::remember(ctx, pkt, cfg.hash_seed, now);
            port_load::record(pkt.dport, Event::HandshakeCompleted);
            if let Some(source) = sources::tracked(ctx, pkt, cfg, now) {
                source.completed();
            }
            Verdict::pass(Counter::AckEstablished)
        }
        Some(KernelSocket::None) => {
            let enforce = cfg.syncookies != SyncookieMode::Off as u8;
            let source = sources::tracked(ctx, pkt, cfg, now);
            if enforce && source.as_ref().is_some_and(|s| s.blocked(cfg)) {
                return Verdict::drop(Counter::DropSourceBlocked);
            }
            let valid = match cookie_valid(ctx, pkt) {
                Some(false) if is_bare_ack(pkt) && repair_lost_handshake(ctx, pkt) => {
                    count(Counter::AckProbeRepaired);
                    Some(true)
                }
                other => other,
            };
            match valid {
                Some(true) => {
                    // synproxy opens the connection: from now on the kernel holds the tuple.
                    peers::remember(ctx, pkt, cfg.hash_seed, now);
                    port_load::record(pkt.dport, Event::CookieValidated);
                    if let Some(source) = &source {
                        source.completed();
                    }
                    Verdict::pass(Counter::AckCookieValid)
                }
                Some(false) => {
                    if let Some(source) = sources::attempt(ctx, pkt, cfg, now)
                        && source.invalid_ack(cfg)
                        && enforce
                    {
                        // The invalid ACK drops under either action.
                        source.exceeded(cfg);
                    }
                    if enforce {
                        Verdict::drop(Counter::AckCookieInvalid)
                    } else {
                        Verdict::pass(Counter::AckInvalidPassed)
                    }
                }
                None => Verdict::pass(Counter::MalformedTcp),
            }
        }
        // Parsing already proved these headers are there; stay on the safe side regardless.
        None => Verdict::pass(Counter::MalformedTcp),
    }
}

/// Checks the cookie in the ACK number against the kernel's secret (the helper undoes the
/// `+1`s of sequence and acknowledgement numbers itself).
#[inline(always)]
fn cookie_valid(ctx: &XdpContext, pkt: &TcpPacket) -> Option<bool> {
    let th = ptr_at::<[u8; TCP_HLEN]>(ctx, pkt.l4_off)? as *mut tcphdr;
    cookie_valid_for(ctx, pkt, th)
}

/// An ACK alone, no payload: what a zero-window probe looks like.
#[inline(always)]
fn is_bare_ack(pkt: &TcpPacket) -> bool {
    pkt.payload_len == 0 && pkt.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_ACK
}

/// If the segment is a zero-window probe (`seq = ISN`) for one of our cookies, rewrites its
/// sequence number to the handshake ACK's (`ISN + 1`) and returns true. Tries the rewrite in
/// place and undoes it if the cookie does not check: no header copy on the stack.
#[inline(always)]
fn repair_lost_handshake(ctx: &XdpContext, pkt: &TcpPacket) -> bool {
    let Some(tcp) = ptr_at::<[u8; TCP_HLEN]>(ctx, pkt.l4_off) else {
        return false;
    };
    // SAFETY: bounds-checked by ptr_at; written in place.
    let tcp = unsafe { &mut *(tcp as *mut [u8; TCP_HLEN]) };
    let seq = u32::from_be_bytes([
        tcp[TCP_SEQ],
        tcp[TCP_SEQ + 1],
        tcp[TCP_SEQ + 2],
        tcp[TCP_SEQ + 3],
    ]);
    let ack_seq = seq.wrapping_add(1);
    tcp[TCP_SEQ..TCP_SEQ + 4].copy_from_slice(&ack_seq.to_be_bytes());
    if cookie_valid(ctx, pkt) != Some(true) {
        tcp[TCP_SEQ..TCP_SEQ + 4].copy_from_slice(&seq.to_be_bytes());
        return false;
    }
    let check = u16::from_be_bytes([tcp[TCP_CHECK], tcp[TCP_CHECK + 1]]);
    // A checksum-offloading sender's field holds only the pseudo header, which the header's
    // change leaves as it is (the kernel and our TC program trust such a packet).
    if !verify::pseudo_header(ctx, pkt).is_some_and(|pseudo| verify::offloaded(check, pseudo)) {
        tcp[TCP_CHECK..TCP_CHECK + 2]
            .copy_from_slice(&csum::replace_u32(check, seq, ack_seq).to_be_bytes());
    }
    true
}

/// The cookie check of `th` (in the packet or a stack copy) against the packet's IP header.
#[inline(always)]
fn cookie_valid_for(ctx: &XdpContext, pkt: &TcpPacket, th: *mut tcphdr) -> Option<bool> {
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
