//! synguard's XDP program, a thin dispatcher over the parsing, cookie and counter modules, and
//! its TC ingress companion for IPv6 checksums (`tc_csum`).
#![no_std]
#![no_main]
#![allow(clippy::needless_borrows_for_generic_args, reason = "map keys by ref")]
#![allow(clippy::unnecessary_cast, reason = "casts of the bindings' constants")]

mod ack;
mod counters;
mod csum;
mod maps;
mod options;
mod parse;
mod peers;
mod policy;
mod port_load;
mod sketch;
mod socket;
mod sources;
mod syn;
mod synack;
mod tc_csum;
mod tuple;
mod verdict;
mod verify;
mod zeroed;

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use synguard_common::{Counter, Policy};

use crate::{
    counters::count,
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, parse_tcp},
    verdict::Verdict,
};

// `frags`: also attachable at jumbo MTU, where a frame may span several buffers.
#[xdp(frags)]
pub fn synguard(ctx: XdpContext) -> u32 {
    count(Counter::Packets);
    let verdict = dispatch(&ctx);
    count(verdict.counter);
    verdict.action
}

/// TC ingress, after XDP: marks verified IPv6 handshake ACKs that arrive unverified.
#[classifier]
pub fn synguard_csum(ctx: TcContext) -> i32 {
    tc_csum::judge(&ctx)
}

#[inline(always)]
fn dispatch(ctx: &XdpContext) -> Verdict {
    let mut pkt = MaybeUninit::uninit();
    if let Err(outcome) = parse_tcp(ctx, &mut pkt) {
        return Verdict::pass(outcome);
    }
    // SAFETY: parse_tcp wrote it.
    let pkt = unsafe { pkt.assume_init_ref() };
    if !maps::port_protected(pkt.dport) {
        return Verdict::pass(Counter::PassUnprotectedPort);
    }
    let cfg = maps::config();
    match policy::source_policy(ctx, pkt, cfg) {
        Some(Policy::Allow) => return Verdict::pass(Counter::PassAllowlisted),
        Some(Policy::Deny) => return Verdict::drop(Counter::DropDenylisted),
        None => {}
    }
    // The one clock read of a packet: windows, peer marks and the timestamp cookie share it.
    // The coarse clock (the last tick's time): nothing here needs more than milliseconds, and
    // a precise read costs a clocksource access (~40 ns per SYN under a VM's pvclock).
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    match pkt.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) {
        TCP_SYN => match syn::judge_syn(ctx, pkt, cfg, now) {
            syn::ANSWER => syn::answer(ctx, pkt, cfg, now),
            verdict => verdict,
        },
        f if f & (TCP_SYN | TCP_ACK) == TCP_ACK => ack::judge_ack(ctx, pkt, cfg, now),
        _ => Verdict::pass(Counter::PassOtherFlags),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL: the syncookie helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
