//! Attack events during a bounded single-source IPv4 SYN flood (hping3) against
//! `--syncookies auto --log-format json`:
//!
//! - every log line is a JSON object, and the daemon logs exactly one `attack_started` and one
//!   `attack_ended` event for the flooded port, after the flood and the cooldown;
//! - the end event's SYN count equals the port's SYN counters in `/metrics`, its peak rate is
//!   within a sane range of the rate the datapath counted and hping3 sent, its duration is the
//!   flood's (within a tick and the auto controller's window), XDP answered the flood with
//!   cookies, and its top sources name the flooding address;
//! - `synguard_attack_active` is 1 during the flood and 0 after, `synguard_attacks_total` 1.
//!
//! The thresholds are far from the measured values: the flood runs at tens of thousands of
//! SYNs per second (about 110,000 on an idle 2-core machine), the start threshold is 5,000.

use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use serde_json::Value;
use synguard_lab::daemon::XdpMode;
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Bench, METRICS_FLOOD_NEEDS, run_cases};
use synguard_lab::metrics::{sample, scrape};
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 1024;
const METRICS: &str = synguard_lab::metrics::DEFAULT_ADDR;
const FLOOD: Duration = Duration::from_secs(4);
const INTO_FLOOD: Duration = Duration::from_secs(2);
const SYN_RATE: &str = "5000";
const COOLDOWN: Duration = Duration::from_secs(3);
/// Long enough for the daemon's first round of port readings (taken as its loop starts):
/// SYNs before it would count as adopted from an earlier run, not as this attack's.
const SETTLE: Duration = Duration::from_secs(1);
/// How long the end event may take after the flood: the auto controller's window and
/// cooldown, the detector's cooldown, ticks, and a loaded machine.
const END_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the test keeps watching after the end event for a second start.
const AFTER_END: Duration = Duration::from_secs(3);

/// The JSON log lines with `event` = `name` for `PORT`.
fn events<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["event"] == name && l["port"] == PORT)
        .collect()
}

/// Fails unless every series of `text` has its expected value.
fn expect_gauges<const N: usize>(text: &str, when: &str, expected: [(&str, f64); N]) -> Result<()> {
    for (series, value) in expected {
        let found = sample(text, series)?;
        ensure!(found == value, "{when}: {series} {found}, expected {value}");
    }
    Ok(())
}

fn number(event: &Value, field: &str) -> Result<f64> {
    event[field]
        .as_f64()
        .ok_or_else(|| anyhow!("no number `{field}` in {event}"))
}

#[test]
fn a_flood_is_one_attack_with_its_numbers() {
    let Some(_serial) = harness::start("attack events", &METRICS_FLOOD_NEEDS) else {
        return;
    };
    run_cases("attack events", ["IPv4 native, syncookies auto"], |_| {
        let cooldown = COOLDOWN.as_secs().to_string();
        let Bench {
            mut daemon,
            server: _server,
            lab,
        } = Bench::start(
            Lab::new()?,
            PORT,
            PAYLOAD,
            &PORT.to_string(),
            XdpMode::Native,
            &[
                "--syncookies",
                "auto",
                "--attack-syn-rate",
                SYN_RATE,
                "--cooldown",
                &cooldown,
                "--log-format",
                "json",
                "--metrics-addr",
                METRICS,
            ],
        )?;
        let iface = lab.server_iface().name();
        let p = format!("iface=\"{iface}\",port=\"{PORT}\"");
        let active = format!("synguard_attack_active{{{p}}}");
        let total = format!("synguard_attacks_total{{{p}}}");
        sleep(SETTLE);
        let before = scrape(&lab, METRICS)?;
        ensure!(
            sample(&before, &active).unwrap_or(0.0) == 0.0,
            "an attack before the flood:\n{before}"
        );

        let flood =
            Flood::single_source(&lab, FloodKind::Syn, lab.server_ip(Family::V4), PORT, FLOOD)?;
        sleep(INTO_FLOOD);
        let during = scrape(&lab, METRICS)?;
        let sent = flood.wait()?;
        println!("flood: {sent}");
        expect_gauges(&during, "during the flood", [(&active, 1.0), (&total, 1.0)])?;
        let end = daemon
            .wait_for_line("\"attack_ended\"", END_TIMEOUT)
            .context("no attack end logged after the flood")?;
        println!("daemon: {end}");
        sleep(AFTER_END);
        let after = scrape(&lab, METRICS)?;
        expect_gauges(&after, "after the flood", [(&active, 0.0), (&total, 1.0)])?;
        let port_syns: f64 = ["kernel", "xdp"]
            .iter()
            .map(|by| {
                sample(
                    &after,
                    &format!("synguard_port_syns_total{{{p},answered_by=\"{by}\"}}"),
                )
            })
            .sum::<Result<f64>>()?;
        let exit = daemon.stop()?;
        exit.ensure_success()?;

        let lines: Vec<Value> = exit
            .log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(|v| v["timestamp"].is_string() && v["level"].is_string())
                    .ok_or_else(|| anyhow!("not a JSON log line: {l}"))
            })
            .collect::<Result<_>>()?;
        let (starts, ends) = (
            events(&lines, "attack_started"),
            events(&lines, "attack_ended"),
        );
        ensure!(
            starts.len() == 1 && ends.len() == 1,
            "{} start and {} end events for port {PORT}, expected one each:\n{}",
            starts.len(),
            ends.len(),
            exit.log
        );
        let (start, end) = (starts[0], ends[0]);
        println!("start: {start}\nend: {end}");
        let trigger = start["trigger"].as_str().unwrap_or_default();
        ensure!(
            trigger == "cookies" || (trigger == "syn_rate" && number(start, "syn_rate")? >= 5000.0),
            "start event: {start}"
        );
        ensure!(
            end["trigger"] == trigger,
            "end event's trigger differs: {end}"
        );

        let syns = number(end, "syns")?;
        ensure!(
            syns == port_syns,
            "the end event counts {syns} SYNs, /metrics {port_syns} for the port"
        );
        // hping3's own count may miss the last SYNs it sent as SIGINT stopped it.
        let sent_syns = sent.sent as f64;
        ensure!(
            syns <= 1.01 * sent_syns && syns >= 0.5 * sent_syns,
            "the end event counts {syns} SYNs of the {sent_syns} hping3 sent"
        );
        let flood_seconds = sent.elapsed.as_secs_f64();
        let peak = number(end, "peak_syn_rate")?;
        ensure!(
            peak >= 0.7 * syns / flood_seconds && peak <= 3.0 * sent.rate() && 0.9 * peak <= syns,
            "peak {peak:.0} SYNs/s for {syns} SYNs counted in a {flood_seconds:.1}s flood sent at {:.0}/s",
            sent.rate()
        );
        let duration = number(end, "duration_secs")?;
        ensure!(
            duration >= flood_seconds - 1.5 && duration <= flood_seconds + COOLDOWN.as_secs_f64(),
            "attack lasted {duration}s, the flood {flood_seconds:.1}s"
        );
        let cookies = number(end, "cookies_sent")?;
        ensure!(
            cookies >= 0.5 * syns && cookies + number(end, "syns_to_kernel")? == syns,
            "XDP answered {cookies} of {syns} SYNs with cookies: {end}"
        );
        let source = format!("{}/32 (SYNs", lab.client_ip(Family::V4));
        let top = end["top_sources"].as_str().unwrap_or_default();
        ensure!(
            top.starts_with(&source),
            "top sources without the flooding {source}: {top}"
        );
        Ok(())
    });
}
