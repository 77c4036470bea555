//! Faults from outside while the daemon runs, checked every [`TICK`]:
//!
//! - an interface synguard attached to was deleted: logged, its attachment (link, pins) is
//!   dropped, the others keep working; once none is left the daemon stops with an error.
//! - synguard's nftables table was deleted (`nft delete table inet synguard`, a `nft flush
//!   ruleset`): it is installed again with the settings in force, and a warning says so.

use std::ffi::CStr;
use std::time::Duration;

use anyhow::bail;
use tracing::{error, warn};

use crate::datapath::attach::{Attachments, Interface};
use crate::kernel::nft::table::SynproxyTable;
use crate::settings::merge::Settings;

/// How often the interfaces and the table are checked.
pub const TICK: Duration = Duration::from_secs(2);

/// The interfaces still protected, and those that disappeared.
pub struct Watch {
    present: Vec<Interface>,
    gone: Vec<String>,
}

impl Watch {
    pub fn new(ifaces: &[Interface]) -> Self {
        Self {
            present: ifaces.to_vec(),
            gone: Vec::new(),
        }
    }

    /// One check of the interfaces and of the table. An error means no interface is left to
    /// protect: the daemon should shut down and exit non-zero.
    pub fn tick(
        &mut self,
        attachments: &mut Attachments,
        table: &SynproxyTable,
        settings: &Settings,
    ) -> anyhow::Result<()> {
        self.check_interfaces(attachments)?;
        check_table(table, settings);
        Ok(())
    }

    fn check_interfaces(&mut self, attachments: &mut Attachments) -> anyhow::Result<()> {
        let (present, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.present)
            .into_iter()
            .partition(|iface| exists(iface.index));
        self.present = present;
        for iface in gone {
            attachments.drop_interface(&iface.name);
            if self.present.is_empty() {
                error!(
                    "interface {} (index {}) was deleted: XDP is gone from it",
                    iface.name, iface.index
                );
            } else {
                let left: Vec<&str> = self.present.iter().map(|i| i.name.as_str()).collect();
                warn!(
                    "interface {} (index {}) was deleted: XDP is gone from it; still protecting {}",
                    iface.name,
                    iface.index,
                    left.join(",")
                );
            }
            self.gone.push(iface.name);
        }
        if self.present.is_empty() {
            bail!(
                "no interface left to protect: {} deleted while synguard ran",
                self.gone.join(", ")
            );
        }
        Ok(())
    }
}

/// Restores the table if it is gone; failures are logged (the next tick tries again).
fn check_table(table: &SynproxyTable, settings: &Settings) {
    match table.restore_if_missing(&settings.ports, &settings.datapath) {
        Ok(false) => {}
        Ok(true) => warn!(
            "nftables table inet synguard was deleted from outside synguard: restored it (synproxy on ports {})",
            settings.ports
        ),
        Err(e) => warn!("checking the nftables table inet synguard: {e}"),
    }
}

/// Whether a device with this index still exists in this network namespace. A renamed device
/// keeps its index (and its XDP program); a deleted and re-created one gets a new index.
fn exists(index: u32) -> bool {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes if_indextoname(3) may write.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if found.is_null() {
        // ENXIO (glibc's word for the kernel's ENODEV): no such device. Anything else (out of
        // file descriptors...) is no proof that the device is gone.
        let errno = std::io::Error::last_os_error().raw_os_error();
        return !matches!(errno, Some(libc::ENXIO | libc::ENODEV));
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    !unsafe { CStr::from_ptr(name.as_ptr()) }.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_unused_indexes_do_not() {
        let lo = nix::net::if_::if_nametoindex("lo").expect("lo exists");
        assert!(exists(lo));
        assert!(!exists(u32::MAX - 7));
    }
}
