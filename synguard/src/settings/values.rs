//! The values settings take beside numbers: their bounds and defaults, what to leave at exit,
//! the log format, the kernel tuning and where metrics listen.

use std::fmt;
use std::net::SocketAddr;

use clap::ValueEnum;
use serde::Deserialize;

/// Bounds shared by the flags (clap) and the file keys.
pub mod bounds {
    use std::ops::RangeInclusive;

    pub const MSS4: RangeInclusive<i64> = 536..=9000;
    pub const MSS6: RangeInclusive<i64> = 1220..=9000;
    pub const WSCALE: RangeInclusive<i64> = 0..=14;
    pub const TTL: RangeInclusive<i64> = 1..=255;
    pub const STATS_INTERVAL: RangeInclusive<i64> = 1..=86_400;
    pub const MAX_SYN_BACKLOG: RangeInclusive<i64> = 1..=1 << 24;
    pub const COOLDOWN: RangeInclusive<i64> = 1..=86_400;
    pub const ATTACK_SYN_RATE: RangeInclusive<i64> = 1..=1 << 30;
    pub const SYNACK_RETRIES: RangeInclusive<i64> = 0..=255;
    pub const BUDGET: RangeInclusive<i64> = 0..=u32::MAX as i64;
    pub const BLOCK_SECONDS: RangeInclusive<i64> = 1..=86_400 * 365;
    pub const SOURCE_PREFIX4: RangeInclusive<i64> = 1..=32;
    pub const SOURCE_PREFIX6: RangeInclusive<i64> = 1..=128;
}

/// Defaults of the settings the datapath contract does not fix.
pub mod defaults {
    use synguard_common::{SyncookieMode, XdpMode};

    pub const STATS_INTERVAL: u32 = 5;
    /// Auto-mode threshold (half-open SYNs per port and second) and `tcp_max_syn_backlog`.
    pub const MAX_SYN_BACKLOG: u32 = 256;
    pub const COOLDOWN: u32 = 10;
    /// SYNs per second on one port that start an attack event: far above what one port of
    /// a busy server gets from real clients, far below a flood.
    pub const ATTACK_SYN_RATE: u32 = 10_000;
    pub const SYNCOOKIES: SyncookieMode = SyncookieMode::Auto;
    pub const XDP_MODE: XdpMode = XdpMode::Native;
}

/// `--on-exit`: what the daemon leaves behind when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Detach, delete the nftables table, restore sysctls.
    #[default]
    Remove,
    /// Leave the protection in place (`synguard detach` removes it).
    Keep,
}

/// `--log-format`: how log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (tracing's JSON formatter), the event's fields as keys.
    Json,
}

/// The `--tune-kernel` sysctls (set by `kernel::tuning`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTuning {
    pub max_syn_backlog: u32,
    /// `None`: left as it is.
    pub synack_retries: Option<u8>,
    /// `None`: left as it is.
    pub abort_on_overflow: Option<bool>,
}

/// `--metrics-addr`: where `/metrics` listens, or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    Listen(SocketAddr),
    None,
}

impl MetricsAddr {
    pub const DEFAULT: Self = Self::Listen(SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        9787,
    )));

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "none" {
            return Ok(Self::None);
        }
        text.parse().map(Self::Listen).map_err(|_| {
            format!(
                "`{text}` is neither an address with a port (127.0.0.1:9787, [::1]:9787) nor `none`"
            )
        })
    }
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listen(addr) => addr.fmt(f),
            Self::None => f.write_str("none"),
        }
    }
}

/// CPUs the program may run on: each has its own sketch, and a source's SYNs spread over them.
pub fn possible_cpus() -> u32 {
    aya::util::nr_cpus()
        .ok()
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_none() {
        assert_eq!(MetricsAddr::parse("none"), Ok(MetricsAddr::None));
        assert_eq!(MetricsAddr::DEFAULT.to_string(), "127.0.0.1:9787");
        assert_eq!(
            MetricsAddr::parse("[::1]:9100").unwrap().to_string(),
            "[::1]:9100"
        );
        assert!(MetricsAddr::parse("localhost").is_err());
    }
}
