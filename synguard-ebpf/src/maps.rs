//! The maps shared with the daemon (names and value types: `synguard_common`).
use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use synguard_common::{Counter, DatapathConfig, PORT_BITMAP_WORDS};

#[map(name = "SG_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "SG_CONFIG")]
static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

#[map(name = "SG_PORTS")]
static PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

/// Whether `port` (host order) is protected: bit `port % 64` of word `port / 64`.
#[inline(always)]
pub fn port_protected(port: u16) -> bool {
    match PORTS.get(u32::from(port >> 6)) {
        Some(word) => (*word >> (port & 63)) & 1 == 1,
        None => false,
    }
}

/// The daemon's tunables; the built-in defaults until it has written them.
#[inline(always)]
pub fn config() -> DatapathConfig {
    match CONFIG.get(0) {
        Some(cfg) if cfg.mss4 != 0 => *cfg,
        _ => DatapathConfig::DEFAULT,
    }
}
