//! synguard's own nftables table over its life: installed, replaced, updated, restored when
//! deleted or changed from outside, and deleted.

use std::fmt;

use synguard_common::DatapathConfig;
use tracing::{info, warn};

use crate::kernel::nft::io::{INSTALLING, NftError, apply, table_exists, table_listing};
use crate::kernel::nft::rules::{TABLE, delete_batch, replace_batch, ruleset, update_batch};
use crate::settings::ports::PortSet;

/// The installed table; dropping it deletes the table (logging, not failing, on error).
pub struct SynproxyTable {
    installed: bool,
    /// `nft list table` after synguard's last change: anything else was changed from outside.
    /// Empty if the table was gone right after that change (the next check restores it).
    written: String,
}

/// What [`SynproxyTable::restore_if_changed`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// As synguard left it.
    Intact,
    /// Gone (`nft flush ruleset`, `nft delete table inet synguard`).
    Deleted,
    /// There, but its chains, rules or set differ (`nft flush table inet synguard`, ...).
    Changed,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Found::Intact => "intact",
            Found::Deleted => "deleted",
            Found::Changed => "changed",
        })
    }
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
        Ok(Self {
            installed: true,
            written: written()?,
        })
    }

    /// Replaces the table an earlier synguard left in place (`--on-exit keep`, a crash) in one
    /// transaction, so the hand-off never stops; creates it if it is gone. Unlike
    /// [`Self::install`], dropping the result leaves the table: a failed start must not take
    /// away the earlier process's protection.
    pub fn replace(ports: &PortSet, config: &DatapathConfig) -> Result<Self, NftError> {
        apply(&replace_batch(ports, config), INSTALLING)?;
        info!("nftables table inet {TABLE} replaced (synproxy on ports {ports})");
        Ok(Self {
            installed: false,
            written: written()?,
        })
    }

    /// Brings the table to new ports and synproxy options (reload), atomically.
    pub fn update(&mut self, ports: &PortSet, config: &DatapathConfig) -> Result<(), NftError> {
        apply(&update_batch(ports, config), "updating the synguard table")?;
        self.written = written()?;
        info!("nftables table inet {TABLE} updated (synproxy on ports {ports})");
        Ok(())
    }

    /// Puts the table back, with `ports` and `config`, in one transaction if it was deleted
    /// or changed from outside since synguard's last change. Returns what it found.
    pub fn restore_if_changed(
        &mut self,
        ports: &PortSet,
        config: &DatapathConfig,
    ) -> Result<Found, NftError> {
        let found = match table_listing()? {
            None => Found::Deleted,
            Some(listing) if listing == self.written => return Ok(Found::Intact),
            Some(_) => Found::Changed,
        };
        apply(&replace_batch(ports, config), INSTALLING)?;
        self.written = written()?;
        Ok(found)
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

/// The table's listing right after synguard changed it.
fn written() -> Result<String, NftError> {
    Ok(table_listing()?.unwrap_or_default())
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
