//! synguard's XDP program: a thin dispatcher over the parsing, cookie and counter modules.
#![no_std]
#![no_main]

mod ack;
mod counters;
mod csum;
mod load;
mod maps;
mod options;
mod parse;
mod policy;
mod socket;
mod sources;
mod syn;
mod synack;
mod verify;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use synguard_common::{Counter, Policy};

use crate::{
    counters::count,
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, parse_tcp},
};

// `frags`: also attachable at jumbo MTU, where a frame may span several buffers.
#[xdp(frags)]
pub fn synguard(ctx: XdpContext) -> u32 {
    count(Counter::Packets);
    let (action, outcome) = dispatch(&ctx);
    count(outcome);
    action
}

#[inline(always)]
fn dispatch(ctx: &XdpContext) -> (u32, Counter) {
    let pkt = match parse_tcp(ctx) {
        Ok(pkt) => pkt,
        Err(outcome) => return (xdp_action::XDP_PASS, outcome),
    };
    if !maps::port_protected(pkt.dport) {
        return (xdp_action::XDP_PASS, Counter::PassUnprotectedPort);
    }
    let cfg = maps::config();
    match policy::source_policy(ctx, &pkt, &cfg) {
        Some(Policy::Allow) => return (xdp_action::XDP_PASS, Counter::PassAllowlisted),
        Some(Policy::Deny) => return (xdp_action::XDP_DROP, Counter::DropDenylisted),
        None => {}
    }
    match pkt.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) {
        TCP_SYN => syn::judge_syn(ctx, &pkt, &cfg),
        f if f & (TCP_SYN | TCP_ACK) == TCP_ACK => ack::judge_ack(ctx, &pkt, &cfg),
        _ => (xdp_action::XDP_PASS, Counter::PassOtherFlags),
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
