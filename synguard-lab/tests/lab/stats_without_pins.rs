//! `synguard stats` and `synguard top` beside a daemon that runs without pins. The lab starts
//! the daemon with `ip netns exec`, which remounts /sys: it finds no bpffs and says it runs
//! without pins. Run the same way in the server namespace:
//!
//! - as root, both find the daemon's program through the interface (with and without
//!   `--iface`) and show what a single-source SYN flood did: cookies sent, the source blocked
//!   and its SYNs dropped, totals equal to bpftool's reading of the program's `SG_COUNTERS`;
//! - without `CAP_SYS_ADMIN` (as uid 65534, and as root with every other capability) both fail
//!   with an error naming it.
//!
//! `--on-exit keep` without pins is refused at start: `operator_input.rs`.

use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use serde_json::Value;
use synguard_common::Counter;
use synguard_lab::daemon::{Daemon, XdpMode, binary, run_once};
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::kernel::Counters;
use synguard_lab::top::block_time_left;
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const FLOOD: Duration = Duration::from_secs(4);
/// When the readings during the flood are taken.
const INTO_FLOOD: Duration = Duration::from_secs(2);
const BLOCK_SECONDS: f64 = 30.0;
/// The daemon's warning when it finds no bpffs.
const NO_PINS: &str = "running without restart-safe pins";
const NEEDS: [Need; 4] = [
    Need::Daemon,
    Need::Tool("hping3"),
    Need::Tool("timeout"),
    Need::Tool("setpriv"),
];

/// A lab whose server veth runs a daemon without pins, blocking sources over 50 half-open
/// connections a second.
fn start_unpinned(lab: &Lab) -> Result<Daemon> {
    let daemon = Daemon::start(
        lab.server(),
        lab.server_iface().name(),
        &PORT.to_string(),
        XdpMode::Native,
        &[
            "--metrics-addr",
            "none",
            "--per-source-half-open",
            "50",
            "--block-seconds",
            &format!("{BLOCK_SECONDS}"),
        ],
    )?;
    let log = daemon.log();
    ensure!(
        log.contains(NO_PINS),
        "the daemon under `ip netns exec` did not say it runs without pins:\n{log}"
    );
    Ok(daemon)
}

/// `synguard ARGS` in the server namespace as root; it must succeed.
fn synguard(lab: &Lab, args: &[&str]) -> Result<String> {
    let (ok, out) = run_once(lab.server(), args)?;
    ensure!(ok, "synguard {}: {out}", args.join(" "));
    Ok(out)
}

fn stats_json(lab: &Lab, args: &[&str]) -> Result<Value> {
    let args: Vec<&str> = ["stats", "--json"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let out = synguard(lab, &args)?;
    serde_json::from_str(out.trim()).with_context(|| format!("stats --json printed {out}"))
}

fn total(json: &Value, counter: Counter) -> Result<u64> {
    json["counters"][counter.name()]["total"]
        .as_u64()
        .ok_or_else(|| anyhow!("no total for {}: {json}", counter.name()))
}

#[test]
fn stats_and_top_find_a_daemon_without_pins() {
    let Some(_turn) = harness::start("stats without pins", &NEEDS) else {
        return;
    };
    run_cases(
        "stats without pins",
        ["IPv4 native, --per-source-half-open 50"],
        |_| {
            let lab = Lab::new()?;
            let iface = lab.server_iface();
            let daemon = start_unpinned(&lab)?;
            let before = stats_json(&lab, &["--iface", iface.name()])?;

            let flood =
                Flood::single_source(&lab, FloodKind::Syn, lab.server_ip(Family::V4), PORT, FLOOD)?;
            sleep(INTO_FLOOD);
            // Neither names the interface: the one synguard of the namespace is found.
            let top = synguard(&lab, &["top", "-n", "5"])?;
            let during = stats_json(&lab, &[])?;
            let table = synguard(&lab, &["stats", "--iface", iface.name()])?;
            let sent = flood.wait()?;
            println!(
                "flood from one source: {} SYNs in {:.1?}",
                sent.sent, sent.elapsed
            );
            println!("synguard top during the flood:\n{top}");
            println!("synguard stats during the flood:\n{table}");

            ensure!(
                during["iface"] == iface.name(),
                "stats read {} instead of {}",
                during["iface"],
                iface.name()
            );
            ensure!(
                table.starts_with(&format!("synguard on {}:", iface.name())),
                "stats table:\n{table}"
            );
            let dropped = during["counters"][Counter::DropSourceBlocked.name()]["per_second"]
                .as_f64()
                .unwrap_or_default();
            ensure!(
                dropped > 0.0,
                "stats --json shows no blocked SYNs dropped during the flood: {during}"
            );
            for counter in [Counter::SynCookieSent, Counter::DropSourceBlocked] {
                ensure!(
                    total(&during, counter)? > total(&before, counter)?,
                    "{} did not move: before {before}, during {during}",
                    counter.name()
                );
            }

            let source = format!("{}/32", lab.client_ip(Family::V4));
            let left = block_time_left(&top, &source)?;
            ensure!(
                left > BLOCK_SECONDS - 10.0 && left <= BLOCK_SECONDS,
                "{source} blocked for {left}s more, expected at most {BLOCK_SECONDS}s and over {}s",
                BLOCK_SECONDS - 10.0
            );

            // Quiet now: these counters no longer move, and stats reads what bpftool reads.
            let after = stats_json(&lab, &["--iface", iface.name()])?;
            let map = Counters::of(iface)?;
            for counter in [Counter::SynCookieSent, Counter::DropSourceBlocked] {
                let (shown, read) = (total(&after, counter)?, map.get(counter));
                ensure!(
                    shown == read,
                    "{}: stats --json {shown}, bpftool {read}",
                    counter.name()
                );
            }
            println!("stats --json after the flood matches bpftool: {map}");
            daemon.stop()?.ensure_success()
        },
    );
}

/// How `synguard` is run without `CAP_SYS_ADMIN`: `setpriv` arguments.
struct Unprivileged {
    name: &'static str,
    setpriv: &'static [&'static str],
}

impl std::fmt::Display for Unprivileged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

#[test]
fn without_cap_sys_admin_the_error_names_it() {
    let Some(_turn) = harness::start("stats without pins, no CAP_SYS_ADMIN", &NEEDS) else {
        return;
    };
    let lab = Lab::new().expect("lab");
    let daemon = start_unpinned(&lab).expect("daemon without pins");
    let iface = lab.server_iface().name();
    let cases = [
        Unprivileged {
            name: "uid 65534",
            setpriv: &["--reuid=65534", "--regid=65534", "--clear-groups"],
        },
        Unprivileged {
            name: "uid 0 with every capability but CAP_SYS_ADMIN",
            setpriv: &["--bounding-set=-sys_admin"],
        },
    ];
    run_cases("stats without pins, no CAP_SYS_ADMIN", cases, |case| {
        let binary = binary()?;
        for command in ["stats", "top"] {
            let mut cmd = lab.server().command("setpriv");
            cmd.args(case.setpriv)
                .arg("--")
                .arg(&binary)
                .args([command, "--iface", iface]);
            let output = cmd.output().context("running setpriv")?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
            ensure!(
                !output.status.success(),
                "`synguard {command}` succeeded without CAP_SYS_ADMIN:\n{text}"
            );
            let error = text
                .lines()
                .find(|l| l.starts_with("error:"))
                .with_context(|| format!("no `error:` line from `synguard {command}`:\n{text}"))?;
            ensure!(
                error.contains("lacks CAP_SYS_ADMIN") && error.contains(iface),
                "the error names neither the interface nor CAP_SYS_ADMIN: {error}"
            );
            println!("{case}: synguard {command} -> {error}");
        }
        Ok(())
    });
    daemon
        .stop()
        .expect("stop")
        .ensure_success()
        .expect("clean exit");
}
