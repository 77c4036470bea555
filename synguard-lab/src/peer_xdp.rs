//! A pass-through XDP program for the client end of the veth pair.
//!
//! XDP_TX on a veth queues the frame on the peer's receive ring, but the kernel only schedules
//! the peer's NAPI poll when the *peer* has an XDP program (`veth_xdp_flush` checks
//! `rcv_rq->xdp_prog`). With only GRO enabled on the peer (`ethtool -K peer gro on`) XDP_TX
//! is counted as sent and the frames sit in the ring until unrelated traffic happens to poll
//! it (measured on 6.18: SYN-ACKs never reached the client). A two-instruction
//! `return XDP_PASS` program in driver mode fixes that without touching any frame.
//!
//! The program is loaded with bpf(2) and attached through a BPF link, so it needs no object
//! file and is detached when the link's file descriptor is closed (on drop, or when the
//! process dies).

use std::ffi::CString;
use std::mem::size_of;
use std::os::fd::{FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_PASS: u64 = 2;

/// `r0 = XDP_PASS; exit`.
const PROGRAM: [u64; 2] = [
    0xb7 | (XDP_PASS << 32), // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm
    0x95,                    // BPF_JMP | BPF_EXIT
];

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

/// The leading fields of `union bpf_attr` for BPF_LINK_CREATE.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, fully initialised repr(C) prefix of union bpf_attr and its
    // size is passed along; the kernel zero-extends the rest.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_ref(attr), size_of::<T>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An attached pass-through program; detached on drop.
pub struct PassProgram {
    _link: OwnedFd,
}

impl PassProgram {
    /// Attaches the program in driver (native) mode to `iface` in `netns`.
    pub fn attach(netns: &Netns, iface: &str) -> Result<Self> {
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..7].copy_from_slice(b"sgl_nap");
        let load = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: PROGRAM.len() as u32,
            insns: PROGRAM.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: BPF_XDP,
            ..ProgLoadAttr::default()
        };
        let prog = bpf(BPF_PROG_LOAD, &load).context("loading the pass-through XDP program")?;
        let c_iface = CString::new(iface)?;
        // The ifindex must be resolved in the namespace the link is created in.
        let link = netns.run(|| {
            // SAFETY: a valid NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {iface} in {}", netns.name());
            }
            let attr = LinkCreateAttr {
                prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
                target_ifindex: ifindex,
                attach_type: BPF_XDP,
                flags: XDP_FLAGS_DRV_MODE,
            };
            bpf(BPF_LINK_CREATE, &attr)
                .with_context(|| format!("attaching the pass-through XDP program to {iface}"))
        })?;
        Ok(Self { _link: link })
    }
}
