//! Per-port load on the kernel's half-open queue, read by the daemon's `auto` mode.
use aya_ebpf::bindings::BPF_NOEXIST;
use synguard_common::PortLoad;

use crate::maps::PORT_LOAD;

/// A SYN XDP passed to the kernel for `port`.
#[inline(always)]
pub fn syn_to_kernel(port: u16) {
    if let Some(load) = load_of(port) {
        // SAFETY: this CPU's slot of a live per-CPU map value.
        unsafe { (*load).syns_to_kernel += 1 }
    }
}

/// An ACK completing a kernel handshake on `port`.
#[inline(always)]
pub fn handshake_completed(port: u16) {
    if let Some(load) = load_of(port) {
        // SAFETY: as above.
        unsafe { (*load).handshakes_completed += 1 }
    }
}

#[inline(always)]
fn load_of(port: u16) -> Option<*mut PortLoad> {
    if let Some(load) = PORT_LOAD.get_ptr_mut(&port) {
        return Some(load);
    }
    let _ = PORT_LOAD.insert(&port, &PortLoad::default(), u64::from(BPF_NOEXIST));
    PORT_LOAD.get_ptr_mut(&port)
}
