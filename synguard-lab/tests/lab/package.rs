//! The Debian package (`cargo xtask deb`): installed with `dpkg -i` on this machine, it puts
//! the binary, the unit, the 0600 config (a conffile), the man pages and the completions in
//! place without enabling or starting the service; `synguard --version`, `man -w synguard`
//! and `systemd-analyze verify` on the installed unit work; a reinstall keeps an edited
//! config; `dpkg -r` detaches what a synguard left with `--on-exit keep`; `dpkg --purge`
//! leaves none of the package's files or directories, /etc/synguard and the systemd helper's
//! state included.
//!
//! The package: `$SYNGUARD_DEB` (`cargo xtask test` sets it), else the newest
//! `target/debian/synguard_*.deb`.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use synguard_lab::daemon::{XdpMode, run_files, target_dir};
use synguard_lab::harness::{self, Need, PinnedBench, run_cases};
use synguard_lab::kernel::{nft_tables, xdp_prog_id};
use synguard_lab::process::{run, run_quiet};

const PACKAGE: &str = "synguard";
/// The port the lab daemon protects in the removal check.
const PORT: u16 = 8080;
const BINARY: &str = "/usr/bin/synguard";
const CONFIG: &str = "/etc/synguard/synguard.toml";
const UNIT: &str = "/lib/systemd/system/synguard.service";
const MAN_PAGE: &str = "/usr/share/man/man1/synguard.1.gz";
const COMPLETIONS: [&str; 3] = [
    "/usr/share/bash-completion/completions/synguard",
    "/usr/share/zsh/vendor-completions/_synguard",
    "/usr/share/fish/vendor_completions.d/synguard.fish",
];
/// Where deb-systemd-helper keeps what it did to a package's units.
const SYSTEMD_HELPER_STATE: [&str; 2] = [
    "/var/lib/systemd/deb-systemd-helper-enabled",
    "/var/lib/systemd/deb-systemd-helper-masked",
];

/// The package to test, or why there is none.
fn package() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SYNGUARD_DEB") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("SYNGUARD_DEB={} is not a file", path.display()))
        };
    }
    let dir = target_dir().join("debian");
    fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("synguard_") && n.ends_with(".deb"))
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| {
            format!(
                "no package: build it with `cargo xtask deb` (looked in {})",
                dir.display()
            )
        })
}

/// `dpkg-query`'s status of the package: `None` when it is not installed at all.
fn status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .ok()?;
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !status.is_empty() && !status.ends_with("not-installed"))
        .then_some(status)
}

fn dpkg(args: &[&str]) -> Result<String> {
    run(Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Purges the package when dropped, so a failed check does not leave it installed.
struct Installed;

impl Installed {
    fn install(deb: &Path) -> Result<(Self, String)> {
        let said = dpkg(&["-i", &deb.to_string_lossy()])?;
        Ok((Self, said))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if status().is_some() {
            let _ = dpkg(&["--purge", PACKAGE]);
        }
    }
}

/// Why this machine is not one the test may install the package on, if it is not.
fn occupied() -> Option<String> {
    if let Some(status) = status() {
        return Some(format!(
            "the {PACKAGE} package is on this machine ({status}); the test would purge it"
        ));
    }
    Path::new("/etc/synguard").exists().then(|| {
        "/etc/synguard exists (`cargo xtask install`?); the test would take its config over"
            .to_owned()
    })
}

fn check_installed(files: &[String], said_at_install: &str) -> Result<()> {
    for wanted in [
        BINARY,
        CONFIG,
        MAN_PAGE,
        "/usr/share/man/man1/synguard-detach.1.gz",
    ]
    .into_iter()
    .chain(COMPLETIONS)
    {
        ensure!(
            files.iter().any(|f| f == wanted),
            "dpkg -L does not list {wanted}:\n{}",
            files.join("\n")
        );
    }
    // The unit under /usr/lib/systemd/system (merged /usr: /lib is a link to usr/lib).
    ensure!(
        Path::new(UNIT).is_file()
            && files
                .iter()
                .any(|f| f.ends_with("/lib/systemd/system/synguard.service")),
        "the unit is not installed at {UNIT}"
    );
    let meta = fs::metadata(CONFIG).with_context(|| format!("stat {CONFIG}"))?;
    ensure!(
        meta.permissions().mode() & 0o7777 == 0o600 && meta.uid() == 0,
        "{CONFIG}: mode {:o}, uid {}",
        meta.permissions().mode() & 0o7777,
        meta.uid()
    );
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]))?;
    ensure!(
        conffiles.contains(CONFIG),
        "{CONFIG} is not a conffile: {conffiles}"
    );

    let version = run(Command::new(BINARY).arg("--version"))?;
    ensure!(
        version.trim() == format!("synguard {}", env!("CARGO_PKG_VERSION")),
        "synguard --version: {version}"
    );
    println!("{}", version.trim());
    let checked = run(Command::new(BINARY).args(["check-config", CONFIG]))?;
    println!("{}", checked.trim());

    let man = run(Command::new("man").args(["-w", "synguard"]))?;
    ensure!(man.trim() == MAN_PAGE, "man -w synguard: {man}");
    let page = run(Command::new("man")
        .arg("synguard")
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100"))?;
    ensure!(
        page.contains("--iface") && page.contains("check-config"),
        "the man page does not describe the options and subcommands:\n{page}"
    );
    println!("man -w synguard: {}", man.trim());

    let bash = run(Command::new("bash").args([
        "-c",
        &format!("source {} && complete -p synguard", COMPLETIONS[0]),
    ]))?;
    ensure!(bash.contains("synguard"), "bash completion: {bash}");
    for file in &COMPLETIONS[1..] {
        let text = fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        ensure!(
            text.contains("check-config"),
            "{file} does not complete the subcommands"
        );
    }

    run_quiet(Command::new("systemd-analyze").args(["verify", UNIT]))?;
    println!("systemd-analyze verify {UNIT}: ok");

    // Not enabled, not started: the default config's interface and ports are placeholders.
    let enabled = Command::new("systemctl")
        .args(["is-enabled", "synguard.service"])
        .output()
        .context("running systemctl is-enabled")?;
    let enabled = String::from_utf8_lossy(&enabled.stdout).trim().to_owned();
    ensure!(enabled == "disabled", "systemctl is-enabled: {enabled}");
    let wants = "/etc/systemd/system/multi-user.target.wants/synguard.service";
    ensure!(
        !Path::new(wants).exists(),
        "{wants} exists: the unit was enabled"
    );
    let running: Vec<PathBuf> = fs::read_dir("/proc")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| fs::read_link(p.join("exe")).is_ok_and(|exe| exe == Path::new(BINARY)))
        .collect();
    ensure!(
        running.is_empty(),
        "{BINARY} runs after the install: {running:?}"
    );
    ensure!(
        said_at_install.contains("not enabled"),
        "dpkg -i did not say that the service is not enabled:\n{said_at_install}"
    );
    Ok(())
}

/// An edited config survives a reinstall of the package, still 0600.
fn check_conffile_kept(deb: &Path) -> Result<()> {
    let shipped = fs::read_to_string(CONFIG)?;
    let edited = shipped.replace("ports = [80, 443]", "ports = [8443]");
    ensure!(
        edited != shipped,
        "the shipped config has no `ports = [80, 443]`"
    );
    fs::write(CONFIG, &edited)?;
    dpkg(&["-i", &deb.to_string_lossy()])?;
    let now = fs::read_to_string(CONFIG)?;
    ensure!(
        now == edited,
        "the reinstall replaced the edited {CONFIG}:\n{now}"
    );
    let mode = fs::metadata(CONFIG)?.permissions().mode() & 0o7777;
    ensure!(mode == 0o600, "{CONFIG} is {mode:o} after the reinstall");
    println!("reinstall: the edited {CONFIG} was kept (0600)");
    Ok(())
}

/// `dpkg -r` undoes what a synguard left with `--on-exit keep` (the prerm runs `synguard
/// detach`): a daemon stopped in a lab namespace leaves its XDP program (pinned link), its
/// nftables table and its state file, and the removal, run in that namespace, takes them away.
fn check_remove_detaches() -> Result<()> {
    let bench = PinnedBench::new(PORT, 1024)?;
    let lab = &bench.lab;
    let iface = lab.server_iface();
    let table = "inet synguard".to_owned();
    bench
        .start(
            XdpMode::Skb,
            &["--on-exit", "keep", "--metrics-addr", "none"],
        )?
        .stop()?
        .ensure_success()?;
    let state = || {
        run_files(iface.name())
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect::<Vec<_>>()
    };
    ensure!(
        xdp_prog_id(iface)?.is_some()
            && nft_tables(lab.server())?.contains(&table)
            && state().len() == 1,
        "--on-exit keep left no XDP program, table or state file"
    );
    let said = run(lab
        .server()
        .command("dpkg")
        .args(["-r", PACKAGE])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    let (program, tables, left) = (xdp_prog_id(iface)?, nft_tables(lab.server())?, state());
    ensure!(
        program.is_none() && !tables.contains(&table) && left.is_empty(),
        "dpkg -r left XDP program {program:?}, tables {tables:?}, state files {left:?}:\n{said}"
    );
    println!(
        "dpkg -r in the lab namespace: the XDP program, the table and the state file are gone"
    );
    Ok(())
}

/// After the purge: no file of the package's list remains, and no directory of it unless
/// another package owns it; nothing about the unit in deb-systemd-helper's state.
fn check_purged(files: &[String]) -> Result<()> {
    ensure!(status().is_none(), "still known to dpkg: {:?}", status());
    let mut left = Vec::new();
    for path in files.iter().map(Path::new) {
        // symlink_metadata: a file's path under a directory link (/lib) must not count twice.
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        let owned_by_another =
            meta.is_dir() && run(Command::new("dpkg-query").arg("-S").arg(path)).is_ok();
        if !owned_by_another {
            left.push(path.display().to_string());
        }
    }
    for dir in SYSTEMD_HELPER_STATE {
        let entries = fs::read_dir(dir).into_iter().flatten().flatten();
        left.extend(
            entries
                .map(|e| e.path().display().to_string())
                .filter(|p| p.contains("synguard")),
        );
    }
    if Path::new("/etc/synguard").exists() {
        left.push("/etc/synguard".to_owned());
    }
    if !left.is_empty() {
        bail!("left behind after the purge:\n{}", left.join("\n"));
    }
    println!(
        "dpkg --purge: none of the package's {} paths left",
        files.len()
    );
    Ok(())
}

#[test]
fn deb_installs_verifies_and_purges_cleanly() {
    let Some(_serial) = harness::start(
        "Debian package",
        &[
            Need::Daemon,
            Need::Tool("mount"),
            Need::Tool("dpkg"),
            Need::Tool("man"),
            Need::Tool("systemd-analyze"),
            Need::Tool("systemctl"),
        ],
    ) else {
        return;
    };
    let deb = match package() {
        Ok(deb) => deb,
        Err(reason) => {
            harness::skip("Debian package", &reason);
            return;
        }
    };
    if let Some(reason) = occupied() {
        eprintln!("SKIP: Debian package: {reason}");
        return;
    }
    run_cases("Debian package", [deb.display().to_string()], |_| {
        let (installed, said) = Installed::install(&deb)?;
        let files: Vec<String> = run(Command::new("dpkg").args(["-L", PACKAGE]))?
            .lines()
            .filter(|l| l.starts_with('/') && *l != "/.")
            .map(str::to_owned)
            .collect();
        check_installed(&files, &said)?;
        check_conffile_kept(&deb)?;
        check_remove_detaches()?;
        dpkg(&["--purge", PACKAGE])?;
        drop(installed);
        check_purged(&files)
    });
}
