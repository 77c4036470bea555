//! Types shared by the XDP program and the daemon.
//!
//! Everything here is `#[repr(C)]` and free of padding, so the daemon can read and write map
//! values byte for byte (`aya::Pod` behind the `user` feature). Map names are the contract
//! between the two sides: change them on both or not at all.
#![no_std]

// The daemon's side derives clap's and serde's traits, whose code names `std`.
#[cfg(feature = "user")]
extern crate std;

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "synguard";
/// Name of the TC ingress program (IPv6 checksum verification) in the object file.
pub const TC_PROGRAM_NAME: &str = "synguard_csum";

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
/// `LruHashMap<SourceKey, SourceState>`: exact accounting of the heavy sources, those whose
/// [`MAP_SKETCH`] estimate reached [`DatapathConfig::track_threshold`] (shared by all CPUs).
pub const MAP_SOURCES: &str = "SG_SOURCES";
/// Default capacity of [`MAP_SOURCES`] (the daemon may set another at load).
pub const SOURCES_DEFAULT_ENTRIES: u32 = 65536;
/// `Array<SketchLine>` of [`sketch_entries`]: each CPU's count-min sketch of attempts (SYNs and
/// invalid ACKs) per source prefix, in fixed memory, [`SKETCH_LINES`] lines a CPU, CPU after
/// CPU. A source's attempts go to [`SKETCH_DEPTH`] cells of one line of its CPU's sketch; its
/// estimate is their minimum. (Not a per-CPU array: its lookup loads the CPU's pointer to the
/// line from a table first, a second cache miss per SYN on live traffic.)
pub const MAP_SKETCH: &str = "SG_SKETCH";
pub const SKETCH_LINES: u32 = 16384;

/// Entries of [`MAP_SKETCH`] for `cpus` possible CPUs (the daemon sizes it at load).
pub const fn sketch_entries(cpus: u32) -> u32 {
    SKETCH_LINES.saturating_mul(cpus)
}
/// Cells of a source in its line (the sketch's rows).
pub const SKETCH_DEPTH: usize = 2;
/// A sketch cell: the window it was last written in (upper bits) and a decayed count.
pub const SKETCH_COUNT_BITS: u32 = 20;
pub const SKETCH_COUNT_MAX: u32 = (1 << SKETCH_COUNT_BITS) - 1;
/// Sketch windows are `2^30` ns (1.07 s) of `bpf_ktime_get_ns`; a count halves per window.
pub const SKETCH_WINDOW_SHIFT: u32 = 30;
/// Attempts per CPU and window (decayed) that make a source heavy when no budget asks for less.
pub const TRACK_THRESHOLD_DEFAULT: u32 = 32;

/// `Array<BlockLine>` with [`BLOCK_LINES`] slots: per slot, the sketch window until which a
/// source hashing there may be blocked. Written when a source is blocked, read by the attempts
/// of sources that are not heavy on their CPU: a block holds on every CPU, also where the
/// blocked source's own estimate is low. A collision only costs an exact lookup.
pub const MAP_BLOCKS: &str = "SG_BLOCKS";
pub const BLOCK_LINES: u32 = 1024;

/// `Array<PeerLine>` with [`PEER_LINES`] slots, mmapable: 4-tuples the kernel may hold a socket
/// for (seen completing or continuing a connection, or seeded by the daemon from sock_diag).
/// A slot holds the [`peer_mark`] of the last time a tuple hashing to it was seen, 0 if none.
/// A SYN whose tuple has no live mark skips the kernel socket lookup.
pub const MAP_PEERS: &str = "SG_PEERS";
pub const PEER_LINES: u32 = 16384;
/// Peer-filter epochs are `2^36` ns (68.7 s); a mark stays live for its epoch and two more, so
/// at least 137 s after the tuple was last seen: longer than TIME_WAIT (60 s) plus FIN_WAIT2
/// (`tcp_fin_timeout`, 60 s).
pub const PEER_EPOCH_SHIFT: u32 = 36;

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

impl Policy {
    /// The daemon's name of the list: `allow` (`--allow`, `allow_file`) or `deny`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Declares an enum the daemon is told by name, each variant's name written once: `ALL`,
/// `as_str` and `Display` spell it, and so, on the daemon's side (`user`), do clap's
/// `ValueEnum` (the flag) and serde's `Deserialize` (the config key).
macro_rules! named {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[doc = $doc:literal])* $variant:ident $(= $value:literal)? => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[cfg_attr(feature = "user", derive(clap::ValueEnum, serde::Deserialize))]
        pub enum $name {
            $(
                $(#[doc = $doc])*
                #[cfg_attr(feature = "user", value(name = $text), serde(rename = $text))]
                $variant $(= $value)?,
            )+
        }

        impl $name {
            pub const ALL: [Self; [$($text),+].len()] = [$(Self::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// `--syncookies`: who answers SYNs to protected ports; the daemon's flag, config key, logs
    /// and metrics spell it as [`Self::as_str`] does. Only `Off` changes what the datapath
    /// enforces; `Auto` and `Always` differ in which ports the daemon puts into
    /// [`MAP_COOKIE_PORTS`].
    #[repr(u8)]
    pub enum SyncookieMode {
        /// XDP observes and counts; every SYN reaches the kernel.
        Off = 0 => "off",
        /// The kernel answers until a port's half-open estimate exceeds --max-syn-backlog.
        Auto = 1 => "auto",
        /// XDP answers every SYN.
        Always = 2 => "always",
    }
}

/// `TryFrom<u8>` for a `#[repr(u8)]` [`named!`] enum kept in a [`DatapathConfig`] byte.
macro_rules! from_byte {
    ($name:ident) => {
        impl TryFrom<u8> for $name {
            /// The value, which no variant has.
            type Error = u8;

            fn try_from(value: u8) -> Result<Self, u8> {
                Self::ALL
                    .into_iter()
                    .find(|variant| *variant as u8 == value)
                    .ok_or(value)
            }
        }
    };
}

from_byte!(SyncookieMode);

named! {
    /// `--per-source-action`: what happens to a source over a per-source budget.
    #[repr(u8)]
    pub enum PerSourceAction {
        /// Blocked for `block_ns`: its SYNs and new-connection ACKs are dropped.
        Drop = 0 => "drop",
        /// Monitor mode: marked over budget for `block_ns` and reported (`synguard top`,
        /// metrics, a log summary), its packets handled as any other source's.
        Log = 1 => "log",
    }
}

from_byte!(PerSourceAction);

named! {
    /// `--xdp-mode`: how XDP is attached. Not the datapath's business, but the daemon and the
    /// lab that drives it must spell it alike ([`Self::as_str`]).
    pub enum XdpMode {
        /// Driver (native) XDP.
        Native => "native",
        /// Generic XDP in the kernel's receive path.
        Skb => "skb",
    }
}

/// Tunables the datapath reads on every packet. Written by the daemon at start and on reload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// How long a source over budget stays blocked (marked, under [`PerSourceAction::Log`]),
    /// in nanoseconds.
    pub block_ns: u64,
    /// Seed of the sketch and peer-filter hashes; the daemon sets a random one per program.
    pub hash_seed: u64,
    /// Per-source budget of half-open connections (SYNs minus completed handshakes) per
    /// second; 0 = unlimited.
    pub per_source_half_open: u32,
    /// Per-source budget of invalid ACKs per second; 0 = unlimited.
    pub per_source_invalid_ack: u32,
    /// A source gets an exact [`MAP_SOURCES`] entry once its sketch estimate on a CPU reaches
    /// this (see [`track_threshold`]).
    pub track_threshold: u32,
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
    /// A [`PerSourceAction`] as `u8`.
    pub per_source_action: u8,
    /// Reserved, keeps the struct padding-free; must be zero.
    pub reserved: [u8; 1],
}

/// [`DatapathConfig::policy`] bit: [`MAP_POLICY4`] has entries.
pub const POLICY_V4: u8 = 1;
/// [`DatapathConfig::policy`] bit: [`MAP_POLICY6`] has entries.
pub const POLICY_V6: u8 = 2;

impl DatapathConfig {
    pub const DEFAULT: Self = Self {
        block_ns: 60_000_000_000,
        hash_seed: 0x5167_7561_7264_0001,
        per_source_half_open: 0,
        per_source_invalid_ack: 0,
        track_threshold: TRACK_THRESHOLD_DEFAULT,
        mss4: 1460,
        mss6: 1440,
        wscale: 7,
        ttl: 64,
        syncookies: SyncookieMode::Always as u8,
        source_prefix4: 32,
        source_prefix6: 64,
        policy: 0,
        per_source_action: PerSourceAction::Drop as u8,
        reserved: [0; 1],
    };
}

impl DatapathConfig {
    /// [`Self::syncookies`] as a mode. A value no mode has acts as `Always` in the datapath
    /// (which only tells `Off` apart), so it reads as `Always`.
    pub fn syncookie_mode(&self) -> SyncookieMode {
        SyncookieMode::try_from(self.syncookies).unwrap_or(SyncookieMode::Always)
    }

    /// [`Self::per_source_action`] as an action. A value no action has acts as `Drop` in the
    /// datapath (which only tells `Log` apart), so it reads as `Drop`.
    pub fn per_source_action(&self) -> PerSourceAction {
        PerSourceAction::try_from(self.per_source_action).unwrap_or(PerSourceAction::Drop)
    }
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const _: () = assert!(core::mem::size_of::<DatapathConfig>() == 40);

/// The [`DatapathConfig::track_threshold`] for these budgets on `cpus` CPUs. Before a source
/// is heavy its attempts are only estimated, so up to `cpus × threshold` of them escape its
/// exact counts; at most half of the smallest budget keeps a flooding source blocked within
/// its first window. Without budgets, the default only decides who `synguard top` shows.
pub fn track_threshold(per_source_half_open: u32, per_source_invalid_ack: u32, cpus: u32) -> u32 {
    let smallest = [per_source_half_open, per_source_invalid_ack]
        .into_iter()
        .filter(|&b| b != 0)
        .min();
    match smallest {
        Some(budget) => (budget / (2 * cpus.max(1))).clamp(1, TRACK_THRESHOLD_DEFAULT),
        None => TRACK_THRESHOLD_DEFAULT,
    }
}

/// Value of [`MAP_SKETCH`]: one cache line of cells.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SketchLine {
    pub cells: [u32; 16],
}

/// Value of [`MAP_BLOCKS`]: one cache line of block ends (sketch windows).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockLine {
    pub until: [u32; 16],
}

/// Value of [`MAP_PEERS`]: one cache line of marks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLine {
    pub marks: [u8; 64],
}

/// The mark of the peer-filter epoch of `now_ns` (`bpf_ktime_get_ns`, CLOCK_MONOTONIC):
/// 1..=255, 0 is an empty slot.
pub const fn peer_mark(now_ns: u64) -> u8 {
    ((now_ns >> PEER_EPOCH_SHIFT) % 255) as u8 + 1
}

/// Whether a slot's `mark` is live at the epoch marked `now` (that epoch or the two before).
pub const fn peer_mark_live(mark: u8, now: u8) -> bool {
    mark != 0 && (now as u32 + 255 - mark as u32) % 255 <= 2
}

/// A TCP segment's 4-tuple as 32-bit words read in memory order from the packet's bytes
/// (`from_ne_bytes` of network-order bytes), IPv4 addresses as `::ffff:a.b.c.d`; both sides
/// hash the same words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TupleWords {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Source port in the low half, destination port in the high half, each as in the packet.
    pub ports: u32,
}

/// Word 2 of an IPv4-mapped IPv6 address (`::ffff:0:0`), in memory order.
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

impl TupleWords {
    /// The words of a segment from `src` to `dst` (16-byte addresses, IPv4 as
    /// `::ffff:a.b.c.d`, network order) and ports: what the datapath reads from its packet.
    pub fn of(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Self {
        let words = |octets: [u8; 16]| -> [u32; 4] {
            core::array::from_fn(|i| {
                u32::from_ne_bytes([
                    octets[4 * i],
                    octets[4 * i + 1],
                    octets[4 * i + 2],
                    octets[4 * i + 3],
                ])
            })
        };
        let ([s0, s1], [d0, d1]) = (sport.to_be_bytes(), dport.to_be_bytes());
        Self {
            src: words(src),
            dst: words(dst),
            ports: u32::from_ne_bytes([s0, s1, d0, d1]),
        }
    }

    /// The slot of this tuple in [`MAP_PEERS`]: (line, byte).
    #[inline(always)]
    // Indexed loops on purpose (see below).
    #[allow(clippy::needless_range_loop)]
    pub fn peer_slot(&self, seed: u64) -> (u32, usize) {
        // Indexed loops: the verifier follows them unrolled, not an iterator chain's pointers.
        let mut h = seed;
        for i in 0..4 {
            h = fold(h, u64::from(self.src[i]));
        }
        for i in 0..4 {
            h = fold(h, u64::from(self.dst[i]));
        }
        let h = finish(fold(h, u64::from(self.ports)));
        ((h >> 32) as u32 & (PEER_LINES - 1), (h & 63) as usize)
    }
}

/// A source prefix's hash (its [`SourceKey`] as words in memory order): it picks the
/// source's [`sketch_cells`] and [`block_slot`].
#[inline(always)]
// An indexed loop on purpose: the verifier follows it unrolled, not an iterator's pointers.
#[allow(clippy::needless_range_loop)]
pub fn source_hash(key_words: &[u32; 4], seed: u64) -> u64 {
    let mut h = !seed;
    for i in 0..4 {
        h = fold(h, u64::from(key_words[i]));
    }
    finish(h)
}

/// The sketch line and cells of the source with hash `h`.
#[inline(always)]
pub fn sketch_cells(h: u64) -> (u32, [usize; SKETCH_DEPTH]) {
    let first = (h & 15) as usize;
    // 1..=8 apart, so a source never uses one cell twice.
    let second = (first + 1 + ((h >> 4) & 7) as usize) & 15;
    ((h >> 32) as u32 & (SKETCH_LINES - 1), [first, second])
}

/// The [`MAP_BLOCKS`] slot of the source with hash `h`: (line, index).
#[inline(always)]
pub fn block_slot(h: u64) -> (u32, usize) {
    (
        (h >> 46) as u32 & (BLOCK_LINES - 1),
        ((h >> 56) & 15) as usize,
    )
}

/// One multiply-rotate step per word (cheap in BPF, which has no rotate instruction but
/// 64-bit multiplies), then murmur3's finaliser mixes all bits.
#[inline(always)]
const fn fold(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

#[inline(always)]
const fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

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
    /// Over a budget until this time (bpf_ktime_get_ns), 0 = never: blocked until then, or
    /// only marked under [`PerSourceAction::Log`].
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
        /// and in exactly one outcome slot; `MalformedTcpOptions`, `SourceBlocks`,
        /// `SourceOverBudget`, `AckProbeRepaired` and `SynPeerLookup` are counted in addition. `TcCsumVerified` and
        /// `TcCsumBad` are the TC program's, for packets XDP passed.
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
    SourceOverBudget = "source_over_budget": "A source went over a per-source budget under --per-source-action log: marked and reported, not blocked (counted in addition).",
    SynPeerLookup = "syn_peer_lookup": "SYN whose 4-tuple the peer filter holds: the kernel's socket table was asked (counted in addition).",
    TcCsumVerified = "tc_csum_verified": "TC ingress: an IPv6 bare ACK to a protected port arrived with its checksum unverified (CHECKSUM_NONE); checked, right, marked verified so nft synproxy takes it (not an XDP outcome).",
    TcCsumBad = "tc_csum_bad": "TC ingress: an IPv6 bare ACK to a protected port arrived unverified with a wrong TCP checksum; dropped (not an XDP outcome).",
    DropBadChecksum = "drop_bad_checksum": "Dropped: SYN XDP would have answered, with a wrong IPv4 header or TCP checksum (the kernel drops those too).",
    Aborted = "aborted": "XDP_ABORTED: a helper failed while building a reply.",
}

/// Size of the TCP option area the datapath scans (the TCP maximum).
pub const TCP_MAX_OPTIONS_LEN: usize = 40;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are repr(C), Copy and padding-free (sizes asserted above).
    unsafe impl aya::Pod for super::DatapathConfig {}
    unsafe impl aya::Pod for super::PortLoad {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceState {}
    unsafe impl aya::Pod for super::SketchLine {}
    unsafe impl aya::Pod for super::PeerLine {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncookie_modes_round_trip_through_their_byte() {
        for mode in SyncookieMode::ALL {
            assert_eq!(SyncookieMode::try_from(mode as u8), Ok(mode));
        }
        assert_eq!(SyncookieMode::try_from(3), Err(3));
        let unknown = DatapathConfig {
            syncookies: 3,
            ..DatapathConfig::DEFAULT
        };
        assert_eq!(unknown.syncookie_mode(), SyncookieMode::Always);
    }

    #[test]
    fn per_source_actions_round_trip_through_their_byte() {
        for action in PerSourceAction::ALL {
            assert_eq!(PerSourceAction::try_from(action as u8), Ok(action));
        }
        let unknown = DatapathConfig {
            per_source_action: 2,
            ..DatapathConfig::DEFAULT
        };
        assert_eq!(unknown.per_source_action(), PerSourceAction::Drop);
    }
}
