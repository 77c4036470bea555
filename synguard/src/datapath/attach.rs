//! Attaches the loaded programs to the interfaces through bpf_links, pinned for restarts and
//! adopted from an earlier synguard without a gap, and detaches them at the end of a run.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode,
    xdp::XdpLink,
};
use aya::util::KernelVersion;
use synguard_common::{TC_PROGRAM_NAME, XdpMode};
use tracing::{info, warn};

use crate::datapath::error::{LoaderError, errno, permission};
use crate::datapath::load::{Datapath, tc_program, xdp_program};
use crate::datapath::pins::{PinDir, PinError};

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

impl Datapath {
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
