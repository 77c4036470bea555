//! The peer filter: 4-tuples the kernel may hold a socket for, so that only their SYNs pay
//! for the kernel socket lookup (a spoofed SYN's tuple is never there).
//!
//! A tuple is marked when XDP sees it continue or complete a connection, or hands its SYN to
//! the kernel; the daemon seeds the tuples of sockets that existed before (sock_diag). Marks
//! are plain stores of the epoch's value: two CPUs racing on a slot store the same value, so
//! no mark is ever lost, and a spoofed SYN only reads.
use aya_ebpf::programs::XdpContext;
use synguard_common::{peer_mark, peer_mark_live};

use crate::{maps::PEERS, parse::TcpPacket, tuple::tuple_of};

/// Whether the segment's tuple may have a kernel socket (no false negatives). Subprograms of
/// their own, like the others that read the tuple: the dispatcher's frame stays small enough
/// for the SYN-ACK's (see `synack::answer_syn`).
#[inline(never)]
pub fn may_have_socket(ctx: &XdpContext, pkt: &TcpPacket, seed: u64, now: u64) -> bool {
    let Some(tuple) = tuple_of(ctx, pkt) else {
        return true;
    };
    let (line, at) = tuple.peer_slot(seed);
    match PEERS.get(line) {
        Some(line) => peer_mark_live(line.marks[at & 63], peer_mark(now)),
        // Cannot happen (the index is masked to the map's size); err on the safe side.
        None => true,
    }
}

/// Marks the segment's tuple as live now. Writes only if the mark changes, so a busy
/// connection costs one store per epoch, not one per segment.
#[inline(never)]
pub fn remember(ctx: &XdpContext, pkt: &TcpPacket, seed: u64, now: u64) {
    let Some(tuple) = tuple_of(ctx, pkt) else {
        return;
    };
    let (line, at) = tuple.peer_slot(seed);
    if let Some(line) = PEERS.get_ptr_mut(line) {
        let mark = peer_mark(now);
        // SAFETY: a live map value; a byte store.
        unsafe {
            let slot = &mut (*line).marks[at & 63];
            if *slot != mark {
                *slot = mark;
            }
        }
    }
}
