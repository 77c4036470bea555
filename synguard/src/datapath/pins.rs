//! Restart-safe pins on a BPF filesystem, so that a new synguard process adopts the running
//! one's state and swaps its program in without a gap.
//!
//! Layout (default root `/sys/fs/bpf/synguard`), one directory per interface:
//!
//! ```text
//! <root>/<iface>/link             the XDP bpf_link on that interface
//! <root>/<iface>/tc_link          the TC (tcx ingress) bpf_link of the checksum program
//! <root>/<iface>/SG_COUNTERS      the state maps (PINNED_MAPS), the same map objects pinned
//! <root>/<iface>/SG_PORT_LOAD     in the directory of every interface one daemon serves
//! <root>/<iface>/SG_SOURCES
//! <root>/<iface>/SG_COOKIE_PORTS
//! ```
//!
//! Only maps whose content the running daemon learns are pinned: counters, per-port kernel
//! load, per-source state and the auto controller's cookie ports survive a restart (a port
//! answered with cookies mid-flood stays so across it). The new process rewrites the cookie
//! ports from its own configuration (`off`, `always`; in `auto` the adopted bits of its
//! protected ports stay, see `AutoController`). Configuration maps (config, protected ports,
//! policy tries) are created fresh from the new process's configuration and filled before its
//! program replaces the old one (`bpf_link_update`), so nothing stale survives in them.
//!
//! A pinned map must match the embedded object's definition (type, key and value size,
//! max_entries, flags); a pin from another synguard version is an error naming
//! `synguard detach`, never a silent mismatch.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::MapInfo;
use synguard_common::{MAP_COOKIE_PORTS, MAP_COUNTERS, MAP_PORT_LOAD, MAP_SOURCES};
use thiserror::Error;

use crate::private;

/// Where the pins go unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/synguard";
/// The maps pinned per interface: the state a restart keeps.
pub const PINNED_MAPS: [&str; 4] = [MAP_COUNTERS, MAP_PORT_LOAD, MAP_SOURCES, MAP_COOKIE_PORTS];
const LINK: &str = "link";
const TC_LINK: &str = "tc_link";

#[derive(Debug, Error)]
pub enum PinError {
    #[error(
        "{} is not on a BPF filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`) or choose another --pin-dir",
        .0.display()
    )]
    NotBpffs(PathBuf),
    #[error("{doing} {}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pinned map {} does not match this synguard ({mismatch}): it was left by another synguard version; clear the old pins with `synguard detach --iface {iface}`",
        path.display()
    )]
    Incompatible {
        path: PathBuf,
        iface: String,
        mismatch: String,
    },
    #[error(
        "the pins of {first} and {other} hold different `{name}` maps: they come from different synguard runs; clear them with `synguard detach --iface {other}`"
    )]
    Mixed {
        name: &'static str,
        first: String,
        other: String,
    },
    #[error("pinning map `{name}` at {}", path.display())]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

fn io_error(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinError {
    let path = path.to_owned();
    move |source| PinError::Io {
        doing,
        path,
        source,
    }
}

/// The pin root (`--pin-dir`).
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The pin root for a daemon: `explicit` (`--pin-dir`) must be on bpffs; without it the
    /// default is used when `/sys/fs/bpf` is a BPF filesystem (as systemd mounts it), and
    /// `None` (no pins) otherwise, e.g. under `ip netns exec`, which remounts /sys.
    pub fn for_daemon(explicit: Option<&Path>) -> Result<Option<Self>, PinError> {
        let root = match explicit {
            Some(root) => root,
            None if on_bpffs(Path::new(DEFAULT_PIN_DIR).parent().expect("has a parent")) => {
                Path::new(DEFAULT_PIN_DIR)
            }
            None => return Ok(None),
        };
        let created = private::create_dir(root);
        if !on_bpffs(root) {
            return Err(PinError::NotBpffs(root.to_owned()));
        }
        created.map_err(io_error("creating", root))?;
        Ok(Some(Self::new(root)))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn iface_dir(&self, iface: &str) -> PathBuf {
        self.root.join(iface)
    }

    pub fn link(&self, iface: &str) -> PathBuf {
        self.iface_dir(iface).join(LINK)
    }

    pub fn tc_link(&self, iface: &str) -> PathBuf {
        self.iface_dir(iface).join(TC_LINK)
    }

    pub fn map(&self, iface: &str, name: &str) -> PathBuf {
        self.iface_dir(iface).join(name)
    }

    /// Creates the interfaces' directories and decides, for
    /// each pinned map, which existing pin to adopt (after a compatibility check against
    /// `object`) or where aya pins the new map; [`MapPins::pin_copies`] then pins it in the
    /// other interfaces' directories.
    pub fn prepare(&self, ifaces: &[&str], object: &aya_obj::Object) -> Result<MapPins, PinError> {
        for iface in ifaces {
            let dir = self.iface_dir(iface);
            private::own_dir(&dir).map_err(io_error("creating", &dir))?;
        }
        let mut pins = MapPins::default();
        for name in PINNED_MAPS {
            // The first interface whose directory holds the map, with the map's identity.
            let mut adopted: Option<(&str, MapInfo)> = None;
            for iface in ifaces {
                let path = self.map(iface, name);
                if !path.exists() {
                    continue;
                }
                let info = MapInfo::from_pin(&path).map_err(|e| PinError::Io {
                    doing: "opening pinned map",
                    path: path.clone(),
                    source: io::Error::other(e),
                })?;
                if let Some(expected) = object.maps.get(name)
                    && let Some(mismatch) = mismatch(&info, expected)
                {
                    return Err(PinError::Incompatible {
                        path,
                        iface: (*iface).to_owned(),
                        mismatch,
                    });
                }
                match &adopted {
                    Some((first, first_info)) if first_info.id() != info.id() => {
                        return Err(PinError::Mixed {
                            name,
                            first: (*first).to_owned(),
                            other: (*iface).to_owned(),
                        });
                    }
                    Some(_) => {}
                    None => adopted = Some((iface, info)),
                }
            }
            let source_iface = adopted.as_ref().map_or(ifaces[0], |(iface, _)| *iface);
            pins.adopted |= adopted.is_some();
            pins.sources.push((name, self.map(source_iface, name)));
            for iface in ifaces {
                let path = self.map(iface, name);
                if *iface != source_iface && !path.exists() {
                    pins.copies.push((name, path));
                }
            }
        }
        Ok(pins)
    }

    /// Removes an interface's pins: its link (which detaches the program unless a running
    /// process still holds the link) and its map pins. Returns whether there was anything.
    pub fn remove(&self, iface: &str) -> Result<bool, PinError> {
        let dir = self.iface_dir(iface);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error("reading", &dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io_error("reading", &dir))?.path();
            fs::remove_file(&path).map_err(io_error("removing", &path))?;
        }
        fs::remove_dir(&dir).map_err(io_error("removing", &dir))?;
        // The root goes too once the last interface is gone; another daemon may still use it.
        let _ignored = fs::remove_dir(&self.root);
        Ok(true)
    }
}

/// Where each pinned map comes from, for the loader.
#[derive(Debug, Default)]
pub struct MapPins {
    /// `(map, pin path)` for aya's `EbpfLoader::map_pin_path`: opened if it exists, else
    /// created and pinned there.
    pub sources: Vec<(&'static str, PathBuf)>,
    /// Further pins of the same maps, made after the load.
    copies: Vec<(&'static str, PathBuf)>,
    /// Whether any map was adopted from an earlier run.
    adopted: bool,
}

impl MapPins {
    pub const fn adopted(&self) -> bool {
        self.adopted
    }

    /// Pins the loaded maps in the interfaces' directories that lack them.
    pub fn pin_copies(&self, ebpf: &Ebpf) -> Result<(), PinError> {
        for (name, path) in &self.copies {
            let Some(map) = ebpf.map(name) else { continue };
            map.pin(path).map_err(|source| PinError::Pin {
                name,
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// What differs between a pinned map and the object's definition, if anything.
fn mismatch(pinned: &MapInfo, expected: &aya_obj::Map) -> Option<String> {
    let pinned_type = pinned.map_type().map_or(u32::MAX, |t| t as u32);
    let fields = [
        ("type", pinned_type, expected.map_type()),
        ("key size", pinned.key_size(), expected.key_size()),
        ("value size", pinned.value_size(), expected.value_size()),
        ("max_entries", pinned.max_entries(), expected.max_entries()),
        ("flags", pinned.map_flags(), expected.map_flags()),
    ];
    let differences: Vec<String> = fields
        .iter()
        .filter(|(_, pinned, expected)| pinned != expected)
        .map(|(what, pinned, expected)| format!("{what} {pinned}, expected {expected}"))
        .collect();
    (!differences.is_empty()).then(|| differences.join(", "))
}

/// Whether `path` is on a BPF filesystem.
fn on_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}
