//! Test plumbing shared by the integration tests: preconditions with a visible `SKIP:` line,
//! one lab test at a time on the machine, and running a check over combinations of cases so
//! that every case runs and the failures are reported together.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use anyhow::Result;
use nix::fcntl::{Flock, FlockArg};

use crate::bpffs::Bpffs;
use crate::daemon::{Daemon, XdpMode, binary};
use crate::process::find_on_path;
use crate::server::{PayloadServer, Protocol};
use crate::topology::{Family, Lab, Offloads, vlan_supported};

/// A precondition of a test.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Root (network namespaces, XDP, nftables); every lab test needs it.
    Root,
    /// An executable on PATH.
    Tool(&'static str),
    /// The synguard binary (see [`binary`]).
    Daemon,
    /// 802.1Q interfaces.
    Vlan,
}

impl Need {
    /// Whether a test that lacks this may skip in CI (`CI=true`). The one list of what may:
    /// features of the kernel, which no install step adds. Root, a tool or the daemon missing
    /// there means CI (root, after `cargo xtask setup` and the build) is broken, and a skip
    /// would hide it.
    const fn may_skip_in_ci(self) -> bool {
        match self {
            Need::Vlan => true,
            Need::Root | Need::Tool(_) | Need::Daemon => false,
        }
    }

    /// Why this is missing here, if it is.
    fn missing(self) -> Option<String> {
        match self {
            Need::Root => (!nix::unistd::geteuid().is_root())
                .then(|| "needs root (network namespaces, XDP, nftables)".to_owned()),
            Need::Tool(tool) => find_on_path(tool)
                .is_none()
                .then(|| format!("`{tool}` is not installed (cargo xtask setup)")),
            Need::Daemon => binary().err().map(|e| format!("{e:#}")),
            Need::Vlan => match vlan_supported() {
                Ok(true) => None,
                Ok(false) => Some(
                    "the kernel cannot create 802.1Q (VLAN) interfaces (CONFIG_VLAN_8021Q)"
                        .to_owned(),
                ),
                Err(e) => Some(format!("probing 802.1Q support failed: {e:#}")),
            },
        }
    }
}

/// Whether this runs in CI (`CI=true`), where `cargo xtask setup` installed every tool.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `test` has `needs`. For the first one missing it prints `SKIP: <test>: <reason>`
/// (visible even when the test harness captures output) and returns false, or, in CI, fails
/// the test naming it, unless it is one that may skip there ([`Need::may_skip_in_ci`]).
pub fn has(test: &str, needs: &[Need]) -> bool {
    match needs.iter().find_map(|&need| Some((need, need.missing()?))) {
        None => true,
        Some((need, reason)) => {
            skip_or_fail(test, &reason, need.may_skip_in_ci());
            false
        }
    }
}

/// Prints `SKIP: <test>: <reason>` for a precondition that CI provides but which is not a
/// [`Need`] (the Debian package `cargo xtask test` builds, root for a test that only loads
/// programs), or, in CI, fails the test naming it.
pub fn skip(test: &str, reason: &str) {
    skip_or_fail(test, reason, false);
}

fn skip_or_fail(test: &str, reason: &str, may_skip_in_ci: bool) {
    if in_ci() && !may_skip_in_ci {
        panic!(
            "{test}: {reason}; in CI (CI=true) this fails instead of skipping: the machine runs \
             as root after `cargo xtask setup` (a missing tool's package belongs in APT_PACKAGES \
             in xtask/src/setup.rs) and `cargo xtask test` builds the daemon and the package"
        );
    }
    // Straight to the stream: the test harness captures print! output of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

static SERIAL: Mutex<()> = Mutex::new(());
/// Lab tests of different processes (test binaries, engineers) take turns through this lock.
const MACHINE_LOCK: &str = "/run/synguard-lab.lock";

/// Keeps lab tests one at a time on the machine: they flood a 2-core machine and measure
/// latencies, so two at once would fail each other. Held until dropped.
pub struct LabTurn {
    _machine: Option<Flock<File>>,
    _process: MutexGuard<'static, ()>,
}

impl LabTurn {
    fn take() -> Self {
        let process = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let machine = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(MACHINE_LOCK)
            .ok()
            .and_then(|file| Flock::lock(file, FlockArg::LockExclusive).ok());
        Self {
            _machine: machine,
            _process: process,
        }
    }
}

/// Checks root and the basic tools plus `needs` (see [`has`]). Returns this test's turn on the
/// machine (see [`LabTurn`]), or `None` when the test skips.
pub fn start(test: &str, needs: &[Need]) -> Option<LabTurn> {
    let basics = [
        Need::Root,
        Need::Tool("ip"),
        Need::Tool("nft"),
        Need::Tool("bpftool"),
    ];
    let all: Vec<Need> = basics.into_iter().chain(needs.iter().copied()).collect();
    has(test, &all).then(LabTurn::take)
}

/// Runs `check` for every case, printing each outcome, and panics at the end listing every
/// failed case with its error.
pub fn run_cases<C: Display>(
    test: &str,
    cases: impl IntoIterator<Item = C>,
    mut check: impl FnMut(&C) -> anyhow::Result<()>,
) {
    let mut failures = Vec::new();
    let mut count = 0;
    for case in cases {
        count += 1;
        let started = Instant::now();
        match check(&case) {
            Ok(()) => println!("PASS: {test} [{case}] in {:.1?}", started.elapsed()),
            Err(e) => {
                println!("FAIL: {test} [{case}]: {e:#}");
                failures.push(format!("[{case}]: {e:#}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{test}: {} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A (family, mode, offloads) case, displayed as `IPv4 native` (offloads on) or
/// `IPv6 skb, tx offload off`.
pub struct Case {
    pub family: Family,
    pub mode: XdpMode,
    pub offloads: Offloads,
}

impl Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family, self.mode.as_str())?;
        if self.offloads != Offloads::On {
            write!(f, ", {}", self.offloads.name())?;
        }
        Ok(())
    }
}

/// Every (family, mode) pair, offloads on.
pub fn cases() -> Vec<Case> {
    cases_with(&[Offloads::On])
}

/// Every (family, mode) pair with offloads on and with tx offload off.
pub fn offload_cases() -> Vec<Case> {
    cases_with(&Offloads::ALL)
}

fn cases_with(offloads: &[Offloads]) -> Vec<Case> {
    let mut cases = Vec::new();
    for &offloads in offloads {
        for family in Family::ALL {
            for mode in XdpMode::ALL {
                cases.push(Case {
                    family,
                    mode,
                    offloads,
                });
            }
        }
    }
    cases
}

/// The usual test bench: a lab, a payload server on `port` in the server namespace and the
/// daemon protecting `ports` on the server's veth. Drops in that order: daemon, server, lab.
pub struct Bench {
    pub daemon: Daemon,
    pub server: PayloadServer,
    pub lab: Lab,
}

impl Bench {
    /// A new lab whose server serves `port`, which is also the one port synguard protects.
    pub fn protecting(port: u16, payload_len: usize, mode: XdpMode) -> Result<Self> {
        Self::start(Lab::new()?, port, payload_len, &port.to_string(), mode, &[])
    }

    /// Serves with [`Protocol::RequestFirst`] (HTTP-like).
    pub fn start(
        lab: Lab,
        port: u16,
        payload_len: usize,
        ports: &str,
        mode: XdpMode,
        extra: &[&str],
    ) -> Result<Self> {
        let server = PayloadServer::start(lab.server(), port, payload_len, Protocol::RequestFirst)?;
        let daemon = Daemon::start(lab.server(), lab.server_iface().name(), ports, mode, extra)?;
        Ok(Self {
            daemon,
            server,
            lab,
        })
    }
}

/// What a test that floods and scrapes `/metrics` needs: the daemon, hping3 under `timeout`,
/// and curl.
pub const METRICS_FLOOD_NEEDS: [Need; 4] = [
    Need::Daemon,
    Need::Tool("hping3"),
    Need::Tool("timeout"),
    Need::Tool("curl"),
];

/// What a [`PinnedBench`] test that floods needs: the daemon, hping3 under `timeout`, and
/// `mount` for the private bpffs.
pub const PINNED_FLOOD_NEEDS: [Need; 4] = [
    Need::Daemon,
    Need::Tool("hping3"),
    Need::Tool("timeout"),
    Need::Tool("mount"),
];

/// A lab whose server serves `port`, with a private bpffs for the daemon's pins (see
/// [`Bpffs`]). Drops in field order: the server, the lab (and the daemons' interfaces), then
/// the pins.
pub struct PinnedBench {
    _server: PayloadServer,
    pub lab: Lab,
    pub bpffs: Bpffs,
    port: u16,
}

impl PinnedBench {
    pub fn new(port: u16, payload_len: usize) -> Result<Self> {
        let bpffs = Bpffs::mount()?;
        let lab = Lab::new()?;
        let server = PayloadServer::start(lab.server(), port, payload_len, Protocol::RequestFirst)?;
        Ok(Self {
            _server: server,
            lab,
            bpffs,
            port,
        })
    }

    /// A daemon protecting the port on the server's veth in `mode`, pinning under this bench's
    /// bpffs, with `extra` arguments.
    pub fn start(&self, mode: XdpMode, extra: &[&str]) -> Result<Daemon> {
        let mut args = vec!["--pin-dir", self.bpffs.arg()];
        args.extend_from_slice(extra);
        Daemon::start(
            self.lab.server(),
            self.lab.server_iface().name(),
            &self.port.to_string(),
            mode,
            &args,
        )
    }
}
