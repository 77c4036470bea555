//! XDP programs the lab attaches itself: a pass-through one for the client end of the veth
//! pair, a drop-everything one for an attacker's end, and any other (the benchmark's floors).
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

use crate::floodgen::bpf::{Insn, R0, XDP_PASS, XdpProgram, asm, drop_program};
use crate::netns::Netns;

/// An XDP program attached in driver (native) mode through a BPF link; detached on drop.
pub struct NativeProgram {
    _link: OwnedFd,
}

impl NativeProgram {
    /// The pass-through program on `iface` in `netns`.
    pub fn pass(netns: &Netns, iface: &str) -> Result<Self> {
        Self::attach(
            netns,
            iface,
            "sgl_nap",
            &[asm::mov(R0, XDP_PASS as i32), asm::exit()],
        )
    }

    /// A program that drops every frame on `iface` in `netns` (ARP and neighbour discovery
    /// included), in driver mode so that the peer's `XDP_TX` frames reach it and die there.
    pub fn drop_all(netns: &Netns, iface: &str) -> Result<Self> {
        Self::attach(netns, iface, "sgl_sink", &drop_program())
    }

    /// Loads `insns` as `name` and attaches them to `iface` in `netns`.
    pub fn attach(netns: &Netns, iface: &str, name: &str, insns: &[Insn]) -> Result<Self> {
        let prog =
            XdpProgram::load(name, insns).with_context(|| format!("loading XDP program {name}"))?;
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
