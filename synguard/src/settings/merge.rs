//! Settings: the TOML config file (`--config`), overridden by command-line flags, validated
//! into one [`Settings`] value. Used at start, by `synguard check-config` and on SIGHUP.
//!
//! Every file key mirrors a flag (`mss4` = `--mss4`, `per_source_half_open` =
//! `--per-source-half-open`, ...). Unknown keys and bad values are errors naming the file, the
//! line and the key. A flag given on the command line replaces the file's value (lists too).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use synguard_common::{
    DatapathConfig, POLICY_V4, POLICY_V6, Policy, SyncookieMode, track_threshold,
};
use toml::Spanned;

use crate::cli::{Cli, XdpMode, parse_port_range};
use crate::metrics::MetricsAddr;
use crate::ports::PortSet;
use crate::private;

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
    pub const SYNACK_RETRIES: RangeInclusive<i64> = 0..=255;
    pub const BUDGET: RangeInclusive<i64> = 0..=u32::MAX as i64;
    pub const BLOCK_SECONDS: RangeInclusive<i64> = 1..=86_400 * 365;
    pub const SOURCE_PREFIX4: RangeInclusive<i64> = 1..=32;
    pub const SOURCE_PREFIX6: RangeInclusive<i64> = 1..=128;
}

/// Defaults of the settings the datapath contract does not fix.
pub mod defaults {
    pub const STATS_INTERVAL: u64 = 5;
    /// Auto-mode threshold (half-open SYNs per port and second) and `tcp_max_syn_backlog`.
    pub const MAX_SYN_BACKLOG: u32 = 256;
    pub const COOLDOWN: u64 = 10;
}

/// `--syncookies`: who answers SYNs to protected ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Syncookies {
    /// XDP observes and counts; every SYN reaches the kernel.
    Off,
    /// The kernel answers until a port's half-open estimate exceeds --max-syn-backlog.
    #[default]
    Auto,
    /// XDP answers every SYN.
    Always,
}

impl Syncookies {
    pub const fn mode(self) -> SyncookieMode {
        match self {
            Self::Off => SyncookieMode::Off,
            Self::Auto => SyncookieMode::Auto,
            Self::Always => SyncookieMode::Always,
        }
    }
}

impl fmt::Display for Syncookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Auto => "auto",
            Self::Always => "always",
        })
    }
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

/// A one-line configuration error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn error(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// The `--tune-kernel` sysctls (see [`crate::tuning::tune_kernel`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTuning {
    pub max_syn_backlog: u32,
    /// `None`: left as it is.
    pub synack_retries: Option<u8>,
    /// `None`: left as it is.
    pub abort_on_overflow: Option<bool>,
}

/// Source CIDR policy: one entry per prefix (host bits cleared), longest prefix wins in the
/// datapath's tries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyList {
    entries: BTreeMap<IpNet, Policy>,
}

impl PolicyList {
    pub fn entries(&self) -> impl Iterator<Item = (IpNet, Policy)> + '_ {
        self.entries.iter().map(|(net, policy)| (*net, *policy))
    }

    /// Entries of one family: `v6` false for IPv4.
    pub fn count(&self, v6: bool) -> usize {
        self.entries
            .keys()
            .filter(|net| matches!(net, IpNet::V6(_)) == v6)
            .count()
    }

    /// The `DatapathConfig::policy` bits: which tries have entries.
    pub fn bits(&self) -> u8 {
        let mut bits = 0;
        if self.count(false) > 0 {
            bits |= POLICY_V4;
        }
        if self.count(true) > 0 {
            bits |= POLICY_V6;
        }
        bits
    }

    fn add(
        &mut self,
        net: IpNet,
        policy: Policy,
        origin: &str,
        origins: &mut BTreeMap<IpNet, String>,
    ) -> Result<(), ConfigError> {
        match self.entries.insert(net, policy) {
            Some(old) if old != policy => Err(error(format!(
                "{net} is both allowed and denied ({} and {origin}); use a more specific prefix for the exception",
                origins[&net]
            ))),
            _ => {
                origins.entry(net).or_insert_with(|| origin.to_owned());
                Ok(())
            }
        }
    }
}

/// Everything the daemon runs with, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub ifaces: Vec<String>,
    pub ports: PortSet,
    pub xdp_mode: XdpMode,
    pub syncookies: Syncookies,
    /// MSS, wscale, TTL, budgets, block time, prefixes, mode and policy bits.
    pub datapath: DatapathConfig,
    pub stats_interval: u64,
    /// Auto-mode threshold: half-open SYNs per port over one second.
    pub max_syn_backlog: u32,
    pub cooldown: Duration,
    /// `Some` with `--tune-kernel`.
    pub kernel: Option<KernelTuning>,
    pub policy: PolicyList,
    pub on_exit: OnExit,
    /// Where `/metrics` listens.
    pub metrics_addr: MetricsAddr,
}

impl Settings {
    /// The command line merged over its `--config` file, if any.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        Self::merge(cli, &file)
    }

    /// `synguard check-config FILE`: the file alone must make a complete configuration.
    pub fn check_file(path: &Path) -> Result<Self, ConfigError> {
        Self::merge(&Cli::default(), &FileConfig::read(path)?)
    }

    fn merge(cli: &Cli, file: &FileConfig) -> Result<Self, ConfigError> {
        let ifaces = match (&cli.ifaces, &file.values.iface) {
            (flags, _) if !flags.is_empty() => flags.clone(),
            (_, Some(list)) if !list.get_ref().is_empty() => list.get_ref().clone(),
            (_, Some(list)) => return Err(file.at(list.span(), "iface", "the list is empty")),
            (_, None) => {
                return Err(error(
                    "no interface to protect: give --iface or `iface` in the config file",
                ));
            }
        };
        let ports = match (&cli.ports, &file.values.ports) {
            (flags, _) if !flags.is_empty() => PortSet::new(flags),
            (_, Some(list)) if !list.get_ref().is_empty() => PortSet::new(
                &list
                    .get_ref()
                    .iter()
                    .map(|item| item.0.clone())
                    .collect::<Vec<_>>(),
            ),
            (_, Some(list)) => return Err(file.at(list.span(), "ports", "the list is empty")),
            (_, None) => {
                return Err(error(
                    "no port to protect: give --ports or `ports` in the config file",
                ));
            }
        };
        let f = &file.values;
        let pick = |flag: Option<i64>, value: &Option<Spanned<i64>>, key, range, default| {
            file.number(flag, value, key, range, default)
        };
        let d = DatapathConfig::DEFAULT;
        let syncookies = cli
            .syncookies
            .or(f.syncookies.as_ref().map(|v| *v.get_ref()))
            .unwrap_or_default();
        let per_source_half_open = pick(
            cli.per_source_half_open.map(i64::from),
            &f.per_source_half_open,
            "per_source_half_open",
            bounds::BUDGET,
            0,
        )?;
        let per_source_invalid_ack = pick(
            cli.per_source_invalid_ack.map(i64::from),
            &f.per_source_invalid_ack,
            "per_source_invalid_ack",
            bounds::BUDGET,
            0,
        )?;
        let block_seconds = pick(
            cli.block_seconds.map(i64::from),
            &f.block_seconds,
            "block_seconds",
            bounds::BLOCK_SECONDS,
            (d.block_ns / 1_000_000_000) as i64,
        )?;
        let tune_kernel = cli.tune_kernel || f.tune_kernel.as_ref().is_some_and(|v| *v.get_ref());
        let max_syn_backlog = pick(
            cli.max_syn_backlog.map(i64::from),
            &f.max_syn_backlog,
            "max_syn_backlog",
            bounds::MAX_SYN_BACKLOG,
            i64::from(defaults::MAX_SYN_BACKLOG),
        )? as u32;
        let synack_retries = match (cli.synack_retries, &f.synack_retries) {
            (Some(v), _) => Some(v),
            (None, Some(v)) => {
                Some(file.bounded(v, "synack_retries", bounds::SYNACK_RETRIES)? as u8)
            }
            (None, None) => None,
        };
        let abort_on_overflow = if cli.abort_on_overflow {
            Some(true)
        } else {
            f.abort_on_overflow.as_ref().map(|v| *v.get_ref())
        };
        if !tune_kernel && (synack_retries.is_some() || abort_on_overflow.is_some()) {
            return Err(error(
                "synack_retries and abort_on_overflow are kernel settings: they need tune_kernel (--tune-kernel)",
            ));
        }
        if syncookies == Syncookies::Off
            && (per_source_half_open != 0 || per_source_invalid_ack != 0)
        {
            return Err(error(
                "per-source budgets are not enforced with syncookies = off (XDP only observes): use auto or always, or drop per_source_half_open/per_source_invalid_ack",
            ));
        }
        let policy = file.policy(cli)?;
        let datapath = DatapathConfig {
            block_ns: block_seconds as u64 * 1_000_000_000,
            // The datapath maps write each program's own seed (`DatapathMaps`).
            hash_seed: d.hash_seed,
            per_source_half_open: per_source_half_open as u32,
            per_source_invalid_ack: per_source_invalid_ack as u32,
            track_threshold: track_threshold(
                per_source_half_open as u32,
                per_source_invalid_ack as u32,
                possible_cpus(),
            ),
            mss4: pick(
                cli.mss4.map(i64::from),
                &f.mss4,
                "mss4",
                bounds::MSS4,
                d.mss4.into(),
            )? as u16,
            mss6: pick(
                cli.mss6.map(i64::from),
                &f.mss6,
                "mss6",
                bounds::MSS6,
                d.mss6.into(),
            )? as u16,
            wscale: pick(
                cli.wscale.map(i64::from),
                &f.wscale,
                "wscale",
                bounds::WSCALE,
                d.wscale.into(),
            )? as u8,
            ttl: pick(
                cli.ttl.map(i64::from),
                &f.ttl,
                "ttl",
                bounds::TTL,
                d.ttl.into(),
            )? as u8,
            syncookies: syncookies.mode() as u8,
            source_prefix4: pick(
                cli.source_prefix4.map(i64::from),
                &f.source_prefix4,
                "source_prefix4",
                bounds::SOURCE_PREFIX4,
                d.source_prefix4.into(),
            )? as u8,
            source_prefix6: pick(
                cli.source_prefix6.map(i64::from),
                &f.source_prefix6,
                "source_prefix6",
                bounds::SOURCE_PREFIX6,
                d.source_prefix6.into(),
            )? as u8,
            policy: policy.bits(),
            reserved: [0; 2],
        };
        Ok(Self {
            ifaces,
            ports,
            xdp_mode: cli
                .xdp_mode
                .or(f.xdp_mode.as_ref().map(|v| *v.get_ref()))
                .unwrap_or(XdpMode::Native),
            syncookies,
            datapath,
            stats_interval: pick(
                cli.stats_interval.map(i64::from),
                &f.stats_interval,
                "stats_interval",
                bounds::STATS_INTERVAL,
                defaults::STATS_INTERVAL as i64,
            )? as u64,
            max_syn_backlog,
            cooldown: Duration::from_secs(pick(
                cli.cooldown.map(i64::from),
                &f.cooldown,
                "cooldown",
                bounds::COOLDOWN,
                defaults::COOLDOWN as i64,
            )? as u64),
            kernel: tune_kernel.then_some(KernelTuning {
                max_syn_backlog,
                synack_retries,
                abort_on_overflow,
            }),
            policy,
            on_exit: cli
                .on_exit
                .or(f.on_exit.as_ref().map(|v| *v.get_ref()))
                .unwrap_or_default(),
            metrics_addr: match (cli.metrics_addr, &f.metrics_addr) {
                (Some(addr), _) => addr,
                (None, Some(text)) => MetricsAddr::parse(text.get_ref())
                    .map_err(|e| file.at(text.span(), "metrics_addr", &e))?,
                (None, None) => MetricsAddr::DEFAULT,
            },
        })
    }
}

/// The keys of the config file; every value keeps its position for error messages.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileValues {
    iface: Option<Spanned<Vec<String>>>,
    ports: Option<Spanned<Vec<PortItem>>>,
    xdp_mode: Option<Spanned<XdpMode>>,
    mss4: Option<Spanned<i64>>,
    mss6: Option<Spanned<i64>>,
    wscale: Option<Spanned<i64>>,
    ttl: Option<Spanned<i64>>,
    stats_interval: Option<Spanned<i64>>,
    syncookies: Option<Spanned<Syncookies>>,
    max_syn_backlog: Option<Spanned<i64>>,
    cooldown: Option<Spanned<i64>>,
    tune_kernel: Option<Spanned<bool>>,
    synack_retries: Option<Spanned<i64>>,
    abort_on_overflow: Option<Spanned<bool>>,
    per_source_half_open: Option<Spanned<i64>>,
    per_source_invalid_ack: Option<Spanned<i64>>,
    block_seconds: Option<Spanned<i64>>,
    source_prefix4: Option<Spanned<i64>>,
    source_prefix6: Option<Spanned<i64>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    deny: Option<Spanned<Vec<Spanned<String>>>>,
    allow_file: Option<Spanned<PathBuf>>,
    deny_file: Option<Spanned<PathBuf>>,
    on_exit: Option<Spanned<OnExit>>,
    metrics_addr: Option<Spanned<String>>,
}

/// One `ports` item: a number or a `"LO-HI"` string.
#[derive(Debug)]
struct PortItem(RangeInclusive<u16>);

impl<'de> Deserialize<'de> for PortItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        parse_port_range(&text)
            .map(PortItem)
            .map_err(serde::de::Error::custom)
    }
}

/// A parsed config file with its text, for line numbers.
#[derive(Debug, Default)]
struct FileConfig {
    path: String,
    text: String,
    values: FileValues,
}

impl FileConfig {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = private::read_trusted(path).map_err(|e| error(format!("config file {e}")))?;
        let mut config = Self {
            path: shown,
            text,
            values: FileValues::default(),
        };
        config.values = toml::from_str(&config.text).map_err(|e| {
            let message = e.message().trim_end().replace('\n', " ");
            match e.span() {
                Some(span) => config.at(span.clone(), &config.key_at(span), &message),
                None => error(format!("{}: {message}", config.path)),
            }
        })?;
        Ok(config)
    }

    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// The key of the `key = value` line holding `span`.
    fn key_at(&self, span: Range<usize>) -> String {
        let start = self.text[..span.start.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or_default();
        line.split_once('=')
            .map_or(line, |(key, _)| key)
            .trim()
            .to_owned()
    }

    /// `FILE:LINE: key `KEY`: MESSAGE`.
    fn at(&self, span: Range<usize>, key: &str, message: &str) -> ConfigError {
        error(format!(
            "{}:{}: key `{key}`: {message}",
            self.path,
            self.line(span.start)
        ))
    }

    fn bounded(
        &self,
        value: &Spanned<i64>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Result<i64, ConfigError> {
        let v = *value.get_ref();
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(self.at(
                value.span(),
                key,
                &format!("{v} is out of range ({}-{})", range.start(), range.end()),
            ))
        }
    }

    /// The flag's value, else the file's (checked against `range`), else `default`.
    fn number(
        &self,
        flag: Option<i64>,
        value: &Option<Spanned<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match (flag, value) {
            (Some(v), _) => Ok(v),
            (None, Some(value)) => self.bounded(value, key, range),
            (None, None) => Ok(default),
        }
    }

    /// allow/deny lists and files; a flag replaces the file key of the same name.
    fn policy(&self, cli: &Cli) -> Result<PolicyList, ConfigError> {
        let mut list = PolicyList::default();
        let mut origins = BTreeMap::new();
        for (policy, name, flags, key, flag_file, key_file) in [
            (
                Policy::Allow,
                "allow",
                &cli.allow,
                &self.values.allow,
                &cli.allow_file,
                &self.values.allow_file,
            ),
            (
                Policy::Deny,
                "deny",
                &cli.deny,
                &self.values.deny,
                &cli.deny_file,
                &self.values.deny_file,
            ),
        ] {
            if !flags.is_empty() {
                for net in flags {
                    list.add(*net, policy, &format!("--{name} {net}"), &mut origins)?;
                }
            } else if let Some(items) = key {
                for item in items.get_ref() {
                    let net =
                        parse_cidr(item.get_ref()).map_err(|e| self.at(item.span(), name, &e))?;
                    let origin = format!("{}:{}", self.path, self.line(item.span().start));
                    list.add(net, policy, &origin, &mut origins)?;
                }
            }
            let key_name = format!("{name}_file");
            let file = match (flag_file, key_file) {
                (Some(path), _) => Some(path.clone()),
                (None, Some(path)) => Some(self.resolve_path(path.get_ref())),
                (None, None) => None,
            };
            if let Some(path) = file {
                for (net, origin) in read_cidr_file(&path, &key_name)? {
                    list.add(net, policy, &origin, &mut origins)?;
                }
            }
        }
        Ok(list)
    }

    /// A relative path in the file is relative to the file's directory.
    fn resolve_path(&self, path: &Path) -> PathBuf {
        match Path::new(&self.path).parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }
    }
}

/// `a.b.c.d/n`, `x::/n` or a bare address (a /32 or /128); host bits are cleared.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => text
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("`{text}` is not a CIDR prefix or an IP address"))?,
    };
    Ok(net.trunc())
}

/// One CIDR per line; `#` starts a comment; blank lines are skipped.
fn read_cidr_file(path: &Path, key: &str) -> Result<Vec<(IpNet, String)>, ConfigError> {
    let text = private::read_trusted(path).map_err(|e| error(format!("{key} {e}")))?;
    let mut nets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let origin = format!("{}:{}", path.display(), i + 1);
        let net = parse_cidr(content).map_err(|e| error(format!("{key} {origin}: {e}")))?;
        nets.push((net, origin));
    }
    Ok(nets)
}

/// CPUs the program may run on: each has its own sketch, and a source's SYNs spread over them.
fn possible_cpus() -> u32 {
    aya::util::nr_cpus()
        .ok()
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use clap::Parser as _;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("synguard-config-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("synguard").chain(args.iter().copied())).unwrap()
    }

    const FULL: &str = r#"
iface = ["eth0", "eth1"]
ports = [80, 443, "8000-8100"]
xdp_mode = "skb"
mss4 = 1400
mss6 = 1380
wscale = 8
ttl = 63
stats_interval = 10
syncookies = "auto"
max_syn_backlog = 512
cooldown = 20
tune_kernel = true
synack_retries = 3
abort_on_overflow = false
per_source_half_open = 100
per_source_invalid_ack = 50
block_seconds = 30
source_prefix4 = 24
source_prefix6 = 48
allow = ["10.1.2.0/24", "2001:db8::1"]
deny = ["10.0.0.0/8"]
on_exit = "keep"
metrics_addr = "[::1]:9100"
"#;

    #[test]
    fn every_key_is_read() {
        let path = write("full.toml", FULL);
        let s = Settings::check_file(&path).unwrap();
        assert_eq!(s.ifaces, ["eth0", "eth1"]);
        assert_eq!(s.ports.to_string(), "80,443,8000-8100");
        assert_eq!(s.xdp_mode, XdpMode::Skb);
        assert_eq!(s.syncookies, Syncookies::Auto);
        assert_eq!(
            s.datapath,
            DatapathConfig {
                block_ns: 30_000_000_000,
                hash_seed: DatapathConfig::DEFAULT.hash_seed,
                per_source_half_open: 100,
                per_source_invalid_ack: 50,
                track_threshold: track_threshold(100, 50, possible_cpus()),
                mss4: 1400,
                mss6: 1380,
                wscale: 8,
                ttl: 63,
                syncookies: SyncookieMode::Auto as u8,
                source_prefix4: 24,
                source_prefix6: 48,
                policy: POLICY_V4 | POLICY_V6,
                reserved: [0; 2],
            }
        );
        assert_eq!(s.stats_interval, 10);
        assert_eq!(s.cooldown, Duration::from_secs(20));
        assert_eq!(
            s.kernel,
            Some(KernelTuning {
                max_syn_backlog: 512,
                synack_retries: Some(3),
                abort_on_overflow: Some(false)
            })
        );
        assert_eq!(s.on_exit, OnExit::Keep);
        assert_eq!(s.metrics_addr.to_string(), "[::1]:9100");
        let entries: Vec<_> = s
            .policy
            .entries()
            .map(|(n, p)| (n.to_string(), p))
            .collect();
        assert_eq!(
            entries,
            [
                ("10.0.0.0/8".to_owned(), Policy::Deny),
                ("10.1.2.0/24".to_owned(), Policy::Allow),
                ("2001:db8::1/128".to_owned(), Policy::Allow),
            ]
        );
    }

    #[test]
    fn flags_override_the_file() {
        let path = write("override.toml", FULL);
        let s = Settings::load(&cli(&[
            "--config",
            path.to_str().unwrap(),
            "--ports",
            "9000",
            "--mss4",
            "1300",
            "--syncookies",
            "always",
            "--deny",
            "192.0.2.0/24",
        ]))
        .unwrap();
        assert_eq!(s.ports.to_string(), "9000");
        assert_eq!(s.datapath.mss4, 1300);
        assert_eq!(s.datapath.mss6, 1380);
        assert_eq!(s.syncookies, Syncookies::Always);
        assert_eq!(s.ifaces, ["eth0", "eth1"]);
        // --deny replaces the file's deny list; the file's allow list stays.
        assert_eq!(s.policy.count(false), 2);
    }

    #[test]
    fn defaults_without_a_file() {
        let s = Settings::load(&cli(&["--iface", "a", "--ports", "80"])).unwrap();
        assert_eq!(s.datapath.syncookies, SyncookieMode::Auto as u8);
        assert_eq!(
            DatapathConfig {
                syncookies: SyncookieMode::Always as u8,
                ..s.datapath
            },
            DatapathConfig::DEFAULT
        );
        assert_eq!(s.max_syn_backlog, defaults::MAX_SYN_BACKLOG);
        assert_eq!(s.kernel, None);
        assert_eq!(s.on_exit, OnExit::Remove);
        assert_eq!(s.metrics_addr, MetricsAddr::DEFAULT);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        for (text, expected) in [
            (
                "iface = [\"a\"]\nports = [80]\nmss5 = 1\n",
                ":3: key `mss5`: unknown field `mss5`",
            ),
            (
                "iface = [\"a\"]\nports = [80]\n\nmss4 = 100\n",
                ":4: key `mss4`: 100 is out of range (536-9000)",
            ),
            (
                "iface = [\"a\"]\nmss4 = \"x\"\nports = [80]\n",
                ":2: key `mss4`: invalid type",
            ),
            (
                "iface = [\"a\"]\nports = [80, \"90-80\"]\n",
                ":2: key `ports`: port range 90-80 is reversed",
            ),
            (
                "iface = [\"a\"]\nports = [80]\nmetrics_addr = \"localhost\"\n",
                ":3: key `metrics_addr`: `localhost` is neither",
            ),
            (
                "iface = [\"a\"]\nports = [80]\nsyncookies = \"sometimes\"\n",
                ":3: key `syncookies`: unknown variant `sometimes`",
            ),
            (
                "iface = [\"a\"]\nports = [80]\ndeny = [\n  \"10.0.0.0/8\",\n  \"nope\",\n]\n",
                ":5: key `deny`: `nope` is not a CIDR",
            ),
        ] {
            let path = write("bad.toml", text);
            let err = Settings::check_file(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn files_others_can_write_are_refused() {
        let path = write("shared.toml", "iface = [\"a\"]\nports = [80]\n");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
        let err = Settings::check_file(&path).unwrap_err().to_string();
        let shown = path.display();
        assert!(
            err.starts_with(&format!("config file {shown} is writable by its group")),
            "{err}"
        );
        assert!(err.ends_with(&format!("fix: chmod 600 {shown}")), "{err}");
        let list = write("allow-shared.txt", "10.0.0.0/8\n");
        fs::set_permissions(&list, fs::Permissions::from_mode(0o666)).unwrap();
        let list_arg = list.to_str().unwrap();
        let cli = cli(&["--iface", "a", "--ports", "80", "--allow-file", list_arg]);
        let err = Settings::load(&cli).unwrap_err().to_string();
        assert!(err.contains("is writable by its group and others"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Settings::check_file(&path).is_ok());
    }

    #[test]
    fn conflicts_are_errors() {
        let allow = write("allow.txt", "# trusted\n\n10.0.0.0/24  # office\n");
        let path = write(
            "conflict.toml",
            &format!(
                "iface = [\"a\"]\nports = [80]\ndeny = [\"10.0.0.5/24\"]\nallow_file = \"{}\"\n",
                allow.display()
            ),
        );
        let err = Settings::check_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("10.0.0.0/24 is both allowed and denied"),
            "{err}"
        );
        assert!(err.contains("allow.txt:3"), "{err}");

        for args in [
            &["--iface", "a", "--ports", "80", "--synack-retries", "2"][..],
            &[
                "--iface",
                "a",
                "--ports",
                "80",
                "--syncookies",
                "off",
                "--per-source-half-open",
                "5",
            ],
        ] {
            assert!(Settings::load(&cli(args)).is_err(), "{args:?}");
        }
        assert!(Settings::load(&cli(&["--config", "/nonexistent"])).is_err());
    }
}
