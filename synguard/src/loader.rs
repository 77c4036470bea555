//! Loads the embedded XDP object, fills its configuration maps and attaches it.

use std::error::Error as StdError;
use std::io;

use aya::maps::{Array, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, Xdp, XdpMode as AyaXdpMode, xdp::XdpLink};
use aya::{Ebpf, EbpfError};
use synguard_common::{
    Counter, DatapathConfig, MAP_CONFIG, MAP_COOKIE_PORTS, MAP_COUNTERS, MAP_PORTS,
    PORT_BITMAP_WORDS, PROGRAM_NAME,
};
use thiserror::Error;
use tracing::{debug, info};

use crate::cli::XdpMode;
use crate::ports::PortSet;

/// The XDP object built by build.rs (aya-build), embedded so the daemon is one file.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/synguard"));

const PRIVILEGE_HINT: &str = "run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON";

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error("network interface `{0}` does not exist (in this network namespace)")]
    UnknownInterface(String),
    #[error("interface `{name}` is given twice{}", same_as(name, first))]
    DuplicateInterface { name: String, first: String },
    #[error("permission denied while {action}: {PRIVILEGE_HINT}")]
    Permission { action: &'static str },
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
        "the kernel verifier rejected XDP program `{PROGRAM_NAME}` ({io_error}){hint}; the verifier log is printed above"
    )]
    Verifier {
        io_error: io::Error,
        verifier_log: String,
        hint: &'static str,
    },
    #[error("loading XDP program `{PROGRAM_NAME}`")]
    Load(#[source] ProgramError),
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

/// A network interface resolved to its index in this namespace.
#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    pub index: u32,
}

/// Resolves every name before anything is loaded, so a typo fails fast and names the culprit.
pub fn resolve_interfaces(names: &[String]) -> Result<Vec<Interface>, LoaderError> {
    let mut resolved: Vec<Interface> = Vec::with_capacity(names.len());
    for name in names {
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|_| LoaderError::UnknownInterface(name.clone()))?;
        // Compare indexes, not names: an altname is the same device and would fail to attach
        // twice with a less helpful EBUSY.
        if let Some(first) = resolved.iter().find(|i| i.index == index) {
            return Err(LoaderError::DuplicateInterface {
                name: name.clone(),
                first: first.name.clone(),
            });
        }
        resolved.push(Interface {
            name: name.clone(),
            index,
        });
    }
    Ok(resolved)
}

/// The loaded (verified, not yet attached) XDP program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
}

impl Datapath {
    /// Creates the maps, writes the configuration and port bitmap, and has the kernel verify
    /// the program.
    pub fn load(config: &DatapathConfig, ports: &PortSet) -> Result<Self, LoaderError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| {
            if errno(&e) == Some(libc::EPERM) {
                LoaderError::Permission {
                    action: "creating the eBPF maps",
                }
            } else {
                LoaderError::Object(e)
            }
        })?;

        let mut config_map: Array<&mut MapData, DatapathConfig> =
            typed_map(ebpf.map_mut(MAP_CONFIG), MAP_CONFIG)?;
        check_len(MAP_CONFIG, config_map.len(), 1)?;
        config_map
            .set(0, config, 0)
            .map_err(|source| map_error(MAP_CONFIG, source))?;

        // Mode `always`: XDP answers SYNs to every protected port.
        for name in [MAP_PORTS, MAP_COOKIE_PORTS] {
            write_port_bitmap(&mut ebpf, name, ports)?;
        }

        let counters: PerCpuArray<MapData, u64> =
            typed_map(ebpf.take_map(MAP_COUNTERS), MAP_COUNTERS)?;
        check_len(MAP_COUNTERS, counters.len(), Counter::COUNT)?;

        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(|e| match e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                if io_error.raw_os_error() == Some(libc::EPERM) {
                    LoaderError::Permission {
                        action: "loading the XDP program",
                    }
                } else {
                    let verifier_log = verifier_log.to_string();
                    LoaderError::Verifier {
                        io_error,
                        hint: verifier_hint(&verifier_log),
                        verifier_log,
                    }
                }
            }
            other => LoaderError::Load(other),
        })?;
        debug!("XDP program `{PROGRAM_NAME}` loaded and verified");
        Ok(Self { ebpf, counters })
    }

    /// Per-CPU packet counters, indexed by [`Counter`] (summed by
    /// [`CounterTotals`](crate::counters::CounterTotals)).
    pub const fn counters(&self) -> &PerCpuArray<MapData, u64> {
        &self.counters
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN` (`aya::programs::TestRun`) without
    /// attaching it anywhere.
    pub fn program(&self) -> Result<&Xdp, LoaderError> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or(MISSING_PROGRAM)?
            .try_into()
            .map_err(LoaderError::Load)
    }

    /// Attaches the program to every interface. On failure the interfaces attached so far are
    /// detached again (by dropping the partial [`Attachments`]).
    pub fn attach(
        &mut self,
        ifaces: &[Interface],
        mode: XdpMode,
    ) -> Result<Attachments, LoaderError> {
        let aya_mode = match mode {
            XdpMode::Native => AyaXdpMode::Driver,
            XdpMode::Skb => AyaXdpMode::Skb,
        };
        let program = xdp_program(&mut self.ebpf)?;
        let mut attachments = Attachments { links: Vec::new() };
        for iface in ifaces {
            let link = program
                .attach_to_if_index(iface.index, aya_mode)
                .and_then(|id| program.take_link(id))
                .map_err(|source| attach_error(iface, mode, source))?;
            info!("XDP attached to {} ({mode} mode)", iface.name);
            attachments.links.push((iface.name.clone(), link));
        }
        Ok(attachments)
    }
}

/// The XDP links; dropping this detaches the program from every interface.
pub struct Attachments {
    links: Vec<(String, XdpLink)>,
}

impl Drop for Attachments {
    fn drop(&mut self) {
        for (iface, link) in self.links.drain(..) {
            // XdpLink detaches on drop (closing a bpf_link fd cannot fail).
            drop(link);
            info!("XDP detached from {iface}");
        }
    }
}

const MISSING_PROGRAM: LoaderError = LoaderError::Missing {
    kind: "program",
    name: PROGRAM_NAME,
};

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoaderError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(MISSING_PROGRAM)?
        .try_into()
        .map_err(LoaderError::Load)
}

fn typed_map<M, T>(map: Option<M>, name: &'static str) -> Result<T, LoaderError>
where
    T: TryFrom<M, Error = MapError>,
{
    let map = map.ok_or(LoaderError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(|source| map_error(name, source))
}

fn check_len(name: &'static str, actual: u32, expected: u32) -> Result<(), LoaderError> {
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

fn map_error(name: &'static str, source: MapError) -> LoaderError {
    if errno(&source) == Some(libc::EPERM) {
        LoaderError::Permission {
            action: "writing the eBPF maps",
        }
    } else {
        LoaderError::Map { name, source }
    }
}

fn attach_error(iface: &Interface, mode: XdpMode, source: ProgramError) -> LoaderError {
    let iface = iface.name.clone();
    match errno(&source) {
        Some(libc::EOPNOTSUPP) if mode == XdpMode::Native => {
            LoaderError::NativeUnsupported { iface }
        }
        Some(libc::EBUSY | libc::EEXIST) => LoaderError::Busy { iface },
        Some(libc::EPERM) => LoaderError::Permission {
            action: "attaching XDP",
        },
        _ => LoaderError::Attach {
            iface,
            mode,
            source,
        },
    }
}

/// The errno of the first `io::Error` in an error's source chain: aya wraps syscall
/// failures a varying number of levels deep.
fn errno(err: &(dyn StdError + 'static)) -> Option<i32> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        current = e.source();
    }
    None
}

/// The `SG_PORTS` layout: bit `p % 64` of word `p / 64` is set for each protected port `p`.
/// Writes `ports` into the port bitmap map `name`.
fn write_port_bitmap(
    ebpf: &mut Ebpf,
    name: &'static str,
    ports: &PortSet,
) -> Result<(), LoaderError> {
    let mut map: Array<&mut MapData, u64> = typed_map(ebpf.map_mut(name), name)?;
    check_len(name, map.len(), PORT_BITMAP_WORDS)?;
    // A new array map is all zeros, so only words with a protected port need writing.
    for (word, bits) in port_bitmap(ports).into_iter().enumerate() {
        if bits != 0 {
            map.set(word as u32, bits, 0)
                .map_err(|source| map_error(name, source))?;
        }
    }
    Ok(())
}

fn port_bitmap(ports: &PortSet) -> Vec<u64> {
    let mut words = vec![0u64; PORT_BITMAP_WORDS as usize];
    for port in ports.ports() {
        words[usize::from(port / 64)] |= 1 << (port % 64);
    }
    words
}

/// Names the usual cause when the log shows one: an old kernel lacks a helper.
fn verifier_hint(verifier_log: &str) -> &'static str {
    if verifier_log.contains("unknown func") || verifier_log.contains("invalid func") {
        ": this kernel lacks a BPF helper synguard needs (bpf_tcp_raw_gen_syncookie_ipv4/6, \
         bpf_tcp_raw_check_syncookie_ipv4/6 or bpf_loop: Linux 6.0 or newer)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_helpers_are_named() {
        assert!(
            verifier_hint("0: (85) call unknown#204\ninvalid func unknown#204")
                .contains("Linux 6.0")
        );
        assert_eq!(verifier_hint("R4 invalid zero-sized read"), "");
    }

    #[test]
    fn bitmap_sets_one_bit_per_port() {
        let words = port_bitmap(&PortSet::new(&[
            80..=80,
            443..=443,
            65535..=65535,
            128..=191,
        ]));
        assert_eq!(words.len(), 1024);
        assert_eq!(words[1], 1 << 16);
        assert_eq!(words[2], u64::MAX);
        assert_eq!(words[6], 1 << 59);
        assert_eq!(words[1023], 1 << 63);
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 67);
    }

    #[test]
    fn errno_is_found_through_wrappers() {
        let err = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_link_create",
            io_error: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        });
        assert_eq!(errno(&err), Some(libc::EOPNOTSUPP));
    }
}
