//! Per-interface runtime files under `/run/synguard/`, named `<netns>-<iface>.lock` and
//! `<netns>-<iface>.json` (`<netns>`: the inode of the network namespace, so that same-named
//! interfaces of different namespaces, e.g. `eth0` in two containers, are distinct): a lock
//! that keeps two synguard processes off one interface, and a state file recording what an attach changed outside
//! the pins (the nftables table, sysctls with their original values), so that a later process
//! can adopt it and `synguard detach` can undo it after the daemon has gone (`--on-exit keep`,
//! a crash, `kill -9`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::private;

pub const RUN_DIR: &str = "/run/synguard";
/// Bumped when [`AttachState`] changes incompatibly.
const STATE_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum StateError {
    #[error(
        "another synguard process{} already runs on interface `{iface}` of this network namespace (netns inode {netns}, lock {}); stop it first",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        path.display()
    )]
    Locked {
        iface: String,
        netns: u64,
        holder: Option<u32>,
        path: PathBuf,
    },
    #[error("{doing} {}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "state file {} is not from this synguard version ({reason}); remove it by hand after checking the interface",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
}

fn io_error(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io {
        doing,
        path,
        source,
    }
}

fn lock_path(netns: u64, iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{netns}-{iface}.lock"))
}

fn state_path(netns: u64, iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{netns}-{iface}.json"))
}

/// The network namespace and interface of a state file's name (`<netns>-<iface>.json`).
fn parse_state_name(name: &str) -> Option<(u64, &str)> {
    let (netns, iface) = name.strip_suffix(".json")?.split_once('-')?;
    Some((netns.parse().ok()?, iface))
}

/// The network namespaces (other than this process's) with a state file for `iface`: a hint
/// for `synguard detach` run in the wrong namespace.
pub fn other_netns_with_state(iface: &str) -> Result<Vec<u64>, StateError> {
    let current = current_netns()?;
    let mut found: Vec<u64> = state_files()?
        .into_iter()
        .filter(|(netns, name)| *netns != current && name == iface)
        .map(|(netns, _)| netns)
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// `(netns, iface)` of every state file in [`RUN_DIR`].
fn state_files() -> Result<Vec<(u64, String)>, StateError> {
    let dir = Path::new(RUN_DIR);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("reading", dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let name = entry.map_err(io_error("reading", dir))?.file_name();
        if let Some((netns, iface)) = name.to_str().and_then(parse_state_name) {
            files.push((netns, iface.to_owned()));
        }
    }
    Ok(files)
}

/// An exclusive `flock` on `/run/synguard/<netns>-<iface>.lock`, released when the process exits
/// (however it exits), so a restart after a crash finds it free.
#[derive(Debug)]
pub struct IfaceLock {
    _file: Flock<File>,
}

impl IfaceLock {
    /// Takes the lock without waiting and writes our pid into the file.
    pub fn acquire(iface: &str) -> Result<Self, StateError> {
        private::own_dir(Path::new(RUN_DIR)).map_err(io_error("creating", Path::new(RUN_DIR)))?;
        let netns = current_netns()?;
        let path = lock_path(netns, iface);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("opening", &path))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ignored = file.read_to_string(&mut pid);
                return Err(StateError::Locked {
                    iface: iface.to_owned(),
                    netns,
                    holder: pid.trim().parse().ok(),
                    path,
                });
            }
            Err((_, errno)) => return Err(io_error("locking", &path)(errno.into())),
        };
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        written.map_err(io_error("writing", &path))?;
        Ok(Self { _file: file })
    }
}

/// Locks every interface, or none.
pub fn lock_all<'a>(
    ifaces: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<IfaceLock>, StateError> {
    ifaces.into_iter().map(IfaceLock::acquire).collect()
}

/// What an attach changed besides the pins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachState {
    pub version: u32,
    /// Inode of the network namespace (`/proc/self/ns/net`): the table and sysctls are per
    /// namespace, shared by the interfaces of one daemon.
    pub netns: u64,
    /// `native` or `skb`: a pinned link keeps its mode.
    pub xdp_mode: String,
    /// The pin root the interface's pins are under.
    pub pin_dir: PathBuf,
    /// Whether `table inet synguard` was installed.
    pub nft_table: bool,
    /// Sysctls changed, with their values from before the first attach.
    pub sysctls: Vec<(String, String)>,
}

impl AttachState {
    pub fn new(xdp_mode: &str, pin_dir: &Path) -> Result<Self, StateError> {
        Ok(Self {
            version: STATE_VERSION,
            netns: current_netns()?,
            xdp_mode: xdp_mode.to_owned(),
            pin_dir: pin_dir.to_owned(),
            ..Self::default()
        })
    }

    /// The state recorded for `iface` of this network namespace, if any.
    pub fn read(iface: &str) -> Result<Option<Self>, StateError> {
        Self::read_in(current_netns()?, iface)
    }

    fn read_in(netns: u64, iface: &str) -> Result<Option<Self>, StateError> {
        let path = state_path(netns, iface);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("reading", &path)(e)),
        };
        let state: Self = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Corrupt {
                path,
                reason: format!("version {}, expected {STATE_VERSION}", state.version),
            });
        }
        Ok(Some(state))
    }

    /// Writes the state of `iface` (atomically: a temporary file renamed over it), under the
    /// network namespace recorded in it.
    pub fn write(&self, iface: &str) -> Result<(), StateError> {
        let path = state_path(self.netns, iface);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_string_pretty(self).expect("state serializes");
        fs::write(&tmp, json + "\n").map_err(io_error("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_error("writing", &path))
    }

    /// Removes the state file of `iface` of this network namespace (no error if it is gone).
    pub fn remove(iface: &str) -> Result<(), StateError> {
        let path = state_path(current_netns()?, iface);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Whether another interface than `iface` has state in the same network namespace, i.e.
    /// still needs the table and sysctls.
    pub fn shared_with_others(&self, iface: &str) -> Result<bool, StateError> {
        Ok(state_files()?.iter().any(|(netns, other)| {
            *netns == self.netns
                && other != iface
                && matches!(Self::read_in(*netns, other), Ok(Some(state)) if state.netns == self.netns)
        }))
    }
}

/// Inode of this process's network namespace.
pub fn current_netns() -> Result<u64, StateError> {
    let path = Path::new("/proc/self/ns/net");
    Ok(fs::metadata(path).map_err(io_error("reading", path))?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json() {
        let mut state = AttachState::new("skb", Path::new("/sys/fs/bpf/synguard")).unwrap();
        state.nft_table = true;
        state.sysctls = vec![("net.ipv4.tcp_timestamps".into(), "0".into())];
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<AttachState>(&json).unwrap(), state);
    }

    #[test]
    fn file_names_carry_the_network_namespace() {
        assert_eq!(
            state_path(4026531840, "eth0"),
            Path::new("/run/synguard/4026531840-eth0.json")
        );
        assert_eq!(
            lock_path(4026531840, "eth0"),
            Path::new("/run/synguard/4026531840-eth0.lock")
        );
        assert_eq!(
            parse_state_name("4026531840-veth-a.json"),
            Some((4026531840, "veth-a"))
        );
        assert_eq!(parse_state_name("eth0.json"), None);
        assert_eq!(parse_state_name("4026531840-eth0.lock"), None);
        assert_eq!(parse_state_name("x-eth0.json"), None);
    }
}
