//! Command line: what to protect and how the SYN-ACKs look.

use std::fmt;
use std::ops::RangeInclusive;

use clap::{Parser, ValueEnum};
use synguard_common::DatapathConfig;

use crate::ports::PortSet;

const DEFAULT: DatapathConfig = DatapathConfig::DEFAULT;

/// XDP SYN-flood guard: answers SYNs to the protected ports with SYN cookies in XDP and lets
/// nftables synproxy open the real connection once the client's ACK proves the cookie.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Interface to attach to; repeat the option for several interfaces.
    #[arg(long = "iface", value_name = "IF", required = true)]
    pub ifaces: Vec<String>,

    /// Protected TCP ports: a comma list of ports and ranges, e.g. `80,443,8000-8100`.
    #[arg(
        long,
        value_name = "PORTS",
        required = true,
        value_delimiter = ',',
        value_parser = parse_port_range
    )]
    pub ports: Vec<RangeInclusive<u16>>,

    /// XDP attach mode. `native` runs in the driver and fails on interfaces without driver
    /// support; `skb` (generic XDP) works everywhere but is slower.
    #[arg(long, value_enum, default_value_t = XdpMode::Native)]
    pub xdp_mode: XdpMode,

    /// MSS announced to IPv4 clients (in XDP SYN-ACKs and by synproxy).
    #[arg(long, default_value_t = DEFAULT.mss4, value_parser = clap::value_parser!(u16).range(536..=9000))]
    pub mss4: u16,

    /// MSS announced to IPv6 clients (in XDP SYN-ACKs and by synproxy).
    #[arg(long, default_value_t = DEFAULT.mss6, value_parser = clap::value_parser!(u16).range(1220..=9000))]
    pub mss6: u16,

    /// TCP window scale announced in SYN-ACKs; must match the local listener's, since
    /// synproxy translates windows between the two.
    #[arg(long, default_value_t = DEFAULT.wscale, value_parser = clap::value_parser!(u8).range(0..=14))]
    pub wscale: u8,

    /// TTL / hop limit of the XDP SYN-ACKs.
    #[arg(long, default_value_t = DEFAULT.ttl, value_parser = clap::value_parser!(u8).range(1..))]
    pub ttl: u8,

    /// Seconds between two statistics log lines.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stats_interval: u64,
}

impl Cli {
    /// The datapath tunables the options describe.
    pub const fn datapath_config(&self) -> DatapathConfig {
        DatapathConfig {
            mss4: self.mss4,
            mss6: self.mss6,
            wscale: self.wscale,
            ttl: self.ttl,
            ..DatapathConfig::DEFAULT
        }
    }

    pub fn port_set(&self) -> PortSet {
        PortSet::new(&self.ports)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpMode {
    /// Driver (native) XDP.
    Native,
    /// Generic XDP in the kernel's receive path.
    Skb,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

/// One item of `--ports`: `P` or `LO-HI`, 1 ≤ port ≤ 65535.
fn parse_port_range(item: &str) -> Result<RangeInclusive<u16>, String> {
    let item = item.trim();
    let (lo, hi) = match item.split_once('-') {
        Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
        None => {
            let port = parse_port(item)?;
            (port, port)
        }
    };
    if lo > hi {
        return Err(format!(
            "port range {lo}-{hi} is reversed (write {hi}-{lo})"
        ));
    }
    Ok(lo..=hi)
}

fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    // Parse wide so that 70000 is reported as out of range rather than as "not a number".
    let port: u64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a port number"))?;
    match port {
        0 => Err("port 0 cannot be protected (ports are 1-65535)".to_owned()),
        1..=65535 => Ok(port as u16),
        _ => Err(format!("port {port} is out of range (ports are 1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("synguard").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_come_from_the_datapath_contract() {
        let cli = parse(&["--iface", "eth0", "--ports", "80"]).unwrap();
        assert_eq!(cli.datapath_config(), DatapathConfig::DEFAULT);
        assert_eq!(cli.xdp_mode, XdpMode::Native);
        assert_eq!(cli.stats_interval, 5);
    }

    #[test]
    fn ports_lists_ranges_and_repeats_merge() {
        let cli = parse(&[
            "--iface",
            "a",
            "--iface",
            "b",
            "--ports",
            "443,80,8000-8100",
            "--ports",
            "8101,81",
        ])
        .unwrap();
        assert_eq!(cli.ifaces, ["a", "b"]);
        let set = cli.port_set();
        assert_eq!(set.to_string(), "80-81,443,8000-8101");
        assert_eq!(set.ports().count(), 2 + 1 + 102);
    }

    #[test]
    fn bad_ports_are_rejected_with_a_reason() {
        for (value, reason) in [
            ("0", "port 0 cannot be protected"),
            ("70000", "port 70000 is out of range"),
            ("80,x", "`x` is not a port number"),
            ("90-80", "reversed"),
            ("1-0", "port 0"),
        ] {
            let err = parse(&["--iface", "a", "--ports", value]).unwrap_err();
            assert!(err.to_string().contains(reason), "{value}: {err}");
        }
    }

    #[test]
    fn tunables_are_bounded() {
        for args in [
            ["--mss4", "100"],
            ["--mss6", "1200"],
            ["--mss4", "9001"],
            ["--wscale", "15"],
            ["--ttl", "0"],
            ["--stats-interval", "0"],
            ["--xdp-mode", "hw"],
        ] {
            let mut full = vec!["--iface", "a", "--ports", "80"];
            full.extend(args);
            assert!(parse(&full).is_err(), "{args:?} accepted");
        }
    }
}
