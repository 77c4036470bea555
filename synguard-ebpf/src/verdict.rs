//! What the program does with a packet, and the counter that says why.
use aya_ebpf::bindings::xdp_action;
use synguard_common::Counter;

/// An XDP action and the counter it is accounted under.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Verdict {
    pub action: u32,
    pub counter: Counter,
}

impl Verdict {
    /// To the kernel.
    pub const fn pass(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_PASS, counter)
    }

    pub const fn drop(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_DROP, counter)
    }

    /// Back out of the interface it came in on (the rewritten packet).
    pub const fn tx(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_TX, counter)
    }

    /// The packet could not be handled (a helper failed): the kernel's tracepoint records it.
    pub const fn aborted() -> Self {
        Self::new(xdp_action::XDP_ABORTED, Counter::Aborted)
    }

    const fn new(action: u32, counter: Counter) -> Self {
        Self { action, counter }
    }
}
