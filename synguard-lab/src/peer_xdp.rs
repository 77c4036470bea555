//! A pass-through XDP program for the client end of the veth pair.
//!
//! XDP_TX on a veth queues the frame on the peer's receive ring, but the kernel only schedules
//! the peer's NAPI poll when the *peer* has an XDP program (`veth_xdp_flush` checks
//! `rcv_rq->xdp_prog`). With only GRO enabled on the peer (`ethtool -K peer gro on`) XDP_TX
//! is counted as sent and the frames sit in the ring until unrelated traffic happens to poll
//! it (measured on 6.18: SYN-ACKs never reached the client). A two-instruction
//! `return XDP_PASS` program in driver mode fixes that without touching any frame.
//!
//! The program is loaded with bpf(2) ([`XdpProgram`]) and attached through a BPF link, so it
//! needs no object file and is detached when the link's file descriptor is closed (on drop, or
//! when the process dies).

use std::ffi::CString;
use std::os::fd::OwnedFd;

use anyhow::{Context as _, Result, bail};

use crate::floodgen::bpf::{R0, XDP_PASS, XdpProgram, asm};
use crate::netns::Netns;

/// An attached pass-through program; detached on drop.
pub struct PassProgram {
    _link: OwnedFd,
}

impl PassProgram {
    /// Attaches the program in driver (native) mode to `iface` in `netns`.
    pub fn attach(netns: &Netns, iface: &str) -> Result<Self> {
        let prog = XdpProgram::load("sgl_nap", &[asm::mov(R0, XDP_PASS as i32), asm::exit()])
            .context("loading the pass-through XDP program")?;
        let c_iface = CString::new(iface)?;
        // The ifindex must be resolved in the namespace the link is created in.
        let link = netns.run(|| {
            // SAFETY: a valid NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {iface} in {}", netns.name());
            }
            prog.attach(ifindex, true)
        })?;
        Ok(Self { _link: link })
    }
}
