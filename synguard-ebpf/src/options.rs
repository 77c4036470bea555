//! The client's SYN header, copied to the stack, and its TCP options.
//!
//! The copy serves two readers: `bpf_tcp_raw_gen_syncookie_*` (which wants the header with a
//! length the verifier can bound) and the option scan. Options are scanned one per `bpf_loop`
//! step: the verifier checks the step once instead of unrolling every possible layout, so any
//! order, NOP/EOL padding or unknown option is accepted (an unrolled 12-step loop hit the
//! 1M-instruction limit). SYNs without options and SYNs in Linux's layout skip the loop (see
//! `SynHeader::canonical_layout`).
use core::mem::MaybeUninit;

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop};

use crate::{
    parse::{TCP_HLEN, TCP_MAX_HLEN},
    zeroed::zeroed,
};

/// The largest TCP header (60) rounded up to a power of two.
pub const SYN_BUF_LEN: usize = 64;
const _: () = assert!(SYN_BUF_LEN >= TCP_MAX_HLEN);

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_WINDOW: u8 = 3;
const TCPOPT_SACK_PERM: u8 = 4;
const TCPOPT_TIMESTAMP: u8 = 8;
const TCPOLEN_WINDOW: usize = 3;
const TCPOLEN_SACK_PERM: usize = 2;
const TCPOLEN_TIMESTAMP: usize = 10;
/// RFC 7323: larger shifts are clamped, as the kernel does.
const TCP_MAX_WSCALE: u8 = 14;
/// "No window scaling" in the 4-bit wscale field of the timestamp cookie.
pub const WSCALE_NONE: u8 = 0x0f;
/// One step per option; 40 option bytes hold at most 40 options (all NOPs).
const MAX_OPTIONS: u32 = 40;

/// A SYN's TCP header (with options) and what the option scan found in it. Aligned and sized
/// for [`zeroed`].
#[repr(C, align(8))]
pub struct SynHeader {
    /// The TCP header as received; bytes past `len` are zero. Sized to a power of two for the
    /// verifier (see `synack::load`).
    pub bytes: [u8; SYN_BUF_LEN],
    /// Header length including options: 20..=60.
    pub len: u32,
    /// Offset of the next option to scan.
    pos: u32,
    /// Client's TSval (host order), echoed as our TSecr.
    pub tsval: u32,
    /// Client's window scale (clamped to 14), or [`WSCALE_NONE`].
    pub wscale: u8,
    pub sack_permitted: bool,
    pub timestamp: bool,
    /// The option list ended in a bad length: scanning stopped there, as in the kernel.
    pub malformed: bool,
}

impl SynHeader {
    /// A header of `len` bytes with no options found yet, in `slot`.
    #[inline(always)]
    pub fn init(slot: &mut MaybeUninit<Self>, len: u32) -> &mut Self {
        // SAFETY: all-zero is a valid SynHeader (integers and `false`s).
        let header = unsafe { zeroed(slot) };
        header.len = len;
        header.pos = TCP_HLEN as u32;
        header.wscale = WSCALE_NONE;
        header
    }

    /// Scans the options in `bytes[20..len]`.
    #[inline(always)]
    pub fn scan_options(&mut self) {
        if self.canonical_layout() {
            return;
        }
        // SAFETY: the callback only touches `self` through the context pointer, and bpf_loop
        // calls it synchronously.
        unsafe {
            bpf_loop(
                MAX_OPTIONS,
                scan_one_option as *const () as *mut c_void,
                self as *mut Self as *mut c_void,
                0,
            );
        }
    }

    /// The fast path: what nearly every SYN carries, decoded without `bpf_loop` (whose
    /// callback steps cost more than the rest of the option handling). No options at all
    /// (hping3), MSS alone (many flood tools), or Linux's own layout: MSS, SACK-permitted (or
    /// two NOPs), timestamps, NOP, window scale. Sets exactly what the general scan would; `false` leaves
    /// `self` untouched for it.
    #[inline(always)]
    fn canonical_layout(&mut self) -> bool {
        const MSS: [u8; 2] = [2, 4];
        const SACK_PERM_TS: [u8; 4] = [TCPOPT_SACK_PERM, 2, TCPOPT_TIMESTAMP, 10];
        const NOPS_TS: [u8; 4] = [TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10];
        const NOP_WSCALE: [u8; 3] = [TCPOPT_NOP, TCPOPT_WINDOW, 3];
        match self.len {
            20 => true,
            // The cookie helper reads the MSS itself.
            24 => [self.bytes[20], self.bytes[21]] == MSS,
            40 => {
                let b = &self.bytes;
                let sack_ts = [b[24], b[25], b[26], b[27]];
                if [b[20], b[21]] != MSS
                    || [b[36], b[37], b[38]] != NOP_WSCALE
                    || (sack_ts != SACK_PERM_TS && sack_ts != NOPS_TS)
                {
                    return false;
                }
                self.sack_permitted = sack_ts == SACK_PERM_TS;
                self.tsval = u32::from_be_bytes([b[28], b[29], b[30], b[31]]);
                self.timestamp = true;
                self.wscale = b[39].min(TCP_MAX_WSCALE);
                true
            }
            _ => false,
        }
    }

    #[inline(always)]
    fn byte(&self, at: usize) -> Option<u8> {
        self.bytes.get(at).copied()
    }

    /// Handles the option at `pos`; `None` ends the scan.
    #[inline(always)]
    fn scan_at(&mut self, pos: usize) -> Option<()> {
        let len = self.len as usize;
        if pos >= len {
            return None;
        }
        let kind = self.byte(pos)?;
        match kind {
            TCPOPT_EOL => return None,
            TCPOPT_NOP => {
                self.pos = pos as u32 + 1;
                return Some(());
            }
            _ => {}
        }
        // Like the kernel's tcp_parse_options: a length < 2 or past the end stops the scan.
        let size = match self.byte(pos + 1) {
            Some(size) if size >= 2 && pos + usize::from(size) <= len => usize::from(size),
            _ => {
                self.malformed = true;
                return None;
            }
        };
        match (kind, size) {
            (TCPOPT_WINDOW, TCPOLEN_WINDOW) => {
                self.wscale = self.byte(pos + 2)?.min(TCP_MAX_WSCALE);
            }
            (TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM) => self.sack_permitted = true,
            (TCPOPT_TIMESTAMP, TCPOLEN_TIMESTAMP) => {
                self.tsval = u32::from_be_bytes([
                    self.byte(pos + 2)?,
                    self.byte(pos + 3)?,
                    self.byte(pos + 4)?,
                    self.byte(pos + 5)?,
                ]);
                self.timestamp = true;
            }
            _ => {}
        }
        self.pos = (pos + size) as u32;
        Some(())
    }
}

/// bpf_loop callback: 0 = continue, 1 = stop.
#[inline(never)]
extern "C" fn scan_one_option(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the `SynHeader` passed by `scan_options`.
    let header = unsafe { &mut *(ctx as *mut SynHeader) };
    let pos = header.pos as usize;
    match header.scan_at(pos) {
        Some(()) => 0,
        None => 1,
    }
}
