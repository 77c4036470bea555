#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::{map, xdp}, maps::{Array, PerCpuArray}, programs::XdpContext};
use synguard_common::{Counter, DatapathConfig, PORT_BITMAP_WORDS};

#[map(name = "SG_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);
#[map(name = "SG_CONFIG")]
static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);
#[map(name = "SG_PORTS")]
static PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

#[xdp]
pub fn synguard(_ctx: XdpContext) -> u32 {
    if let Some(c) = COUNTERS.get_ptr_mut(Counter::Packets as u32) { unsafe { *c += 1 } }
    let _ = (CONFIG.get(0), PORTS.get(0));
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
