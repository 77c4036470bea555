//! Settings: the TOML config file (`--config`), overridden by command-line flags, validated
//! into one [`Settings`] value. Used at start, by `synguard check-config` and on SIGHUP.
//!
//! Every file key mirrors a flag (`mss4` = `--mss4`, `per_source_half_open` =
//! `--per-source-half-open`, ...). Unknown keys and bad values are errors naming the file, the
//! line and the key. A flag given on the command line replaces the file's value (lists too).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use synguard_common::{DatapathConfig, Policy, SyncookieMode, XdpMode, track_threshold};
use toml::Spanned;

use crate::settings::cli::Cli;
use crate::settings::error::{ConfigError, error};
use crate::settings::file::FileConfig;
use crate::settings::policy::{PolicyList, parse_cidr, read_cidr_file};
use crate::settings::ports::PortSet;
use crate::settings::values::{
    KernelTuning, LogFormat, MetricsAddr, OnExit, bounds, defaults, possible_cpus,
};

/// Everything the daemon runs with, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub ifaces: Vec<String>,
    pub ports: PortSet,
    pub xdp_mode: XdpMode,
    pub syncookies: SyncookieMode,
    /// MSS, wscale, TTL, budgets, block time, prefixes, mode and policy bits.
    pub datapath: DatapathConfig,
    pub stats_interval: u64,
    /// Auto-mode threshold: half-open SYNs per port over one second.
    pub max_syn_backlog: u32,
    pub cooldown: Duration,
    /// SYNs per second on one port that start an attack event.
    pub attack_syn_rate: u32,
    /// `Some` with `--tune-kernel`.
    pub kernel: Option<KernelTuning>,
    pub policy: PolicyList,
    pub on_exit: OnExit,
    /// Where `/metrics` listens.
    pub metrics_addr: MetricsAddr,
    pub log_format: LogFormat,
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
        // A setting's flag field, file key and name share one identifier.
        macro_rules! flag_or_key {
            ($key:ident) => {
                cli.$key.or(file_value(&file.values.$key))
            };
        }
        macro_rules! number {
            ($key:ident, $bound:ident) => {
                file.number(
                    cli.$key,
                    &file.values.$key,
                    stringify!($key),
                    bounds::$bound,
                )?
            };
        }
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
        let d = DatapathConfig::DEFAULT;
        let syncookies = flag_or_key!(syncookies).unwrap_or(defaults::SYNCOOKIES);
        let per_source_half_open = number!(per_source_half_open, BUDGET).unwrap_or(0);
        let per_source_invalid_ack = number!(per_source_invalid_ack, BUDGET).unwrap_or(0);
        let block_seconds =
            number!(block_seconds, BLOCK_SECONDS).unwrap_or((d.block_ns / 1_000_000_000) as u32);
        let tune_kernel = cli.tune_kernel || file_value(&file.values.tune_kernel) == Some(true);
        let max_syn_backlog =
            number!(max_syn_backlog, MAX_SYN_BACKLOG).unwrap_or(defaults::MAX_SYN_BACKLOG);
        let synack_retries = number!(synack_retries, SYNACK_RETRIES);
        let abort_on_overflow = if cli.abort_on_overflow {
            Some(true)
        } else {
            file_value(&file.values.abort_on_overflow)
        };
        if !tune_kernel && (synack_retries.is_some() || abort_on_overflow.is_some()) {
            return Err(error(
                "synack_retries and abort_on_overflow are kernel settings: they need tune_kernel (--tune-kernel)",
            ));
        }
        if syncookies == SyncookieMode::Off
            && (per_source_half_open != 0 || per_source_invalid_ack != 0)
        {
            return Err(error(
                "per-source budgets are not enforced with syncookies = off (XDP only observes): use auto or always, or drop per_source_half_open/per_source_invalid_ack",
            ));
        }
        let policy = merge_policy(cli, file)?;
        let datapath = DatapathConfig {
            block_ns: u64::from(block_seconds) * 1_000_000_000,
            // The datapath maps write each program's own seed (`DatapathMaps`).
            hash_seed: d.hash_seed,
            per_source_half_open,
            per_source_invalid_ack,
            track_threshold: track_threshold(
                per_source_half_open,
                per_source_invalid_ack,
                possible_cpus(),
            ),
            mss4: number!(mss4, MSS4).unwrap_or(d.mss4),
            mss6: number!(mss6, MSS6).unwrap_or(d.mss6),
            wscale: number!(wscale, WSCALE).unwrap_or(d.wscale),
            ttl: number!(ttl, TTL).unwrap_or(d.ttl),
            syncookies: syncookies as u8,
            source_prefix4: number!(source_prefix4, SOURCE_PREFIX4).unwrap_or(d.source_prefix4),
            source_prefix6: number!(source_prefix6, SOURCE_PREFIX6).unwrap_or(d.source_prefix6),
            policy: policy.bits(),
            per_source_action: flag_or_key!(per_source_action)
                .unwrap_or_else(|| d.per_source_action()) as u8,
            reserved: [0; 1],
        };
        Ok(Self {
            ifaces,
            ports,
            xdp_mode: flag_or_key!(xdp_mode).unwrap_or(defaults::XDP_MODE),
            syncookies,
            datapath,
            stats_interval: u64::from(
                number!(stats_interval, STATS_INTERVAL).unwrap_or(defaults::STATS_INTERVAL),
            ),
            max_syn_backlog,
            cooldown: Duration::from_secs(u64::from(
                number!(cooldown, COOLDOWN).unwrap_or(defaults::COOLDOWN),
            )),
            attack_syn_rate: number!(attack_syn_rate, ATTACK_SYN_RATE)
                .unwrap_or(defaults::ATTACK_SYN_RATE),
            kernel: tune_kernel.then_some(KernelTuning {
                max_syn_backlog,
                synack_retries,
                abort_on_overflow,
            }),
            policy,
            on_exit: flag_or_key!(on_exit).unwrap_or_default(),
            metrics_addr: match (cli.metrics_addr, &file.values.metrics_addr) {
                (Some(addr), _) => addr,
                (None, Some(text)) => MetricsAddr::parse(text.get_ref())
                    .map_err(|e| file.at(text.span(), "metrics_addr", &e))?,
                (None, None) => MetricsAddr::DEFAULT,
            },
            log_format: flag_or_key!(log_format).unwrap_or_default(),
        })
    }
}

/// A file key's value without its position.
fn file_value<T: Copy>(value: &Option<Spanned<T>>) -> Option<T> {
    value.as_ref().map(|v| *v.get_ref())
}

/// allow/deny lists and files; a flag replaces the file key of the same name.
fn merge_policy(cli: &Cli, file: &FileConfig) -> Result<PolicyList, ConfigError> {
    let mut list = PolicyList::default();
    let mut origins = BTreeMap::new();
    for (policy, flags, key, flag_file, key_file) in [
        (
            Policy::Allow,
            &cli.allow,
            &file.values.allow,
            &cli.allow_file,
            &file.values.allow_file,
        ),
        (
            Policy::Deny,
            &cli.deny,
            &file.values.deny,
            &cli.deny_file,
            &file.values.deny_file,
        ),
    ] {
        let name = policy.as_str();
        if !flags.is_empty() {
            for net in flags {
                list.add(*net, policy, &format!("--{name} {net}"), &mut origins)?;
            }
        } else if let Some(items) = key {
            for item in items.get_ref() {
                let net = parse_cidr(item.get_ref()).map_err(|e| file.at(item.span(), name, &e))?;
                let origin = format!("{}:{}", file.path, file.line(item.span().start));
                list.add(net, policy, &origin, &mut origins)?;
            }
        }
        let key_name = format!("{name}_file");
        let list_file = match (flag_file, key_file) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(path)) => Some(file.resolve_path(path.get_ref())),
            (None, None) => None,
        };
        if let Some(path) = list_file {
            for (net, origin) in read_cidr_file(&path, &key_name)? {
                list.add(net, policy, &origin, &mut origins)?;
            }
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::PathBuf;

    use clap::Parser as _;
    use synguard_common::{POLICY_V4, POLICY_V6, PerSourceAction};

    use super::*;

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
attack_syn_rate = 50000
tune_kernel = true
synack_retries = 3
abort_on_overflow = false
per_source_half_open = 100
per_source_invalid_ack = 50
block_seconds = 30
per_source_action = "log"
source_prefix4 = 24
source_prefix6 = 48
allow = ["10.1.2.0/24", "2001:db8::1"]
deny = ["10.0.0.0/8"]
on_exit = "keep"
metrics_addr = "[::1]:9100"
log_format = "json"
"#;

    #[test]
    fn every_key_is_read() {
        let path = write("full.toml", FULL);
        let s = Settings::check_file(&path).unwrap();
        assert_eq!(s.ifaces, ["eth0", "eth1"]);
        assert_eq!(s.ports.to_string(), "80,443,8000-8100");
        assert_eq!(s.xdp_mode, XdpMode::Skb);
        assert_eq!(s.syncookies, SyncookieMode::Auto);
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
                per_source_action: PerSourceAction::Log as u8,
                reserved: [0; 1],
            }
        );
        assert_eq!(s.stats_interval, 10);
        assert_eq!(s.cooldown, Duration::from_secs(20));
        assert_eq!(s.attack_syn_rate, 50_000);
        assert_eq!(s.log_format, LogFormat::Json);
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
            "--per-source-action",
            "drop",
        ]))
        .unwrap();
        assert_eq!(s.ports.to_string(), "9000");
        assert_eq!(s.datapath.mss4, 1300);
        assert_eq!(s.datapath.mss6, 1380);
        assert_eq!(s.syncookies, SyncookieMode::Always);
        assert_eq!(s.datapath.per_source_action(), PerSourceAction::Drop);
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
        assert_eq!(s.attack_syn_rate, defaults::ATTACK_SYN_RATE);
        assert_eq!(s.log_format, LogFormat::Text);
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
                "iface = [\"a\"]\nports = [80]\nper_source_action = \"ignore\"\n",
                ":3: key `per_source_action`: unknown variant `ignore`",
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
