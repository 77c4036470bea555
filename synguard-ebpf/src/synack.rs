//! Answers a SYN with a SYN-ACK whose sequence number is a SYN cookie, sent back with XDP_TX.
//!
//! The SYN's header is copied to the stack with plain loads for the usual lengths
//! (`bpf_xdp_load_bytes` otherwise). The reply is assembled on the stack, in buffers zeroed
//! without `memset` ([`zeroed`]), and written over the packet (plain stores for the usual
//! header lengths, `bpf_xdp_store_bytes` otherwise). When it is longer than the SYN (hping3's
//! 54-byte SYNs have no options, the reply carries MSS), the packet grows at the head: XDP
//! guarantees headroom, not tailroom (growing the tail aborted most of a real flood: short
//! SYNs have none). A shorter reply trims the tail.
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr},
    cty::c_void,
    helpers::generated::{
        bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_head,
        bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use synguard_common::{Counter, DatapathConfig};

use crate::{
    csum,
    options::{SYN_BUF_LEN, SynHeader, WSCALE_NONE},
    parse::{
        Family, IPV4_HLEN, IPV6_HLEN, MAX_L2_LEN, TCP_ACK, TCP_CWR, TCP_ECE, TCP_HLEN,
        TCP_MAX_HLEN, TCP_SYN, TcpPacket, bytes_at, field::*, ptr_at, verifier_visible,
    },
    verdict::Verdict,
    zeroed,
};

const IPPROTO_TCP: u8 = 6;
/// Room for the Ethernet header and two VLAN tags, rounded up to a power of two for [`load`].
const L2_BUF_LEN: usize = 32;
const IPV4_DF: u8 = 0x40;
/// MSS (4) + SACK-perm/NOP-NOP and timestamps (12) + NOP and window scale (4).
const REPLY_MAX_OPTIONS: usize = 20;
const REPLY_TCP_MAX_LEN: usize = TCP_HLEN + REPLY_MAX_OPTIONS;
/// Timestamp cookie layout shared with the kernel (net/ipv4/syncookies.c): the low 6 bits of
/// TSval carry the client's options, SYNPROXY reads them back from the TSecr of the ACK.
const TS_OPT_SACK: u32 = 1 << 4;
const TS_OPT_ECN: u32 = 1 << 5;
const TS_OPT_MASK: u32 = 0x3f;

/// Copies `len` packet bytes at `offset` into `buf`: for the lengths listed (those a header of
/// this kind nearly always has) with plain loads from the packet, a fixed-size copy the verifier
/// follows; otherwise, or if those bytes are not in the frame's linear part, with [`load`].
/// The helper call costs more than the copy (about 25 ns each in the microbench).
macro_rules! copy_in {
    ($ctx:expr, $offset:expr, $buf:expr, $len:expr, [$($n:literal),+]) => {
        match $len {
            $($n if read_fixed::<$n, _>($ctx, $offset, $buf) => Some(()),)+
            len => load($ctx, $offset, $buf, len),
        }
    };
}

/// Writes `buf[..len]` to the packet at `offset`; like [`copy_in`], with [`store`] as the
/// fallback.
macro_rules! copy_out {
    ($ctx:expr, $offset:expr, $buf:expr, $len:expr, [$($n:literal),+]) => {
        match $len {
            $($n if write_fixed::<$n, _>($ctx, $offset, $buf) => Some(()),)+
            len => store($ctx, $offset, $buf, len),
        }
    };
}

/// Builds and emits the SYN-ACK.
///
/// A BPF subprogram of its own, like the per-source and socket lookups: inlined into one frame
/// with everything else, the reply buffers no longer fit the 512-byte BPF stack.
#[inline(never)]
pub fn answer_syn(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig, now: u64) -> Verdict {
    match build_and_emit(ctx, pkt, cfg, now) {
        Some(()) => Verdict::tx(Counter::SynCookieSent),
        None => Verdict::aborted(),
    }
}

#[inline(always)]
fn build_and_emit(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig, now: u64) -> Option<()> {
    let tcp_len = pkt.tcp_len as u32;
    if !(TCP_HLEN as u32..=TCP_MAX_HLEN as u32).contains(&tcp_len) {
        return None;
    }
    let mut syn = MaybeUninit::uninit();
    let syn = SynHeader::init(&mut syn, tcp_len);
    // 20: no options (hping3); 24: MSS alone (many flood tools); 40: Linux's options. (A loop
    // over the header's words instead makes a verifier state per length: over 1M instructions.)
    copy_in!(ctx, pkt.l4_off, &mut syn.bytes, tcp_len, [20, 24, 40])?;
    syn.scan_options();
    if syn.malformed {
        crate::counters::count(Counter::MalformedTcpOptions);
    }

    let l2_len = pkt.l2_len as u32;
    if l2_len as usize > MAX_L2_LEN {
        return None;
    }
    let mut l2 = MaybeUninit::uninit();
    let l2 = zeroed::bytes::<L2_BUF_LEN>(&mut l2);
    copy_in!(ctx, 0, l2, l2_len, [14, 18, 22])?;
    // Back to the sender: swap destination and source MAC, keep VLAN tags and ethertype.
    for i in 0..6 {
        l2.swap(i, i + 6);
    }

    let l3_off = pkt.l2_len;
    let mut ip = MaybeUninit::uninit();
    let ip = zeroed::bytes::<IPV6_HLEN>(&mut ip);
    let (cookie, ip_len, mss) = match pkt.family {
        Family::V4 => {
            let hdr = ptr_at::<[u8; IPV4_HLEN]>(ctx, l3_off)?;
            // SAFETY: hdr is bounds-checked; the helper reads the 20-byte header and our copy
            // of the TCP header (its length equals the data offset, as the helper requires).
            let cookie = unsafe {
                bpf_tcp_raw_gen_syncookie_ipv4(
                    hdr as *mut iphdr,
                    syn.bytes.as_mut_ptr() as *mut tcphdr,
                    bounded_len::<SYN_BUF_LEN>(tcp_len),
                )
            };
            ipv4_reply_header(ip, unsafe { &*hdr }, cfg, tcp_reply_len(syn));
            (cookie, IPV4_HLEN, cfg.mss4)
        }
        Family::V6 => {
            let hdr = ptr_at::<[u8; IPV6_HLEN]>(ctx, l3_off)?;
            // SAFETY: as above, with the 40-byte IPv6 header.
            let cookie = unsafe {
                bpf_tcp_raw_gen_syncookie_ipv6(
                    hdr as *mut ipv6hdr,
                    syn.bytes.as_mut_ptr() as *mut tcphdr,
                    bounded_len::<SYN_BUF_LEN>(tcp_len),
                )
            };
            ipv6_reply_header(ip, unsafe { &*hdr }, cfg, tcp_reply_len(syn));
            (cookie, IPV6_HLEN, cfg.mss6)
        }
    };
    if cookie < 0 {
        return None;
    }

    let mut tcp = MaybeUninit::uninit();
    let tcp = zeroed::bytes::<REPLY_TCP_MAX_LEN>(&mut tcp);
    let tcp_reply_len = build_tcp(tcp, syn, cookie as u32, mss, cfg.wscale, now);
    let pseudo = pseudo_header_sum(pkt.family, ip, tcp_reply_len);
    let check = csum::finish(csum::add(pseudo, tcp));
    tcp[TCP_CHECK..TCP_CHECK + 2].copy_from_slice(&check.to_be_bytes());

    resize(ctx, pkt.frame_len, pkt.l2_len + ip_len + tcp_reply_len)?;
    copy_out!(ctx, 0, l2, l2_len, [14, 18, 22])?;
    copy_out!(ctx, pkt.l2_len, ip, ip_len as u32, [20, 40])?;
    copy_out!(
        ctx,
        pkt.l2_len + ip_len,
        tcp,
        tcp_reply_len as u32,
        [24, 36, 40]
    )
}

/// Length of our TCP header: options depend only on what the client offered.
#[inline(always)]
fn tcp_reply_len(syn: &SynHeader) -> usize {
    let mut len = TCP_HLEN + 4; // MSS
    if syn.timestamp {
        len += 12;
        if syn.wscale != WSCALE_NONE {
            len += 4;
        }
    }
    len
}

/// Fills `tcp` (unused bytes stay zero, so the checksum may cover all of it) and returns the
/// header length. Options follow the kernel's synproxy: MSS; with timestamps also SACK-perm (or
/// two NOPs), timestamps carrying the option cookie, and window scale if the client sent one.
#[inline(always)]
fn build_tcp(
    tcp: &mut [u8; REPLY_TCP_MAX_LEN],
    syn: &SynHeader,
    cookie: u32,
    mss: u16,
    wscale: u8,
    now: u64,
) -> usize {
    let len = tcp_reply_len(syn);
    let b = &syn.bytes;
    let client_seq =
        u32::from_be_bytes([b[TCP_SEQ], b[TCP_SEQ + 1], b[TCP_SEQ + 2], b[TCP_SEQ + 3]]);
    // Ports swapped.
    tcp[TCP_SPORT..TCP_SPORT + 2].copy_from_slice(&b[TCP_DPORT..TCP_DPORT + 2]);
    tcp[TCP_DPORT..TCP_DPORT + 2].copy_from_slice(&b[TCP_SPORT..TCP_SPORT + 2]);
    tcp[TCP_SEQ..TCP_SEQ + 4].copy_from_slice(&cookie.to_be_bytes());
    tcp[TCP_ACK_SEQ..TCP_ACK_SEQ + 4].copy_from_slice(&client_seq.wrapping_add(1).to_be_bytes());
    tcp[TCP_DATA_OFFSET] = ((len / 4) as u8) << 4;
    tcp[TCP_FLAGS] = TCP_SYN | TCP_ACK;
    // Window 0, as SYNPROXY does: the client must not send data before the kernel has opened the
    // real connection; synproxy then sends the server's window.
    tcp[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    if syn.timestamp {
        // The kernel's TCP timestamp clock: milliseconds (tcp_clock_ms).
        let now_ms = (now / 1_000_000) as u32;
        let mut ts_cookie = (now_ms & !TS_OPT_MASK) | u32::from(syn.wscale);
        if syn.sack_permitted {
            ts_cookie |= TS_OPT_SACK;
            tcp[24..28].copy_from_slice(&[4, 2, 8, 10]);
        } else {
            tcp[24..28].copy_from_slice(&[1, 1, 8, 10]);
        }
        if syn.bytes[TCP_FLAGS] & (TCP_ECE | TCP_CWR) == TCP_ECE | TCP_CWR {
            ts_cookie |= TS_OPT_ECN;
            tcp[TCP_FLAGS] |= TCP_ECE;
        }
        tcp[28..32].copy_from_slice(&ts_cookie.to_be_bytes());
        tcp[32..36].copy_from_slice(&syn.tsval.to_be_bytes());
        if syn.wscale != WSCALE_NONE {
            tcp[36..40].copy_from_slice(&[1, 3, 3, wscale]);
        }
    }
    len
}

#[inline(always)]
fn ipv4_reply_header(
    ip: &mut [u8; IPV6_HLEN],
    syn_ip: &[u8; IPV4_HLEN],
    cfg: &DatapathConfig,
    tcp_len: usize,
) {
    let total_len = (IPV4_HLEN + tcp_len) as u16;
    // Version 4, 5 words of header.
    ip[0] = 0x45;
    ip[IPV4_TOTAL_LEN..IPV4_TOTAL_LEN + 2].copy_from_slice(&total_len.to_be_bytes());
    ip[IPV4_FLAGS] = IPV4_DF;
    ip[IPV4_TTL] = cfg.ttl;
    ip[IPV4_PROTOCOL] = IPPROTO_TCP;
    ip[IPV4_SADDR..IPV4_SADDR + 4].copy_from_slice(&syn_ip[IPV4_DADDR..IPV4_DADDR + 4]);
    ip[IPV4_DADDR..IPV4_DADDR + 4].copy_from_slice(&syn_ip[IPV4_SADDR..IPV4_SADDR + 4]);
    let check = csum::finish(csum::add(0, &ip[..IPV4_HLEN]));
    ip[IPV4_CHECK..IPV4_CHECK + 2].copy_from_slice(&check.to_be_bytes());
}

/// Extension headers of the SYN are not repeated: the reply is a plain IPv6 + TCP packet.
#[inline(always)]
fn ipv6_reply_header(
    ip: &mut [u8; IPV6_HLEN],
    syn_ip: &[u8; IPV6_HLEN],
    cfg: &DatapathConfig,
    tcp_len: usize,
) {
    // Version 6, no traffic class or flow label.
    ip[0] = 0x60;
    ip[IPV6_PAYLOAD_LEN..IPV6_PAYLOAD_LEN + 2].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    ip[IPV6_NEXT_HEADER] = IPPROTO_TCP;
    ip[IPV6_HOP_LIMIT] = cfg.ttl;
    ip[IPV6_SADDR..IPV6_SADDR + 16].copy_from_slice(&syn_ip[IPV6_DADDR..IPV6_DADDR + 16]);
    ip[IPV6_DADDR..IPV6_DADDR + 16].copy_from_slice(&syn_ip[IPV6_SADDR..IPV6_SADDR + 16]);
}

/// Sum of the TCP pseudo header: addresses, protocol and TCP length.
#[inline(always)]
fn pseudo_header_sum(family: Family, ip: &[u8; IPV6_HLEN], tcp_len: usize) -> u64 {
    let addrs = match family {
        Family::V4 => &ip[IPV4_SADDR..IPV4_DADDR + 4],
        Family::V6 => &ip[IPV6_SADDR..IPV6_DADDR + 16],
    };
    csum::add(u64::from(IPPROTO_TCP) + tcp_len as u64, addrs)
}

/// Makes the frame exactly `new_len` bytes: grow at the head, shrink at the tail (also
/// dropping the fragments of a multi-buffer frame).
#[inline(always)]
fn resize(ctx: &XdpContext, frame_len: usize, new_len: usize) -> Option<()> {
    let delta = new_len as i32 - frame_len as i32;
    // SAFETY: plain helper calls on our own context; packet pointers are re-derived afterwards.
    let err = unsafe {
        if delta > 0 {
            bpf_xdp_adjust_head(ctx.ctx, -delta)
        } else if delta < 0 {
            bpf_xdp_adjust_tail(ctx.ctx, delta)
        } else {
            0
        }
    };
    (err == 0).then_some(())
}

/// `buf[..M] = packet[offset..offset + M]` if those bytes are in the linear part.
#[inline(always)]
fn read_fixed<const M: usize, const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    buf: &mut [u8; N],
) -> bool {
    const { assert!(M <= N) };
    match bytes_at::<M>(ctx, offset) {
        Some(src) => {
            buf[..M].copy_from_slice(src);
            true
        }
        None => false,
    }
}

/// `packet[offset..offset + M] = buf[..M]` if those bytes are in the linear part.
#[inline(always)]
fn write_fixed<const M: usize, const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    buf: &[u8; N],
) -> bool {
    const { assert!(M <= N) };
    match ptr_at::<[u8; M]>(ctx, offset) {
        Some(dst) => {
            // SAFETY: bounds-checked by ptr_at; the packet is ours to rewrite.
            unsafe { &mut *(dst as *mut [u8; M]) }.copy_from_slice(&buf[..M]);
            true
        }
        None => false,
    }
}

/// Copies `len` packet bytes at `offset` into `buf`.
#[inline(always)]
fn load<const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    buf: &mut [u8; N],
    len: u32,
) -> Option<()> {
    let len = bounded_len::<N>(len);
    if len == 0 {
        return None;
    }
    // SAFETY: the helper checks the packet bounds; buf holds at least len bytes.
    let err =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, buf.as_mut_ptr() as *mut c_void, len) };
    (err == 0).then_some(())
}

#[inline(always)]
fn store<const N: usize>(ctx: &XdpContext, offset: usize, buf: &[u8; N], len: u32) -> Option<()> {
    if len == 0 || len as usize > N {
        return None;
    }
    // The same bounds again, on a value LLVM cannot see through: it fuses the check above into
    // arithmetic on a copy of `len`, and the verifier must see them on the register it passes.
    let len = verifier_visible(len).clamp(1, N as u32);
    // SAFETY: the helper checks the packet bounds and only reads len bytes of buf.
    let err =
        unsafe { bpf_xdp_store_bytes(ctx.ctx, offset as u32, buf.as_ptr() as *mut c_void, len) };
    (err == 0).then_some(())
}

/// `len` with an upper bound the verifier can see: below `N`, a power of two. Callers' lengths
/// are below `N` already (the parser bounds header lengths), so the mask changes nothing at run
/// time.
#[inline(always)]
pub fn bounded_len<const N: usize>(len: u32) -> u32 {
    const { assert!(N.is_power_of_two()) };
    verifier_visible(len) & (N as u32 - 1)
}
