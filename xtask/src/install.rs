//! `cargo xtask install`: the release daemon, its systemd unit and the default config.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::{build, release_binary, workspace_root};

const BINARY: &str = "/usr/local/bin/synguard";
const UNIT: &str = "/etc/systemd/system/synguard.service";
const CONFIG: &str = "/etc/synguard/synguard.toml";
/// The binary's path in the packaged unit (the Debian package's).
const PACKAGED_BINARY: &str = "/usr/bin/synguard";

/// Writes `bytes` to `to` through a temporary file renamed over it, so a running daemon's
/// binary is replaced rather than rewritten in place ("text file busy").
fn install_bytes(bytes: &[u8], to: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let to = Path::new(to);
    fs::create_dir_all(to.parent().expect("absolute path"))
        .with_context(|| format!("creating the directory of {}", to.display()))?;
    let tmp = to.with_extension("xtask-new");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
    println!("installed {}", to.display());
    Ok(())
}

fn install_file(from: &Path, to: &str, mode: u32) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    install_bytes(&bytes, to, mode)
}

pub fn install() -> Result<()> {
    build()?;
    let packaging = workspace_root().join("packaging");
    install_file(&release_binary(), BINARY, 0o755)?;
    let unit_path = packaging.join("systemd/synguard.service");
    let unit = fs::read_to_string(&unit_path)
        .with_context(|| format!("reading {}", unit_path.display()))?;
    install_bytes(
        unit.replace(PACKAGED_BINARY, BINARY).as_bytes(),
        UNIT,
        0o644,
    )?;
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
