//! Per-port load: what reaches the kernel's half-open queue and what XDP absorbs with cookies,
//! read by the daemon's `auto` mode.
use aya_ebpf::bindings::BPF_NOEXIST;
use synguard_common::PortLoad;

use crate::maps::PORT_LOAD;

/// What happened on a port.
pub enum Event {
    /// A SYN XDP passed to the kernel.
    SynToKernel,
    /// An ACK met a kernel request socket: a kernel handshake completes.
    HandshakeCompleted,
    /// XDP answered a SYN with a cookie SYN-ACK.
    CookieSent,
    /// An ACK carried a valid cookie.
    CookieValidated,
}

#[inline(always)]
pub fn record(port: u16, event: Event) {
    let Some(load) = load_of(port) else {
        return;
    };
    // SAFETY: this CPU's slot of a live per-CPU map value.
    let load = unsafe { &mut *load };
    let field = match event {
        Event::SynToKernel => &mut load.syns_to_kernel,
        Event::HandshakeCompleted => &mut load.handshakes_completed,
        Event::CookieSent => &mut load.cookies_sent,
        Event::CookieValidated => &mut load.cookies_validated,
    };
    *field += 1;
}

#[inline(always)]
fn load_of(port: u16) -> Option<*mut PortLoad> {
    if let Some(load) = PORT_LOAD.get_ptr_mut(&port) {
        return Some(load);
    }
    let _ = PORT_LOAD.insert(&port, &PortLoad::default(), u64::from(BPF_NOEXIST));
    PORT_LOAD.get_ptr_mut(&port)
}
