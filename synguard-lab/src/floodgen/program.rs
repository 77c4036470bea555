//! The live-frames generator's XDP program, hand-assembled: it restores the template, varies
//! the fields [`Layout`] names like [`Layout::randomize`] does, compensates the checksums and
//! returns XDP_TX, paced by a token bucket when the flood has a rate.
use super::Layout;
use super::bpf::{
    self, ArrayMap, HELPER_GET_PRANDOM_U32, HELPER_KTIME_GET_NS, HELPER_MAP_LOOKUP_ELEM, Insn, R0,
    R1, R2, R3, R7, R8, R9, R10, Size, XDP_DROP, XDP_TX, asm::*,
};

fn off(at: usize) -> i16 {
    i16::try_from(at).expect("frame offsets are small")
}

/// `r9 = fold(sum of the 16-bit words at `words`); r3 = fold(0xffff - r9 + sum); *(u16 *)at = r3`
fn compensate(insns: &mut Vec<Insn>, words: &[usize], sum: u16, at: usize) {
    insns.push(mov(R9, 0));
    for &w in words {
        insns.push(ldx(Size::H, R2, R7, off(w)));
        insns.push(add_reg(R9, R2));
    }
    let fold_into = |insns: &mut Vec<Insn>, reg: u8| {
        for _ in 0..2 {
            insns.extend([
                mov_reg(R2, reg),
                rsh(R2, 16),
                and32(reg, 0xffff),
                add_reg(reg, R2),
            ]);
        }
    };
    fold_into(insns, R9);
    insns.extend([mov(R3, 0xffff), sub_reg(R3, R9), add(R3, i32::from(sum))]);
    fold_into(insns, R3);
    insns.push(stx(Size::H, R7, off(at), R3));
}

/// The paced generator's state, shared with user space: when the next frame is due
/// (`bpf_ktime_get_ns` time), frames sent, and the most it may send.
pub(super) type PaceMap = ArrayMap<24>;
const PACE_DUE: i16 = 0;
pub(super) const PACE_SENT: i16 = 8;
pub(super) const PACE_LIMIT: i16 = 16;
/// How far behind a paced flood may fall (e.g. across the gap between two test-run calls)
/// and then catch up at full speed: a burst of at most this long's worth of frames.
const PACE_SLACK_NS: i32 = 200_000;

/// Pacing of the live-frames generator.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// The [`PaceMap`]'s descriptor.
    pub map_fd: i32,
    /// One frame per this many nanoseconds.
    pub interval_ns: i32,
}

/// A token bucket in front of the generator: the frame goes out only when it is due (then
/// the next one is due `interval_ns` later) and the limit is not reached; otherwise the
/// program returns XDP_DROP, which costs the generator little. The flood is then even over
/// time instead of bursts between calls. Uses r0-r3, r8, r9 and the stack's first word.
pub fn pacing(pace: Pacing) -> Vec<Insn> {
    let mut insns = vec![
        call(HELPER_KTIME_GET_NS),
        mov_reg(R9, R0),
        mov(R1, 0),
        stx(Size::W, R10, -4, R1),
    ];
    insns.extend(ld_map_fd(R1, pace.map_fd));
    insns.extend([mov_reg(R2, R10), add(R2, -4), call(HELPER_MAP_LOOKUP_ELEM)]);
    // Forward jumps to the drop at the end, patched once its place is known.
    let mut to_drop = vec![insns.len()];
    insns.extend([
        jeq(R0, 0, 0),
        mov_reg(R8, R0),
        ldx(Size::DW, R1, R8, PACE_SENT),
        ldx(Size::DW, R2, R8, PACE_LIMIT),
    ]);
    to_drop.push(insns.len());
    insns.extend([jge_reg(R1, R2, 0), ldx(Size::DW, R1, R8, PACE_DUE)]);
    to_drop.push(insns.len());
    insns.extend([
        // Not due yet.
        jgt_reg(R1, R9, 0),
        // Due: the next one is one interval later, counted from no further back than the
        // slack.
        mov_reg(R2, R9),
        add(R2, -PACE_SLACK_NS),
        jgt_reg(R1, R2, 1),
        mov_reg(R1, R2),
        add(R1, pace.interval_ns),
        stx(Size::DW, R8, PACE_DUE, R1),
        ldx(Size::DW, R1, R8, PACE_SENT),
        add(R1, 1),
        stx(Size::DW, R8, PACE_SENT, R1),
        ja(2),
    ]);
    let drop = insns.len();
    insns.extend([mov(R0, XDP_DROP as i32), exit()]);
    for at in to_drop {
        let off = i16::try_from(drop - at - 1).expect("short program");
        insns[at] = Insn(insns[at].0 & !(0xffff << 16) | (u64::from(off as u16) << 16));
    }
    insns
}

/// Stores of `template` over the frame, 4 bytes at a time. Live frames are not reset between
/// runs: a page comes back to the generator's pool with whatever the receiver wrote into it,
/// e.g. synguard's XDP turns a SYN into its SYN-ACK in place, and sending that again would
/// flood with the server's own SYN-ACKs.
fn restore(template: &[u8]) -> Vec<Insn> {
    let mut insns = Vec::new();
    let mut at = 0;
    for (size, n) in [(Size::W, 4), (Size::H, 2), (Size::B, 1)] {
        while template.len() - at >= n {
            let mut word = [0u8; 4];
            word[..n].copy_from_slice(&template[at..at + n]);
            insns.push(st(size, R7, off(at), i32::from_ne_bytes(word)));
            at += n;
        }
    }
    insns
}

/// The live-frames generator: writes the template (see [`restore`]), randomises source,
/// source port, sequence (and acknowledgment) number exactly like [`Layout::randomize`] and
/// returns XDP_TX, when `pace` lets it ([`pacing`]).
pub fn generator_program(template: &[u8], layout: &Layout, pace: Option<Pacing>) -> Vec<Insn> {
    let mut body = pace.map(pacing).unwrap_or_default();
    body.extend(restore(template));
    for &(at, mask, base) in &layout.src_words {
        body.extend([
            call(HELPER_GET_PRANDOM_U32),
            and32(R0, !mask),
            or32(R0, base),
            stx(Size::W, R7, off(at), R0),
        ]);
    }
    body.extend([
        call(HELPER_GET_PRANDOM_U32),
        mov_reg(R2, R0),
        and32(R2, 0xffff),
        or32(R2, 0x0004),
        stx(Size::H, R7, off(layout.l4), R2),
        rsh(R0, 16),
        stx(Size::H, R7, off(layout.l4 + 4), R0),
    ]);
    if layout.ack {
        body.extend([
            call(HELPER_GET_PRANDOM_U32),
            stx(Size::W, R7, off(layout.l4 + 8), R0),
        ]);
    }
    compensate(
        &mut body,
        &layout.tcp_words(),
        layout.tcp_sum,
        layout.l4 + 6,
    );
    if let Some(id) = layout.ip_id {
        compensate(&mut body, &layout.ip_words(), layout.ip_sum, id);
    }
    bpf::program(
        i32::try_from(template.len()).unwrap_or(i32::MAX),
        &body,
        XDP_TX,
    )
}
