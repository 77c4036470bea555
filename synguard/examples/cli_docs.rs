//! The man pages and shell completions of `synguard`, generated from its clap definition
//! (`synguard::settings::cli::Cli`), so they cannot disagree with `--help`. `cargo xtask deb` runs it
//! and packages what it writes:
//!
//! - `DIR/man/synguard.1.gz` and one page per subcommand (`synguard-detach.1.gz`, ...),
//!   gzipped as Debian policy wants man pages;
//! - `DIR/completions/synguard.bash`, `_synguard` (zsh), `synguard.fish`.
//!
//! Usage: `cli_docs DIR`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::CommandFactory as _;
use clap_complete::Shell;
use flate2::{Compression, write::GzEncoder};
use synguard::settings::cli::Cli;

const BIN: &str = "synguard";

/// Writes every page clap_mangen makes (the command's and its subcommands') gzipped into `dir`.
fn man_pages(dir: &Path) -> Result<()> {
    let plain = dir.join("plain");
    fs::create_dir_all(&plain).with_context(|| format!("creating {}", plain.display()))?;
    clap_mangen::generate_to(Cli::command().name(BIN), &plain)
        .with_context(|| format!("writing man pages to {}", plain.display()))?;
    for entry in fs::read_dir(&plain)? {
        let page = entry?.path();
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&fs::read(&page)?)?;
        let mut name = page.file_name().expect("a file").to_owned();
        name.push(".gz");
        let to = dir.join(name);
        fs::write(&to, gz.finish()?).with_context(|| format!("writing {}", to.display()))?;
    }
    fs::remove_dir_all(&plain).with_context(|| format!("removing {}", plain.display()))
}

fn completions(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), BIN, dir)
            .with_context(|| format!("writing {shell} completions to {}", dir.display()))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        bail!("usage: cli_docs DIR");
    };
    let dir = PathBuf::from(dir);
    let man = dir.join("man");
    if man.exists() {
        // Pages of a subcommand that no longer exists must not be packaged.
        fs::remove_dir_all(&man).with_context(|| format!("removing {}", man.display()))?;
    }
    man_pages(&man)?;
    completions(&dir.join("completions"))?;
    println!("{}", dir.display());
    Ok(())
}
