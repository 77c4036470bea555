//! Does the kernel already have a socket for a segment's 4-tuple?
//!
//! Both halves of the handshake ask: a SYN for a tuple in TIME_WAIT (a client reusing its port
//! while the server still holds the old connection) must reach the kernel, which knows how to
//! reopen it; an ACK for a known connection is ordinary traffic, not a cookie to check.
use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, BPF_TCP_LISTEN, BPF_TCP_NEW_SYN_RECV, bpf_sock_tuple},
    cty::c_void,
    helpers::generated::{bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};

use crate::parse::{Family, IPV4_HLEN, IPV6_HLEN, TCP_HLEN, TcpPacket, ptr_at};

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
/// are). A subprogram of its own for the stack limit (see `synack::answer_syn`).
#[inline(never)]
pub fn kernel_socket(ctx: &XdpContext, pkt: &TcpPacket) -> Option<KernelSocket> {
    // SAFETY: bounds-checked by ptr_at.
    let tcp = unsafe { &*ptr_at::<[u8; TCP_HLEN]>(ctx, pkt.l4_off)? };
    // SAFETY: all zeroes is a valid bpf_sock_tuple (plain integers).
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let sport = u16::from_ne_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_ne_bytes([tcp[2], tcp[3]]);
    let tuple_size = match pkt.family {
        Family::V4 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV4_HLEN]>(ctx, pkt.l2_len)? };
            // SAFETY: writing plain integers into the union's IPv4 member.
            let t = unsafe { &mut tuple.__bindgen_anon_1.ipv4 };
            t.saddr = word(ip, 12);
            t.daddr = word(ip, 16);
            t.sport = sport;
            t.dport = dport;
            size_of_val(t)
        }
        Family::V6 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV6_HLEN]>(ctx, pkt.l2_len)? };
            // SAFETY: writing plain integers into the union's IPv6 member.
            let t = unsafe { &mut tuple.__bindgen_anon_1.ipv6 };
            for i in 0..4 {
                t.saddr[i] = word(ip, 8 + 4 * i);
                t.daddr[i] = word(ip, 24 + 4 * i);
            }
            t.sport = sport;
            t.dport = dport;
            size_of_val(t)
        }
    };
    // SAFETY: tuple is initialised for tuple_size bytes; a returned socket is released below.
    unsafe {
        let sk = bpf_skc_lookup_tcp(
            ctx.ctx as *mut c_void,
            &mut tuple,
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

/// Four header bytes as they lie in the packet (network order kept).
#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}
