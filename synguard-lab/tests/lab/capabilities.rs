//! The systemd unit's capability set is exactly what synguard needs. The daemon runs as uid 0
//! holding only the capabilities the unit grants (read from
//! `packaging/systemd/synguard.service`: `CapabilityBoundingSet=` and `AmbientCapabilities=`),
//! under `setpriv` with the `noroot` securebit so that being uid 0 grants nothing more: it
//! attaches, answers SYNs with XDP cookies (legitimate connections complete through them),
//! pins its state in directories only it can read, is restarted adopting its pins, and cleans
//! up at exit. Without any one of those capabilities the start fails with an error naming it,
//! and leaves nothing behind.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::signal::Signal;
use synguard_common::Counter;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::daemon::{READY_LINE, binary};
use synguard_lab::harness::{self, Need, PinnedBench, run_cases};
use synguard_lab::kernel::{self, Counters, xdp_prog_id};
use synguard_lab::process::{Process, run};
use synguard_lab::server::Protocol;
use synguard_lab::topology::Family;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/systemd/synguard.service"
);
const PORT: u16 = 8080;
const PAYLOAD: usize = 4096;
const CONNECTIONS: usize = 5;
/// How long a start may take to succeed or fail.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The daemon's lock and state directory (`synguard::state::RUN_DIR`).
const RUN_DIR: &str = "/run/synguard";
/// The daemon's line when it swaps its program into a pinned link.
const ADOPTED: &str = "pinned link adopted";
const NEEDS: [Need; 4] = [
    Need::Daemon,
    Need::Tool("setpriv"),
    Need::Tool("capsh"),
    Need::Tool("mount"),
];

/// The capabilities (`CAP_BPF`, ...) listed by `key=` in the unit.
fn unit_capabilities(key: &str) -> Result<BTreeSet<String>> {
    let unit = std::fs::read_to_string(UNIT).with_context(|| format!("reading {UNIT}"))?;
    let prefix = format!("{key}=");
    let caps: BTreeSet<String> = unit
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&prefix))
        .flat_map(str::split_whitespace)
        .map(str::to_uppercase)
        .collect();
    ensure!(!caps.is_empty(), "{UNIT} has no {key}=");
    Ok(caps)
}

/// The unit's set: bounding and ambient must agree, or the unit grants less than it bounds.
fn unit_set() -> Result<BTreeSet<String>> {
    let bounding = unit_capabilities("CapabilityBoundingSet")?;
    let ambient = unit_capabilities("AmbientCapabilities")?;
    ensure!(
        bounding == ambient,
        "{UNIT}: bounding set {bounding:?} differs from the ambient set {ambient:?}"
    );
    Ok(bounding)
}

/// `-all,+bpf,+net_admin`: setpriv's list for exactly `caps`.
fn setpriv_list(caps: &BTreeSet<String>) -> String {
    let names = caps
        .iter()
        .map(|cap| format!(",+{}", cap.trim_start_matches("CAP_").to_lowercase()));
    std::iter::once("-all".to_owned()).chain(names).collect()
}

/// Starts the daemon on the bench's server veth holding exactly `caps`, with `extra` flags.
fn start_with(bench: &PinnedBench, caps: &BTreeSet<String>, extra: &[&str]) -> Result<Process> {
    let list = setpriv_list(caps);
    let mut cmd = bench.lab.server().command("setpriv");
    cmd.arg(format!("--bounding-set={list}"))
        .arg(format!("--inh-caps={list}"))
        .arg(format!("--ambient-caps={list}"))
        // uid 0 gains nothing at exec for being root: only the ambient capabilities remain.
        .args(["--securebits=+noroot,+noroot_locked", "--"])
        .arg(binary()?)
        .args(["--iface", bench.lab.server_iface().name()])
        .args(["--ports", &PORT.to_string(), "--xdp-mode", "native"])
        .args(["--syncookies", "always", "--pin-dir", bench.bpffs.arg()])
        .args(extra);
    Process::spawn("synguard", cmd)
}

/// The capabilities of set `field` (`CapEff`, `CapBnd`, ...) of process `pid`, decoded by capsh.
fn process_capabilities(pid: u32, field: &str) -> Result<BTreeSet<String>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .trim();
    // `0x0000…=cap_net_admin,cap_perfmon,cap_bpf`
    let decoded = run(std::process::Command::new("capsh").arg(format!("--decode={hex}")))?;
    let (_, names) = decoded
        .trim()
        .split_once('=')
        .with_context(|| format!("capsh --decode: `{decoded}`"))?;
    Ok(names
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_uppercase)
        .collect())
}

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .mode()
        & 0o7777)
}

/// Nothing of synguard's stays on the bench: no XDP program, no table, no pins.
fn ensure_clean(bench: &PinnedBench) -> Result<()> {
    let iface = bench.lab.server_iface();
    ensure!(
        xdp_prog_id(iface)?.is_none(),
        "an XDP program stayed on {}",
        iface.name()
    );
    let tables = kernel::nft_tables(bench.lab.server())?;
    ensure!(
        !tables.iter().any(|t| t.contains("synguard")),
        "nftables tables left: {tables:?}"
    );
    let pins = bench.bpffs.path().join(iface.name());
    ensure!(!pins.exists(), "pins left in {}", pins.display());
    Ok(())
}

/// Legitimate connections through the daemon in both families move its cookie counters.
fn serves(bench: &PinnedBench) -> Result<Counters> {
    let iface = bench.lab.server_iface();
    let before = Counters::of(iface)?;
    for family in Family::ALL {
        let report = client::run(
            bench.lab.client(),
            ClientConfig::new(
                bench.lab.server_addr(family, PORT),
                Protocol::RequestFirst,
                PAYLOAD,
                CONNECTIONS,
            ),
        )?;
        ensure!(
            report.successes() == CONNECTIONS,
            "{family}: {}",
            report.summary()
        );
    }
    let moved = Counters::of(iface)?.since(&before);
    let handshakes = (CONNECTIONS * Family::ALL.len()) as u64;
    ensure!(
        moved.get(Counter::SynCookieSent) >= handshakes
            && moved.get(Counter::AckCookieValid) >= handshakes,
        "{handshakes} connections, but the counters moved {moved}"
    );
    Ok(moved)
}

fn stop(mut daemon: Process) -> Result<()> {
    let status = daemon.stop(Signal::SIGTERM, STOP_GRACE)?;
    ensure!(status.success(), "exit {status}:\n{}", daemon.output());
    Ok(())
}

/// A first daemon starts, serves and exits leaving its protection pinned (`--on-exit keep`);
/// a second adopts the pins and swaps its program into the pinned link, serves, and removes
/// everything at exit. Both hold exactly the unit's capabilities.
#[test]
fn the_units_capabilities_are_enough() {
    let Some(_serial) = harness::start("capabilities", &NEEDS) else {
        return;
    };
    run_cases("capabilities", ["the unit's set"], |_| {
        let caps = unit_set()?;
        let bench = PinnedBench::new(PORT, PAYLOAD)?;
        let iface = bench.lab.server_iface();
        let mut first = start_with(&bench, &caps, &["--on-exit", "keep"])?;
        first.wait_for_line(READY_LINE, START_TIMEOUT)?;
        for field in ["CapEff", "CapPrm", "CapBnd"] {
            let held = process_capabilities(first.pid(), field)?;
            ensure!(
                held == caps,
                "the daemon's {field} is {held:?}, not {caps:?}"
            );
        }
        let moved = serves(&bench)?;
        let pins = bench.bpffs.path().join(iface.name());
        for dir in [pins.as_path(), Path::new(RUN_DIR)] {
            let mode = mode(dir)?;
            ensure!(
                mode == 0o700,
                "{} has mode {mode:04o}, not 0700",
                dir.display()
            );
        }
        stop(first)?;
        ensure!(
            xdp_prog_id(iface)?.is_some(),
            "--on-exit keep left no XDP program on {}",
            iface.name()
        );

        let mut second = start_with(&bench, &caps, &[])?;
        second.wait_for_line(READY_LINE, START_TIMEOUT)?;
        second.wait_for_line(ADOPTED, START_TIMEOUT)?;
        serves(&bench)?;
        stop(second)?;
        println!("with {caps:?} only: {moved}; restarted with the pins adopted");
        ensure_clean(&bench)
    });
}

#[test]
fn each_capability_is_needed() {
    let Some(_serial) = harness::start("capabilities", &NEEDS) else {
        return;
    };
    let caps = unit_set().expect("the unit's capabilities");
    run_cases("capabilities", caps.clone(), |missing| {
        let mut fewer = caps.clone();
        fewer.remove(missing);
        let bench = PinnedBench::new(PORT, PAYLOAD)?;
        let mut daemon = start_with(&bench, &fewer, &[])?;
        let Some(status) = daemon.wait_timeout(START_TIMEOUT)? else {
            bail!(
                "still running after {START_TIMEOUT:?}:\n{}",
                daemon.output()
            );
        };
        let log = daemon.output();
        ensure!(!status.success(), "exit {status} without {missing}:\n{log}");
        ensure!(!log.contains(READY_LINE), "ready without {missing}:\n{log}");
        let error = log
            .lines()
            .find(|line| line.starts_with("error"))
            .with_context(|| format!("no error line:\n{log}"))?;
        println!("without {missing}: {error}");
        ensure!(
            error.contains(&format!("this process lacks {missing}:")),
            "the error does not name {missing}: {error}"
        );
        ensure_clean(&bench)
    });
}
