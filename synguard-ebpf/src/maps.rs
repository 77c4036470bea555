//! The maps shared with the daemon (names and value types: `synguard_common`).
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use synguard_common::{
    BLOCK_LINES, BlockLine, Counter, DatapathConfig, PEER_LINES, POLICY_DEFAULT_ENTRIES,
    PORT_BITMAP_WORDS, PORT_LOAD_MAX_ENTRIES, PeerLine, PortLoad, SKETCH_LINES,
    SOURCES_DEFAULT_ENTRIES, SketchLine, SourceKey, SourceState,
};

#[map(name = "SG_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "SG_CONFIG")]
static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

#[map(name = "SG_PORTS")]
static PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

#[map(name = "SG_COOKIE_PORTS")]
static COOKIE_PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

#[map(name = "SG_PORT_LOAD")]
pub static PORT_LOAD: PerCpuHashMap<u16, PortLoad> =
    PerCpuHashMap::with_max_entries(PORT_LOAD_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "SG_SOURCES")]
pub static SOURCES: LruHashMap<SourceKey, SourceState> =
    LruHashMap::with_max_entries(SOURCES_DEFAULT_ENTRIES, 0);

#[map(name = "SG_BLOCKS")]
pub static BLOCKS: Array<BlockLine> = Array::with_max_entries(BLOCK_LINES, 0);

// Sized by the daemon: SKETCH_LINES per possible CPU. Mmapable for the layout, not for the
// daemon: such an array's values start on a page, so each line is one cache line (a plain
// array's start where its header ends, and a source's two cells could take two misses).
#[map(name = "SG_SKETCH")]
pub static SKETCH: Array<SketchLine> = Array::with_max_entries(SKETCH_LINES, BPF_F_MMAPABLE);

// Mmapable: the daemon seeds marks with byte stores that race with the datapath's harmlessly
// (a map update would rewrite the whole line and could lose a mark stored meanwhile).
#[map(name = "SG_PEERS")]
pub static PEERS: Array<PeerLine> = Array::with_max_entries(PEER_LINES, BPF_F_MMAPABLE);

#[map(name = "SG_POLICY4")]
pub static POLICY4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(POLICY_DEFAULT_ENTRIES, 0);

#[map(name = "SG_POLICY6")]
pub static POLICY6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(POLICY_DEFAULT_ENTRIES, 0);

/// Whether `port` (host order) is protected.
#[inline(always)]
pub fn port_protected(port: u16) -> bool {
    bit_set(&PORTS, port)
}

/// Whether XDP answers SYNs to `port` with cookies right now (see `MAP_COOKIE_PORTS`).
#[inline(always)]
pub fn cookies_on(port: u16) -> bool {
    bit_set(&COOKIE_PORTS, port)
}

/// Bit `port % 64` of word `port / 64`.
#[inline(always)]
fn bit_set(bitmap: &Array<u64>, port: u16) -> bool {
    match bitmap.get(u32::from(port >> 6)) {
        Some(word) => (*word >> (port & 63)) & 1 == 1,
        None => false,
    }
}

/// Read-only data: what [`config`] returns before the daemon has written its tunables.
static DEFAULT_CONFIG: DatapathConfig = DatapathConfig::DEFAULT;

/// The daemon's tunables; the built-in defaults until it has written them. A reference, not a
/// copy: the dispatcher's stack frame is stacked with the SYN-ACK's (see `synack::answer_syn`).
#[inline(always)]
pub fn config() -> &'static DatapathConfig {
    match CONFIG.get(0) {
        Some(cfg) if cfg.mss4 != 0 => cfg,
        _ => &DEFAULT_CONFIG,
    }
}
