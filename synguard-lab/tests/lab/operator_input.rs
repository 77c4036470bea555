//! Bad operator input gets a clear one-line error, a non-zero exit, and changes nothing: no
//! nftables table and no XDP program stay behind. Each case runs the real binary in a fresh
//! network namespace.
//!
//! Elsewhere: a second instance on one interface (`pinning.rs`); the message for a kernel
//! without the syncookie helpers (`synguard` unit test `missing_helpers_are_named`: such a
//! kernel cannot be made here); conflicts inside a config file (`settings::merge` unit tests).

use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use synguard_lab::bpffs::Bpffs;
use synguard_lab::daemon::{binary, remove_run_files, run_files, run_once};
use synguard_lab::harness::{self, Need};
use synguard_lab::kernel;
use synguard_lab::netns::{Iface, Netns, unique_id};

/// A namespace with one interface to attach to: one end of a veth pair inside it (this kernel
/// has no dummy driver).
struct Host {
    netns: Netns,
    iface: Iface,
}

impl Drop for Host {
    fn drop(&mut self) {
        for iface in [self.iface.name(), "lo"] {
            remove_run_files(iface);
        }
    }
}

impl Host {
    fn new() -> Result<Self> {
        let netns = Netns::create(&unique_id())?;
        netns.ip(&[
            "link", "add", "sgd0", "type", "veth", "peer", "name", "sgd1",
        ])?;
        let iface = Iface::new(&netns, "sgd0");
        iface.set_up()?;
        Ok(Self { netns, iface })
    }

    /// Runs `synguard ARGS`; it must fail with a one-line error containing every `expected`,
    /// and leave no table and no XDP program.
    fn refuses(&self, args: &[&str], expected: &[&str]) -> Result<()> {
        let (ok, output) = run_once(&self.netns, args)?;
        self.check_refusal(args, ok, &output, expected)
    }

    fn check_refusal(
        &self,
        args: &[&str],
        ok: bool,
        output: &str,
        expected: &[&str],
    ) -> Result<()> {
        ensure!(!ok, "`synguard {}` succeeded:\n{output}", args.join(" "));
        let error = output
            .lines()
            .find(|l| l.starts_with("error:"))
            .with_context(|| {
                format!(
                    "no `error:` line from `synguard {}`:\n{output}",
                    args.join(" ")
                )
            })?;
        for needle in expected {
            ensure!(error.contains(needle), "`{error}` lacks `{needle}`");
        }
        println!("ok: synguard {} -> {error}", args.join(" "));
        self.ensure_untouched()
    }

    fn ensure_untouched(&self) -> Result<()> {
        let tables = kernel::nft_tables(&self.netns)?;
        ensure!(
            !tables.iter().any(|t| t.contains("synguard")),
            "a synguard table stayed behind: {tables:?}"
        );
        let details = self.iface.details()?;
        ensure!(
            details.get("xdp").is_none(),
            "an XDP program stayed on {}: {details}",
            self.iface.name()
        );
        Ok(())
    }
}

#[test]
fn bad_operator_input_is_refused_clearly() {
    let Some(_turn) = harness::start("operator input", &[Need::Daemon, Need::Tool("timeout")])
    else {
        return;
    };
    let host = Host::new().expect("namespace with an interface");
    let dummy = host.iface.name().to_owned();
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["--iface", "nope0", "--ports", "8080"],
            &["`nope0` does not exist"],
        ),
        (
            &["--iface", "lo", "--ports", "8080", "--xdp-mode", "native"],
            &["`lo`", "native", "--xdp-mode skb"],
        ),
        (&["--iface", &dummy, "--ports", "0"], &["port 0"]),
        (
            &["--iface", &dummy, "--ports", "70000"],
            &["70000", "out of range"],
        ),
        (
            &["--iface", &dummy, "--ports", "90-80"],
            &["90-80", "reversed"],
        ),
        (
            &[
                "--iface",
                &dummy,
                "--ports",
                "8080",
                "--syncookies",
                "off",
                "--per-source-half-open",
                "5",
            ],
            &["per-source budgets", "syncookies = off"],
        ),
        (
            &[
                "--iface",
                &dummy,
                "--ports",
                "8080",
                "--synack-retries",
                "2",
            ],
            &["tune_kernel"],
        ),
    ];
    let mut failures = Vec::new();
    for (args, expected) in cases {
        if let Err(e) = host.refuses(args, expected) {
            failures.push(format!("{e:#}"));
        }
    }
    for check in [
        config_files as fn(&Host) -> Result<()>,
        nft_missing,
        incompatible_pins,
        keep_without_pins,
    ] {
        if let Err(e) = check(&host) {
            failures.push(format!("{e:#}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Malformed TOML, an unknown key and a bad value: `check-config` names the file, the line and
/// the key. A file others could write is refused with the fix.
fn config_files(host: &Host) -> Result<()> {
    let dir = tempdir()?;
    for (name, text, expected) in [
        (
            "value.toml",
            "iface = [\"sgd0\"]\nports = [8080]\nmss4 = 100\n",
            &[":3:", "`mss4`", "out of range"][..],
        ),
        (
            "key.toml",
            "iface = [\"sgd0\"]\nports = [8080]\nbogus = 1\n",
            &[":3:", "`bogus`", "unknown field"],
        ),
        ("syntax.toml", "iface = [\"sgd0\"\nports = 8080\n", &[":2:"]),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text)?;
        let file = file.to_str().context("temp path")?;
        host.refuses(&["check-config", file], expected)?;
        host.refuses(&["--config", file], expected)?;
    }
    let shared = dir.join("shared.toml");
    std::fs::write(&shared, "iface = [\"sgd0\"]\nports = [8080]\n")?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666))?;
    let shared = shared.to_str().context("temp path")?;
    let refused = [
        "is writable by its group and others (mode 0666)",
        &format!("fix: chmod 600 {shared}"),
    ];
    host.refuses(&["--config", shared], &refused)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Without `nft` the daemon says so, and undoes nothing it had not done.
fn nft_missing(host: &Host) -> Result<()> {
    let dir = tempdir()?;
    // `ip` itself must stay reachable: it runs the daemon inside the namespace.
    symlink(which("ip")?, dir.join("ip"))?;
    let args = [
        "--iface",
        host.iface.name(),
        "--ports",
        "8080",
        "--xdp-mode",
        "skb",
    ];
    let output = host
        .netns
        .command(&binary()?.to_string_lossy())
        .args(args)
        .env("PATH", &dir)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    std::fs::remove_dir_all(&dir)?;
    host.check_refusal(
        &args,
        output.status.success(),
        &text,
        &["`nft`", "not found"],
    )
}

/// Pins of another layout (here a counters map with 4-byte values) are refused with the way
/// to clear them, never adopted.
fn incompatible_pins(host: &Host) -> Result<()> {
    let bpffs = Bpffs::mount()?;
    let dir = bpffs.path().join(host.iface.name());
    std::fs::create_dir_all(&dir)?;
    let map = dir.join("SG_COUNTERS");
    let map = map.to_str().context("pin path")?;
    host.netns.exec(
        "bpftool",
        &[
            "map",
            "create",
            map,
            "type",
            "percpu_array",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "3",
            "name",
            "SG_COUNTERS",
        ],
    )?;
    let detach = format!("synguard detach --iface {}", host.iface.name());
    host.refuses(
        &[
            "--iface",
            host.iface.name(),
            "--ports",
            "8080",
            "--xdp-mode",
            "skb",
            "--pin-dir",
            bpffs.arg(),
        ],
        &["does not match", &detach],
    )
}

/// `--on-exit keep` (flag or config key) where there can be no pins (`ip netns exec` leaves
/// no bpffs at /sys/fs/bpf, and no `--pin-dir`): refused at start with one line saying how to
/// get pins, before anything is touched (not even the interface's lock file). Run under
/// `timeout`: a daemon that accepted it would run until stopped.
fn keep_without_pins(host: &Host) -> Result<()> {
    let dir = tempdir()?;
    let config = dir.join("keep.toml");
    std::fs::write(
        &config,
        format!(
            "iface = [\"{}\"]\nports = [8080]\non_exit = \"keep\"\n",
            host.iface.name()
        ),
    )?;
    let config = config.to_str().context("temp path")?;
    let flag = [
        "--iface",
        host.iface.name(),
        "--ports",
        "8080",
        "--on-exit",
        "keep",
    ];
    let binary = binary()?;
    for args in [&flag[..], &["--config", config]] {
        remove_run_files(host.iface.name());
        let output = host
            .netns
            .command("timeout")
            .args(["30", &binary.to_string_lossy()])
            .args(args)
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        host.check_refusal(
            args,
            output.status.success(),
            &text,
            &[
                "--on-exit keep",
                "BPF filesystem",
                "mount -t bpf",
                "--pin-dir",
            ],
        )?;
        ensure!(
            text.trim_end().lines().count() == 1,
            "more than the error line:\n{text}"
        );
        let left = run_files(host.iface.name());
        ensure!(left.is_empty(), "files left behind: {left:?}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(unique_id());
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn which(tool: &str) -> Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(tool))
                .find(|candidate| Path::new(candidate).is_file())
        })
        .with_context(|| format!("`{tool}` not on PATH"))
}
