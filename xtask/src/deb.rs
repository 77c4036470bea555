//! `cargo xtask deb`: the Debian package, built by cargo-deb from `[package.metadata.deb]` in
//! synguard/Cargo.toml: the release binary, the systemd unit (installed, not enabled), the
//! default config as a 0600 conffile, and the man pages and shell completions that
//! `synguard/examples/cli_docs.rs` generates from the clap definition.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::{build, cargo, release_binary, run, setup};

/// Where cli_docs writes; the package's assets name it as `target/release/cli-docs/...`.
fn cli_docs_dir() -> PathBuf {
    release_binary().with_file_name("cli-docs")
}

/// Builds the package; returns the path of the `.deb`.
pub fn deb() -> Result<PathBuf> {
    setup::cargo_deb()?;
    build()?;
    run(cargo("run")
        .args(["--release", "-p", "synguard", "--example", "cli_docs", "--"])
        .arg(cli_docs_dir()))?;
    // --no-build: the binary is the one just built, with the workspace's release profile.
    let mut cmd = cargo("deb");
    cmd.args(["-p", "synguard", "--no-build"]);
    let printed = synguard_lab::process::run(&mut cmd).context("cargo deb (cargo-deb)")?;
    let deb = printed
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb printed no .deb path: {printed}"))?;
    println!("{}", deb.display());
    Ok(deb)
}
