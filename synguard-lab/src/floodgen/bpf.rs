//! Raw bpf(2): XDP programs written as instruction words (no object file, no eBPF crate),
//! `BPF_PROG_TEST_RUN` (plain and with `BPF_F_TEST_XDP_LIVE_FRAMES`) and XDP links.
//!
//! The programs here are tiny (a generator that randomises a template frame, and the two
//! benchmark floors: drop and reflect), so hand-assembled instructions are clearer than a
//! build step.

use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `src_reg` of a 64-bit immediate load whose immediate is a map's file descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_XDP: u32 = 37;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: frames the program returns XDP_TX/XDP_REDIRECT for are
/// really transmitted.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// Helper ids (`enum bpf_func_id`).
pub const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
pub const HELPER_KTIME_GET_NS: i32 = 5;
pub const HELPER_GET_PRANDOM_U32: i32 = 7;

/// Registers.
pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R5: u8 = 5;
pub const R6: u8 = 6;
pub const R7: u8 = 7;
pub const R8: u8 = 8;
pub const R9: u8 = 9;
/// The read-only frame pointer.
pub const R10: u8 = 10;

/// One instruction word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn(pub u64);

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn(
        code as u64
            | ((dst as u64) << 8)
            | ((src as u64) << 12)
            | ((off as u16 as u64) << 16)
            | ((imm as u32 as u64) << 32),
    )
}

/// Memory access sizes.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    const fn bits(self) -> u8 {
        match self {
            Size::DW => 0x18,
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
        }
    }
}

/// A small assembler: the handful of instructions the programs here need.
pub mod asm {
    use super::{Insn, Size, insn};

    /// `dst = *(size *)(src + off)`
    pub const fn ldx(size: Size, dst: u8, src: u8, off: i16) -> Insn {
        insn(0x61 | size.bits(), dst, src, off, 0)
    }
    /// `*(size *)(dst + off) = imm`
    pub const fn st(size: Size, dst: u8, off: i16, imm: i32) -> Insn {
        insn(0x62 | size.bits(), dst, 0, off, imm)
    }
    /// `*(size *)(dst + off) = src`
    pub const fn stx(size: Size, dst: u8, off: i16, src: u8) -> Insn {
        insn(0x63 | size.bits(), dst, src, off, 0)
    }
    /// 64-bit `dst = imm` (sign-extended).
    pub const fn mov(dst: u8, imm: i32) -> Insn {
        insn(0xb7, dst, 0, 0, imm)
    }
    /// 32-bit `dst = imm` (zero-extended).
    pub const fn mov32(dst: u8, imm: u32) -> Insn {
        insn(0xb4, dst, 0, 0, imm as i32)
    }
    pub const fn mov_reg(dst: u8, src: u8) -> Insn {
        insn(0xbf, dst, src, 0, 0)
    }
    pub const fn add(dst: u8, imm: i32) -> Insn {
        insn(0x07, dst, 0, 0, imm)
    }
    pub const fn add_reg(dst: u8, src: u8) -> Insn {
        insn(0x0f, dst, src, 0, 0)
    }
    pub const fn sub_reg(dst: u8, src: u8) -> Insn {
        insn(0x1f, dst, src, 0, 0)
    }
    /// 32-bit `dst &= imm` (the upper half is cleared).
    pub const fn and32(dst: u8, imm: u32) -> Insn {
        insn(0x54, dst, 0, 0, imm as i32)
    }
    /// 32-bit `dst |= imm`.
    pub const fn or32(dst: u8, imm: u32) -> Insn {
        insn(0x44, dst, 0, 0, imm as i32)
    }
    pub const fn rsh(dst: u8, imm: i32) -> Insn {
        insn(0x77, dst, 0, 0, imm)
    }
    /// `if dst > src goto +off` (unsigned).
    pub const fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x2d, dst, src, off, 0)
    }
    /// `if dst >= src goto +off` (unsigned).
    pub const fn jge_reg(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x3d, dst, src, off, 0)
    }
    /// `if dst == imm goto +off`.
    pub const fn jeq(dst: u8, imm: i32, off: i16) -> Insn {
        insn(0x15, dst, 0, off, imm)
    }
    /// `goto +off`.
    pub const fn ja(off: i16) -> Insn {
        insn(0x05, 0, 0, off, 0)
    }
    /// `dst = map` (the map's descriptor, which the verifier turns into its address): two
    /// instruction words.
    pub const fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [
            insn(0x18, dst, super::BPF_PSEUDO_MAP_FD, 0, fd),
            insn(0, 0, 0, 0, 0),
        ]
    }
    pub const fn call(helper: i32) -> Insn {
        insn(0x85, 0, 0, 0, helper)
    }
    pub const fn exit() -> Insn {
        insn(0x95, 0, 0, 0, 0)
    }
}

use asm::*;

/// `r7 = data; r8 = data_end; if data + len > data_end return XDP_PASS` (r6 = ctx). The
/// returned code continues with direct packet access through r7 to `len` bytes.
pub fn prologue(len: i32) -> Vec<Insn> {
    vec![
        mov_reg(R6, R1),
        ldx(Size::W, R7, R6, 0),
        ldx(Size::W, R8, R6, 4),
        mov_reg(R2, R7),
        add(R2, len),
        // Skip the two instructions of the early return when in bounds.
        jgt_reg(R2, R8, 0), // patched below
    ]
}

/// Finishes a program that started with [`prologue`]: `body`, then `return action`; the
/// bounds check jumps to a final `return XDP_PASS`.
pub fn program(len: i32, body: &[Insn], action: u32) -> Vec<Insn> {
    let mut insns = prologue(len);
    let check = insns.len() - 1;
    insns.extend_from_slice(body);
    insns.push(mov(R0, action as i32));
    insns.push(exit());
    let out = insns.len();
    insns.push(mov(R0, XDP_PASS as i32));
    insns.push(exit());
    let off = i16::try_from(out - check - 1).expect("short program");
    insns[check] = jgt_reg(R2, R8, off);
    insns
}

/// `return XDP_DROP`: the cheapest possible program.
pub fn drop_program() -> Vec<Insn> {
    vec![mov(R0, XDP_DROP as i32), exit()]
}

/// Swaps the Ethernet addresses, IPv4 addresses and TCP/UDP ports of an untagged IPv4 frame
/// with a 20-byte IP header and returns XDP_TX: the cheapest "reply" an XDP program can make.
pub fn reflect_program() -> Vec<Insn> {
    let swap = |size: Size, a: i16, b: i16| {
        [
            ldx(size, R2, R7, a),
            ldx(size, R3, R7, b),
            stx(size, R7, a, R3),
            stx(size, R7, b, R2),
        ]
    };
    let mut body = Vec::new();
    body.extend(swap(Size::W, 0, 6));
    body.extend(swap(Size::H, 4, 10));
    body.extend(swap(Size::W, 26, 30));
    body.extend(swap(Size::H, 34, 36));
    program(54, &body, XDP_TX)
}

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so it is zero: the kernel refuses non-zero bytes past the last field.
    _pad: u32,
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `struct xdp_md` as test-run context.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised repr(C) prefix of union bpf_attr and its
    // size is passed along; the kernel zero-extends the rest and may write into it.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}

fn owned_fd(ret: libc::c_long) -> std::io::Result<OwnedFd> {
    let fd = i32::try_from(ret).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Turns on the kernel's run time and count of every BPF program (`run_time_ns`, `run_cnt`)
/// while the returned descriptor is open; closing it, also when the process dies, turns them
/// off again, so no `kernel.bpf_stats_enabled` is left behind.
pub fn enable_run_time_stats() -> Result<OwnedFd> {
    #[repr(C)]
    struct EnableStatsAttr {
        stats_type: u32,
    }
    let mut attr = EnableStatsAttr {
        stats_type: BPF_STATS_RUN_TIME,
    };
    sys_bpf(BPF_ENABLE_STATS, &mut attr)
        .and_then(owned_fd)
        .context("enabling BPF run-time statistics (BPF_ENABLE_STATS)")
}

/// A loaded XDP program; unloaded when its descriptor closes.
pub struct XdpProgram {
    fd: OwnedFd,
    pub name: String,
    pub insns: usize,
}

impl XdpProgram {
    /// Loads `insns` as an XDP program named `name` (at most 15 bytes); on a verifier
    /// rejection the error carries the verifier log.
    pub fn load(name: &str, insns: &[Insn]) -> Result<Self> {
        let mut prog_name = [0u8; 16];
        let len = name.len().min(15);
        prog_name[..len].copy_from_slice(&name.as_bytes()[..len]);
        let words: Vec<u64> = insns.iter().map(|i| i.0).collect();
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: u32::try_from(words.len())?,
            insns: words.as_ptr() as u64,
            license: c"GPL".as_ptr() as u64,
            log_level: 1,
            log_size: u32::try_from(log.len())?,
            log_buf: log.as_mut_ptr() as u64,
            prog_name,
            expected_attach_type: BPF_XDP,
            ..ProgLoadAttr::default()
        };
        match sys_bpf(BPF_PROG_LOAD, &mut attr).and_then(owned_fd) {
            Ok(fd) => Ok(Self {
                fd,
                name: name.to_owned(),
                insns: words.len(),
            }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                bail!(
                    "loading XDP program {name}: {e}\n{}",
                    String::from_utf8_lossy(&log[..end])
                )
            }
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Attaches the program to interface `ifindex` of the calling thread's namespace, in
    /// driver mode (`native`) or generic mode; detached when the returned link closes.
    pub fn attach(&self, ifindex: u32, native: bool) -> Result<OwnedFd> {
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: if native { 1 << 2 } else { 1 << 1 },
        };
        sys_bpf(BPF_LINK_CREATE, &mut attr)
            .and_then(owned_fd)
            .with_context(|| format!("attaching XDP program {} to ifindex {ifindex}", self.name))
    }
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// A one-slot array map of `N` bytes shared by a program and user space; freed when its
/// descriptor and the programs using it are gone.
pub struct ArrayMap<const N: usize> {
    fd: OwnedFd,
}

impl<const N: usize> ArrayMap<N> {
    pub fn create() -> Result<Self> {
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: u32::try_from(N)?,
            max_entries: 1,
        };
        let fd = sys_bpf(BPF_MAP_CREATE, &mut attr)
            .and_then(owned_fd)
            .context("creating a BPF array map")?;
        Ok(Self { fd })
    }

    /// The descriptor, for [`asm::ld_map_fd`].
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn elem(&self, cmd: libc::c_long, value: *mut u8) -> std::io::Result<libc::c_long> {
        let key = 0u32;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: std::ptr::from_ref(&key) as u64,
            value: value as u64,
            flags: 0,
        };
        sys_bpf(cmd, &mut attr)
    }

    pub fn read(&self) -> Result<[u8; N]> {
        let mut value = [0u8; N];
        self.elem(BPF_MAP_LOOKUP_ELEM, value.as_mut_ptr())
            .context("reading a BPF array map")?;
        Ok(value)
    }

    pub fn write(&self, mut value: [u8; N]) -> Result<()> {
        self.elem(BPF_MAP_UPDATE_ELEM, value.as_mut_ptr())
            .context("writing a BPF array map")?;
        Ok(())
    }
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Copy, Debug)]
pub struct TestRunOutput {
    /// The program's return value (of the last repetition).
    pub retval: u32,
    /// Average time per repetition, as the kernel measured it.
    pub duration: Duration,
    /// Length of the packet after the program.
    pub data_size_out: u32,
}

/// One plain `BPF_PROG_TEST_RUN` of `prog` on a copy of `frame`, `repeat` times (the kernel
/// does not restore the packet between repetitions). `out` receives the packet afterwards.
pub fn test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    out: Option<&mut [u8]>,
    repeat: u32,
) -> Result<TestRunOutput> {
    let (data_out, data_size_out) = match out {
        Some(buf) => (buf.as_mut_ptr() as u64, u32::try_from(buf.len())?),
        None => (0, 0),
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: u32::try_from(frame.len())?,
        data_in: frame.as_ptr() as u64,
        data_out,
        data_size_out,
        repeat,
        ..TestRunAttr::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    Ok(TestRunOutput {
        retval: attr.retval,
        duration: Duration::from_nanos(u64::from(attr.duration)),
        data_size_out: attr.data_size_out,
    })
}

/// `BPF_PROG_TEST_RUN` with live frames: `repeat` copies of `frame` go through `prog` in
/// batches of `batch` as if received on `ifindex` (of the calling thread's namespace); the
/// ones it returns XDP_TX for are transmitted on that interface.
pub fn live_frames(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    batch: u32,
) -> Result<()> {
    let ctx = XdpMd {
        data_end: u32::try_from(frame.len())?,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: u32::try_from(frame.len())?,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: std::ptr::from_ref(&ctx) as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..TestRunAttr::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN with live frames")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_the_kernel_layout() {
        // r0 = 2; exit (the pass-through program of peer_xdp.rs).
        assert_eq!(mov(R0, 2).0, 0xb7 | (2 << 32));
        assert_eq!(exit().0, 0x95);
        // r2 = *(u32 *)(r7 + 26)
        assert_eq!(
            ldx(Size::W, R2, R7, 26).0,
            0x61 | (2 << 8) | (7 << 12) | (26 << 16)
        );
        // if r2 > r8 goto +3
        assert_eq!(
            jgt_reg(R2, R8, 3).0,
            0x2d | (2 << 8) | (8 << 12) | (3 << 16)
        );
    }

    #[test]
    fn programs_jump_to_their_final_pass() {
        let p = reflect_program();
        assert_eq!(p[p.len() - 2], mov(R0, XDP_PASS as i32));
        assert_eq!(p[p.len() - 4], mov(R0, XDP_TX as i32));
    }
}
