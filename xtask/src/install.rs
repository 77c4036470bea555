//! `cargo xtask install`: the release daemon, its systemd unit and the default config.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::{build, release_binary, workspace_root};

const BINARY: &str = "/usr/local/bin/synguard";
const UNIT: &str = "/etc/systemd/system/synguard.service";
const CONFIG: &str = "/etc/synguard/synguard.toml";

/// Copies `from` to `to` through a temporary file renamed over it, so a running daemon's
/// binary is replaced rather than rewritten in place ("text file busy").
fn install_file(from: &Path, to: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let to = Path::new(to);
    fs::create_dir_all(to.parent().expect("absolute path"))
        .with_context(|| format!("creating the directory of {}", to.display()))?;
    let tmp = to.with_extension("xtask-new");
    fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
    println!("installed {}", to.display());
    Ok(())
}

pub fn install() -> Result<()> {
    build()?;
    let packaging = workspace_root().join("packaging");
    install_file(&release_binary(), BINARY, 0o755)?;
    install_file(&packaging.join("systemd/synguard.service"), UNIT, 0o644)?;
    if Path::new(CONFIG).exists() {
        println!("kept {CONFIG} (exists; the default is packaging/synguard.toml)");
    } else {
        install_file(&packaging.join("synguard.toml"), CONFIG, 0o600)?;
    }
    println!(
        "edit {CONFIG} (iface, ports), then: systemctl daemon-reload && systemctl enable --now synguard"
    );
    Ok(())
}
