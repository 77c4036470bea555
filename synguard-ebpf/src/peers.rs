//! The peer filter: 4-tuples the kernel may hold a socket for, so that only their SYNs pay
//! for the kernel socket lookup (a spoofed SYN's tuple is never there).
//!
//! A tuple is marked, with its source address, when XDP sees it continue or complete a
//! connection, or hands its SYN to the kernel; the daemon seeds the tuples of sockets that
//! existed before (sock_diag). A spoofed source's address slot is empty, so its SYN reads no
//! tuple line ([`synguard_common::MAP_PEERS`]). Marks
//! are plain stores of the epoch's value: two CPUs racing on a slot store the same value, so
//! no mark is ever lost, and a spoofed SYN only reads.
use aya_ebpf::programs::XdpContext;
use synguard_common::{peer_mark, peer_mark_live};

use crate::{maps::PEERS, parse::TcpPacket, tuple::tuple_of};

/// Whether the segment's tuple may have a kernel socket (no false negatives): its source
/// address has a live mark, and so has the tuple. Subprograms of their own, like the others
/// that read the tuple: the dispatcher's frame stays small enough for the SYN-ACK's (see
/// `synack::answer_syn`).
#[inline(never)]
pub fn may_have_socket(ctx: &XdpContext, pkt: &TcpPacket, seed: u64, now: u64) -> bool {
    let Some(tuple) = tuple_of(ctx, pkt) else {
        return true;
    };
    let now = peer_mark(now);
    live(tuple.address_slot(seed), now) && live(tuple.tuple_slot(seed), now)
}

/// Marks the segment's source address and tuple as live now. Writes only if a mark changes,
/// so a busy connection costs no store but one per epoch.
#[inline(never)]
pub fn remember(ctx: &XdpContext, pkt: &TcpPacket, seed: u64, now: u64) {
    let Some(tuple) = tuple_of(ctx, pkt) else {
        return;
    };
    let mark = peer_mark(now);
    for (line, at) in [tuple.address_slot(seed), tuple.tuple_slot(seed)] {
        if let Some(line) = PEERS.get_ptr_mut(line) {
            // SAFETY: a live map value; a byte store.
            unsafe {
                let slot = &mut (*line).marks[at & 63];
                if *slot != mark {
                    *slot = mark;
                }
            }
        }
    }
}

#[inline(always)]
fn live((line, at): (u32, usize), now: u8) -> bool {
    match PEERS.get(line) {
        Some(line) => peer_mark_live(line.marks[at & 63], now),
        // Cannot happen (the index is masked to the map's size); err on the safe side.
        None => true,
    }
}
