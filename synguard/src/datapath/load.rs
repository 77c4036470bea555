//! Loads the embedded eBPF object, fills its configuration maps and attaches its programs: the
//! XDP program and, on kernels with tcx (Linux 6.6), the TC ingress program that marks
//! verified IPv6 handshake ACKs (see `synguard-ebpf/src/tc_csum.rs`).

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::io;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray};
use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode,
    xdp::XdpLink,
};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfError, EbpfLoader};
use synguard_common::{
    Counter, MAP_COUNTERS, MAP_PEERS, MAP_POLICY4, MAP_POLICY6, MAP_SOURCES, PROGRAM_NAME,
    SourceKey, SourceState, TC_PROGRAM_NAME,
};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::datapath::maps::{DatapathMaps, DatapathState};
use crate::datapath::peers::PeerSeeder;
use crate::datapath::pins::{MapPins, PinDir, PinError};
use crate::kernel::privileges;
use synguard_common::XdpMode;

/// The XDP object built by build.rs (aya-build), embedded so the daemon is one file.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/synguard"));

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

/// The embedded object's definitions, to check pinned maps against ([`PinDir::prepare`]).
pub fn object() -> Result<aya_obj::Object, LoaderError> {
    aya_obj::Object::parse(OBJECT).map_err(|e| LoaderError::Object(EbpfError::ParseError(e)))
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

/// The loaded (verified, not yet attached) programs and their maps.
pub struct Datapath {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    maps: DatapathMaps,
}

impl Datapath {
    /// Creates the maps, writes the configuration and port bitmap, and has the kernel verify
    /// the program.
    pub fn load(state: &DatapathState) -> Result<Self, LoaderError> {
        Self::load_pinned(state, &MapPins::default())
    }

    /// [`Self::load`], with the state maps adopted from or pinned at `pins` (see
    /// [`crate::datapath::pins`]). The policy tries and other configuration maps are never pinned, so
    /// their sizes may change between runs.
    pub fn load_pinned(state: &DatapathState, pins: &MapPins) -> Result<Self, LoaderError> {
        let mut loader = EbpfLoader::new();
        // The policy tries are sized for the lists (with room to grow on reload).
        loader
            .map_max_entries(MAP_POLICY4, state.policy_capacity(false))
            .map_max_entries(MAP_POLICY6, state.policy_capacity(true));
        for (name, path) in &pins.sources {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| {
            if errno(&e) == Some(libc::EPERM) {
                permission("creating the eBPF maps")
            } else {
                LoaderError::Object(e)
            }
        })?;
        // Before the maps are taken out of `ebpf`.
        pins.pin_copies(&ebpf)?;

        let mut maps = DatapathMaps::take(&mut ebpf)?;
        // Cookie bits of a pinned SG_COOKIE_PORTS (an earlier run's auto decisions) stay set
        // for the protected ports: its program still reads them until ours replaces it.
        let adopted = maps.cookie_ports(&state.ports);
        maps.apply(state, &adopted)?;

        let counters: PerCpuArray<MapData, u64> =
            typed_map(ebpf.take_map(MAP_COUNTERS), MAP_COUNTERS)?;
        check_len(MAP_COUNTERS, counters.len(), Counter::COUNT)?;

        xdp_program(&mut ebpf)?
            .load()
            .map_err(|e| load_error(PROGRAM_NAME, "loading the XDP program", e))?;
        tc_program(&mut ebpf)?
            .load()
            .map_err(|e| load_error(TC_PROGRAM_NAME, "loading the TC program", e))?;
        debug!("programs `{PROGRAM_NAME}` and `{TC_PROGRAM_NAME}` loaded and verified");
        Ok(Self {
            ebpf,
            counters,
            maps,
        })
    }

    /// Per-CPU packet counters, indexed by [`Counter`] (summed by
    /// [`CounterTotals`](crate::datapath::counters::CounterTotals)).
    pub const fn counters(&self) -> &PerCpuArray<MapData, u64> {
        &self.counters
    }

    /// The maps the daemon writes.
    pub fn maps_mut(&mut self) -> &mut DatapathMaps {
        &mut self.maps
    }

    /// Read-only views of every map, by name, on duplicated descriptors of this process's own
    /// maps ([`MapReader::of_maps`](crate::datapath::snapshot::MapReader::of_maps)). Looking the program's
    /// maps up by id instead would need `CAP_SYS_ADMIN`, which the daemon does not have under
    /// its systemd unit.
    pub fn map_views(&self) -> Result<BTreeMap<String, MapData>, LoaderError> {
        let sources = self.ebpf.map(MAP_SOURCES).ok_or(LoaderError::Missing {
            kind: "map",
            name: MAP_SOURCES,
        })?;
        let sources: HashMap<&MapData, SourceKey, SourceState> =
            HashMap::try_from(sources).map_err(|e| map_error(MAP_SOURCES, e))?;
        let mut named = self.maps.named().to_vec();
        named.extend([
            (MAP_COUNTERS, self.counters.map()),
            (MAP_SOURCES, sources.map()),
        ]);
        named
            .into_iter()
            .map(|(name, data)| {
                let view = data
                    .fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(MapError::from)
                    .and_then(MapData::from_fd);
                Ok((name.to_owned(), view.map_err(|e| map_error(name, e))?))
            })
            .collect()
    }

    /// The peer filter's seeder, mapped onto this program's `SG_PEERS`.
    pub fn peer_seeder(&self) -> Result<PeerSeeder, LoaderError> {
        let missing = LoaderError::Missing {
            kind: "map",
            name: MAP_PEERS,
        };
        let Some(Map::Array(peers)) = self.ebpf.map(MAP_PEERS) else {
            return Err(missing);
        };
        PeerSeeder::new(peers, self.maps.hash_seed()).map_err(|e| LoaderError::Map {
            name: MAP_PEERS,
            source: MapError::from(e),
        })
    }

    /// The kernel's id of the loaded program, for read-only views of its maps
    /// ([`MapReader::of_program`](crate::datapath::snapshot::MapReader::of_program)).
    pub fn program_id(&self) -> Result<u32, LoaderError> {
        Ok(self
            .program()?
            .info()
            .map_err(|e| LoaderError::Load(PROGRAM_NAME, e))?
            .id())
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN` (`aya::programs::TestRun`) without
    /// attaching it anywhere.
    pub fn program(&self) -> Result<&Xdp, LoaderError> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or(MISSING_PROGRAM)?
            .try_into()
            .map_err(|e| LoaderError::Load(PROGRAM_NAME, e))
    }

    /// Attaches the programs to every interface, the TC one first, so that XDP never answers
    /// a handshake whose IPv6 ACK would then go unmarked. With `pins`, each interface's
    /// bpf_links are pinned at `<pins>/<iface>/link` (XDP) and `<pins>/<iface>/tc_link`, and
    /// links already pinned there (left by an earlier synguard: `--on-exit keep`, a crash) are
    /// adopted: `bpf_link_update` swaps this process's programs in atomically, so the interface
    /// is never without them. On failure the links created so far are removed again (by
    /// dropping the partial [`Attachments`]); adopted ones stay. Without tcx (Linux < 6.6) the
    /// TC program is not attached (a warning says what that costs).
    pub fn attach(
        &mut self,
        ifaces: &[Interface],
        mode: XdpMode,
        pins: Option<&PinDir>,
    ) -> Result<Attachments, LoaderError> {
        let aya_mode = match mode {
            XdpMode::Native => AyaXdpMode::Driver,
            XdpMode::Skb => AyaXdpMode::Skb,
        };
        // Unknown counts as new enough: attaching then says what is missing.
        let tcx = !KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0));
        if !tcx {
            warn!(
                "this kernel has no tcx (Linux < 6.6): TC program `{TC_PROGRAM_NAME}` not attached; IPv6 connections hang where the receive path leaves checksums unverified (no rx checksum offload, e.g. virtio-net with XDP): see the README"
            );
        }
        let mut attachments = Attachments {
            links: Vec::new(),
            pins: pins.cloned(),
        };
        for iface in ifaces {
            let tc = if tcx {
                let program = tc_program(&mut self.ebpf)?;
                let pin = pins.map(|p| p.tc_link(&iface.name));
                let tc = attach_pinned(program, iface, pin, |program| {
                    program
                        .attach_with_options(
                            &iface.name,
                            TcAttachType::Ingress,
                            TcAttachOptions::TcxOrder(LinkOrder::default()),
                        )
                        .and_then(|id| program.take_link(id))
                        .map_err(|source| LoaderError::AttachTc {
                            iface: iface.name.clone(),
                            source,
                        })
                })?;
                tc.log("TC", iface, "tcx ingress");
                Some(tc)
            } else {
                None
            };
            let program = xdp_program(&mut self.ebpf)?;
            let pin = pins.map(|p| p.link(&iface.name));
            let xdp = attach_pinned(program, iface, pin, |program| {
                program
                    .attach_to_if_index(iface.index, aya_mode)
                    .and_then(|id| program.take_link(id))
                    .map_err(|source| attach_error(iface, mode, source))
            })?;
            xdp.log("XDP", iface, &format!("{mode} mode"));
            attachments.links.push(Attached {
                iface: iface.name.clone(),
                xdp,
                tc,
            });
        }
        Ok(attachments)
    }
}

/// A program type whose attachments are bpf_links, which can be pinned and updated in place.
trait LinkedProgram {
    type Link: TryFrom<FdLink, Error = LinkError>;
    /// "XDP" or "TC", for messages.
    const KIND: &'static str;
    /// Swaps this program into `link` (`bpf_link_update`).
    fn update(&mut self, link: Self::Link) -> Result<Self::Link, ProgramError>;
}

/// aya gives both program types `attach_to_link` and `take_link`, but no trait for them.
macro_rules! linked_program {
    ($program:ty, $link:ty, $kind:literal) => {
        impl LinkedProgram for $program {
            type Link = $link;
            const KIND: &'static str = $kind;

            fn update(&mut self, link: $link) -> Result<$link, ProgramError> {
                let id = self.attach_to_link(link)?;
                self.take_link(id)
            }
        }
    };
}

linked_program!(Xdp, XdpLink, "XDP");
linked_program!(SchedClassifier, SchedClassifierLink, "TC");

/// Adopts the link pinned at `pin` (swapping `program` in), or makes one with `attach` and
/// pins it there.
fn attach_pinned<P: LinkedProgram>(
    program: &mut P,
    iface: &Interface,
    pin: Option<PathBuf>,
    attach: impl FnOnce(&mut P) -> Result<P::Link, LoaderError>,
) -> Result<Pinned<P::Link>, LoaderError>
where
    FdLink: TryFrom<P::Link>,
{
    if let Some(path) = &pin
        && let Some(link) = adopt_link(program, iface, path)?
    {
        return Ok(Pinned {
            link,
            pin,
            adopted: true,
        });
    }
    let link = attach(program)?;
    let link = match &pin {
        Some(path) => pin_link::<P>(link, iface, path)?,
        None => link,
    };
    Ok(Pinned {
        link,
        pin,
        adopted: false,
    })
}

fn pinned_link_error(
    kind: &'static str,
    doing: &'static str,
    iface: &Interface,
    path: &Path,
) -> impl FnOnce(Box<dyn StdError + Send + Sync>) -> LoaderError {
    let (iface, path) = (iface.name.clone(), path.to_owned());
    move |source| LoaderError::PinnedLink {
        kind,
        doing,
        iface,
        path,
        source,
    }
}

/// Swaps `program` into the link pinned at `path`, if there is one. A defunct link (its
/// interface was deleted; a re-created one has another index) is unpinned and `None` returned.
fn adopt_link<P: LinkedProgram>(
    program: &mut P,
    iface: &Interface,
    path: &Path,
) -> Result<Option<P::Link>, LoaderError> {
    if !path.exists() {
        return Ok(None);
    }
    let error = |doing| pinned_link_error(P::KIND, doing, iface, path);
    let pinned = PinnedLink::from_pin(path).map_err(|e| error("opening")(e.into()))?;
    let link = P::Link::try_from(FdLink::from(pinned))
        .map_err(|e| error("opening (another kind of link?)")(e.into()))?;
    match program.update(link) {
        Ok(link) => Ok(Some(link)),
        Err(e) if errno(&e) == Some(libc::ENOLINK) => {
            warn!(
                "pinned {} link {} is defunct (interface re-created?): attaching anew",
                P::KIND,
                path.display()
            );
            std::fs::remove_file(path).map_err(|e| error("removing")(e.into()))?;
            Ok(None)
        }
        Err(e) => Err(error("updating")(e.into())),
    }
}

/// Pins a new link at `path`, so that it outlives this process.
fn pin_link<P: LinkedProgram>(
    link: P::Link,
    iface: &Interface,
    path: &Path,
) -> Result<P::Link, LoaderError>
where
    FdLink: TryFrom<P::Link>,
{
    let error = |doing| pinned_link_error(P::KIND, doing, iface, path);
    let fd_link = FdLink::try_from(link).map_err(|_| LoaderError::NoBpfLink {
        iface: iface.name.clone(),
    })?;
    let pinned = fd_link.pin(path).map_err(|e| error("creating")(e.into()))?;
    P::Link::try_from(FdLink::from(pinned)).map_err(|e| error("reopening")(e.into()))
}

/// A link with its pin.
struct Pinned<L> {
    link: L,
    pin: Option<PathBuf>,
    /// Taken over from an earlier process rather than created by this one.
    adopted: bool,
}

impl<L> Pinned<L> {
    /// Logs how the `kind` program came onto `iface`: adopted, or attached anew (`how`).
    fn log(&self, kind: &str, iface: &Interface, how: &str) {
        if self.adopted {
            info!(
                "{kind} program replaced on {} (pinned link adopted, no gap)",
                iface.name
            );
        } else {
            info!("{kind} attached to {} ({how})", iface.name);
        }
    }

    /// After a failed start: detaches the link unless it was adopted (and removes its pin).
    fn undo(self) {
        if self.adopted {
            return;
        }
        if let Some(pin) = self.pin {
            // Best effort: the start is failing already.
            let _ignored = std::fs::remove_file(pin);
        }
        drop(self.link);
    }
}

/// One interface's links. XDP goes first when they are dropped, so no XDP-answered handshake
/// outlives the TC program.
struct Attached {
    iface: String,
    xdp: Pinned<XdpLink>,
    tc: Option<Pinned<SchedClassifierLink>>,
}

/// The XDP links. [`Attachments::finish`] ends a run; dropping it without (a start that
/// failed half way) detaches the links this process created and leaves adopted ones.
pub struct Attachments {
    links: Vec<Attached>,
    pins: Option<PinDir>,
}

impl Attachments {
    /// Forgets `iface`, a device that was deleted while the daemon ran: its link (defunct
    /// since the kernel removed the device) is closed and its pins removed. Returns whether
    /// `iface` was attached.
    pub fn drop_interface(&mut self, iface: &str) -> bool {
        let Some(at) = self.links.iter().position(|a| a.iface == iface) else {
            return false;
        };
        let Attached { xdp, tc, .. } = self.links.remove(at);
        let pinned = xdp.pin.is_some();
        drop(xdp);
        drop(tc);
        if let Some(pins) = &self.pins
            && pinned
            && let Err(e) = pins.remove(iface)
        {
            warn!("{e}");
        }
        true
    }

    /// `keep`: every pinned link stays attached after this process (closing a pinned link's
    /// fd does not detach it). Otherwise each interface's pins (link and maps) are removed and
    /// its link detached. Tries every interface; returns the first error.
    pub fn finish(mut self, keep: bool) -> Result<(), PinError> {
        let mut first_error = None;
        for Attached { iface, xdp, tc } in self.links.drain(..) {
            if keep && xdp.pin.is_some() {
                drop(xdp);
                drop(tc);
                info!("XDP and TC programs left attached to {iface} (pinned)");
                continue;
            }
            if let Some(pins) = &self.pins
                && let Err(e) = pins.remove(&iface)
            {
                warn!("{e}");
                first_error.get_or_insert(e);
            }
            // The links detach on drop (closing a bpf_link fd cannot fail).
            drop(xdp);
            info!("XDP detached from {iface}");
            if tc.is_some() {
                drop(tc);
                info!("TC program detached from {iface}");
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Attachments {
    fn drop(&mut self) {
        for Attached { iface, xdp, tc } in self.links.drain(..) {
            if !xdp.adopted {
                info!("XDP detached from {iface}");
            }
            xdp.undo();
            if let Some(tc) = tc {
                tc.undo();
            }
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
        .map_err(|e| LoaderError::Load(PROGRAM_NAME, e))
}

fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoaderError> {
    ebpf.program_mut(TC_PROGRAM_NAME)
        .ok_or(LoaderError::Missing {
            kind: "program",
            name: TC_PROGRAM_NAME,
        })?
        .try_into()
        .map_err(|e| LoaderError::Load(TC_PROGRAM_NAME, e))
}

/// A failed `load()`: missing privileges, or the verifier's rejection with its log.
fn load_error(program: &'static str, action: &'static str, e: ProgramError) -> LoaderError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if io_error.raw_os_error() == Some(libc::EPERM) {
                permission(action)
            } else {
                let verifier_log = verifier_log.to_string();
                LoaderError::Verifier {
                    program,
                    io_error,
                    hint: verifier_hint(&verifier_log, &privileges::lacking()),
                    verifier_log,
                }
            }
        }
        other => LoaderError::Load(program, other),
    }
}

pub(crate) fn typed_map<M, T>(map: Option<M>, name: &'static str) -> Result<T, LoaderError>
where
    T: TryFrom<M, Error = MapError>,
{
    let map = map.ok_or(LoaderError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(|source| map_error(name, source))
}

pub(crate) fn check_len(name: &'static str, actual: u32, expected: u32) -> Result<(), LoaderError> {
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

fn permission(action: &'static str) -> LoaderError {
    LoaderError::Permission {
        action,
        hint: privileges::hint(&privileges::lacking()),
    }
}

pub(crate) fn map_error(name: &'static str, source: MapError) -> LoaderError {
    if errno(&source) == Some(libc::EPERM) {
        permission("writing the eBPF maps")
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
        Some(libc::EPERM) => permission("attaching XDP"),
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

/// Names the usual cause when the log shows one: an old kernel lacks a helper; or the process
/// lacks a capability the verifier checks (`lacking`: without `CAP_PERFMON` it refuses the
/// program's stack reads at variable offsets).
fn verifier_hint(verifier_log: &str, lacking: &[&str]) -> String {
    if verifier_log.contains("unknown func") || verifier_log.contains("invalid func") {
        ": this kernel lacks a BPF helper synguard needs (bpf_tcp_raw_gen_syncookie_ipv4/6, \
         bpf_tcp_raw_check_syncookie_ipv4/6 or bpf_loop: Linux 6.0 or newer)"
            .to_owned()
    } else if !lacking.is_empty() {
        format!(": {}", privileges::hint(lacking))
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_helpers_are_named() {
        assert!(
            verifier_hint("0: (85) call unknown#204\ninvalid func unknown#204", &[])
                .contains("Linux 6.0")
        );
        assert_eq!(verifier_hint("R4 invalid zero-sized read", &[]), "");
    }

    #[test]
    fn a_missing_capability_is_named_with_a_verifier_rejection() {
        // Only this process's own capabilities can be named; the test just checks the hint
        // appears when some are lacking.
        let hint = verifier_hint("R2 variable stack access prohibited", &["CAP_PERFMON"]);
        assert!(hint.contains("CAP_PERFMON"), "{hint}");
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
