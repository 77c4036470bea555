//! The one error type of loading and attaching the datapath and writing its maps, and the
//! helpers that turn aya's errors into it (naming missing privileges).

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

use aya::EbpfError;
use aya::maps::MapError;
use aya::programs::ProgramError;
use synguard_common::{TC_PROGRAM_NAME, XdpMode};
use thiserror::Error;

use crate::datapath::pins::PinError;
use crate::kernel::privileges;

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error("network interface `{0}` does not exist (in this network namespace)")]
    UnknownInterface(String),
    #[error("interface `{name}` is given twice{}", same_as(name, first))]
    DuplicateInterface { name: String, first: String },
    /// `hint` names the capabilities the process lacks ([`privileges::hint`]).
    #[error("permission denied while {action}: {hint}")]
    Permission { action: &'static str, hint: String },
    #[error("parsing the embedded eBPF object")]
    Object(#[source] EbpfError),
    #[error("the embedded eBPF object has no {kind} `{name}`")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error(
        "map `{name}` has {actual} entries where the daemon expects {expected}: the daemon and the XDP program were built from different synguard-common versions"
    )]
    MapSize {
        name: &'static str,
        actual: u32,
        expected: u32,
    },
    #[error("map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// The log is kept apart from the message so that the error stays one line; `main`
    /// prints the log before it.
    #[error(
        "the kernel verifier rejected {} ({io_error}){hint}; the verifier log is printed above",
        describe(program)
    )]
    Verifier {
        program: &'static str,
        io_error: io::Error,
        verifier_log: String,
        hint: String,
    },
    #[error("loading {}", describe(.0))]
    Load(&'static str, #[source] ProgramError),
    #[error("attaching TC program `{TC_PROGRAM_NAME}` to `{iface}` (tcx ingress)")]
    AttachTc {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("interface `{iface}` does not support native (driver) XDP; run with `--xdp-mode skb`")]
    NativeUnsupported { iface: String },
    #[error(
        "interface `{iface}` already has an XDP program attached (another synguard?); remove it with `ip link set dev {iface} xdp off`"
    )]
    Busy { iface: String },
    #[error("attaching XDP to `{iface}` in {mode} mode")]
    Attach {
        iface: String,
        mode: XdpMode,
        #[source]
        source: ProgramError,
    },
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error(
        "{doing} pinned {kind} link {}; clear the old pins with `synguard detach --iface {iface}`",
        path.display()
    )]
    PinnedLink {
        kind: &'static str,
        doing: &'static str,
        iface: String,
        path: PathBuf,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error(
        "this kernel attached XDP to `{iface}` without a bpf_link (Linux < 5.9?), which cannot be pinned; run without --pin-dir"
    )]
    NoBpfLink { iface: String },
}

/// "XDP program `synguard`" or "TC program `synguard_csum`".
fn describe(program: &str) -> String {
    let kind = if program == TC_PROGRAM_NAME {
        "TC"
    } else {
        "XDP"
    };
    format!("{kind} program `{program}`")
}

/// Names an altname's primary name when the duplicate was spelled differently.
fn same_as(name: &str, first: &str) -> String {
    if name == first {
        String::new()
    } else {
        format!(" (as `{first}`, the same device)")
    }
}

impl LoaderError {
    /// The verifier's log when the kernel refused the program.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            Self::Verifier { verifier_log, .. } => Some(verifier_log),
            _ => None,
        }
    }
}

pub(super) fn typed_map<M, T>(map: Option<M>, name: &'static str) -> Result<T, LoaderError>
where
    T: TryFrom<M, Error = MapError>,
{
    let map = map.ok_or(LoaderError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(|source| map_error(name, source))
}

pub(super) fn check_len(name: &'static str, actual: u32, expected: u32) -> Result<(), LoaderError> {
    if actual == expected {
        Ok(())
    } else {
        Err(LoaderError::MapSize {
            name,
            actual,
            expected,
        })
    }
}

pub(super) fn permission(action: &'static str) -> LoaderError {
    LoaderError::Permission {
        action,
        hint: privileges::hint(&privileges::lacking()),
    }
}

pub(super) fn map_error(name: &'static str, source: MapError) -> LoaderError {
    if errno(&source) == Some(libc::EPERM) {
        permission("writing the eBPF maps")
    } else {
        LoaderError::Map { name, source }
    }
}

/// The errno of the first `io::Error` in an error's source chain: aya wraps syscall
/// failures a varying number of levels deep.
pub(super) fn errno(err: &(dyn StdError + 'static)) -> Option<i32> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_found_through_wrappers() {
        let err = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_link_create",
            io_error: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        });
        assert_eq!(errno(&err), Some(libc::EOPNOTSUPP));
    }
}
