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
/// Number of 64-bit words in the protected-port bitmap (65536 ports).
pub const PORT_BITMAP_WORDS: u32 = 65536 / 64;

/// Tunables the datapath reads on every SYN. Written by the daemon at start and on reload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// MSS announced in SYN-ACKs to IPv4 clients.
    pub mss4: u16,
    /// MSS announced in SYN-ACKs to IPv6 clients.
    pub mss6: u16,
    /// Window scale announced when the client offered timestamps and window scaling.
    pub wscale: u8,
    /// TTL / hop limit of the SYN-ACK.
    pub ttl: u8,
    /// Reserved, keeps the struct padding-free; must be zero.
    pub reserved: [u8; 2],
}

impl DatapathConfig {
    pub const DEFAULT: Self = Self {
        mss4: 1460,
        mss6: 1440,
        wscale: 7,
        ttl: 64,
        reserved: [0; 2],
    };
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const _: () = assert!(core::mem::size_of::<DatapathConfig>() == 8);

/// Declares [`Counter`] with its slot numbers and stable snake_case names in one place.
macro_rules! counters {
    ($($variant:ident = $name:literal: $doc:literal,)+) => {
        /// Index into [`MAP_COUNTERS`]. Every packet the program sees is counted in `Packets`
        /// and in exactly one outcome slot; `MalformedTcpOptions` is counted in addition.
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
    SynKnownSocket = "syn_known_socket": "Passed: SYN for a 4-tuple the kernel has a socket for (TIME_WAIT reuse, a retransmitted SYN of a kernel handshake).",
    AckEstablished = "ack_established": "Passed: ACK for a 4-tuple the kernel already has a socket for.",
    AckCookieValid = "ack_cookie_valid": "Passed: ACK carrying a valid SYN cookie (nft synproxy takes over).",
    AckCookieInvalid = "ack_cookie_invalid": "Dropped: ACK with no socket and no valid cookie.",
    MalformedL2 = "malformed_l2": "Passed: truncated Ethernet or VLAN header.",
    MalformedIpv4 = "malformed_ipv4": "Passed: truncated IPv4 header, IHL < 5 or past the end.",
    MalformedIpv6 = "malformed_ipv6": "Passed: truncated IPv6 header or extension-header chain too long.",
    MalformedTcp = "malformed_tcp": "Passed: truncated TCP header, data offset < 5 or past the end.",
    MalformedTcpOptions = "malformed_tcp_options": "SYN whose option list ends badly: parsed up to the fault, as the kernel does.",
    Aborted = "aborted": "XDP_ABORTED: a helper failed while building a reply.",
}

/// Size of the TCP option area the datapath scans (the TCP maximum).
pub const TCP_MAX_OPTIONS_LEN: usize = 40;

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), Copy and padding-free (size asserted above).
    unsafe impl aya::Pod for super::DatapathConfig {}
}
