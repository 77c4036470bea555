//! Per-source accounting: budgets and blocks per source prefix, at a cost that does not grow
//! with the number of sources.
//!
//! Every attempt (a SYN, an invalid ACK) is counted in this CPU's sketch ([`crate::sketch`]).
//! A source whose estimate reaches `track_threshold` is heavy and gets an exact entry in
//! `SG_SOURCES` (LRU, shared by all CPUs): its SYNs, completed handshakes, invalid ACKs and
//! block, which the budgets read and `synguard top` shows. A spoofed flood's sources each make
//! one attempt and never allocate. Exact counts are plain read-modify-writes: the estimates
//! tolerate a lost update when two CPUs race on one heavy source (a budget then bites a little
//! later), and the hot path stays free of locked instructions.
use aya_ebpf::{bindings::BPF_NOEXIST, programs::XdpContext};
use synguard_common::{
    Counter, DatapathConfig, PerSourceAction, SKETCH_WINDOW_SHIFT, SourceKey, SourceState,
    V4_MAPPED_WORD, block_slot, sketch_cells, source_hash,
};

use crate::{
    counters::count,
    maps::{BLOCKS, SOURCES},
    parse::{
        Family, IPV4_HLEN, IPV6_HLEN, TcpPacket, bytes_at,
        field::{IPV4_SADDR, IPV6_SADDR},
    },
    sketch::{self, Cells},
    tuple::word,
};

const WINDOW_NS: u64 = 1_000_000_000;

/// Counts an attempt of the packet's source; its exact entry if the source is heavy (created
/// by its first heavy attempt) or may be blocked. `None` for any other source, or if the map
/// refuses an entry. A subprogram of its own for the stack limit (see `synack::answer_syn`).
#[inline(never)]
pub fn attempt(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    cfg: &DatapathConfig,
    now: u64,
) -> Option<Source> {
    source(ctx, pkt, cfg, now, true)
}

/// The exact entry of the packet's source if it is heavy or may be blocked, for completions
/// and block checks: nothing is counted or created. A subprogram of its own, like [`attempt`].
#[inline(never)]
pub fn tracked(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    cfg: &DatapathConfig,
    now: u64,
) -> Option<Source> {
    source(ctx, pkt, cfg, now, false)
}

/// [`attempt`] (`count`) or [`tracked`]. (Inlined into both: with the returned value's pointer
/// a subprogram would take six arguments, BPF passes five.)
#[inline(always)]
fn source(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    cfg: &DatapathConfig,
    now: u64,
    count: bool,
) -> Option<Source> {
    let (key, slots) = source_key(ctx, pkt, cfg)?;
    let estimate = if count {
        sketch::count(&slots.cells, now)
    } else {
        sketch::estimate(&slots.cells, now)
    };
    if estimate < cfg.track_threshold {
        return Source::blocked_elsewhere(&key, &slots, now);
    }
    Source::entry(&key, &slots, now, count)
}

/// Where a source's counts live besides its exact entry.
struct Slots {
    cells: Cells,
    /// Its [`BLOCKS`] line and index.
    block: (u32, usize),
}

/// A heavy (or blocked) source's entry, current for `now`.
pub struct Source {
    state: *mut SourceState,
    now: u64,
    block: (u32, usize),
}

impl Source {
    /// The entry of a source that is not heavy on this CPU, if [`BLOCKS`] says it may be
    /// blocked (its flood may run on other CPUs).
    #[inline(always)]
    fn blocked_elsewhere(key: &SourceKey, slots: &Slots, now: u64) -> Option<Self> {
        let (line, at) = slots.block;
        let until = BLOCKS.get(line)?.until[at & 15];
        if until <= (now >> SKETCH_WINDOW_SHIFT) as u32 {
            return None;
        }
        Self::entry(key, slots, now, false)
    }

    /// Finds (or with `create`, creates) the entry and starts a new window if the last one is
    /// over.
    #[inline(always)]
    fn entry(key: &SourceKey, slots: &Slots, now: u64, create: bool) -> Option<Self> {
        let state = match SOURCES.get_ptr_mut(key) {
            Some(state) => state,
            None if create => {
                let fresh = SourceState {
                    window_start_ns: now,
                    ..SourceState::default()
                };
                // Another CPU may have created it meanwhile: either way, look it up again.
                let _ = SOURCES.insert(key, &fresh, u64::from(BPF_NOEXIST));
                SOURCES.get_ptr_mut(key)?
            }
            None => return None,
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
        Some(Self {
            state,
            now,
            block: slots.block,
        })
    }

    /// Whether its attempts are dropped now: over a budget, under action drop.
    #[inline(always)]
    pub fn blocked(&self, cfg: &DatapathConfig) -> bool {
        !monitors(cfg) && self.over_budget()
    }

    /// Whether it went over a budget less than `block_ns` ago.
    #[inline(always)]
    fn over_budget(&self) -> bool {
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

    /// An attempt took the source over a budget: blocks it for the configured time and counts
    /// the block; true, the attempt drops. Under action log it marks it instead, once per
    /// `block_ns` (its attempts keep coming through), counts `source_over_budget`, and the
    /// attempt goes on.
    #[inline(always)]
    pub fn exceeded(&self, cfg: &DatapathConfig) -> bool {
        if !monitors(cfg) {
            self.mark(cfg);
            count(Counter::SourceBlocks);
            return true;
        }
        if !self.over_budget() {
            self.mark(cfg);
            count(Counter::SourceOverBudget);
        }
        false
    }

    /// Marks the source over budget for the configured time, on every CPU.
    #[inline(always)]
    fn mark(&self, cfg: &DatapathConfig) {
        let until = self.now + cfg.block_ns;
        // SAFETY: a live map value.
        unsafe { (*self.state).blocked_until_ns = until };
        let (line, at) = self.block;
        if let Some(line) = BLOCKS.get_ptr_mut(line) {
            // The window after the block's end: a source sharing the slot keeps the later end.
            let window = (until >> SKETCH_WINDOW_SHIFT) as u32 + 1;
            // SAFETY: a live map value; a plain store.
            unsafe {
                let slot = &mut (*line).until[at & 15];
                if *slot < window {
                    *slot = window;
                }
            }
        }
    }
}

/// Monitor mode (`--per-source-action log`): sources over a budget are reported, not dropped.
#[inline(always)]
fn monitors(cfg: &DatapathConfig) -> bool {
    cfg.per_source_action == PerSourceAction::Log as u8
}

/// The source address masked to its accounting prefix (IPv4 as `::ffff:a.b.c.d`), and its
/// sketch cells and block slot.
#[inline(always)]
fn source_key(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    cfg: &DatapathConfig,
) -> Option<(SourceKey, Slots)> {
    let mut words = [0u32; 4];
    let prefix = match pkt.family {
        Family::V4 => {
            let ip = bytes_at::<IPV4_HLEN>(ctx, pkt.l2_len)?;
            words[2] = V4_MAPPED_WORD;
            words[3] = word(ip, IPV4_SADDR);
            96 + u32::from(cfg.source_prefix4.min(32))
        }
        Family::V6 => {
            let ip = bytes_at::<IPV6_HLEN>(ctx, pkt.l2_len)?;
            for (i, w) in words.iter_mut().enumerate() {
                *w = word(ip, IPV6_SADDR + 4 * i);
            }
            u32::from(cfg.source_prefix6.min(128))
        }
    };
    for (i, w) in words.iter_mut().enumerate() {
        *w &= prefix_mask(prefix.saturating_sub(32 * i as u32));
    }
    let hash = source_hash(&words, cfg.hash_seed);
    let (line, cells) = sketch_cells(hash);
    let mut key = SourceKey::default();
    for (i, w) in words.iter().enumerate() {
        key.addr[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Some((
        key,
        Slots {
            cells: Cells { line, cells },
            block: block_slot(hash),
        },
    ))
}

/// The word (in memory order) that keeps the first `bits` bits of an address word.
#[inline(always)]
fn prefix_mask(bits: u32) -> u32 {
    match bits {
        0 => 0,
        1..=31 => (u32::MAX << (32 - bits)).to_be(),
        _ => u32::MAX,
    }
}
