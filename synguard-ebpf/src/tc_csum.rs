//! TC ingress: verifies the TCP checksum of IPv6 handshake ACKs that arrive unverified and
//! marks them verified, because nft `synproxy` cannot verify an IPv6 checksum itself.
//!
//! `nft_synproxy_do_eval` checks every segment with `nf_ip_checksum()`, the IPv4 function, also
//! for IPv6, so an IPv6 segment the receive path left `CHECKSUM_NONE` (a veth with tx offload
//! off; virtio-net, which turns guest checksum offload off once XDP is attached) never passes:
//! the cookie ACK is dropped and the connection hangs. A segment already `CHECKSUM_UNNECESSARY`
//! passes it. `bpf_csum_level(INC)` turns `CHECKSUM_NONE` into that, and nothing checks the sum
//! afterwards, so this program checks it first and drops a segment whose sum is wrong.
//!
//! Only what can reach synproxy's verdict is checked: a bare ACK (no payload; SYN, RST and FIN
//! clear) to a protected port. XDP answers SYNs, and SYNs it passes meet conntrack (no
//! `notrack`), so only segments without a conntrack entry meet synproxy: a cookie ACK, or a
//! stray segment it drops anyway. A client cannot send data before synproxy has opened the
//! connection (the SYN-ACK's window is 0, see `ack.rs`), so the segment that completes a
//! handshake is always a bare ACK. Established connections need nothing: conntrack and TCP
//! verify their segments with the IPv6 functions. IPv4 needs nothing either. Summing a bare
//! header (20 to 60 bytes) costs less than the socket lookup that would narrow it further.
//!
//! A segment the device left `CHECKSUM_PARTIAL` (a local sender with tx offload on, e.g. a
//! container's veth) carries only the pseudo-header sum in its checksum field and counts as
//! verified for the kernel: it is recognised by that field and left alone. If it was in fact a
//! forged `CHECKSUM_NONE` segment, it stays unverified and the kernel drops it. Only IPv6
//! without extension headers is handled (a handshake ACK has none).
use aya_ebpf::{
    bindings::{
        BPF_CSUM_LEVEL_INC, BPF_CSUM_LEVEL_QUERY, TC_ACT_SHOT, TC_ACT_UNSPEC,
        bpf_hdr_start_off::BPF_HDR_START_NET,
    },
    helpers::generated::{
        bpf_csum_diff, bpf_csum_level, bpf_csum_update, bpf_skb_load_bytes_relative,
    },
    programs::TcContext,
};
use synguard_common::Counter;

use crate::{
    counters::count,
    maps,
    parse::{
        IPV6_HLEN, TCP_ACK, TCP_FIN, TCP_HLEN, TCP_MAX_HLEN, TCP_RST, TCP_SYN,
        field::{IPV6_SADDR, TCP_CHECK},
    },
};

const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
/// Source and destination address in the IPv6 header.
const ADDRS_LEN: usize = 32;
/// The pseudo-header: both addresses, the upper-layer length (32 bits), 3 zero bytes and the
/// next header.
const PSEUDO_LEN: usize = ADDRS_LEN + 8;

/// What the program did with a segment.
enum Verdict {
    /// Not a segment this program is about, already verified, or left to the kernel.
    Untouched,
    Verified,
    Bad,
}

/// `TC_ACT_UNSPEC` (tcx: `TCX_NEXT`) lets the packet on to any later TC program; `TC_ACT_SHOT`
/// drops it.
#[inline(always)]
pub fn judge(ctx: &TcContext) -> i32 {
    match judge_segment(ctx) {
        Verdict::Untouched => TC_ACT_UNSPEC,
        Verdict::Verified => {
            // SAFETY: a plain helper call on this program's own skb.
            unsafe { bpf_csum_level(ctx.skb.skb, u64::from(BPF_CSUM_LEVEL_INC)) };
            count(Counter::TcCsumVerified);
            TC_ACT_UNSPEC
        }
        Verdict::Bad => {
            count(Counter::TcCsumBad);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn judge_segment(ctx: &TcContext) -> Verdict {
    // skb->protocol is in network order. Offsets are from the network header: after generic
    // XDP the data need not start at the MAC header.
    if u16::from_be(ctx.skb.protocol() as u16) != ETH_P_IPV6 {
        return Verdict::Untouched;
    }
    let mut ip = [0u8; IPV6_HLEN];
    if load(ctx, 0, &mut ip).is_none() {
        return Verdict::Untouched;
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if ip[0] >> 4 != 6 || ip[6] != IPPROTO_TCP {
        return Verdict::Untouched;
    }
    let l4_off = IPV6_HLEN;
    let mut tcp = [0u8; TCP_HLEN];
    if load(ctx, l4_off, &mut tcp).is_none() {
        return Verdict::Untouched;
    }
    let tcp_len = usize::from(tcp[12] >> 4) * 4;
    let bare_ack = tcp[13] & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_ACK;
    if !bare_ack || tcp_len < TCP_HLEN || payload_len != tcp_len {
        return Verdict::Untouched;
    }
    if !maps::port_protected(u16::from_be_bytes([tcp[2], tcp[3]])) || !unverified(ctx) {
        return Verdict::Untouched;
    }

    // LLVM knows the length is 20 to 60 and drops a check of it, but the verifier needs to see
    // the lower bound for the load's size: read it back through memory LLVM cannot see into.
    // SAFETY: a plain read of a local.
    let tcp_len = unsafe { core::ptr::read_volatile(&tcp_len) };
    // Pseudo-header, then the TCP header, summed by the kernel's csum_partial.
    let mut pseudo = [0u8; PSEUDO_LEN];
    let mut header = [0u8; TCP_MAX_HLEN];
    if !(TCP_HLEN..=TCP_MAX_HLEN).contains(&tcp_len)
        || load(ctx, IPV6_SADDR, &mut pseudo[..ADDRS_LEN]).is_none()
        || load(ctx, l4_off, &mut header[..tcp_len]).is_none()
    {
        return Verdict::Untouched;
    }
    pseudo[ADDRS_LEN..ADDRS_LEN + 4].copy_from_slice(&(tcp_len as u32).to_be_bytes());
    pseudo[PSEUDO_LEN - 1] = IPPROTO_TCP;
    let Some(pseudo_sum) = sum(&pseudo, PSEUDO_LEN, 0) else {
        return Verdict::Untouched;
    };
    let Some(total) = sum(&header, tcp_len, pseudo_sum) else {
        return Verdict::Untouched;
    };
    if fold(total) == 0xffff {
        return Verdict::Verified;
    }
    // csum_partial sums in host order: read the field the same way.
    let check = u16::from_ne_bytes([header[TCP_CHECK], header[TCP_CHECK + 1]]);
    if check == fold(pseudo_sum) {
        Verdict::Untouched
    } else {
        Verdict::Bad
    }
}

/// Whether the skb's checksum state is neither `CHECKSUM_UNNECESSARY` (the csum level query
/// answers only then) nor `CHECKSUM_COMPLETE` (adding 0 to the device's sum succeeds only
/// then; conntrack verifies those against it and marks them): `CHECKSUM_NONE` or `_PARTIAL`.
#[inline(always)]
fn unverified(ctx: &TcContext) -> bool {
    // SAFETY: plain helper calls on this program's own skb; adding 0 changes nothing.
    unsafe {
        bpf_csum_level(ctx.skb.skb, u64::from(BPF_CSUM_LEVEL_QUERY)) < 0
            && bpf_csum_update(ctx.skb.skb, 0) < 0
    }
}

/// Copies `dst.len()` bytes from `offset` past the network header (linear data only, where
/// the headers of a bare ACK are).
#[inline(always)]
fn load(ctx: &TcContext, offset: usize, dst: &mut [u8]) -> Option<()> {
    // SAFETY: `dst` is valid for `dst.len()` bytes.
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const _,
            offset as u32,
            dst.as_mut_ptr().cast(),
            dst.len() as u32,
            BPF_HDR_START_NET,
        )
    };
    (ret == 0).then_some(())
}

/// The ones' complement sum of the first `len` bytes of `buf` (a multiple of 4) on `seed`.
#[inline(always)]
fn sum(buf: &[u8], len: usize, seed: u32) -> Option<u32> {
    if len > buf.len() {
        return None;
    }
    // SAFETY: `buf` is valid for `len` bytes; bpf_csum_diff only reads it.
    let ret = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            buf.as_ptr().cast_mut().cast(),
            len as u32,
            seed,
        )
    };
    u32::try_from(ret).ok()
}

/// Folds a 32-bit ones' complement sum to 16 bits.
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    ((sum & 0xffff) + (sum >> 16)) as u16
}
