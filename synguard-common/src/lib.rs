//! Types shared by the XDP program and the daemon.
//!
//! Everything here is `#[repr(C)]` and free of padding, so the daemon can read and write map
//! values byte for byte (`aya::Pod` behind the `user` feature). Map names are the contract
//! between the two sides: change them on both or not at all.
#![no_std]

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "synguard";

/// `PerCpuArray<u64>` with [`Counter::COUNT`] slots: one packet counter per verdict/outcome.
pub const MAP_COUNTERS: &str = "SG_COUNTERS";
/// `Array<DatapathConfig>` with one slot.
pub const MAP_CONFIG: &str = "SG_CONFIG";
/// `Array<u64>` with [`PORT_BITMAP_WORDS`] slots: bit `p % 64` of word `p / 64` set = port
/// `p` (host order) is protected. A bitmap gives O(1) lookups for any number of ports.
pub const MAP_PORTS: &str = "SG_PORTS";
/// `Array<u64>`, same layout as [`MAP_PORTS`]: protected ports whose SYNs XDP answers with
/// cookies right now. `--syncookies always`: every protected port; `off`: none; `auto`: the
/// daemon sets a port's bit while its half-open estimate is over the threshold. SYNs to a
/// protected port without the bit go to the kernel (and are counted in [`MAP_PORT_LOAD`]).
pub const MAP_COOKIE_PORTS: &str = "SG_COOKIE_PORTS";
/// Number of 64-bit words in a port bitmap (65536 ports).
pub const PORT_BITMAP_WORDS: u32 = 65536 / 64;
/// `PerCpuHashMap<u16, PortLoad>` (port in host order, entries created by the datapath):
/// what the kernel's half-open queue of each protected port receives from XDP.
pub const MAP_PORT_LOAD: &str = "SG_PORT_LOAD";
pub const PORT_LOAD_MAX_ENTRIES: u32 = 65536;
/// `LruHashMap<SourceKey, SourceState>`: per-source accounting (shared by all CPUs).
pub const MAP_SOURCES: &str = "SG_SOURCES";
/// Default capacity of [`MAP_SOURCES`] (the daemon may set another at load).
pub const SOURCES_DEFAULT_ENTRIES: u32 = 65536;
/// `LpmTrie<[u8; 4], u8>` / `LpmTrie<[u8; 16], u8>`: source CIDR policy, value a [`Policy`].
/// Longest prefix wins, so an allowed /24 inside a denied /8 is allowed.
pub const MAP_POLICY4: &str = "SG_POLICY4";
pub const MAP_POLICY6: &str = "SG_POLICY6";
/// Default capacity of each policy trie (the daemon sets the size it needs at load).
pub const POLICY_DEFAULT_ENTRIES: u32 = 1024;

/// Value of a policy trie entry.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Bypass every check: the packet goes to the kernel untouched.
    Allow = 1,
    /// Drop every packet to a protected port.
    Deny = 2,
}

/// `--syncookies`: who answers SYNs to protected ports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncookieMode {
    /// XDP observes and counts, every SYN reaches the kernel, no source is blocked.
    Off = 0,
    /// The kernel answers until a port's half-open estimate exceeds the threshold.
    Auto = 1,
    /// XDP answers every SYN.
    Always = 2,
}

/// Tunables the datapath reads on every packet. Written by the daemon at start and on reload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// How long a source over budget stays blocked, in nanoseconds.
    pub block_ns: u64,
    /// Per-source budget of half-open connections (SYNs minus completed handshakes) per
    /// second; 0 = unlimited.
    pub per_source_half_open: u32,
    /// Per-source budget of invalid ACKs per second; 0 = unlimited.
    pub per_source_invalid_ack: u32,
    /// MSS announced in SYN-ACKs to IPv4 clients.
    pub mss4: u16,
    /// MSS announced in SYN-ACKs to IPv6 clients.
    pub mss6: u16,
    /// Window scale announced when the client offered timestamps and window scaling.
    pub wscale: u8,
    /// TTL / hop limit of the SYN-ACK.
    pub ttl: u8,
    /// A [`SyncookieMode`] as `u8`. Ports answered with cookies come from
    /// [`MAP_COOKIE_PORTS`]; the mode here decides whether limits are enforced.
    pub syncookies: u8,
    /// Sources are accounted per prefix of this length: IPv4 (1..=32).
    pub source_prefix4: u8,
    /// ... and IPv6 (1..=128).
    pub source_prefix6: u8,
    /// [`POLICY_V4`] | [`POLICY_V6`]: which policy trie has entries, so packets skip the
    /// lookup in an empty one.
    pub policy: u8,
    /// Reserved, keeps the struct padding-free; must be zero.
    pub reserved: [u8; 6],
}

/// [`DatapathConfig::policy`] bit: [`MAP_POLICY4`] has entries.
pub const POLICY_V4: u8 = 1;
/// [`DatapathConfig::policy`] bit: [`MAP_POLICY6`] has entries.
pub const POLICY_V6: u8 = 2;

impl DatapathConfig {
    pub const DEFAULT: Self = Self {
        block_ns: 60_000_000_000,
        per_source_half_open: 0,
        per_source_invalid_ack: 0,
        mss4: 1460,
        mss6: 1440,
        wscale: 7,
        ttl: 64,
        syncookies: SyncookieMode::Always as u8,
        source_prefix4: 32,
        source_prefix6: 64,
        policy: 0,
        reserved: [0; 6],
    };
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const _: () = assert!(core::mem::size_of::<DatapathConfig>() == 32);

/// Per-CPU value of [`MAP_PORT_LOAD`]. The daemon's half-open estimates for a port are the
/// growth of `syns_to_kernel - handshakes_completed` (what the kernel's queue gets) and of
/// `cookies_sent - cookies_validated` (what XDP absorbs), summed over CPUs, over a short window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortLoad {
    /// SYNs XDP passed to the kernel (the port's cookie bit was clear).
    pub syns_to_kernel: u64,
    /// ACKs that found a kernel request socket: a kernel handshake completing.
    pub handshakes_completed: u64,
    /// SYNs XDP answered with a cookie SYN-ACK.
    pub cookies_sent: u64,
    /// ACKs with a valid cookie: a cookie handshake completing.
    pub cookies_validated: u64,
}

const _: () = assert!(core::mem::size_of::<PortLoad>() == 32);

/// Key of [`MAP_SOURCES`]: the source address masked to its accounting prefix, IPv4 as an
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: [u8; 16],
}

/// Value of [`MAP_SOURCES`]. Counts are for the current one-second window; at the start of a
/// new window the half-open count carries over halved (a decay), the others restart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    /// Start of the current window (bpf_ktime_get_ns).
    pub window_start_ns: u64,
    /// Blocked until this time (bpf_ktime_get_ns); 0 = not blocked.
    pub blocked_until_ns: u64,
    /// SYNs to protected ports in this window (answered by XDP or passed to the kernel).
    pub syns: u32,
    /// Handshakes completed in this window (valid cookie ACKs, kernel handshakes).
    pub completed: u32,
    /// Decayed half-open estimate: carried-over half-open plus `syns - completed`.
    pub half_open: u32,
    /// Invalid ACKs in this window.
    pub invalid_acks: u32,
}

const _: () = assert!(core::mem::size_of::<SourceState>() == 32);

/// Declares [`Counter`] with its slot numbers and stable snake_case names in one place.
macro_rules! counters {
    ($($variant:ident = $name:literal: $doc:literal,)+) => {
        /// Index into [`MAP_COUNTERS`]. Every packet the program sees is counted in `Packets`
        /// and in exactly one outcome slot; `MalformedTcpOptions`, `SourceBlocks` and
        /// `AckProbeRepaired` are counted in addition.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $(#[doc = $doc] $variant,)+
        }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)+];
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// Stable name, used in logs, `synguard stats` and metrics labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)+
                }
            }
        }
    };
}

counters! {
    Packets = "packets": "Every packet the program saw.",
    PassNonIp = "pass_non_ip": "Passed: neither IPv4 nor IPv6.",
    PassNonTcp = "pass_non_tcp": "Passed: IP but not TCP.",
    PassFragment = "pass_fragment": "Passed untouched: an IPv4 or IPv6 fragment.",
    PassUnprotectedPort = "pass_unprotected_port": "Passed: TCP to a port synguard does not protect.",
    PassOtherFlags = "pass_other_flags": "Passed: protected port, neither a bare SYN nor an ACK (RST, SYN+ACK, ...).",
    SynCookieSent = "syn_cookie_sent": "SYN answered with a cookie SYN-ACK (XDP_TX).",
    SynToKernel = "syn_to_kernel": "Passed: SYN to a protected port whose cookies are off (mode off, or auto below the threshold).",
    SynKnownSocket = "syn_known_socket": "Passed: SYN for a 4-tuple the kernel has a socket for (TIME_WAIT reuse, a retransmitted SYN of a kernel handshake).",
    AckEstablished = "ack_established": "Passed: ACK for a 4-tuple the kernel already has a socket for.",
    AckCookieValid = "ack_cookie_valid": "Passed: ACK carrying a valid SYN cookie (nft synproxy takes over).",
    AckCookieInvalid = "ack_cookie_invalid": "Dropped: ACK with no socket and no valid cookie.",
    AckProbeRepaired = "ack_probe_repaired": "A zero-window probe after a lost handshake ACK, rewritten into that ACK (seq + 1) for synproxy (counted in addition to ack_cookie_valid).",
    AckInvalidPassed = "ack_invalid_passed": "Passed: ACK with no socket and no valid cookie, in mode off (observe only).",
    MalformedL2 = "malformed_l2": "Passed: truncated Ethernet or VLAN header.",
    MalformedIpv4 = "malformed_ipv4": "Passed: truncated IPv4 header, IHL < 5 or past the end.",
    MalformedIpv6 = "malformed_ipv6": "Passed: truncated IPv6 header or extension-header chain too long.",
    MalformedTcp = "malformed_tcp": "Passed: truncated TCP header, data offset < 5 or past the end.",
    MalformedTcpOptions = "malformed_tcp_options": "SYN whose option list ends badly: parsed up to the fault, as the kernel does.",
    PassAllowlisted = "pass_allowlisted": "Passed: the source is on the allowlist (no check at all).",
    DropDenylisted = "drop_denylisted": "Dropped: the source is on the denylist.",
    DropSourceBlocked = "drop_source_blocked": "Dropped: SYN or new-connection ACK from a source blocked for exceeding a budget.",
    SourceBlocks = "source_blocks": "A source went over a per-source budget and was blocked (counted in addition).",
    DropBadChecksum = "drop_bad_checksum": "Dropped: SYN XDP would have answered, with a wrong IPv4 header or TCP checksum (the kernel drops those too).",
    Aborted = "aborted": "XDP_ABORTED: a helper failed while building a reply.",
}

/// Size of the TCP option area the datapath scans (the TCP maximum).
pub const TCP_MAX_OPTIONS_LEN: usize = 40;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four are repr(C), Copy and padding-free (sizes asserted above).
    unsafe impl aya::Pod for super::DatapathConfig {}
    unsafe impl aya::Pod for super::PortLoad {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceState {}
}
