//! `synguard stats` and `synguard top`: the maps of a running synguard, read directly (no
//! daemon involvement) through its pins, or without pins through the program attached to its
//! interface ([`crate::datapath::attached`]), as tables for a terminal or, for `stats --json`, one JSON
//! object per reading (schema [`STATS_SCHEMA`], documented in docs/metrics.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use synguard_common::{Counter, PerSourceAction};

use crate::datapath::attached;
use crate::datapath::pins::{DEFAULT_PIN_DIR, PinDir};
use crate::datapath::snapshot::{Interval, MapReader, ReadError, Snapshot, Source, monotonic_ns};
use crate::settings::cli::ReadTarget;

/// Version of the `synguard stats --json` schema; raised only for incompatible changes.
pub const STATS_SCHEMA: u32 = 1;

/// The maps to read and the interface(s) they serve: through the pins when there are any;
/// without `--pin-dir` and without pins under the default root (a daemon under
/// `ip netns exec` has none), through the program attached to the interface.
fn open(target: &ReadTarget) -> anyhow::Result<(MapReader, String)> {
    let root = target
        .pin_dir
        .as_deref()
        .unwrap_or(Path::new(DEFAULT_PIN_DIR));
    match MapReader::from_pins(&PinDir::new(root), target.iface.as_deref()) {
        Err(ReadError::NotPinned { .. } | ReadError::NoPins(_)) if target.pin_dir.is_none() => {
            let pins = format!("none under {}", root.display());
            let (program, ifaces) = attached::find_synguard(target.iface.as_deref(), &pins)?;
            Ok((MapReader::of_program(program)?, ifaces))
        }
        found => Ok(found?),
    }
}

/// Prints `text`, replacing the previous screen when watching on a terminal.
fn show(text: &str, watching: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if watching && std::io::stdout().is_terminal() {
        out.write_all(b"\x1b[2J\x1b[H")?;
    }
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `synguard stats`: two readings a second apart (or `--watch` seconds apart, repeatedly).
pub async fn stats(target: &ReadTarget, json: bool) -> anyhow::Result<()> {
    let (reader, iface) = open(target)?;
    let period = Duration::from_secs(target.watch.map_or(1, u64::from));
    let mut earlier = reader.snapshot()?;
    loop {
        tokio::time::sleep(period).await;
        let later = reader.snapshot()?;
        let interval = Interval {
            earlier: &earlier,
            later: &later,
        };
        let text = if json {
            serde_json::to_string(&StatsJson::new(&iface, interval))? + "\n"
        } else {
            stats_table(&iface, interval)
        };
        show(&text, target.watch.is_some())?;
        if target.watch.is_none() {
            return Ok(());
        }
        earlier = later;
    }
}

/// `synguard stats --json`, one object per reading.
#[derive(Debug, Serialize)]
pub struct StatsJson {
    pub schema: u32,
    pub iface: String,
    /// Seconds between the two readings the rates come from.
    pub interval_seconds: f64,
    pub syncookies: &'static str,
    pub protected_ports: String,
    pub cookie_ports: String,
    /// Every datapath counter by name: `total` since the maps were created, `per_second`
    /// over the interval.
    pub counters: BTreeMap<&'static str, CounterJson>,
    /// Ports that saw SYNs, ascending.
    pub ports: Vec<PortJson>,
    pub sources: SourcesJson,
    /// Occupancy of the datapath's hash maps and tries by map name.
    pub maps: BTreeMap<&'static str, MapJson>,
}

#[derive(Debug, Serialize)]
pub struct CounterJson {
    pub total: u64,
    pub per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct PortJson {
    pub port: u16,
    /// `kernel` or `cookies`: who answers the port's SYNs now.
    pub mode: &'static str,
    pub syns_to_kernel: u64,
    pub handshakes_completed: u64,
    pub cookies_sent: u64,
    pub cookies_validated: u64,
    /// SYNs passed to the kernel minus kernel handshakes, per second over the interval.
    pub kernel_half_open_per_second: f64,
    /// Cookie SYN-ACKs minus cookie handshakes, per second over the interval.
    pub cookie_half_open_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct SourcesJson {
    pub tracked: u64,
    pub blocked: u64,
    /// Over a budget under `--per-source-action log`: reported, not blocked.
    pub monitored: u64,
}

#[derive(Debug, Serialize)]
pub struct MapJson {
    pub entries: u64,
    pub capacity: u32,
}

impl StatsJson {
    pub fn new(iface: &str, interval: Interval<'_>) -> Self {
        let s = interval.later;
        Self {
            schema: STATS_SCHEMA,
            iface: iface.to_owned(),
            interval_seconds: interval.seconds(),
            syncookies: s.config.syncookie_mode().as_str(),
            protected_ports: s.protected.to_string(),
            cookie_ports: s.cookie_ports.to_string(),
            counters: Counter::ALL
                .iter()
                .map(|&c| {
                    (
                        c.name(),
                        CounterJson {
                            total: s.counters[c],
                            per_second: interval.rate(c),
                        },
                    )
                })
                .collect(),
            ports: s
                .ports
                .iter()
                .map(|(&port, load)| {
                    let (kernel, cookies) = interval.half_open(port);
                    PortJson {
                        port,
                        mode: s.port_mode(port),
                        syns_to_kernel: load.syns_to_kernel,
                        handshakes_completed: load.handshakes_completed,
                        cookies_sent: load.cookies_sent,
                        cookies_validated: load.cookies_validated,
                        kernel_half_open_per_second: kernel,
                        cookie_half_open_per_second: cookies,
                    }
                })
                .collect(),
            sources: SourcesJson {
                tracked: s.sources_tracked,
                blocked: s.sources_blocked,
                monitored: s.sources_monitored,
            },
            maps: s
                .maps
                .iter()
                .map(|m| {
                    (
                        m.name,
                        MapJson {
                            entries: m.entries,
                            capacity: m.capacity,
                        },
                    )
                })
                .collect(),
        }
    }
}

fn stats_table(iface: &str, interval: Interval<'_>) -> String {
    let s = interval.later;
    let mut out = String::new();
    let cookies = match s.cookie_ports.to_string() {
        ports if ports.is_empty() => "none".to_owned(),
        ports => ports,
    };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "synguard on {iface}: syncookies {}, protected ports {}, answered with cookies now: {cookies}; rates over {:.1}s",
        s.config.syncookie_mode(),
        s.protected,
        interval.seconds()
    );
    let _ = writeln!(
        out,
        "\n{:<24} {:>16} {:>14}",
        "counter", "total", "per second"
    );
    for &counter in Counter::ALL {
        let _ = writeln!(
            out,
            "{:<24} {:>16} {:>14.1}",
            counter.name(),
            s.counters[counter],
            interval.rate(counter)
        );
    }
    if !s.ports.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<6} {:<8} {:>12} {:>12} {:>14} {:>12} {:>15} {:>15}",
            "port",
            "mode",
            "kernel SYNs",
            "kernel done",
            "cookies sent",
            "cookies done",
            "half-open/s krn",
            "half-open/s xdp"
        );
        for (&port, load) in &s.ports {
            let (kernel, cookies) = interval.half_open(port);
            let _ = writeln!(
                out,
                "{port:<6} {:<8} {:>12} {:>12} {:>14} {:>12} {kernel:>15.1} {cookies:>15.1}",
                s.port_mode(port),
                load.syns_to_kernel,
                load.handshakes_completed,
                load.cookies_sent,
                load.cookies_validated,
            );
        }
    }
    let maps: Vec<String> = s
        .maps
        .iter()
        .map(|m| format!("{} {}/{}", m.name, m.entries, m.capacity))
        .collect();
    let _ = writeln!(
        out,
        "\nsources: {} tracked, {} blocked, {} monitored; map entries: {}",
        s.sources_tracked,
        s.sources_blocked,
        s.sources_monitored,
        maps.join(", ")
    );
    out
}

/// `synguard top`: once, or every `--watch` seconds.
pub async fn top(target: &ReadTarget, count: usize) -> anyhow::Result<()> {
    let (reader, iface) = open(target)?;
    loop {
        let snapshot = reader.snapshot()?;
        let sources = reader.sources()?;
        show(
            &top_table(&iface, &snapshot, sources, monotonic_ns(), count),
            target.watch.is_some(),
        )?;
        let Some(secs) = target.watch else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
    }
}

fn budget(value: u32) -> String {
    if value == 0 {
        "unlimited".to_owned()
    } else {
        format!("{value}/s")
    }
}

/// What `top` and the log call sources over a budget under `action`.
pub fn over_budget_state(action: PerSourceAction) -> &'static str {
    match action {
        PerSourceAction::Drop => "blocked",
        PerSourceAction::Log => "monitored",
    }
}

/// `top`'s list of the sources over a budget.
fn over_budget_title(action: PerSourceAction) -> &'static str {
    match action {
        PerSourceAction::Drop => "blocked sources",
        PerSourceAction::Log => "monitored sources (over budget, not blocked)",
    }
}

fn top_table(
    iface: &str,
    snapshot: &Snapshot,
    mut sources: Vec<Source>,
    now_ns: u64,
    count: usize,
) -> String {
    let config = &snapshot.config;
    let action = config.per_source_action();
    let mut over_budget: Vec<(Duration, Source)> = sources
        .iter()
        .filter_map(|s| Some((s.over_budget_for(now_ns)?, *s)))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "synguard top on {iface}: sources tracked {}, {} {}; per-source budgets: half-open {}, invalid ACKs {}, block {}s, action {action}; accounting prefixes /{} /{}",
        sources.len(),
        over_budget_state(action),
        over_budget.len(),
        budget(config.per_source_half_open),
        budget(config.per_source_invalid_ack),
        config.block_ns / 1_000_000_000,
        config.source_prefix4,
        config.source_prefix6,
    );
    let row = |out: &mut String, s: &Source, last: String| {
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>12} {:>8} {:>9} {last:>10}",
            s.prefix(config),
            s.state.half_open,
            s.state.invalid_acks,
            s.state.syns,
            s.state.completed,
        );
    };
    let header = |out: &mut String, title: &str, last: &str| {
        let _ = writeln!(
            out,
            "\n{title:<44} {:>9} {:>12} {:>8} {:>9} {last:>10}",
            "half-open", "invalid ACKs", "SYNs", "completed"
        );
    };

    over_budget.sort_by_key(|(left, _)| std::cmp::Reverse(*left));
    header(&mut out, over_budget_title(action), "time left");
    for (left, source) in over_budget.iter().take(count) {
        row(&mut out, source, format!("{:.1}s", left.as_secs_f64()));
    }
    if over_budget.is_empty() {
        let _ = writeln!(out, "(none)");
    }

    sources.sort_by_key(|s| std::cmp::Reverse((s.state.half_open, s.state.invalid_acks)));
    header(
        &mut out,
        "most half-open / invalid ACKs (last window)",
        "window",
    );
    for source in sources.iter().take(count) {
        let age = source.window_age(now_ns).as_secs_f64();
        row(&mut out, source, format!("{age:.1}s ago"));
    }
    if sources.is_empty() {
        let _ = writeln!(out, "(none)");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use synguard_common::{DatapathConfig, PortLoad, SourceKey, SourceState};

    use super::*;
    use crate::datapath::counters::CounterTotals;
    use crate::datapath::snapshot::MapUse;
    use crate::settings::ports::PortSet;

    fn snapshot(taken: Instant, packets: u64, cookies_sent: u64) -> Snapshot {
        let mut counters = CounterTotals::zero();
        counters.set(Counter::Packets, packets);
        Snapshot {
            taken,
            counters,
            ports: [(
                8080,
                PortLoad {
                    cookies_sent,
                    ..PortLoad::default()
                },
            )]
            .into_iter()
            .collect(),
            config: DatapathConfig {
                per_source_half_open: 50,
                ..DatapathConfig::DEFAULT
            },
            protected: PortSet::new(&[8080..=8080]),
            cookie_ports: PortSet::new(&[8080..=8080]),
            sources_tracked: 1,
            sources_blocked: 1,
            sources_monitored: 0,
            maps: vec![MapUse {
                name: "SG_SOURCES",
                entries: 1,
                capacity: 65536,
            }],
        }
    }

    #[test]
    fn stats_json_has_every_counter_and_rates() {
        let at = Instant::now();
        let (earlier, later) = (
            snapshot(at, 100, 10),
            snapshot(at + Duration::from_secs(2), 300, 210),
        );
        let json = serde_json::to_value(StatsJson::new(
            "eth0",
            Interval {
                earlier: &earlier,
                later: &later,
            },
        ))
        .unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(
            json["counters"].as_object().unwrap().len(),
            Counter::ALL.len()
        );
        assert_eq!(json["counters"]["packets"]["total"], 300);
        assert_eq!(json["counters"]["packets"]["per_second"], 100.0);
        assert_eq!(json["ports"][0]["mode"], "cookies");
        assert_eq!(json["ports"][0]["cookie_half_open_per_second"], 100.0);
        assert_eq!(json["maps"]["SG_SOURCES"]["capacity"], 65536);
        assert_eq!(json["sources"]["blocked"], 1);
        assert_eq!(json["sources"]["monitored"], 0);
    }

    #[test]
    fn top_lists_sources_over_budget_with_time_left() {
        let at = Instant::now();
        let mut addr = [0u8; 16];
        addr[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 2]);
        let source = |half_open, blocked_until_ns| {
            Source::new(
                SourceKey { addr },
                SourceState {
                    window_start_ns: 9_500_000_000,
                    blocked_until_ns,
                    syns: 80,
                    half_open,
                    ..SourceState::default()
                },
            )
        };
        for (action, state, title) in [
            (PerSourceAction::Drop, "blocked 1", "blocked sources"),
            (
                PerSourceAction::Log,
                "monitored 1",
                "monitored sources (over budget, not blocked)",
            ),
        ] {
            let mut snapshot = snapshot(at, 0, 0);
            snapshot.config.per_source_action = action as u8;
            let text = top_table(
                "eth0",
                &snapshot,
                vec![source(3, 0), source(52, 40_000_000_000)],
                10_000_000_000,
                20,
            );
            assert!(text.contains(&format!("tracked 2, {state};")), "{text}");
            assert!(
                text.contains(&format!(
                    "half-open 50/s, invalid ACKs unlimited, block 60s, action {action}"
                )),
                "{text}"
            );
            assert!(text.lines().nth(2).unwrap().starts_with(title), "{text}");
            let over_budget = text.lines().nth(3).unwrap();
            assert!(over_budget.starts_with("10.0.0.2/32"), "{text}");
            assert!(over_budget.ends_with("30.0s"), "{text}");
            assert!(text.lines().nth(6).unwrap().contains(" 52 "), "{text}");
            assert!(text.contains("0.5s ago"), "{text}");
        }
    }
}
