//! Does the kernel already have a socket for a segment's 4-tuple?
//!
//! Both halves of the handshake ask: a SYN for a tuple in TIME_WAIT (a client reusing its port
//! while the server still holds the old connection) must reach the kernel, which knows how to
//! reopen it; an ACK for a known connection is ordinary traffic, not a cookie to check.
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, BPF_TCP_LISTEN, BPF_TCP_NEW_SYN_RECV, bpf_sock_tuple},
    cty::c_void,
    helpers::generated::{bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};

use crate::{
    parse::{Family, TcpPacket},
    tuple::tuple_of,
    zeroed::zeroed,
};

/// A `bpf_sock_tuple` that [`zeroed`] can zero (`core::mem::zeroed` would be a byte-loop
/// `memset` on every ACK).
#[repr(C, align(8))]
struct SockTuple(bpf_sock_tuple, [u8; 4]);

/// What the kernel holds for a segment's 4-tuple in this network namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KernelSocket {
    /// Nothing but (maybe) the listener.
    None,
    /// A request socket: the kernel answered the SYN and waits for the handshake's ACK.
    Request,
    /// An established, closing or TIME_WAIT socket.
    Connection,
}

/// Looks the segment's 4-tuple up. `None` if the headers are not there (parsing proved they
/// are). A subprogram of its own for the stack limit (see
/// `synack::answer_syn`).
#[inline(never)]
pub fn kernel_socket(ctx: &XdpContext, pkt: &TcpPacket) -> Option<KernelSocket> {
    let tuple = tuple_of(ctx, pkt)?;
    let mut slot = MaybeUninit::uninit();
    // SAFETY: all zeroes is a valid bpf_sock_tuple (plain integers).
    let sock_tuple = &mut unsafe { zeroed::<SockTuple>(&mut slot) }.0;
    // Ports as they lie in the packet (little-endian words: source port first).
    let sport = tuple.ports as u16;
    let dport = (tuple.ports >> 16) as u16;
    let tuple_size = match pkt.family {
        Family::V4 => {
            // SAFETY: writing plain integers into the union's IPv4 member.
            let t = unsafe { &mut sock_tuple.__bindgen_anon_1.ipv4 };
            t.saddr = tuple.src[3];
            t.daddr = tuple.dst[3];
            t.sport = sport;
            t.dport = dport;
            size_of_val(t)
        }
        Family::V6 => {
            // SAFETY: writing plain integers into the union's IPv6 member.
            let t = unsafe { &mut sock_tuple.__bindgen_anon_1.ipv6 };
            t.saddr = tuple.src;
            t.daddr = tuple.dst;
            t.sport = sport;
            t.dport = dport;
            size_of_val(t)
        }
    };
    // SAFETY: the tuple is initialised for tuple_size bytes; a returned socket is released below.
    unsafe {
        let sk = bpf_skc_lookup_tcp(
            ctx.ctx as *mut c_void,
            sock_tuple,
            tuple_size as u32,
            BPF_F_CURRENT_NETNS as i64 as u64,
            0,
        );
        if sk.is_null() {
            return Some(KernelSocket::None);
        }
        let state = (*sk).state;
        bpf_sk_release(sk as *mut c_void);
        Some(match state {
            s if s == BPF_TCP_LISTEN as u32 => KernelSocket::None,
            s if s == BPF_TCP_NEW_SYN_RECV as u32 => KernelSocket::Request,
            _ => KernelSocket::Connection,
        })
    }
}
