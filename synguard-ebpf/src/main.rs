//! synguard's XDP program: a thin dispatcher over the parsing, cookie and counter modules.
#![no_std]
#![no_main]

mod ack;
mod counters;
mod csum;
mod maps;
mod options;
mod parse;
mod socket;
mod synack;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use synguard_common::Counter;

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
    match pkt.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) {
        // A SYN for a 4-tuple the kernel still holds (TIME_WAIT after the server closed, a
        // request socket) goes to the kernel: it reopens TIME_WAIT properly, and conntrack sees
        // the new connection. A cookie answered here would meet the old state on the ACK.
        TCP_SYN if socket::kernel_has_socket(ctx, &pkt) == Some(true) => {
            (xdp_action::XDP_PASS, Counter::SynKnownSocket)
        }
        TCP_SYN => synack::answer_syn(ctx, &pkt),
        f if f & (TCP_SYN | TCP_ACK) == TCP_ACK => ack::judge_ack(ctx, &pkt),
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
