//! What the kernel of a namespace says: nstat-style SNMP counters, SYNPROXY statistics,
//! sysctls, nftables tables, the XDP program on an interface and synguard's own counters
//! (read from the program's `SG_COUNTERS` map with bpftool, independently of the daemon).
//!
//! `/proc/net` is a link to `/proc/self/net`, which follows the namespace of the process's
//! main thread; the readers here use `/proc/thread-self/net` on a thread inside the namespace.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::{SchedClassifier, TcAttachType};
use serde_json::Value;
use synguard_common::{Counter, MAP_COUNTERS};

use crate::netns::{Iface, Netns};
use crate::process::run;
use crate::topology::Family;

/// Named counters (`TcpInSegs`, `cookie_valid`, ...) with saturating differences.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats(BTreeMap<String, u64>);

impl Stats {
    /// The value, 0 when the kernel does not have the counter.
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// `self - earlier`, per counter.
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.get(k))))
                .collect(),
        )
    }

    /// `name=value` for the given names.
    pub fn show(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| format!("{n}={}", self.get(n)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Parses `/proc/net/snmp` and `/proc/net/netstat`: pairs of `Prefix: names` / `Prefix: values`
/// lines, named like nstat does (`Tcp` + `InSegs`). Negative values (MaxConn) are skipped.
fn parse_pairs(text: &str, into: &mut BTreeMap<String, u64>) -> Result<()> {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else {
            bail!("odd number of lines");
        };
        let (prefix, names) = names
            .split_once(':')
            .ok_or_else(|| anyhow!("no prefix in `{names}`"))?;
        let (_, values) = values
            .split_once(':')
            .ok_or_else(|| anyhow!("no prefix in `{values}`"))?;
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(value) = value.parse::<u64>() {
                into.insert(format!("{prefix}{name}"), value);
            }
        }
    }
    Ok(())
}

/// Parses `/proc/net/snmp6`: `Name value` lines.
fn parse_lines(text: &str, into: &mut BTreeMap<String, u64>) {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(Ok(value))) = (words.next(), words.next().map(str::parse::<u64>)) {
            into.insert(name.to_owned(), value);
        }
    }
}

/// Parses a `/proc/net/stat/*` table (a header of names, then one row of hex values per CPU)
/// and sums each column over the CPUs.
fn parse_stat_table(text: &str) -> Result<Stats> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| anyhow!("empty table"))?
        .split_whitespace()
        .collect();
    let mut sums = BTreeMap::new();
    for line in lines {
        for (name, value) in header.iter().zip(line.split_whitespace()) {
            let value = u64::from_str_radix(value, 16)
                .with_context(|| format!("column {name}: `{value}`"))?;
            *sums.entry((*name).to_owned()).or_insert(0) += value;
        }
    }
    Ok(Stats(sums))
}

fn read_proc_net(file: &str) -> Result<String> {
    let path = format!("/proc/thread-self/net/{file}");
    fs::read_to_string(&path).with_context(|| format!("reading {path}"))
}

/// The counter of IP packets entering the stack: `IpInReceives` or `Ip6InReceives`.
pub fn ip_in_receives(family: Family) -> &'static str {
    match family {
        Family::V4 => "IpInReceives",
        Family::V6 => "Ip6InReceives",
    }
}

/// IP, IPv6, TCP and TcpExt counters of the namespace (`TcpInSegs`, `IpInReceives`,
/// `Ip6InReceives`, `TcpExtSyncookiesSent`, `TcpExtListenOverflows`, `TcpExtListenDrops`, ...).
pub fn snmp(netns: &Netns) -> Result<Stats> {
    netns.run(|| {
        let mut all = BTreeMap::new();
        for file in ["snmp", "netstat"] {
            parse_pairs(&read_proc_net(file)?, &mut all)
                .with_context(|| format!("parsing /proc/net/{file}"))?;
        }
        parse_lines(&read_proc_net("snmp6")?, &mut all);
        Ok(Stats(all))
    })
}

/// `/proc/net/stat/synproxy` summed over CPUs: `entries`, `syn_received`, `cookie_invalid`,
/// `cookie_valid`, `cookie_retrans`, `conn_reopened`.
pub fn synproxy(netns: &Netns) -> Result<Stats> {
    netns.run(|| {
        parse_stat_table(&read_proc_net("stat/synproxy")?)
            .context("parsing /proc/net/stat/synproxy")
    })
}

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// Reads a sysctl (dotted name) as the namespace sees it.
pub fn sysctl(netns: &Netns, name: &str) -> Result<String> {
    netns.run(|| {
        let path = sysctl_path(name);
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .to_owned())
    })
}

/// Writes a sysctl (dotted name) in the namespace.
pub fn set_sysctl(netns: &Netns, name: &str, value: &str) -> Result<()> {
    netns.run(|| {
        let path = sysctl_path(name);
        fs::write(&path, value).with_context(|| format!("writing {value} to {path}"))
    })
}

/// `nft list tables`: entries like `inet synguard`.
pub fn nft_tables(netns: &Netns) -> Result<Vec<String>> {
    let text = netns.exec("nft", &["list", "tables"])?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table "))
        .map(str::to_owned)
        .collect())
}

/// The interface's packet statistics (`ip -s link`) as `rx_packets`, `rx_dropped`,
/// `tx_packets`, `tx_dropped`, ...
pub fn link_stats(iface: &Iface) -> Result<Stats> {
    let details = iface.details()?;
    let mut stats = BTreeMap::new();
    for direction in ["rx", "tx"] {
        let Some(fields) = details["stats64"][direction].as_object() else {
            bail!("no {direction} statistics for {}", iface.name());
        };
        for (name, value) in fields {
            if let Some(value) = value.as_u64() {
                stats.insert(format!("{direction}_{name}"), value);
            }
        }
    }
    Ok(Stats(stats))
}

/// The driver's statistics of the interface (`ethtool -S`), e.g. veth's per-queue
/// `rx_queue_<N>_xdp_packets`.
pub fn driver_stats(iface: &Iface) -> Result<Stats> {
    let text = iface.exec("ethtool", &["-S", iface.name()])?;
    Ok(Stats(
        text.lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((name.trim().to_owned(), value.trim().parse().ok()?))
            })
            .collect(),
    ))
}

/// Id of the XDP program attached to `iface` (any mode), from `ip -j -d link show`.
pub fn xdp_prog_id(iface: &Iface) -> Result<Option<u32>> {
    let details = iface.details()?;
    let xdp = &details["xdp"];
    if xdp.is_null() {
        return Ok(None);
    }
    // One program: {"mode":..,"prog":{"id":..}}; several modes: {"attached":[{"prog":..}]}.
    let prog = if xdp["prog"].is_object() {
        &xdp["prog"]
    } else {
        &xdp["attached"][0]["prog"]
    };
    let id = prog["id"].as_u64().ok_or_else(|| {
        anyhow!(
            "no program id in the XDP description of {}: {xdp}",
            iface.name()
        )
    })?;
    Ok(Some(u32::try_from(id)?))
}

/// Names of the programs attached at tcx ingress of `iface` in `netns` (`BPF_PROG_QUERY`;
/// bpftool before 7.3 does not list tcx).
pub fn tc_ingress_programs(netns: &Netns, iface: &Iface) -> Result<Vec<String>> {
    netns.run(|| {
        let (_, programs) = SchedClassifier::query_tcx(iface.name(), TcAttachType::Ingress)
            .with_context(|| format!("querying the tcx ingress programs of {}", iface.name()))?;
        Ok(programs
            .iter()
            .filter_map(|p| p.name_as_str().map(str::to_owned))
            .collect())
    })
}

/// The kernel's `(run_time_ns, run_cnt)` of the XDP program on `iface` (zero unless run-time
/// statistics are on: `floodgen::bpf::enable_run_time_stats`), None without a program.
pub fn xdp_run_stats(iface: &Iface) -> Result<Option<(u64, u64)>> {
    let Some(id) = xdp_prog_id(iface)? else {
        return Ok(None);
    };
    let prog = bpftool(&["prog", "show", "id", &id.to_string()])?;
    let field = |name: &str| prog[name].as_u64().unwrap_or(0);
    Ok(Some((field("run_time_ns"), field("run_cnt"))))
}

fn bpftool(args: &[&str]) -> Result<Value> {
    let text = run(Command::new("bpftool").arg("-j").args(args))?;
    serde_json::from_str(&text).with_context(|| format!("parsing `bpftool -j {}`", args.join(" ")))
}

/// synguard's packet counters, one slot per [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters([u64; Counter::COUNT as usize]);

impl Counters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    /// `self - earlier`, per slot.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut delta = *self;
        for (d, e) in delta.0.iter_mut().zip(earlier.0) {
            *d = d.saturating_sub(e);
        }
        delta
    }

    /// Reads the `SG_COUNTERS` map of the XDP program with id `prog_id`, summed over CPUs.
    pub fn read(prog_id: u32) -> Result<Self> {
        let prog = bpftool(&["prog", "show", "id", &prog_id.to_string()])?;
        let map_ids: Vec<u64> = prog["map_ids"]
            .as_array()
            .ok_or_else(|| anyhow!("program {prog_id} lists no maps"))?
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        for id in map_ids {
            let id = id.to_string();
            if bpftool(&["map", "show", "id", &id])?["name"] == MAP_COUNTERS {
                return parse_counter_dump(&bpftool(&["map", "dump", "id", &id])?);
            }
        }
        bail!("program {prog_id} has no map named {MAP_COUNTERS}")
    }

    /// The counters of the program attached to `iface`.
    pub fn of(iface: &Iface) -> Result<Self> {
        let id =
            xdp_prog_id(iface)?.ok_or_else(|| anyhow!("no XDP program on {}", iface.name()))?;
        Self::read(id)
    }
}

impl fmt::Display for Counters {
    /// The non-zero counters as `name=value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = Counter::ALL
            .iter()
            .filter(|c| self.get(**c) != 0)
            .map(|c| format!("{}={}", c.name(), self.get(*c)))
            .collect();
        if shown.is_empty() {
            f.write_str("(all zero)")
        } else {
            f.write_str(&shown.join(" "))
        }
    }
}

/// A number that bpftool prints either as a JSON number (maps with BTF) or as an array of
/// little-endian hex byte strings (`["0x01","0x00",...]`).
fn json_number(value: &Value) -> Result<u64> {
    if let Some(n) = value.as_u64() {
        return Ok(n);
    }
    let bytes = value
        .as_array()
        .ok_or_else(|| anyhow!("not a number: {value}"))?;
    if bytes.len() > 8 {
        bail!("{} bytes do not fit a u64", bytes.len());
    }
    bytes.iter().rev().try_fold(0u64, |acc, b| {
        let text = b.as_str().ok_or_else(|| anyhow!("not a byte: {b}"))?;
        let byte = u8::from_str_radix(text.trim_start_matches("0x"), 16)?;
        Ok((acc << 8) | u64::from(byte))
    })
}

/// Parses `bpftool -j map dump` of a per-CPU u64 array and sums the CPUs.
fn parse_counter_dump(dump: &Value) -> Result<Counters> {
    let entries = dump
        .as_array()
        .ok_or_else(|| anyhow!("map dump is not a list"))?;
    let mut counters = Counters::default();
    for entry in entries {
        // With BTF bpftool adds the decoded form; without, it has raw bytes only.
        let entry = if entry["formatted"].is_object() {
            &entry["formatted"]
        } else {
            entry
        };
        let key = usize::try_from(json_number(&entry["key"])?)?;
        let values = entry["values"]
            .as_array()
            .ok_or_else(|| anyhow!("entry without per-CPU values: {entry}"))?;
        let sum = values.iter().try_fold(0u64, |acc, v| {
            Ok::<_, anyhow::Error>(acc + json_number(&v["value"])?)
        })?;
        if let Some(slot) = counters.0.get_mut(key) {
            *slot = sum;
        }
    }
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_pairs_and_snmp6_lines() {
        let mut all = BTreeMap::new();
        parse_pairs(
            "Tcp: RtoAlgorithm MaxConn InSegs\nTcp: 1 -1 42\nTcpExt: SyncookiesSent\nTcpExt: 7\n",
            &mut all,
        )
        .unwrap();
        parse_lines(
            "Ip6InReceives                   	12\nIp6InHdrErrors 0\n",
            &mut all,
        );
        let stats = Stats(all);
        assert_eq!(stats.get("TcpInSegs"), 42);
        assert_eq!(stats.get("TcpExtSyncookiesSent"), 7);
        assert_eq!(stats.get("Ip6InReceives"), 12);
        assert!(!stats.0.contains_key("TcpMaxConn"));
    }

    #[test]
    fn synproxy_table_sums_cpus() {
        let text = "entries\t\tsyn_received\t cookie_invalid\t cookie_valid\t cookie_retrans\t conn_reopened\n\
                    00000000\t0000000a\t00000000\t00000001\t00000000\t00000000\n\
                    00000000\t00000005\t00000000\t000000ff\t00000000\t00000000\n";
        let stats = parse_stat_table(text).unwrap();
        assert_eq!(stats.get("syn_received"), 15);
        assert_eq!(stats.get("cookie_valid"), 256);
        let later = Stats([("cookie_valid".to_owned(), 300)].into_iter().collect());
        assert_eq!(later.since(&stats).get("cookie_valid"), 44);
    }

    #[test]
    fn counter_dumps_with_and_without_btf() {
        let raw: Value = serde_json::from_str(
            r#"[{"key":["0x06","0x00","0x00","0x00"],"values":[{"cpu":0,"value":["0x02","0x01","0x00","0x00","0x00","0x00","0x00","0x00"]}]}]"#,
        )
        .unwrap();
        assert_eq!(
            parse_counter_dump(&raw)
                .unwrap()
                .get(Counter::SynCookieSent),
            0x102
        );
        let btf: Value = serde_json::from_str(
            r#"[{"key":["0x06"],"values":[],"formatted":{"key":6,"values":[{"cpu":0,"value":3},{"cpu":1,"value":4}]}}]"#,
        )
        .unwrap();
        let counters = parse_counter_dump(&btf).unwrap();
        assert_eq!(counters.get(Counter::SynCookieSent), 7);
        assert_eq!(counters.to_string(), "syn_cookie_sent=7");
    }
}
