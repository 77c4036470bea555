//! `synguard detach --iface IF`: removes what a synguard left on an interface after it exited
//! with `--on-exit keep` or died (`kill -9`, a crash): the pinned XDP and TC links (which
//! detaches the programs) and map pins, and, when no other interface of the same network namespace is still
//! protected, the nftables table and the sysctls it changed (restored to their values from
//! before the first attach).
//!
//! The lock and state files are per network namespace (see [`crate::runtime::state`]): `detach` acts on
//! the interface of that name in the namespace it runs in.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tracing::info;

use crate::datapath::pins::{DEFAULT_PIN_DIR, PinDir};
use crate::kernel::nft::table::delete_table;
use crate::kernel::sysctl::SysctlGuard;
use crate::runtime::state::{
    AttachState, IfaceLock, RUN_DIR, current_netns, other_netns_with_state,
};

/// `pin_dir`: `--pin-dir`; without it the directory recorded in the state file, else the
/// default.
pub fn detach(iface: &str, pin_dir: Option<&Path>) -> anyhow::Result<()> {
    // Fails while a daemon runs on the interface: it would re-create what we remove.
    let _lock = IfaceLock::acquire(iface)?;
    let state = AttachState::read(iface)?;
    let root: PathBuf = pin_dir
        .map(Path::to_owned)
        .or_else(|| state.as_ref().map(|s| s.pin_dir.clone()))
        .unwrap_or_else(|| DEFAULT_PIN_DIR.into());
    let pins = PinDir::new(root);
    let had_pins = pins.remove(iface)?;
    let Some(state) = state else {
        if !had_pins {
            let elsewhere = other_netns_with_state(iface)?;
            let hint = if elsewhere.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = elsewhere.iter().map(u64::to_string).collect();
                format!(
                    "; synguard did run on an interface `{iface}` of another network namespace (netns inode {}): run `synguard detach` there (e.g. with `ip netns exec`)",
                    list.join(", ")
                )
            };
            bail!(
                "synguard is not attached to `{iface}` in this network namespace (netns inode {}): no pins under {} and no state file in {RUN_DIR}{hint}",
                current_netns()?,
                pins.iface_dir(iface).display()
            );
        }
        info!("programs and pins removed from {iface} (no state file: nothing else to undo)");
        return Ok(());
    };
    if had_pins {
        info!("XDP and TC programs and pins removed from {iface}");
    }
    if state.shared_with_others(iface)? {
        info!(
            "nftables table and sysctls left in place: other interfaces of this network namespace are still protected"
        );
    } else {
        if state.nft_table {
            delete_table().context("deleting the nftables table")?;
        }
        SysctlGuard::adopt(state.sysctls)
            .restore()
            .context("restoring sysctls")?;
    }
    AttachState::remove(iface)?;
    Ok(())
}
