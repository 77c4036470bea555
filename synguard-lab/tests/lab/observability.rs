//! Observability during bounded IPv4 SYN floods (hping3):
//!
//! - `/metrics` (scraped with curl inside the server namespace) before and during a flood from
//!   random sources against `--syncookies auto`: the packet counters and per-port SYN counters
//!   grow, the port switches to cookies, its cookie half-open estimate is positive, the kernel
//!   families are there, and `promtool check metrics` accepts the exposition.
//! - `synguard stats --json` during a flood parses (schema 1) and shows the flood's rate; its
//!   totals after the flood equal the counters bpftool reads from the program's map.
//! - `synguard top` during a single-source flood with `--per-source-half-open` lists that
//!   source as blocked with its time left, and the daemon logs a block summary.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use serde_json::Value;
use synguard_common::Counter;
use synguard_lab::daemon::{Daemon, XdpMode, run_once};
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{
    self, METRICS_FLOOD_NEEDS, Need, PINNED_FLOOD_NEEDS, PinnedBench, run_cases,
};
use synguard_lab::kernel::Counters;
use synguard_lab::metrics::{sample, scrape};
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::top::block_time_left;
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 1024;
const METRICS: &str = synguard_lab::metrics::DEFAULT_ADDR;
const FLOOD: Duration = Duration::from_secs(4);
/// When the readings during a flood are taken.
const INTO_FLOOD: Duration = Duration::from_secs(2);
/// Packets that may reach the program between two readings after a flood (IPv6 neighbour
/// and router traffic on the veth).
const IDLE_SLACK: u64 = 10;

/// `/metrics` in OpenMetrics, as Prometheus asks for it.
fn scrape_openmetrics(lab: &Lab) -> Result<String> {
    lab.server().exec(
        "curl",
        &[
            "-sSf",
            "-H",
            "Accept: application/openmetrics-text; version=1.0.0",
            &format!("http://{METRICS}/metrics"),
        ],
    )
}

/// `promtool check metrics` on `text`: `None` if it accepts it, else its complaint.
fn promtool(text: &str) -> Result<Option<String>> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting promtool")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())?;
    let output = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Ok((!output.status.success() || !said.trim().is_empty()).then_some(said))
}

#[test]
fn metrics_move_during_a_flood_and_pass_promtool() {
    let Some(_serial) = harness::start("observability metrics", &METRICS_FLOOD_NEEDS) else {
        return;
    };
    // The exposition check alone skips without promtool (the metrics are checked either way).
    let has_promtool = harness::has("promtool check", &[Need::Tool("promtool")]);
    run_cases("metrics", ["IPv4 native, syncookies auto"], |_| {
        let lab = Lab::new()?;
        let _server = PayloadServer::start(lab.server(), PORT, PAYLOAD, Protocol::RequestFirst)?;
        let iface = lab.server_iface().name();
        let daemon = Daemon::start(
            lab.server(),
            iface,
            &PORT.to_string(),
            XdpMode::Native,
            &[
                "--syncookies",
                "auto",
                "--max-syn-backlog",
                "64",
                "--metrics-addr",
                METRICS,
            ],
        )?;
        let before = scrape(&lab, METRICS)?;
        let flood = Flood::start(&lab, FloodKind::Syn, lab.server_ip(Family::V4), PORT, FLOOD)?;
        sleep(INTO_FLOOD);
        let during = scrape(&lab, METRICS)?;
        let openmetrics = scrape_openmetrics(&lab)?;
        let sent = flood.wait()?;
        println!(
            "flood: {} SYNs in {:.1?} ({:.0}/s)",
            sent.sent,
            sent.elapsed,
            sent.rate()
        );
        let after = scrape(&lab, METRICS)?;

        let i = format!("iface=\"{iface}\"");
        let p = format!("{i},port=\"{PORT}\"");
        let grew = |series: &str| -> Result<(f64, f64)> {
            // Per-port series appear with the port's first SYN.
            let b = sample(&before, series).unwrap_or(0.0);
            let a = sample(&after, series)?;
            ensure!(a > b, "{series} did not grow: {b} -> {a}");
            Ok((b, a))
        };
        for series in [
            format!("synguard_xdp_packets_total{{{i}}}"),
            format!("synguard_packets_total{{{i},verdict=\"tx\",outcome=\"syn_cookie_sent\"}}"),
            format!("synguard_port_syns_total{{{p},answered_by=\"xdp\"}}"),
        ] {
            let (b, a) = grew(&series)?;
            println!("{series}: {b} -> {a}");
        }
        let cookies_mode = sample(
            &during,
            &format!("synguard_port_mode{{{p},mode=\"cookies\"}}"),
        )?;
        ensure!(
            cookies_mode == 1.0,
            "port {PORT} was not in cookie mode during the flood:\n{during}"
        );
        let half_open = sample(
            &during,
            &format!("synguard_port_half_open{{{p},queue=\"cookies\"}}"),
        )?;
        ensure!(
            half_open > 1000.0,
            "cookie half-open estimate during the flood: {half_open}/s"
        );
        println!("during the flood: port {PORT} in cookie mode, cookie half-open {half_open:.0}/s");
        for family in [
            "synguard_kernel_tcpext_total{counter=\"SyncookiesSent\"}",
            "synguard_kernel_synproxy_total{counter=\"cookie_valid\"}",
            &format!("synguard_kernel_sockets{{port=\"{PORT}\",state=\"syn_recv\"}}"),
            &format!("synguard_map_capacity{{{i},map=\"SG_SOURCES\"}}"),
            &format!("synguard_sources_blocked{{{i}}}"),
        ] {
            sample(&during, family)?;
        }
        let switch = daemon
            .log()
            .lines()
            .find(|l| l.contains("SYNs now answered by XDP"))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no mode switch logged:\n{}", daemon.log()))?;
        println!("daemon: {switch}");
        println!("exposition during the flood:\n{during}");
        ensure!(
            openmetrics.ends_with("# EOF\n")
                && openmetrics.contains("# TYPE synguard_packets counter"),
            "the OpenMetrics exposition:\n{openmetrics}"
        );

        if has_promtool {
            if let Some(complaint) = promtool(&during)? {
                anyhow::bail!("promtool check metrics rejected the exposition: {complaint}");
            }
            println!("promtool check metrics: accepted");
        }
        daemon.stop()?.ensure_success()
    });
}

#[test]
fn stats_json_matches_the_map_during_a_flood() {
    let Some(_serial) = harness::start("observability stats", &PINNED_FLOOD_NEEDS) else {
        return;
    };
    run_cases("stats", ["IPv4 native, syncookies always"], |_| {
        let bench = PinnedBench::new(PORT, PAYLOAD)?;
        let (lab, bpffs) = (&bench.lab, &bench.bpffs);
        let iface = lab.server_iface();
        let daemon = bench.start(XdpMode::Native, &["--metrics-addr", "none"])?;
        let stats = |json: bool| -> Result<String> {
            let mut args = vec!["stats", "--iface", iface.name(), "--pin-dir", bpffs.arg()];
            args.extend(json.then_some("--json"));
            let (ok, out) = run_once(lab.server(), &args)?;
            ensure!(ok, "synguard {}: {out}", args.join(" "));
            Ok(out)
        };
        let parse = |out: &str| -> Result<Value> {
            serde_json::from_str(out.trim()).with_context(|| format!("stats --json printed {out}"))
        };

        let flood = Flood::start(lab, FloodKind::Syn, lab.server_ip(Family::V4), PORT, FLOOD)?;
        sleep(INTO_FLOOD - Duration::from_secs(1));
        let during = parse(&stats(true)?)?;
        let table = stats(false)?;
        let sent = flood.wait()?;
        println!(
            "flood: {} SYNs in {:.1?} ({:.0}/s)",
            sent.sent,
            sent.elapsed,
            sent.rate()
        );
        ensure!(during["schema"] == 1, "schema: {during}");
        let rate = during["counters"]["syn_cookie_sent"]["per_second"]
            .as_f64()
            .unwrap_or_default();
        ensure!(
            rate > 0.5 * sent.rate(),
            "stats --json shows {rate:.0} syn_cookie_sent/s during a flood of {:.0}/s",
            sent.rate()
        );
        ensure!(
            during["ports"][0]["port"] == PORT && during["ports"][0]["mode"] == "cookies",
            "ports: {}",
            during["ports"]
        );
        println!("stats --json during the flood:\n{during}");
        println!("stats during the flood:\n{table}");

        // Quiet now: stats' second reading and bpftool's must agree.
        let after = parse(&stats(true)?)?;
        let map = Counters::of(iface)?;
        for &counter in Counter::ALL {
            let shown = after["counters"][counter.name()]["total"]
                .as_u64()
                .ok_or_else(|| anyhow!("no total for {}: {after}", counter.name()))?;
            let read = map.get(counter);
            let slack = match counter {
                Counter::Packets | Counter::PassNonTcp | Counter::PassNonIp => IDLE_SLACK,
                _ => 0,
            };
            ensure!(
                read >= shown && read - shown <= slack,
                "{}: stats --json {shown}, bpftool {read}",
                counter.name()
            );
        }
        println!("stats --json totals match bpftool: {map}");
        daemon.stop()?.ensure_success()
    });
}

#[test]
fn top_shows_a_flooding_source_blocked() {
    let Some(_serial) = harness::start("observability top", &PINNED_FLOOD_NEEDS) else {
        return;
    };
    run_cases("top", ["IPv4 native, --per-source-half-open 50"], |_| {
        let bench = PinnedBench::new(PORT, PAYLOAD)?;
        let (lab, bpffs) = (&bench.lab, &bench.bpffs);
        let iface = lab.server_iface().name();
        let mut daemon = bench.start(
            XdpMode::Native,
            &[
                "--metrics-addr",
                "none",
                "--per-source-half-open",
                "50",
                "--block-seconds",
                "30",
                "--stats-interval",
                "1",
            ],
        )?;
        let flood =
            Flood::single_source(lab, FloodKind::Syn, lab.server_ip(Family::V4), PORT, FLOOD)?;
        sleep(INTO_FLOOD);
        let (ok, top) = run_once(
            lab.server(),
            &["top", "-n", "5", "--iface", iface, "--pin-dir", bpffs.arg()],
        )?;
        let sent = flood.wait()?;
        ensure!(ok, "synguard top: {top}");
        println!(
            "flood from one source: {} SYNs in {:.1?}",
            sent.sent, sent.elapsed
        );
        println!("synguard top during the flood:\n{top}");

        let source = format!("{}/32", lab.client_ip(Family::V4));
        let left = block_time_left(&top, &source)?;
        ensure!(
            left > 20.0 && left <= 30.0,
            "{source} blocked for {left}s more, expected (20, 30] of a 30 s block"
        );
        let summary = daemon
            .wait_for_line("blocks:", Duration::from_secs(5))
            .context("no block summary logged")?;
        ensure!(
            summary.contains(&source),
            "summary without {source}: {summary}"
        );
        println!("daemon: {summary}");
        daemon.stop()?.ensure_success()
    });
}
