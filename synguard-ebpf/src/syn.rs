//! Verdict for a SYN to a protected port: blocked source, a 4-tuple the kernel still holds, the
//! kernel's turn (cookies off for the port), a wrong checksum, or a cookie SYN-ACK from here.
use aya_ebpf::programs::XdpContext;
use synguard_common::{Counter, DatapathConfig, SyncookieMode};

use crate::{
    counters::count,
    maps::cookies_on,
    parse::TcpPacket,
    peers,
    port_load::{self, Event},
    socket::{KernelSocket, kernel_socket},
    sources, synack,
    verdict::Verdict,
    verify,
};

/// The verdict; [`ANSWER`] when XDP answers with a cookie ([`answer`]). A subprogram of its
/// own that returns before the SYN-ACK is built: the two frames are never stacked (see
/// `synack::answer_syn`). (An `Option` here would need BTF for a niche-packed enum, which the
/// kernel refuses.)
#[inline(never)]
pub fn judge_syn(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig, now: u64) -> Verdict {
    let enforce = cfg.syncookies != SyncookieMode::Off as u8;
    if let Some(source) = sources::attempt(ctx, pkt, cfg, now) {
        if enforce && source.blocked(cfg) {
            return Verdict::drop(Counter::DropSourceBlocked);
        }
        if source.syn(cfg) && enforce && source.exceeded(cfg) {
            return Verdict::drop(Counter::DropSourceBlocked);
        }
    }
    // A SYN for a 4-tuple the kernel still holds (TIME_WAIT after the server closed, a request
    // socket) goes to the kernel: it reopens TIME_WAIT properly, and conntrack sees the new
    // connection. A cookie answered here would meet the old state on the ACK. Only tuples in
    // the peer filter can be such a SYN: a spoofed one skips the lookup.
    if peers::may_have_socket(ctx, pkt, cfg.hash_seed, now) {
        count(Counter::SynPeerLookup);
        if kernel_socket(ctx, pkt).is_some_and(|sk| sk != KernelSocket::None) {
            return Verdict::pass(Counter::SynKnownSocket);
        }
    }
    if !cookies_on(pkt.dport) {
        // The kernel makes a request socket for it: its retransmissions must find it.
        peers::remember(ctx, pkt, cfg.hash_seed, now);
        port_load::record(pkt.dport, Event::SynToKernel);
        return Verdict::pass(Counter::SynToKernel);
    }
    if !verify::syn_checksums_ok(ctx, pkt) {
        return Verdict::drop(Counter::DropBadChecksum);
    }
    ANSWER
}

/// [`judge_syn`]'s verdict for a SYN to answer with a cookie.
pub const ANSWER: Verdict = Verdict::tx(Counter::SynCookieSent);

/// Answers the SYN with a cookie SYN-ACK.
#[inline(always)]
pub fn answer(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig, now: u64) -> Verdict {
    let verdict = synack::answer_syn(ctx, pkt, cfg, now);
    if verdict == ANSWER {
        port_load::record(pkt.dport, Event::CookieSent);
    }
    verdict
}
