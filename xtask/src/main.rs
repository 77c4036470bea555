//! `cargo xtask setup | build | lint | test | lab | install | deb`: the project's own tasks.

mod bench;
mod deb;
mod install;
mod lab;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use synguard_lab::daemon::XdpMode;

#[derive(Parser)]
#[command(about = "synguard's project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh Debian bookworm machine lacks (idempotent; needs root).
    Setup,
    /// Build the release daemon: target/release/synguard.
    Build,
    /// `cargo fmt --check`, clippy on the host crates and clippy on the eBPF crate for its BPF
    /// target (with the pinned nightly), all with `-D warnings`.
    Lint,
    /// Setup, lint, build the release daemon and the Debian package, then run every test (one
    /// at a time) against them.
    Test {
        /// Only the unit tests (debug build, no root, no lab, no setup): the everyday check.
        #[arg(long)]
        unit: bool,
        /// Passed on to the test binaries (a name filter, --nocapture, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the release daemon and install it with its systemd unit and default config
    /// (/usr/local/bin, /etc/systemd/system, /etc/synguard: an existing config is kept).
    Install,
    /// Build the Debian package (cargo-deb): target/debian/synguard_VERSION-1_ARCH.deb.
    Deb,
    /// The flood generators side by side (floodgen's three transmit paths, hping3, trafgen).
    Flood {
        /// How long each generator runs.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Datapath microbench, the flood generators side by side, then the end-to-end scenarios
    /// (kernel only, nft synproxy only, synguard native and skb) at the same flood rates:
    /// target/bench/results.{md,json} and target/bench/e2e.svg.
    Bench {
        /// Seconds each flood generator runs.
        #[arg(long, default_value_t = 4)]
        seconds: u64,
        /// Only the BPF_PROG_TEST_RUN microbench.
        #[arg(long)]
        micro_only: bool,
        /// Only the end-to-end scenarios.
        #[arg(long, conflicts_with = "micro_only")]
        e2e_only: bool,
        /// Only the multi-queue scaling runs (one receive queue against two).
        #[arg(long, conflicts_with_all = ["micro_only", "e2e_only"])]
        scaling_only: bool,
        /// Seconds of flood per end-to-end scenario and rate.
        #[arg(long, default_value_t = 5)]
        e2e_seconds: u64,
        /// Offered flood rates (SYN/s, `max`: as fast as the generator goes), comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "250000,500000,1000000,max"
        )]
        rates: Vec<bench::e2e::Rate>,
        /// `perf record` the server's CPU during each end-to-end flood: samples by symbol in
        /// target/bench/perf/<run>.txt.
        #[arg(long)]
        profile: bool,
    },
    /// The demo: a SYN flood against a protected server in a namespace lab.
    Lab {
        /// How long to flood.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// XDP attach mode of the daemon.
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        xdp_mode: Mode,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Native,
    Skb,
}

impl From<Mode> for XdpMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Native => XdpMode::Native,
            Mode::Skb => XdpMode::Skb,
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn release_binary() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("release/synguard")
}

/// `cargo SUBCOMMAND --locked` as invoked (the `CARGO` cargo sets for `cargo run`: the
/// toolchain of rust-toolchain.toml), in the workspace root. Every cargo call of xtask goes
/// through here: `--locked`, so that a build uses Cargo.lock as committed (`cargo fmt`, which
/// resolves nothing, has no such option).
fn cargo(subcommand: &str) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root()).arg(subcommand);
    if subcommand != "fmt" {
        cmd.arg("--locked");
    }
    cmd
}

/// Runs `cmd` with inherited output; fails unless it exits 0.
fn run(cmd: &mut Command) -> Result<()> {
    let what = synguard_lab::process::describe(cmd);
    println!("+ {what}");
    let status = cmd.status().with_context(|| format!("starting `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

fn build() -> Result<()> {
    run(cargo("build").args(["--release", "-p", "synguard"]))
}

/// The host crates: the workspace but the eBPF crate, which builds only for its BPF target
/// (on the host its `no_std` panic handler meets std's, which aya brings in through
/// synguard-common's `user` feature; aya's template lints it apart the same way).
const HOST_CRATES: [&str; 3] = ["--workspace", "--exclude", "synguard-ebpf"];

fn lint() -> Result<()> {
    run(cargo("fmt").args(["--all", "--check"]))?;
    run(cargo("clippy")
        .args(HOST_CRATES)
        .args(["--all-targets", "--", "-D", "warnings"]))?;
    // The pinned nightly's cargo (`rustup run`: the `+toolchain` form needs rustup's proxy,
    // and `CARGO` is the stable one), as synguard/build.rs builds the object.
    run(Command::new("rustup")
        .args([
            "run",
            setup::EBPF_TOOLCHAIN.trim(),
            "cargo",
            "clippy",
            "--locked",
        ])
        .args(["-p", "synguard-ebpf", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--", "-D", "warnings"])
        .current_dir(workspace_root()))
}

fn test(unit: bool, args: &[String]) -> Result<()> {
    if unit {
        // Unit tests of every host crate (the lab crate's included): no root, nothing built
        // for release. The integration tests are the lab's and need root.
        return run(cargo("test")
            .args(HOST_CRATES)
            .args(["--lib", "--bins", "--"])
            .args(args));
    }
    setup::setup()?;
    lint()?;
    // Builds the release daemon too; the package test installs the .deb.
    let deb = deb::deb()?;
    // Every test binary of the host crates, one test at a time: the unit tests, synguard's
    // `hostile_packets` (BPF_PROG_TEST_RUN) and the lab's one integration binary, `lab`
    // (synguard-lab/tests/lab/main.rs, a module per concern: `cargo xtask test flood::` runs
    // the `flood` module's tests).
    run(cargo("test")
        .args(HOST_CRATES)
        .args(["--no-fail-fast", "--", "--test-threads=1"])
        .args(args)
        .env("SYNGUARD_BIN", release_binary())
        .env("SYNGUARD_DEB", deb))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Task::Setup => setup::setup(),
        Task::Build => build(),
        Task::Lint => lint(),
        Task::Test { unit, args } => test(unit, &args),
        Task::Install => install::install(),
        Task::Deb => deb::deb().map(drop),
        Task::Flood { seconds } => bench::flood(seconds),
        Task::Bench {
            seconds,
            micro_only,
            e2e_only,
            scaling_only,
            e2e_seconds,
            rates,
            profile,
        } => bench::bench(&bench::BenchConfig {
            gen_seconds: seconds,
            micro_only,
            e2e_only,
            scaling_only,
            e2e_seconds,
            rates,
            profile,
        }),
        Task::Lab { seconds, xdp_mode } => (if release_binary().is_file() {
            Ok(())
        } else {
            build()
        })
        .and_then(|()| {
            lab::run(
                &release_binary(),
                std::time::Duration::from_secs(seconds),
                xdp_mode.into(),
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
