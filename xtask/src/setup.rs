//! `cargo xtask setup`: installs what a fresh Debian bookworm machine lacks, checking first,
//! so a second run only reports what is there.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run};

/// Debian packages: LLVM 22 for bpf-linker, and the lab's tools.
const APT_PACKAGES: [&str; 20] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "nftables",
    "hping3",
    // trafgen: the bench compares its flood generator with it.
    "netsniff-ng",
    "iproute2",
    "ethtool",
    "tcpdump",
    "bpftool",
    "curl",
    "conntrack",
    "kmod",
    // systemd-analyze: the unit file test.
    "systemd",
    // promtool: the metrics test checks the exposition with `promtool check metrics`.
    "prometheus",
    // The real-servers test: nginx with ab (apache2-utils) as its load, and sshd. It runs them
    // in the lab's namespaces from config files of its own, never the packages' services.
    "nginx",
    "apache2-utils",
    "openssh-server",
    // man: the package test finds the installed man page with `man -w`.
    "man-db",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM of bpf-linker (Debian's llvm-22) and so of the pinned nightly.
const LLVM_MAJOR: &str = "22";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// `cargo xtask deb` builds the Debian package with it (3.8 builds with rustc 1.85+).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Kernel modules synguard and the lab need, with the config symbol that builds them in.
const MODULES: [(&str, &str); 4] = [
    ("nf_conntrack", "CONFIG_NF_CONNTRACK"),
    ("nf_synproxy_core", "CONFIG_NETFILTER_SYNPROXY"),
    ("nft_synproxy", "CONFIG_NFT_SYNPROXY"),
    ("veth", "CONFIG_VETH"),
];

/// stdout of `cmd`, or `None` if it cannot run or fails.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            // "install ok installed"; a package dpkg knows of but has not installed says
            // "unknown ok not-installed" (or "deinstall ok config-files").
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|status| status.split_whitespace().last() != Some("installed"))
        })
        .collect();
    if missing.is_empty() {
        println!("present: Debian packages {}", APT_PACKAGES.join(" "));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {} (run as root to install them)",
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").arg("update"))?;
    let _no_services = NoServiceStarts::install()?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    println!("installed: Debian packages {}", missing.join(" "));
    Ok(())
}

/// Debian's `policy-rc.d` refusing every service start while it exists (removed on drop,
/// if this run wrote it): installing nginx or openssh-server must not start them on the
/// host's ports 80 and 22; the tests run their own copies in the lab's namespaces.
struct NoServiceStarts(Option<&'static Path>);

impl NoServiceStarts {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    fn install() -> Result<Self> {
        let path = Path::new(Self::PATH);
        if path.exists() {
            return Ok(Self(None));
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# cargo xtask setup: no service starts while it installs\nexit 101\n",
        )
        .with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Self(Some(path)))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The dated nightly that builds the eBPF object (synguard/build.rs reads the same file):
/// `rustup toolchain install nightly-YYYY-MM-DD` on any machine yields the same compiler.
pub const EBPF_TOOLCHAIN: &str = include_str!("../../synguard-ebpf/rust-toolchain");

/// The pinned nightly with rust-src (`-Z build-std=core`) and clippy (`cargo xtask lint`);
/// checks that its LLVM is the one bpf-linker is built against.
fn ebpf_toolchain() -> Result<()> {
    let toolchain = EBPF_TOOLCHAIN.trim();
    let components = ["rust-src", "clippy"];
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        toolchain,
        "--installed",
    ]))
    .unwrap_or_default();
    let has = |c: &str| installed.lines().any(|l| l.trim().starts_with(c));
    if components.iter().all(|c| has(c)) {
        println!(
            "present: toolchain {toolchain} with {}",
            components.join(", ")
        );
    } else {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            toolchain,
            "--profile",
            "minimal",
            "--component",
            &components.join(","),
        ]))?;
        println!(
            "installed: toolchain {toolchain} with {}",
            components.join(", ")
        );
    }
    let version = output(Command::new("rustup").args(["run", toolchain, "rustc", "-vV"]))
        .with_context(|| format!("`rustup run {toolchain} rustc -vV` failed"))?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("unknown");
    if llvm.split('.').next() != Some(LLVM_MAJOR) {
        bail!(
            "toolchain {toolchain} (synguard-ebpf/rust-toolchain) uses LLVM {llvm}, but \
             bpf-linker {BPF_LINKER_VERSION} is built against LLVM {LLVM_MAJOR}: pin a nightly \
             whose `rustc -vV` says LLVM {LLVM_MAJOR}"
        );
    }
    println!("present: {toolchain} uses LLVM {llvm}");
    Ok(())
}

/// `cargo install NAME --version VERSION ARGS` with `envs`, unless `version_cmd` prints that
/// version already.
fn cargo_install(
    name: &str,
    version: &str,
    version_cmd: &mut Command,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<()> {
    if output(version_cmd).is_some_and(|v| v.split_whitespace().any(|w| w == version)) {
        println!("present: {name} {version}");
        return Ok(());
    }
    // --locked: the crate's own Cargo.lock, as its release was tested.
    run(cargo("install")
        .args([name, "--version", version])
        .args(args)
        .envs(envs.iter().copied()))?;
    println!("installed: {name} {version}");
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    cargo_install(
        "bpf-linker",
        BPF_LINKER_VERSION,
        Command::new("bpf-linker").arg("--version"),
        &["--no-default-features", "--features", "llvm-22"],
        &[("PATH", &path), ("LLVM_SYS_221_PREFIX", LLVM_PREFIX)],
    )
}

/// cargo-deb, for `cargo xtask deb`.
pub fn cargo_deb() -> Result<()> {
    cargo_install(
        "cargo-deb",
        CARGO_DEB_VERSION,
        cargo("deb").arg("--version"),
        &[],
        &[],
    )
}

fn kernel_modules() {
    let release = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let builtin =
        std::fs::read_to_string(format!("/lib/modules/{}/modules.builtin", release.trim()))
            .unwrap_or_default();
    // Kernels without module support have no modules.builtin; their config tells.
    let config = output(Command::new("zcat").arg("/proc/config.gz")).unwrap_or_default();
    for (module, symbol) in MODULES {
        if Path::new("/sys/module").join(module).exists() {
            println!("present: kernel module {module} (loaded)");
        } else if builtin
            .lines()
            .any(|l| l.ends_with(&format!("/{module}.ko")))
            || config.lines().any(|l| l == format!("{symbol}=y"))
        {
            println!("present: kernel module {module} (built in)");
        } else if run(Command::new("modprobe").arg(module)).is_ok() {
            println!("loaded: kernel module {module}");
        } else {
            println!(
                "warning: kernel module {module} is neither loaded nor built in and modprobe failed"
            );
        }
    }
}

pub fn setup() -> Result<()> {
    apt_packages()?;
    ebpf_toolchain()?;
    bpf_linker()?;
    cargo_deb()?;
    kernel_modules();
    Ok(())
}
