//! Verdict for a SYN to a protected port: blocked source, a 4-tuple the kernel still holds, the
//! kernel's turn (cookies off for the port), a wrong checksum, or a cookie SYN-ACK from here.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use synguard_common::{Counter, DatapathConfig, SyncookieMode};

use crate::{
    counters::count,
    load::{self, Event},
    maps::cookies_on,
    parse::TcpPacket,
    socket::{KernelSocket, kernel_socket},
    sources::Source,
    synack, verify,
};

#[inline(always)]
pub fn judge_syn(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig) -> (u32, Counter) {
    let enforce = cfg.syncookies != SyncookieMode::Off as u8;
    if let Some(source) = Source::of(ctx, pkt, cfg) {
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
    // connection. A cookie answered here would meet the old state on the ACK.
    if kernel_socket(ctx, pkt).is_some_and(|sk| sk != KernelSocket::None) {
        return (xdp_action::XDP_PASS, Counter::SynKnownSocket);
    }
    if !cookies_on(pkt.dport) {
        load::record(pkt.dport, Event::SynToKernel);
        return (xdp_action::XDP_PASS, Counter::SynToKernel);
    }
    if !verify::syn_checksums_ok(ctx, pkt) {
        return (xdp_action::XDP_DROP, Counter::DropBadChecksum);
    }
    let verdict = synack::answer_syn(ctx, pkt, cfg);
    if verdict.1 == Counter::SynCookieSent {
        load::record(pkt.dport, Event::CookieSent);
    }
    verdict
}
