//! The synguard daemon under test, run inside the server namespace.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::Signal;

use crate::netns::Netns;
use crate::process::{Process, describe};

/// How long start-up (BPF load, nftables, attach) may take.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to clean up after a signal.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The line the daemon logs once it is attached and its nftables table is installed.
pub const READY_LINE: &str = "synguard ready";

/// `--xdp-mode`, spelt as the daemon spells it.
pub use synguard_common::XdpMode;

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// The synguard binary: `$SYNGUARD_BIN`, else the newer of `target/release/synguard` and
/// `target/debug/synguard` under `$CARGO_TARGET_DIR` or the workspace's `target/`.
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SYNGUARD_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "SYNGUARD_BIN={} is not a file (tests run in the crate directory: give an absolute path)",
                path.display()
            );
        }
        return Ok(path);
    }
    let target = target_dir();
    let candidates = ["release", "debug"].map(|profile| target.join(profile).join("synguard"));
    candidates
        .iter()
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no synguard binary: build it (`cargo build -p synguard`) or set SYNGUARD_BIN (looked for {} and {})",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// Where the daemon keeps its per-interface lock and state files (`synguard::state::RUN_DIR`).
const DAEMON_RUN_DIR: &str = "/run/synguard";

/// Removes the daemon's lock and state files of `iface`, an interface the lab made and is about
/// to delete (the daemon keeps its lock file on purpose: deleting a lock file someone may still
/// open is a race for the daemon, not for a lab whose daemons are gone). The files are named
/// `<netns-inode>-<iface>.{lock,json}`; those of every namespace go, and the older
/// `<iface>.{lock,json}` too.
pub fn remove_run_files(iface: &str) {
    for path in run_files(iface) {
        let _ = std::fs::remove_file(path);
    }
}

/// The daemon's lock and state files of interfaces named `iface`, in any network namespace.
pub fn run_files(iface: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DAEMON_RUN_DIR) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let name = name.to_str()?;
            let stem = name
                .strip_suffix(".lock")
                .or_else(|| name.strip_suffix(".json"))?;
            let ours = stem == iface
                || stem.split_once('-').is_some_and(|(netns, rest)| {
                    rest == iface && !netns.is_empty() && netns.bytes().all(|b| b.is_ascii_digit())
                });
            ours.then(|| entry.path())
        })
        .collect();
    files.sort();
    files
}

/// Runs `synguard ARGS` (a subcommand such as `check-config` or `detach`, or a daemon start
/// that is expected to fail) in `netns` to completion: whether it exited 0, and its stdout
/// and stderr.
pub fn run_once(netns: &Netns, args: &[&str]) -> Result<(bool, String)> {
    let mut cmd = netns.command(&binary()?.to_string_lossy());
    cmd.args(args);
    let output = cmd
        .output()
        .with_context(|| format!("running `{}`", describe(&cmd)))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Ok((output.status.success(), text))
}

/// How the daemon ended.
#[derive(Debug)]
pub struct DaemonExit {
    pub status: ExitStatus,
    pub log: String,
}

impl DaemonExit {
    /// Fails unless the daemon exited 0; the error carries its log.
    pub fn ensure_success(&self) -> Result<()> {
        if !self.status.success() {
            bail!("daemon exited with {}:\n{}", self.status, self.log);
        }
        Ok(())
    }

    /// The `stats total: ...` line the daemon logs at exit (counter totals since start).
    pub fn totals(&self) -> Option<&str> {
        self.log.lines().find(|l| l.contains("stats total:"))
    }
}

/// A running daemon; stopped with SIGTERM on drop.
pub struct Daemon {
    process: Process,
}

impl Daemon {
    /// Starts `synguard --iface IFACE --ports PORTS --xdp-mode MODE EXTRA...` in `netns` and
    /// waits for its ready line. XDP answers every SYN (`--syncookies always`) unless `extra`
    /// chooses the mode itself (`--syncookies`, or a `--config` file).
    pub fn start(
        netns: &Netns,
        iface: &str,
        ports: &str,
        mode: XdpMode,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_with_env(netns, iface, ports, mode, extra, &[])
    }

    /// [`Self::start`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(
        netns: &Netns,
        iface: &str,
        ports: &str,
        mode: XdpMode,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut args = vec![
            "--iface",
            iface,
            "--ports",
            ports,
            "--xdp-mode",
            mode.as_str(),
        ];
        args.extend(extra);
        if !extra
            .iter()
            .any(|a| *a == "--syncookies" || *a == "--config")
        {
            args.extend(["--syncookies", "always"]);
        }
        Self::spawn(netns, &args, env)
    }

    /// Starts `synguard --config FILE EXTRA...`: interfaces, ports and mode come from the file
    /// unless `extra` overrides them, so a reload can change them.
    pub fn start_with_config(netns: &Netns, config: &Path, extra: &[&str]) -> Result<Self> {
        let config = config.to_string_lossy();
        let mut args = vec!["--config", &config];
        args.extend(extra);
        Self::spawn(netns, &args, &[])
    }

    fn spawn(netns: &Netns, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let binary = binary()?;
        let mut cmd = netns.command(&binary.to_string_lossy());
        cmd.args(args).envs(env.iter().copied());
        let mut process = Process::spawn("synguard", cmd)?;
        process.wait_for_line(READY_LINE, READY_TIMEOUT)?;
        Ok(Self { process })
    }

    /// Sends `signal` (e.g. SIGHUP: reload) without waiting for anything.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.process.signal(signal)
    }

    /// Waits until a log line contains `needle` (already logged ones count) and returns it.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        self.process.wait_for_line(needle, timeout)
    }

    /// The daemon's pid (e.g. for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.process.output()
    }

    /// Sends `signal` (SIGTERM or SIGINT), waits for the exit and returns it with the log.
    pub fn stop_with(mut self, signal: Signal) -> Result<DaemonExit> {
        let status = self.process.stop(signal, STOP_GRACE)?;
        Ok(DaemonExit {
            status,
            log: self.process.output(),
        })
    }

    pub fn stop(self) -> Result<DaemonExit> {
        self.stop_with(Signal::SIGTERM)
    }
}
