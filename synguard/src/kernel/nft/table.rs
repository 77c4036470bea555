//! synguard's own nftables table over its life: installed, replaced, updated, restored when
//! deleted from outside, and deleted.

use synguard_common::DatapathConfig;
use tracing::{info, warn};

use crate::kernel::nft::io::{INSTALLING, NftError, apply, table_exists};
use crate::kernel::nft::rules::{TABLE, delete_batch, replace_batch, ruleset, update_batch};
use crate::settings::ports::PortSet;

/// The installed table; dropping it deletes the table (logging, not failing, on error).
pub struct SynproxyTable {
    installed: bool,
}

impl SynproxyTable {
    /// Creates `table inet synguard`. Fails, without touching it, if the table already exists:
    /// replacing another instance's table would break that instance.
    pub fn install(ports: &PortSet, config: &DatapathConfig) -> Result<Self, NftError> {
        if table_exists()? {
            return Err(NftError::TableExists);
        }
        apply(&ruleset(ports, config), INSTALLING)?;
        info!("nftables table inet {TABLE} installed (synproxy on ports {ports})");
        Ok(Self { installed: true })
    }

    /// Replaces the table an earlier synguard left in place (`--on-exit keep`, a crash) in one
    /// transaction, so the hand-off never stops; creates it if it is gone. Unlike
    /// [`Self::install`], dropping the result leaves the table: a failed start must not take
    /// away the earlier process's protection.
    pub fn replace(ports: &PortSet, config: &DatapathConfig) -> Result<Self, NftError> {
        apply(&replace_batch(ports, config), INSTALLING)?;
        info!("nftables table inet {TABLE} replaced (synproxy on ports {ports})");
        Ok(Self { installed: false })
    }

    /// Brings the table to new ports and synproxy options (reload), atomically.
    pub fn update(&self, ports: &PortSet, config: &DatapathConfig) -> Result<(), NftError> {
        apply(&update_batch(ports, config), "updating the synguard table")?;
        info!("nftables table inet {TABLE} updated (synproxy on ports {ports})");
        Ok(())
    }

    /// Installs the table again, with `ports` and `config`, if it is gone (deleted from
    /// outside). Returns whether it had to.
    pub fn restore_if_missing(
        &self,
        ports: &PortSet,
        config: &DatapathConfig,
    ) -> Result<bool, NftError> {
        if table_exists()? {
            return Ok(false);
        }
        apply(&ruleset(ports, config), INSTALLING)?;
        Ok(true)
    }

    /// Leaves the table in place (`--on-exit keep`).
    pub fn keep(mut self) {
        self.installed = false;
    }

    /// Deletes the table. Succeeds if someone else already deleted it.
    pub fn remove(mut self) -> Result<(), NftError> {
        self.installed = false;
        delete_table()
    }
}

impl Drop for SynproxyTable {
    fn drop(&mut self) {
        if self.installed
            && let Err(e) = delete_table()
        {
            warn!("could not delete nftables table inet {TABLE}: {e}");
        }
    }
}

/// Deletes `table inet synguard` (`synguard detach`); succeeds if it is already gone.
pub fn delete_table() -> Result<(), NftError> {
    match apply(&delete_batch(), "deleting the synguard table") {
        Ok(()) => {
            info!("nftables table inet {TABLE} deleted");
            Ok(())
        }
        Err(_) if !table_exists()? => {
            warn!("nftables table inet {TABLE} was already gone");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
