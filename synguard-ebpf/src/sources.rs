//! Per-source accounting: SYNs, completed handshakes and invalid ACKs per source prefix, and
//! blocks for sources over a budget. One LRU entry per prefix, shared by all CPUs. Counts are
//! plain read-modify-writes: the estimates tolerate a lost update when two CPUs race on one
//! source (a budget then bites a little later), and the hot path stays free of locked
//! instructions.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_ns, programs::XdpContext};
use synguard_common::{DatapathConfig, SourceKey, SourceState};

use crate::{
    maps::SOURCES,
    parse::{Family, IPV4_HLEN, IPV6_HLEN, TcpPacket, ptr_at},
};

const WINDOW_NS: u64 = 1_000_000_000;

/// A source's entry, current for `now`.
pub struct Source {
    state: *mut SourceState,
    now: u64,
}

impl Source {
    /// Finds or creates the entry of the packet's source prefix and starts a new window if the
    /// last one is over. `None` if the map refuses an entry (then nothing is accounted).
    /// A subprogram of its own for the stack limit (see `synack::answer_syn`).
    #[inline(never)]
    pub fn of(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig) -> Option<Self> {
        let key = source_key(ctx, pkt, cfg)?;
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        let state = match SOURCES.get_ptr_mut(&key) {
            Some(state) => state,
            None => {
                let fresh = SourceState {
                    window_start_ns: now,
                    ..SourceState::default()
                };
                // Another CPU may have created it meanwhile: either way, look it up again.
                let _ = SOURCES.insert(&key, &fresh, u64::from(BPF_NOEXIST));
                SOURCES.get_ptr_mut(&key)?
            }
        };
        // SAFETY: a live map value; fields are plain integers.
        unsafe {
            if now.wrapping_sub((*state).window_start_ns) >= WINDOW_NS {
                (*state).window_start_ns = now;
                (*state).half_open /= 2;
                (*state).syns = 0;
                (*state).completed = 0;
                (*state).invalid_acks = 0;
            }
        }
        Some(Self { state, now })
    }

    #[inline(always)]
    pub fn blocked(&self) -> bool {
        // SAFETY: a live map value.
        self.now < unsafe { (*self.state).blocked_until_ns }
    }

    /// Accounts a SYN. `true` if the source just went over its half-open budget.
    #[inline(always)]
    pub fn syn(&self, cfg: &DatapathConfig) -> bool {
        // SAFETY: a live map value.
        let half_open = unsafe {
            let state = &mut *self.state;
            state.syns = state.syns.wrapping_add(1);
            state.half_open = state.half_open.saturating_add(1);
            state.half_open
        };
        cfg.per_source_half_open != 0 && half_open > cfg.per_source_half_open
    }

    /// Accounts a completed handshake.
    #[inline(always)]
    pub fn completed(&self) {
        // SAFETY: a live map value.
        unsafe {
            let state = &mut *self.state;
            state.completed = state.completed.wrapping_add(1);
            state.half_open = state.half_open.saturating_sub(1);
        }
    }

    /// Accounts an invalid ACK. `true` if the source just went over its budget.
    #[inline(always)]
    pub fn invalid_ack(&self, cfg: &DatapathConfig) -> bool {
        // SAFETY: a live map value.
        let invalid = unsafe {
            let state = &mut *self.state;
            state.invalid_acks = state.invalid_acks.saturating_add(1);
            state.invalid_acks
        };
        cfg.per_source_invalid_ack != 0 && invalid > cfg.per_source_invalid_ack
    }

    /// Blocks the source for the configured time.
    #[inline(always)]
    pub fn block(&self, cfg: &DatapathConfig) {
        // SAFETY: a live map value.
        unsafe { (*self.state).blocked_until_ns = self.now + cfg.block_ns };
    }
}

/// The source address masked to its accounting prefix; IPv4 as `::ffff:a.b.c.d`.
#[inline(always)]
fn source_key(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig) -> Option<SourceKey> {
    let mut key = SourceKey::default();
    let prefix = match pkt.family {
        Family::V4 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV4_HLEN]>(ctx, pkt.l2_len)? };
            key.addr[10] = 0xff;
            key.addr[11] = 0xff;
            key.addr[12..16].copy_from_slice(&ip[12..16]);
            96 + u32::from(cfg.source_prefix4.min(32))
        }
        Family::V6 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV6_HLEN]>(ctx, pkt.l2_len)? };
            key.addr.copy_from_slice(&ip[8..24]);
            u32::from(cfg.source_prefix6.min(128))
        }
    };
    for (i, byte) in key.addr.iter_mut().enumerate() {
        let bits = prefix.saturating_sub(8 * i as u32).min(8);
        *byte &= !(0xffu16 >> bits) as u8;
    }
    Some(key)
}
