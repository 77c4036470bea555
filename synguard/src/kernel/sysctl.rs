//! Sysctls synguard needs, set for its run and put back afterwards.
//!
//! The `net.*` sysctls used here are per network namespace; /proc/sys/net shows the
//! namespace of the process that opens it, so a daemon started with `ip netns exec` changes
//! only its own namespace.

use std::fs;
use std::io;
use std::path::PathBuf;

use thiserror::Error;
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum SysctlError {
    #[error("sysctl {name} does not exist{hint}")]
    Missing { name: String, hint: &'static str },
    #[error(
        "permission denied writing sysctl {name}: run as root (CAP_NET_ADMIN in this network namespace)"
    )]
    Permission { name: String },
    #[error("{doing} sysctl {name}")]
    Io {
        doing: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Changed sysctls with their original values; dropping the guard restores them.
#[derive(Default)]
pub struct SysctlGuard {
    saved: Vec<(String, String)>,
}

impl SysctlGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes over the original values an earlier synguard recorded (its state file), so that
    /// they, not the values it set, are restored.
    pub fn adopt(saved: Vec<(String, String)>) -> Self {
        Self { saved }
    }

    /// Changed sysctls with their original values, oldest first.
    pub fn saved(&self) -> &[(String, String)] {
        &self.saved
    }

    /// Leaves every sysctl as it is now (`--on-exit keep`).
    pub fn keep(mut self) {
        self.saved.clear();
    }

    /// Sets `name` (dotted form) to `value` unless it already has it; only values that were
    /// changed are restored later.
    pub fn set(&mut self, name: &'static str, value: &str) -> Result<(), SysctlError> {
        let original = read(name)?;
        if original == value {
            info!("sysctl {name} = {value} (already)");
            return Ok(());
        }
        write(name, value)?;
        info!("sysctl {name} = {value} (was {original})");
        // An adopted original (from before the first synguard) stays the one to restore.
        if !self.saved.iter().any(|(saved, _)| saved == name) {
            self.saved.push((name.to_owned(), original));
        }
        Ok(())
    }

    /// Restores every changed sysctl, newest first. Tries them all; returns the first error.
    pub fn restore(&mut self) -> Result<(), SysctlError> {
        let mut first_error = None;
        while let Some((name, original)) = self.saved.pop() {
            match write(&name, &original) {
                Ok(()) => info!("sysctl {name} restored to {original}"),
                Err(e) => {
                    warn!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        // Errors were logged by restore(); nothing more can be done while dropping.
        let _ignored: Result<(), SysctlError> = self.restore();
    }
}

fn path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

/// The current value of `name` (dotted form), trimmed.
pub fn read(name: &str) -> Result<String, SysctlError> {
    match fs::read_to_string(path(name)) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SysctlError::Missing {
            name: name.to_owned(),
            hint: if name.starts_with("net.netfilter.") {
                " (is the nf_conntrack module loaded?)"
            } else {
                ""
            },
        }),
        Err(source) => Err(SysctlError::Io {
            doing: "reading",
            name: name.to_owned(),
            source,
        }),
    }
}

fn write(name: &str, value: &str) -> Result<(), SysctlError> {
    fs::write(path(name), value).map_err(|source| match source.kind() {
        io::ErrorKind::PermissionDenied => SysctlError::Permission {
            name: name.to_owned(),
        },
        _ => SysctlError::Io {
            doing: "writing",
            name: name.to_owned(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_map_to_proc_paths() {
        assert_eq!(
            path("net.netfilter.nf_conntrack_tcp_loose"),
            PathBuf::from("/proc/sys/net/netfilter/nf_conntrack_tcp_loose")
        );
    }

    #[test]
    fn missing_sysctl_is_a_clear_error() {
        let err = SysctlGuard::new()
            .set("net.netfilter.synguard_does_not_exist", "1")
            .unwrap_err();
        assert!(err.to_string().contains("nf_conntrack module"), "{err}");
    }
}
