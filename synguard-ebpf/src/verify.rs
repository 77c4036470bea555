//! Checksums of a SYN before XDP answers it. The kernel drops a SYN whose IPv4 header checksum
//! or TCP checksum is wrong; a cookie SYN-ACK must not answer what the kernel would not.
//!
//! XDP has no checksum-offload metadata, so both are verified in software. The usual SYN (no
//! IPv4 options, no payload, a TCP header of 20, 24 or 40 bytes) is summed with plain loads
//! from the packet. IPv4 options and a TCP segment with payload (TFO data, padded flood SYNs) are
//! summed 64 bytes per `bpf_loop` step, fragments of a multi-buffer frame included. A SYN
//! with payload is verified, not passed to the kernel: passing it would let any flood bypass
//! XDP by adding one byte of data.
//!
//! A local sender with checksum offload (a veth peer, a container, a tap) leaves only the
//! pseudo-header sum in the TCP checksum field and marks the packet CHECKSUM_PARTIAL, which
//! the kernel trusts. XDP cannot see that mark, so a checksum field holding exactly the
//! pseudo-header sum is accepted too: otherwise no local client could connect.
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::xdp_md,
    cty::c_void,
    helpers::generated::{bpf_csum_diff, bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};

use crate::{
    csum,
    parse::{
        Family, IPV4_HLEN, TCP_HLEN, TcpPacket, bytes_at,
        field::{IPV4_DADDR, IPV4_SADDR, IPV6_SADDR, TCP_CHECK},
    },
    synack::bounded_len,
    zeroed,
};

const IPPROTO_TCP: u64 = 6;
/// Bytes summed per `bpf_loop` step of [`sum_packet`].
const CHUNK: u32 = 64;
/// Steps enough for any IP datagram (65535 bytes).
const MAX_CHUNKS: u32 = 65536 / CHUNK;

/// The sum of the segment's TCP pseudo header: addresses, protocol and TCP length.
#[inline(always)]
pub fn pseudo_header(ctx: &XdpContext, pkt: &TcpPacket) -> Option<u64> {
    let segment_len = (pkt.tcp_len + pkt.payload_len) as u64;
    Some(match pkt.family {
        Family::V4 => {
            let ip = bytes_at::<IPV4_HLEN>(ctx, pkt.l2_len)?;
            csum::add(IPPROTO_TCP + segment_len, &ip[IPV4_SADDR..IPV4_DADDR + 4])
        }
        Family::V6 => {
            let addrs = bytes_at::<32>(ctx, pkt.l2_len + IPV6_SADDR)?;
            csum::add(IPPROTO_TCP + segment_len, addrs)
        }
    })
}

/// Whether a checksum field holds only the pseudo-header sum: what a checksum-offloading
/// local sender leaves for the NIC to finish (the kernel trusts such a packet).
#[inline(always)]
pub fn offloaded(field: u16, pseudo: u64) -> bool {
    field == !csum::finish(pseudo)
}

/// Whether the SYN's IPv4 header checksum (IPv6 has none) and TCP checksum are right.
///
/// A BPF subprogram of its own, called just before the SYN-ACK is built: inside the reply's
/// subprogram, its `bpf_loop` frame would take the call chain over the 512-byte stack.
#[inline(never)]
pub fn syn_checksums_ok(ctx: &XdpContext, pkt: &TcpPacket) -> bool {
    let segment_len = pkt.tcp_len + pkt.payload_len;
    if pkt.family == Family::V4 {
        let Some(ip) = bytes_at::<IPV4_HLEN>(ctx, pkt.l2_len) else {
            return false;
        };
        let options = pkt.l4_off - pkt.l2_len - IPV4_HLEN;
        let Some(options_sum) = sum_packet(ctx, pkt.l2_len + IPV4_HLEN, options) else {
            return false;
        };
        if csum::finish(csum::add(options_sum, ip)) != 0 {
            return false;
        }
    }
    let Some(pseudo) = pseudo_header(ctx, pkt) else {
        return false;
    };
    let Some(fixed) = bytes_at::<TCP_HLEN>(ctx, pkt.l4_off) else {
        return false;
    };
    let field = u16::from_be_bytes([fixed[TCP_CHECK], fixed[TCP_CHECK + 1]]);
    if offloaded(field, pseudo) {
        return true;
    }
    // The usual header lengths (as `synack` copies them) with plain loads: no options, MSS
    // alone, Linux's options.
    let segment = match (pkt.payload_len, pkt.tcp_len) {
        (0, TCP_HLEN) => Some(csum::add(0, fixed)),
        (0, 24) => bytes_at::<24>(ctx, pkt.l4_off).map(|header| csum::add(0, header)),
        (0, 40) => bytes_at::<40>(ctx, pkt.l4_off).map(|header| csum::add(0, header)),
        _ => None,
    };
    let Some(segment) = segment.or_else(|| sum_packet(ctx, pkt.l4_off, segment_len)) else {
        return false;
    };
    csum::finish(pseudo + segment) == 0
}

/// State of the [`sum_packet`] loop, shared with its `bpf_loop` callback. Only `sum` and
/// `failed` change from step to step, and `sum` comes from a helper (`bpf_csum_diff`, whose
/// result the verifier does not track): it checks the step a few times, not once per
/// possible length, as it would for a sum it can follow (that hit the 1M-instruction limit).
#[repr(C)]
struct Summing {
    ctx: *mut xdp_md,
    offset: u32,
    len: u32,
    /// The kernel's 32-bit partial checksum (`__wsum`, little-endian words).
    sum: i64,
    failed: bool,
}

/// The ones' complement sum of `len` packet bytes at `offset` (big-endian words, folded to 16
/// bits), which must start an even number of bytes into the summed data so that words stay
/// aligned; `None` if they are not in the frame. 0 for no bytes, without a helper call.
#[inline(always)]
fn sum_packet(ctx: &XdpContext, offset: usize, len: usize) -> Option<u64> {
    if len == 0 {
        return Some(0);
    }
    let mut state = Summing {
        ctx: ctx.ctx,
        offset: offset as u32,
        len: len as u32,
        sum: 0,
        failed: false,
    };
    let steps = (len as u32).div_ceil(CHUNK).min(MAX_CHUNKS);
    // SAFETY: the callback only touches `state` through the context pointer, and bpf_loop
    // calls it synchronously.
    let done = unsafe {
        bpf_loop(
            steps,
            sum_chunk as *const () as *mut c_void,
            &mut state as *mut Summing as *mut c_void,
            0,
        )
    };
    if done != i64::from(steps) || state.failed {
        return None;
    }
    // Folded, the sum of little-endian words is the byte-swapped sum of big-endian ones.
    let folded = !csum::finish(state.sum as u32 as u64);
    Some(u64::from(folded.swap_bytes()))
}

/// bpf_loop callback: adds chunk `index` (the last one zero-padded) to the sum; 0 = continue,
/// 1 = stop.
#[inline(never)]
extern "C" fn sum_chunk(index: u64, data: *mut c_void) -> i64 {
    // SAFETY: data is the `Summing` passed by `sum_packet`.
    let state = unsafe { &mut *(data as *mut Summing) };
    let start = (index as u32).wrapping_mul(CHUNK);
    if start >= state.len {
        state.failed = true;
        return 1;
    }
    let left = state.len - start;
    let len = if left >= CHUNK {
        CHUNK
    } else {
        bounded_len::<{ CHUNK as usize }>(left)
    };
    // Never at run time (`left` is 1..CHUNK here); the verifier needs to see it.
    if len == 0 {
        state.failed = true;
        return 1;
    }
    let mut buf = MaybeUninit::uninit();
    let buf = zeroed::bytes::<{ CHUNK as usize }>(&mut buf);
    // SAFETY: the helper checks the packet bounds; buf holds CHUNK bytes.
    let err = unsafe {
        bpf_xdp_load_bytes(
            state.ctx,
            state.offset.wrapping_add(start),
            buf.as_mut_ptr() as *mut c_void,
            len,
        )
    };
    if err != 0 {
        state.failed = true;
        return 1;
    }
    // SAFETY: reads CHUNK bytes of buf (a multiple of 4, as the helper requires).
    state.sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            // Words: the buffer is 8-byte aligned.
            buf.as_mut_ptr() as *mut u32,
            CHUNK,
            state.sum as u32,
        )
    };
    state.failed = state.sum < 0;
    i64::from(state.failed)
}
