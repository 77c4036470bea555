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
    /// An executable on PATH.
    Tool(&'static str),
    /// The synguard binary (see [`binary`]).
    Daemon,
    /// 802.1Q interfaces.
    Vlan,
}

fn missing(need: Need) -> Option<String> {
    match need {
        Need::Tool(tool) => find_on_path(tool)
            .is_none()
            .then(|| format!("`{tool}` is not installed (cargo xtask setup)")),
        Need::Daemon => binary().err().map(|e| format!("{e:#}")),
        Need::Vlan => match vlan_supported() {
            Ok(true) => None,
            Ok(false) => Some(
                "the kernel cannot create 802.1Q (VLAN) interfaces (CONFIG_VLAN_8021Q)".to_owned(),
            ),
            Err(e) => Some(format!("probing 802.1Q support failed: {e:#}")),
        },
    }
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

/// Whether this runs in CI (`CI=true`), where `cargo xtask setup` installed every tool.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Checks root and the basic tools plus `needs`. Returns this test's turn on the machine (see
/// [`LabTurn`]), or prints `SKIP: <reason>` for `test` (visible even when the test harness
/// captures output) and returns `None`. A missing tool fails the test in CI instead: there it
/// means `cargo xtask setup` does not install it, and a skip would hide that.
pub fn start(test: &str, needs: &[Need]) -> Option<LabTurn> {
    let basics = [Need::Tool("ip"), Need::Tool("nft"), Need::Tool("bpftool")];
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("needs root (network namespaces, XDP, nftables)".to_owned())
    } else {
        basics.iter().chain(needs).find_map(|&need| {
            let reason = missing(need)?;
            if matches!(need, Need::Tool(_)) && in_ci() {
                panic!(
                    "{test}: {reason}, in CI: add its package to APT_PACKAGES in xtask/src/setup.rs"
                );
            }
            Some(reason)
        })
    };
    if let Some(reason) = reason {
        // Straight to the stream: the test harness captures print! output of passing tests.
        let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
        return None;
    }
    Some(LabTurn::take())
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
