//! Verdict for a SYN to a protected port: blocked source, a 4-tuple the kernel still holds, the
//! kernel's turn (cookies off for the port), a wrong checksum, or a cookie SYN-ACK from here.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use synguard_common::{Counter, DatapathConfig, SyncookieMode};

use crate::{
    counters::count,
    load::{self, Event},
    maps::cookies_on,
    parse::TcpPacket,
    peers,
    socket::{KernelSocket, kernel_socket},
    sources, synack, verify,
};

/// The verdict; [`ANSWER`] when XDP answers with a cookie ([`answer`]). A subprogram of its
/// own that returns before the SYN-ACK is built: the two frames are never stacked (see
/// `synack::answer_syn`). (An `Option` here would need BTF for a niche-packed enum, which the
/// kernel refuses.)
#[inline(never)]
pub fn judge_syn(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    cfg: &DatapathConfig,
    now: u64,
) -> (u32, Counter) {
    let enforce = cfg.syncookies != SyncookieMode::Off as u8;
    if let Some(source) = sources::attempt(ctx, pkt, cfg, now) {
        if enforce && source.blocked() {
            return (xdp_action::XDP_DROP, Counter::DropSourceBlocked);
        }
        if source.syn(cfg) && enforce {
            source.block(cfg);
            count(Counter::SourceBlocks);
            return (xdp_action::XDP_DROP, Counter::DropSourceBlocked);
        }
    }
    // A SYN for a 4-tuple the kernel still holds (TIME_WAIT after the server closed, a request
    // socket) goes to the kernel: it reopens TIME_WAIT properly, and conntrack sees the new
    // connection. A cookie answered here would meet the old state on the ACK. Only tuples in
    // the peer filter can be such a SYN: a spoofed one skips the lookup.
    if peers::may_have_socket(ctx, pkt, cfg.hash_seed, now) {
        count(Counter::SynPeerLookup);
        if kernel_socket(ctx, pkt).is_some_and(|sk| sk != KernelSocket::None) {
            return (xdp_action::XDP_PASS, Counter::SynKnownSocket);
        }
    }
    if !cookies_on(pkt.dport) {
        // The kernel makes a request socket for it: its retransmissions must find it.
        peers::remember(ctx, pkt, cfg.hash_seed, now);
        load::record(pkt.dport, Event::SynToKernel);
        return (xdp_action::XDP_PASS, Counter::SynToKernel);
    }
    if !verify::syn_checksums_ok(ctx, pkt) {
        return (xdp_action::XDP_DROP, Counter::DropBadChecksum);
    }
    ANSWER
}

/// [`judge_syn`]'s verdict for a SYN to answer with a cookie.
pub const ANSWER: (u32, Counter) = (xdp_action::XDP_TX, Counter::SynCookieSent);

/// Answers the SYN with a cookie SYN-ACK.
#[inline(always)]
pub fn answer(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig, now: u64) -> (u32, Counter) {
    let verdict = synack::answer_syn(ctx, pkt, cfg, now);
    if verdict.1 == Counter::SynCookieSent {
        load::record(pkt.dport, Event::CookieSent);
    }
    verdict
}
