//! Command line: what to protect and how the SYN-ACKs look.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use synguard_common::{PerSourceAction, SyncookieMode, XdpMode};

use crate::settings::policy::parse_cidr;
use crate::settings::ports::parse_port_range;
use crate::settings::values::{LogFormat, MetricsAddr, OnExit, bounds};

/// XDP SYN-flood guard: answers SYNs to the protected ports with SYN cookies in XDP and lets
/// nftables synproxy open the real connection once the client's ACK proves the cookie.
///
/// Every option can also be set in the `--config` file (same name, `_` for `-`); an option
/// given here replaces the file's value.
#[derive(Debug, Default, Parser)]
#[command(version, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML config file; re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Interface to attach to; repeat the option for several interfaces.
    #[arg(long = "iface", value_name = "IF", required_unless_present = "config")]
    pub ifaces: Vec<String>,

    /// Protected TCP ports: a comma list of ports and ranges, e.g. `80,443,8000-8100`.
    #[arg(
        long,
        value_name = "PORTS",
        required_unless_present = "config",
        value_delimiter = ',',
        value_parser = parse_port_range
    )]
    pub ports: Vec<RangeInclusive<u16>>,

    /// XDP attach mode. `native` runs in the driver and fails on interfaces without driver
    /// support; `skb` (generic XDP) works everywhere but is slower.
    /// [default: native]
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,

    /// MSS announced to IPv4 clients (in XDP SYN-ACKs and by synproxy). [default: 1460]
    #[arg(long, value_parser = clap::value_parser!(u16).range(bounds::MSS4))]
    pub mss4: Option<u16>,

    /// MSS announced to IPv6 clients (in XDP SYN-ACKs and by synproxy). [default: 1440]
    #[arg(long, value_parser = clap::value_parser!(u16).range(bounds::MSS6))]
    pub mss6: Option<u16>,

    /// TCP window scale announced in SYN-ACKs; must match the local listener's, since
    /// synproxy translates windows between the two. [default: 7]
    #[arg(long, value_parser = clap::value_parser!(u8).range(bounds::WSCALE))]
    pub wscale: Option<u8>,

    /// TTL / hop limit of the XDP SYN-ACKs. [default: 64]
    #[arg(long, value_parser = clap::value_parser!(u8).range(bounds::TTL))]
    pub ttl: Option<u8>,

    /// Seconds between two statistics log lines. [default: 5]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(bounds::STATS_INTERVAL))]
    pub stats_interval: Option<u32>,

    /// Who answers SYNs to protected ports: `off` (the kernel; XDP only counts), `always`
    /// (XDP), `auto` (the kernel until a port's half-open estimate exceeds
    /// --max-syn-backlog, then XDP until it stayed below for --cooldown). [default: auto]
    #[arg(long, value_enum)]
    pub syncookies: Option<SyncookieMode>,

    /// Auto-mode threshold: SYNs per port that the kernel got but saw no handshake complete
    /// for, over one second; also `net.ipv4.tcp_max_syn_backlog` with --tune-kernel.
    /// [default: 256]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(bounds::MAX_SYN_BACKLOG))]
    pub max_syn_backlog: Option<u32>,

    /// Auto mode: seconds a port's estimate must stay below the threshold before the kernel
    /// answers again. [default: 10]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(bounds::COOLDOWN))]
    pub cooldown: Option<u32>,

    /// SYNs per second on one port (answered by XDP or passed to the kernel) that start an
    /// attack event; in mode auto a switch to cookies starts one too. It ends once the rate
    /// stayed below half of this, and cookies are off, for --cooldown. [default: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(bounds::ATTACK_SYN_RATE))]
    pub attack_syn_rate: Option<u32>,

    /// Also set the kernel's own knobs: tcp_syncookies=1, tcp_max_syn_backlog, and
    /// --synack-retries / --abort-on-overflow if given; restored at exit.
    #[arg(long)]
    pub tune_kernel: bool,

    /// With --tune-kernel: `net.ipv4.tcp_synack_retries`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(bounds::SYNACK_RETRIES))]
    pub synack_retries: Option<u8>,

    /// With --tune-kernel: `net.ipv4.tcp_abort_on_overflow=1`.
    #[arg(long)]
    pub abort_on_overflow: bool,

    /// Per-source budget of half-open connections per second (0: unlimited); a source over
    /// it is blocked for --block-seconds. [default: 0]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(bounds::BUDGET))]
    pub per_source_half_open: Option<u32>,

    /// Per-source budget of invalid ACKs per second (0: unlimited). [default: 0]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(bounds::BUDGET))]
    pub per_source_invalid_ack: Option<u32>,

    /// How long a source over a budget stays blocked. [default: 60]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(bounds::BLOCK_SECONDS))]
    pub block_seconds: Option<u32>,

    /// What happens to a source over a budget: `drop` (blocked for --block-seconds) or `log`
    /// (monitor mode: reported in the log, `synguard top` and metrics, never dropped; to size
    /// budgets on live traffic). [default: drop]
    #[arg(long, value_enum)]
    pub per_source_action: Option<PerSourceAction>,

    /// Sources are accounted per IPv4 prefix of this length. [default: 32]
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u8).range(bounds::SOURCE_PREFIX4))]
    pub source_prefix4: Option<u8>,

    /// Sources are accounted per IPv6 prefix of this length. [default: 64]
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u8).range(bounds::SOURCE_PREFIX6))]
    pub source_prefix6: Option<u8>,

    /// Source prefixes that bypass every check (comma list or repeated); the longest prefix
    /// of --allow and --deny wins.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    pub allow: Vec<IpNet>,

    /// Source prefixes whose packets to protected ports are dropped.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    pub deny: Vec<IpNet>,

    /// File of allowed prefixes: one CIDR per line, `#` comments.
    #[arg(long, value_name = "FILE")]
    pub allow_file: Option<PathBuf>,

    /// File of denied prefixes: one CIDR per line, `#` comments.
    #[arg(long, value_name = "FILE")]
    pub deny_file: Option<PathBuf>,

    /// What to leave behind at exit: `remove` everything, or `keep` the protection in
    /// place. [default: remove]
    #[arg(long, value_enum)]
    pub on_exit: Option<OnExit>,

    /// BPF filesystem directory for the restart-safe pins (`<DIR>/<iface>/`). [default:
    /// /sys/fs/bpf/synguard, without pins (and a warning) if /sys/fs/bpf is no bpffs]
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,

    /// Log lines as `text`, or `json`: one JSON object per line with the event's fields,
    /// for log pipelines. [default: text]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Where to serve Prometheus metrics (`/metrics`): an address with a port, or `none`.
    /// [default: 127.0.0.1:9787]
    #[arg(long, value_name = "ADDR", value_parser = MetricsAddr::parse)]
    pub metrics_addr: Option<MetricsAddr>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file without touching the system (exit 0 if valid, 1 with a
    /// one-line error otherwise).
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Remove what a synguard left on an interface (`--on-exit keep`, a crash): the XDP
    /// program and its pins, and once no other interface of that network namespace is
    /// protected, the nftables table and the sysctls it changed (restored).
    Detach {
        #[arg(long, value_name = "IF")]
        iface: String,
        /// BPF filesystem directory of the pins. [default: the one recorded at attach, else
        /// /sys/fs/bpf/synguard]
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
    },
    /// Counter totals, per-second rates, per-port modes and half-open estimates, read from
    /// the maps of a running (or `--on-exit keep`) synguard: through its pins, or without
    /// pins through the program attached to its interface (as root).
    Stats {
        #[command(flatten)]
        target: ReadTarget,
        /// One JSON object (schema in docs/metrics.md) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The sources with the most half-open connections and invalid ACKs, and the blocked
    /// sources with the time their block has left.
    Top {
        #[command(flatten)]
        target: ReadTarget,
        /// How many sources to show in each list.
        #[arg(short = 'n', value_name = "N", default_value_t = 20)]
        count: usize,
    },
}

/// Which synguard `synguard stats` and `synguard top` read, and how often.
#[derive(Clone, Debug, clap::Args)]
pub struct ReadTarget {
    /// Interface whose synguard to read. [default: the only one with pins, else the only
    /// synguard program attached in this network namespace]
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// BPF filesystem directory of the pins, and read only through pins. [default:
    /// /sys/fs/bpf/synguard, then the interfaces]
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Print again every SECS seconds until interrupted (rates over the last SECS).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub watch: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("synguard").chain(args.iter().copied()))
    }

    #[test]
    fn config_file_or_subcommand_replaces_required_flags() {
        assert!(parse(&["--config", "/etc/synguard/synguard.toml"]).is_ok());
        let cli = parse(&["check-config", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::CheckConfig { .. })));
        assert!(parse(&["--ports", "80"]).is_err());
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
        let set = crate::settings::ports::PortSet::new(&cli.ports);
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
    fn modes_are_spelt_as_they_print() {
        use clap::ValueEnum as _;
        let name =
            |value: Option<clap::builder::PossibleValue>| value.unwrap().get_name().to_owned();
        for mode in SyncookieMode::ALL {
            assert_eq!(name(mode.to_possible_value()), mode.to_string());
        }
        for mode in XdpMode::ALL {
            assert_eq!(name(mode.to_possible_value()), mode.to_string());
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
