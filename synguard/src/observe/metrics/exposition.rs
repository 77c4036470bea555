//! What a scrape of `/metrics` says. Every scrape reads the datapath's maps ([`MapReader`])
//! and the kernel's view of the daemon's network namespace ([`crate::kernel::kernel_view`])
//! afresh, so the counters are never older than the scrape. Only the per-port half-open
//! estimates need two readings: a sampler reads `SG_PORT_LOAD` every `server::SAMPLE_PERIOD`
//! and the scrape reports the growth between its last two readings, per second.
//!
//! The exposition is OpenMetrics; [`prometheus_text`] turns it into the classic Prometheus
//! text format (the same samples, counter families named with their `_total`, no `# EOF`).
//!
//! Per-port series exist for protected ports that saw SYNs (an `SG_PORT_LOAD` entry) or have
//! kernel sockets, never for every port of a range, so `--ports 1-65535` stays cheap.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use netlink_packet_sock_diag::inet::StateFlags;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeMetric as _, text::encode,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use synguard_common::{Counter, PortLoad, SyncookieMode};
use tracing::{debug, warn};

use crate::datapath::counters::verdict;
use crate::datapath::snapshot::{MapReader, ReadError, Snapshot, half_open};
use crate::kernel::kernel_view::{self, PortSockets, SockDiag, TCPEXT_EXPORTED};
use crate::observe::attack_events::{AttackBoard, PortAttacks};

type Loads = (Instant, BTreeMap<u16, PortLoad>);

/// What a scrape reads from.
pub struct Exporter {
    reader: MapReader,
    /// The `iface` label: the daemon's interfaces, comma-separated (they share the maps).
    iface: String,
    sock_diag: Mutex<Option<SockDiag>>,
    /// The last two readings of the sampler, older first.
    samples: Mutex<(Option<Loads>, Option<Loads>)>,
    /// Restores of the nftables table (`runtime::table_watch`).
    table_restores: Arc<AtomicU64>,
    attacks: AttackBoard,
}

impl Exporter {
    /// An exporter reading the datapath's maps through `reader`, the daemon's count of
    /// nftables table restores, and the attack events' state from `attacks`.
    pub fn new(
        reader: MapReader,
        ifaces: &[&str],
        table_restores: Arc<AtomicU64>,
        attacks: AttackBoard,
    ) -> Self {
        let sock_diag = SockDiag::open()
            .map_err(|e| warn!("metrics: no sock_diag socket ({e}): no socket gauges"))
            .ok();
        Self {
            reader,
            iface: ifaces.join(","),
            sock_diag: Mutex::new(sock_diag),
            samples: Mutex::new((None, None)),
            table_restores,
            attacks,
        }
    }

    /// Reads the per-port loads for the half-open estimates (the sampler).
    pub(super) fn sample(&self) {
        match self.reader.port_loads() {
            Ok(loads) => {
                let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
                samples.0 = samples.1.take();
                samples.1 = Some((Instant::now(), loads));
            }
            Err(e) => warn!("metrics: {e}"),
        }
    }

    /// The whole exposition, read now.
    pub fn render(&self) -> Result<String, ReadError> {
        let snapshot = self.reader.snapshot()?;
        let half_open = {
            let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            match &*samples {
                (Some((then, earlier)), Some((now, later))) => {
                    let seconds = now.duration_since(*then).as_secs_f64();
                    snapshot
                        .ports
                        .keys()
                        .map(|&port| (port, half_open(earlier, later, port, seconds)))
                        .collect()
                }
                _ => BTreeMap::new(),
            }
        };
        let sockets = self
            .sock_diag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .map(|diag| {
                diag.per_port(StateFlags::SYN_RECV | StateFlags::TIME_WAIT)
                    .map_err(|e| warn!("metrics: sock_diag dump: {e}"))
                    .unwrap_or_default()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|(port, _)| snapshot.protected.contains(*port))
            .collect();
        let scrape = Scrape {
            iface: self.iface.clone(),
            half_open,
            sockets,
            tcpext: kernel_view::tcpext()
                .map_err(|e| warn!("metrics: /proc/net/netstat: {e}"))
                .unwrap_or_default()
                .into_iter()
                .filter(|(name, _)| TCPEXT_EXPORTED.contains(&name.as_str()))
                .collect(),
            synproxy: kernel_view::synproxy()
                .map_err(|e| debug!("metrics: /proc/net/stat/synproxy: {e}"))
                .unwrap_or_default(),
            table_restores: self.table_restores.load(Ordering::Relaxed),
            attacks: self.attacks.read(),
            snapshot,
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        Ok(text)
    }
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4): a counter family's
/// `# HELP` and `# TYPE` name its samples (`x_total`, not `x`), and there is no `# EOF`.
/// The exposition has no units, exemplars or created timestamps, so nothing else differs.
pub(super) fn prometheus_text(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let (name, rest) = line.strip_prefix(tag)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {rest}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

type Labels = Vec<(&'static str, String)>;

/// One scrape's readings, encoded by prometheus-client.
#[derive(Debug)]
struct Scrape {
    iface: String,
    snapshot: Snapshot,
    /// (kernel, cookies) half-open per second, per port with a load entry.
    half_open: BTreeMap<u16, (f64, f64)>,
    sockets: BTreeMap<u16, PortSockets>,
    tcpext: BTreeMap<String, u64>,
    synproxy: BTreeMap<String, u64>,
    table_restores: u64,
    /// Ports that had an attack event since start.
    attacks: BTreeMap<u16, PortAttacks>,
}

impl Scrape {
    fn labels(&self, extra: &[(&'static str, &str)]) -> Labels {
        std::iter::once(("iface", self.iface.clone()))
            .chain(extra.iter().map(|(k, v)| (*k, (*v).to_owned())))
            .collect()
    }

    /// Protected ports with per-port series: those that saw SYNs or have kernel sockets.
    fn ports(&self) -> BTreeSet<u16> {
        self.snapshot
            .ports
            .keys()
            .chain(self.sockets.keys())
            .copied()
            .filter(|port| self.snapshot.protected.contains(*port))
            .collect()
    }
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: Vec<(Labels, u64)>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: Vec<(Labels, V)>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        let s = &self.snapshot;
        let total = |counter: Counter| s.counters[counter];
        counters(
            e,
            "synguard_xdp_packets",
            "Packets the XDP program saw (each is in exactly one synguard_packets_total series).",
            vec![(self.labels(&[]), total(Counter::Packets))],
        )?;
        counters(
            e,
            "synguard_packets",
            "Packets by outcome (the counter names of `synguard stats`) and verdict: pass (to the kernel), tx (answered by XDP), drop, aborted.",
            Counter::ALL
                .iter()
                .filter_map(|&c| {
                    let verdict = verdict(c)?;
                    Some((
                        self.labels(&[("verdict", verdict), ("outcome", c.name())]),
                        total(c),
                    ))
                })
                .collect(),
        )?;
        counters(
            e,
            "synguard_malformed_tcp_options",
            "SYNs whose TCP option list ends badly (parsed up to the fault; also counted in an outcome).",
            vec![(self.labels(&[]), total(Counter::MalformedTcpOptions))],
        )?;
        counters(
            e,
            "synguard_source_blocks",
            "Times a source went over a per-source budget and was blocked.",
            vec![(self.labels(&[]), total(Counter::SourceBlocks))],
        )?;
        counters(
            e,
            "synguard_source_over_budget",
            "Times a source went over a per-source budget under --per-source-action log: reported, not blocked.",
            vec![(self.labels(&[]), total(Counter::SourceOverBudget))],
        )?;
        counters(
            e,
            "synguard_tc_checksum",
            "IPv6 bare ACKs to protected ports that arrived with their TCP checksum unverified, checked by the TC program: verified (marked so nft synproxy takes them) or bad (dropped).",
            [
                ("verified", Counter::TcCsumVerified),
                ("bad", Counter::TcCsumBad),
            ]
            .into_iter()
            .map(|(result, c)| (self.labels(&[("result", result)]), total(c)))
            .collect(),
        )?;
        gauges(
            e,
            "synguard_syncookies_mode",
            "The configured --syncookies mode (1 for the one in force).",
            SyncookieMode::ALL
                .into_iter()
                .map(|mode| {
                    (
                        self.labels(&[("mode", mode.as_str())]),
                        u64::from(s.config.syncookie_mode() == mode),
                    )
                })
                .collect(),
        )?;
        let protected = s.protected.ports().count() as u64;
        let cookies = s.cookie_ports.ports().count() as u64;
        gauges(
            e,
            "synguard_ports",
            "Protected ports by who answers their SYNs now: kernel or cookies (XDP).",
            vec![
                (self.labels(&[("mode", "kernel")]), protected - cookies),
                (self.labels(&[("mode", "cookies")]), cookies),
            ],
        )?;
        let ports = self.ports();
        let per_port = |extra: &[(&'static str, &str)], port: u16| {
            let port = port.to_string();
            let mut labels = vec![("port", port.as_str())];
            labels.extend_from_slice(extra);
            self.labels(&labels)
        };
        gauges(
            e,
            "synguard_port_mode",
            "Who answers the port's SYNs now (1 for the mode in force): kernel, or cookies from XDP.",
            ports
                .iter()
                .flat_map(|&port| {
                    ["kernel", "cookies"].map(|mode| {
                        (
                            per_port(&[("mode", mode)], port),
                            u64::from(s.port_mode(port) == mode),
                        )
                    })
                })
                .collect(),
        )?;
        let load = |port| s.ports.get(&port).copied().unwrap_or_default();
        counters(
            e,
            "synguard_port_syns",
            "SYNs to the port by who answered them: kernel (passed by XDP) or xdp (cookie SYN-ACK).",
            ports
                .iter()
                .flat_map(|&port| {
                    let l = load(port);
                    [
                        (
                            per_port(&[("answered_by", "kernel")], port),
                            l.syns_to_kernel,
                        ),
                        (per_port(&[("answered_by", "xdp")], port), l.cookies_sent),
                    ]
                })
                .collect(),
        )?;
        counters(
            e,
            "synguard_port_handshakes",
            "Completed handshakes on the port: kernel (an ACK met a request socket) or xdp (a valid cookie ACK).",
            ports
                .iter()
                .flat_map(|&port| {
                    let l = load(port);
                    [
                        (
                            per_port(&[("answered_by", "kernel")], port),
                            l.handshakes_completed,
                        ),
                        (
                            per_port(&[("answered_by", "xdp")], port),
                            l.cookies_validated,
                        ),
                    ]
                })
                .collect(),
        )?;
        gauges(
            e,
            "synguard_port_half_open",
            "Half-open handshakes per second over the last second (the auto controller's estimate): kernel = SYNs passed minus kernel handshakes, cookies = cookie SYN-ACKs minus cookie handshakes.",
            self.half_open
                .iter()
                .filter(|(port, _)| ports.contains(port))
                .flat_map(|(&port, &(kernel, cookies))| {
                    [
                        (per_port(&[("queue", "kernel")], port), kernel),
                        (per_port(&[("queue", "cookies")], port), cookies),
                    ]
                })
                .collect(),
        )?;
        let attacks = |port| self.attacks.get(&port).copied().unwrap_or_default();
        // The ports with per-port series, and those that had an attack.
        let attack_ports: BTreeSet<u16> =
            ports.iter().chain(self.attacks.keys()).copied().collect();
        gauges(
            e,
            "synguard_attack_active",
            "1 while the port is under attack (an attack event started and has not ended): its SYN rate reached --attack-syn-rate, or auto mode switched it to cookies.",
            attack_ports
                .iter()
                .map(|&port| (per_port(&[], port), u64::from(attacks(port).active)))
                .collect(),
        )?;
        counters(
            e,
            "synguard_attacks",
            "Attack events started on the port since synguard started.",
            attack_ports
                .iter()
                .map(|&port| (per_port(&[], port), attacks(port).started))
                .collect(),
        )?;
        gauges(
            e,
            "synguard_sources_blocked",
            "Sources (accounting prefixes) blocked right now.",
            vec![(self.labels(&[]), s.sources_blocked)],
        )?;
        gauges(
            e,
            "synguard_sources_monitored",
            "Sources over a per-source budget right now under --per-source-action log (reported, not blocked).",
            vec![(self.labels(&[]), s.sources_monitored)],
        )?;
        gauges(
            e,
            "synguard_map_entries",
            "Entries in a datapath map (SG_SOURCES: tracked sources; SG_POLICY4/6: policy prefixes).",
            s.maps
                .iter()
                .map(|m| (self.labels(&[("map", m.name)]), m.entries))
                .collect(),
        )?;
        gauges(
            e,
            "synguard_map_capacity",
            "Capacity (max_entries) of a datapath map.",
            s.maps
                .iter()
                .map(|m| (self.labels(&[("map", m.name)]), u64::from(m.capacity)))
                .collect(),
        )?;
        counters(
            e,
            "synguard_nft_table_restores",
            "Times the nftables table inet synguard was found deleted or changed from outside and put back.",
            vec![(self.labels(&[]), self.table_restores)],
        )?;
        counters(
            e,
            "synguard_kernel_tcpext",
            "TcpExt counters of /proc/net/netstat in synguard's network namespace.",
            self.tcpext
                .iter()
                .map(|(name, &value)| (vec![("counter", name.clone())], value))
                .collect(),
        )?;
        counters(
            e,
            "synguard_kernel_synproxy",
            "/proc/net/stat/synproxy counters (summed over CPUs) in synguard's network namespace.",
            self.synproxy
                .iter()
                .map(|(name, &value)| (vec![("counter", name.clone())], value))
                .collect(),
        )?;
        gauges(
            e,
            "synguard_kernel_sockets",
            "Kernel TCP sockets on a protected local port by state: syn_recv (request sockets), time_wait.",
            ports
                .iter()
                .flat_map(|&port| {
                    let sockets = self.sockets.get(&port).copied().unwrap_or_default();
                    let port = port.to_string();
                    [
                        ("syn_recv", sockets.syn_recv),
                        ("time_wait", sockets.time_wait),
                    ]
                    .map(|(state, count)| {
                        (
                            vec![("port", port.clone()), ("state", state.to_owned())],
                            count,
                        )
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::counters::CounterTotals;
    use crate::datapath::snapshot::MapUse;
    use crate::settings::ports::PortSet;
    use synguard_common::DatapathConfig;

    #[test]
    fn exposition_names_labels_and_values() {
        let mut counters = CounterTotals::zero();
        counters.set(Counter::Packets, 7);
        counters.set(Counter::SynCookieSent, 5);
        counters.set(Counter::AckCookieInvalid, 2);
        counters.set(Counter::SourceOverBudget, 4);
        let scrape = Scrape {
            iface: "eth0".into(),
            snapshot: Snapshot {
                taken: Instant::now(),
                counters,
                ports: [(
                    8080,
                    PortLoad {
                        cookies_sent: 5,
                        ..PortLoad::default()
                    },
                )]
                .into_iter()
                .collect(),
                config: DatapathConfig::DEFAULT,
                protected: PortSet::new(&[80..=80, 8080..=8080]),
                cookie_ports: PortSet::new(&[8080..=8080]),
                sources_tracked: 3,
                sources_blocked: 1,
                sources_monitored: 2,
                maps: vec![MapUse {
                    name: "SG_SOURCES",
                    entries: 3,
                    capacity: 65536,
                }],
            },
            half_open: [(8080, (0.0, 4.5))].into_iter().collect(),
            sockets: [(
                80,
                PortSockets {
                    syn_recv: 2,
                    time_wait: 1,
                },
            )]
            .into_iter()
            .collect(),
            tcpext: [("SyncookiesSent".to_owned(), 9)].into_iter().collect(),
            synproxy: BTreeMap::new(),
            table_restores: 2,
            attacks: [(
                8080,
                PortAttacks {
                    active: true,
                    started: 2,
                },
            )]
            .into_iter()
            .collect(),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE synguard_packets counter",
            r#"synguard_packets_total{iface="eth0",verdict="tx",outcome="syn_cookie_sent"} 5"#,
            r#"synguard_packets_total{iface="eth0",verdict="drop",outcome="ack_cookie_invalid"} 2"#,
            r#"synguard_xdp_packets_total{iface="eth0"} 7"#,
            r#"synguard_syncookies_mode{iface="eth0",mode="always"} 1"#,
            r#"synguard_ports{iface="eth0",mode="kernel"} 1"#,
            r#"synguard_port_mode{iface="eth0",port="8080",mode="cookies"} 1"#,
            r#"synguard_port_mode{iface="eth0",port="80",mode="kernel"} 1"#,
            r#"synguard_port_syns_total{iface="eth0",port="8080",answered_by="xdp"} 5"#,
            r#"synguard_port_half_open{iface="eth0",port="8080",queue="cookies"} 4.5"#,
            r#"synguard_sources_blocked{iface="eth0"} 1"#,
            r#"synguard_attack_active{iface="eth0",port="8080"} 1"#,
            r#"synguard_attack_active{iface="eth0",port="80"} 0"#,
            r#"synguard_attacks_total{iface="eth0",port="8080"} 2"#,
            r#"synguard_attacks_total{iface="eth0",port="80"} 0"#,
            r#"synguard_sources_monitored{iface="eth0"} 2"#,
            r#"synguard_source_over_budget_total{iface="eth0"} 4"#,
            r#"synguard_map_capacity{iface="eth0",map="SG_SOURCES"} 65536"#,
            r#"synguard_kernel_tcpext_total{counter="SyncookiesSent"} 9"#,
            r#"synguard_kernel_sockets{port="80",state="syn_recv"} 2"#,
            r#"synguard_nft_table_restores_total{iface="eth0"} 2"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(!text.contains("synguard_kernel_synproxy"), "{text}");

        let classic = prometheus_text(&text);
        for line in [
            "# TYPE synguard_packets_total counter",
            "# TYPE synguard_port_mode gauge",
            r#"synguard_packets_total{iface="eth0",verdict="tx",outcome="syn_cookie_sent"} 5"#,
        ] {
            assert!(
                classic.lines().any(|l| l == line),
                "no `{line}` in:\n{classic}"
            );
        }
        assert!(classic.starts_with("# HELP synguard_xdp_packets_total Packets"));
        assert!(!classic.contains("# EOF"), "{classic}");
    }
}
