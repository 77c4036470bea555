//! Each CPU's count-min sketch of attempts per source prefix: fixed memory that a spoofed
//! source's SYN only reads and increments (one cache line of this CPU's part of the map, no
//! allocation, no line another CPU writes).
//!
//! A cell holds the window it was last written in and a count that halves per window passed,
//! so an estimate is a decayed rate of attempts, never below the source's true one on this
//! CPU (count-min: other sources only add). [`MAP_SKETCH`](synguard_common::MAP_SKETCH).
use aya_ebpf::helpers::generated::bpf_get_smp_processor_id;
use synguard_common::{
    SKETCH_COUNT_BITS, SKETCH_COUNT_MAX, SKETCH_DEPTH, SKETCH_LINES, SKETCH_WINDOW_SHIFT,
};

use crate::maps::SKETCH;

const COUNT_MASK: u32 = SKETCH_COUNT_MAX;
/// Windows are tagged modulo this; an older cell has halved to nothing anyway.
const WINDOW_MASK: u32 = (1 << (32 - SKETCH_COUNT_BITS)) - 1;

/// Where a source's cells are: its line and the cells in it.
pub struct Cells {
    pub line: u32,
    pub cells: [usize; SKETCH_DEPTH],
}

/// Counts one attempt and returns the estimate including it.
#[inline(always)]
pub fn count(cells: &Cells, now: u64) -> u32 {
    let window = window(now);
    let Some(line) = SKETCH.get_ptr_mut(this_cpus(cells.line)) else {
        return 0;
    };
    let mut estimate = COUNT_MASK;
    for &at in &cells.cells {
        // SAFETY: a live map value in this CPU's part of the sketch: no other CPU writes it,
        // and XDP runs with preemption disabled.
        let cell = unsafe { &mut (*line).cells[at & 15] };
        let count = (decayed(*cell, window) + 1).min(COUNT_MASK);
        *cell = (window << SKETCH_COUNT_BITS) | count;
        estimate = estimate.min(count);
    }
    estimate
}

/// The estimate without counting anything.
#[inline(always)]
pub fn estimate(cells: &Cells, now: u64) -> u32 {
    let window = window(now);
    let Some(line) = SKETCH.get(this_cpus(cells.line)) else {
        return 0;
    };
    let mut estimate = COUNT_MASK;
    for &at in &cells.cells {
        estimate = estimate.min(decayed(line.cells[at & 15], window));
    }
    estimate
}

/// The index of `line` of this CPU's sketch. (The array's bounds check refuses a CPU the
/// daemon did not size it for.)
#[inline(always)]
fn this_cpus(line: u32) -> u32 {
    // SAFETY: plain helper call (inlined by the JIT).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    cpu.wrapping_mul(SKETCH_LINES).wrapping_add(line)
}

#[inline(always)]
fn window(now: u64) -> u32 {
    (now >> SKETCH_WINDOW_SHIFT) as u32 & WINDOW_MASK
}

/// The cell's count as of `window`: halved once per window since it was written.
#[inline(always)]
fn decayed(cell: u32, window: u32) -> u32 {
    let age = window.wrapping_sub(cell >> SKETCH_COUNT_BITS) & WINDOW_MASK;
    if age >= SKETCH_COUNT_BITS {
        0
    } else {
        (cell & COUNT_MASK) >> age
    }
}
