//! A bounded soak: a random-source SYN flood (hping3), a legitimate client connecting every
//! 50 ms and a SIGHUP reload about every 10 s (alternating MSS values and a deny entry, so each
//! reload rewrites the maps and the nftables table) against one daemon in `auto` mode, for
//! `SYNGUARD_SOAK_SECS` seconds (default 120). The daemon's resident memory and open file
//! descriptors must stay flat after a warm-up, every legitimate connection must succeed and
//! every reload must be applied.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use nix::sys::signal::Signal;
use synguard_lab::client::{ClientConfig, LegitClient};
use synguard_lab::daemon::Daemon;
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::scratch::ScratchDir;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 4096;
const DEFAULT_SECS: u64 = 120;
const RELOAD_EVERY: Duration = Duration::from_secs(10);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
const LEGIT_INTERVAL: Duration = Duration::from_millis(50);
/// The usage sample the end is compared with: after the first reload, once the flood, the
/// auto controller, the client and the reload path have each allocated what they keep.
const WARM_UP: Duration = Duration::from_secs(10);
/// How much resident memory may grow from the warm-up sample to the end.
const RSS_SLACK_KIB: u64 = 8 * 1024;
/// How many more descriptors the daemon may hold at the end (a socket in use at that moment).
const FD_SLACK: usize = 4;
const RELOADED: &str = "reload done";
const REJECTED: &str = "reload failed";
/// The auto controller's line when the flood makes it answer with cookies.
const SWITCHED: &str = "SYNs now answered by XDP with cookies";

/// The config of reload number `n`: the MSS values and a deny entry alternate.
fn config(iface: &str, n: usize) -> String {
    let (mss4, mss6, deny) = if n.is_multiple_of(2) {
        (1460, 1440, "")
    } else {
        (1400, 1380, "\"198.51.100.0/24\"")
    };
    format!(
        "iface = [\"{iface}\"]\nports = [{PORT}]\nxdp_mode = \"native\"\nsyncookies = \"auto\"\n\
         cooldown = 3\nmss4 = {mss4}\nmss6 = {mss6}\ndeny = [{deny}]\n"
    )
}

/// Resident memory and open descriptors of a process.
#[derive(Clone, Copy, Debug)]
struct Usage {
    rss_kib: u64,
    fds: usize,
}

impl Usage {
    fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
        let fds = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd"))?.count();
        Ok(Self { rss_kib, fds })
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSS {} KiB, {} fds", self.rss_kib, self.fds)
    }
}

#[test]
fn flood_legit_and_reloads_keep_memory_flat() {
    let Some(_serial) = harness::start(
        "soak",
        &[Need::Daemon, Need::Tool("hping3"), Need::Tool("timeout")],
    ) else {
        return;
    };
    let secs = match std::env::var("SYNGUARD_SOAK_SECS") {
        Ok(value) => value.parse().expect("SYNGUARD_SOAK_SECS: whole seconds"),
        Err(_) => DEFAULT_SECS,
    };
    run_cases("soak", [format!("{secs} s")], |_| {
        soak(Duration::from_secs(secs))
    });
}

fn soak(duration: Duration) -> Result<()> {
    ensure!(
        duration > WARM_UP + RELOAD_EVERY,
        "a soak shorter than {:?} has nothing after its warm-up",
        WARM_UP + RELOAD_EVERY
    );
    let lab = Lab::new()?;
    let _server = PayloadServer::start(lab.server(), PORT, PAYLOAD, Protocol::RequestFirst)?;
    let files = ScratchDir::create()?;
    let iface = lab.server_iface().name();
    let path = files.write("synguard.toml", config(iface, 0))?;
    let daemon = Daemon::start_with_config(lab.server(), &path, &[])?;
    let pid = daemon.pid();
    let at_start = Usage::of(pid)?;

    let flood = Flood::start(
        &lab,
        FloodKind::Syn,
        lab.server_ip(Family::V4),
        PORT,
        duration,
    )?;
    let legit = LegitClient::spawn(
        lab.client(),
        ClientConfig::new(
            lab.server_addr(Family::V4, PORT),
            Protocol::RequestFirst,
            PAYLOAD,
            usize::MAX,
        )
        .interval(LEGIT_INTERVAL),
    )?;
    let started = Instant::now();
    let reloads = (duration.as_secs() / RELOAD_EVERY.as_secs()) as usize;
    let mut warm = None;
    for reload in 1..=reloads {
        let due = started + RELOAD_EVERY * u32::try_from(reload)?;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        files.write("synguard.toml", config(iface, reload))?;
        daemon.signal(Signal::SIGHUP)?;
        wait_for_reloads(&daemon, reload)?;
        let usage = Usage::of(pid)?;
        if warm.is_none() && started.elapsed() >= WARM_UP {
            warm = Some(usage);
        }
        let (ok, failed) = legit.progress().get();
        println!(
            "{:>4.0?}: reload {reload} done; {usage}; legit {ok} ok, {failed} failed",
            started.elapsed()
        );
    }
    legit.stop();
    let report = legit.join()?;
    let flood = flood.stop()?;
    let at_end = Usage::of(pid)?;
    let warm = warm.context("no usage sample after the warm-up")?;
    println!(
        "soak {:.0?}: flood {} SYNs ({:.0}/s); legit {}; {reloads} reloads",
        started.elapsed(),
        flood.sent,
        flood.rate(),
        report.summary()
    );
    println!("daemon at start {at_start}, after warm-up {warm}, at end {at_end}");

    let log = daemon.log();
    ensure!(
        log.contains(SWITCHED),
        "the auto controller never switched to cookies: was there a flood?\n{log}"
    );
    ensure!(
        report.failures.is_empty() && report.successes() > 0,
        "legitimate connections failed: {}; first: {:?}",
        report.summary(),
        report.failures.first()
    );
    ensure!(
        at_end.rss_kib <= warm.rss_kib + RSS_SLACK_KIB,
        "resident memory grew from {} KiB after the warm-up to {} KiB",
        warm.rss_kib,
        at_end.rss_kib
    );
    ensure!(
        at_end.fds <= warm.fds + FD_SLACK,
        "open descriptors grew from {} after the warm-up to {}",
        warm.fds,
        at_end.fds
    );
    daemon.stop()?.ensure_success()
}

/// Waits until the daemon has logged `count` applied reloads, failing on a rejected one.
fn wait_for_reloads(daemon: &Daemon, count: usize) -> Result<()> {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let log = daemon.log();
        ensure!(!log.contains(REJECTED), "a reload was rejected:\n{log}");
        let done = log.lines().filter(|l| l.contains(RELOADED)).count();
        if done >= count {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "reload {count} not done within {RELOAD_TIMEOUT:?} ({done} done)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
