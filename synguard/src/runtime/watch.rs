//! Interfaces deleted while the daemon runs, checked every [`TICK`]: the deletion is logged,
//! its attachment (link, pins) is dropped, the others keep working; once none is left the
//! daemon stops with an error. (The nftables table has its own watch: `table_watch`.)

use std::ffi::CStr;
use std::time::Duration;

use anyhow::bail;
use tracing::{error, warn};

use crate::datapath::attach::{Attachments, Interface};

/// How often the interfaces are checked.
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

    /// One check of the interfaces. An error means no interface is left to protect: the
    /// daemon should shut down and exit non-zero.
    pub fn tick(&mut self, attachments: &mut Attachments) -> anyhow::Result<()> {
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
