//! synguard's XDP program found through the interfaces of this network namespace, for
//! `synguard stats` and `synguard top` beside a daemon without pins (under `ip netns exec`,
//! which hides the host's bpffs): the kernel's link dump (RTM_GETLINK, `IFLA_XDP`) names the
//! program each interface runs, which needs no privileges; telling whether it is synguard's
//! (by its name, [`PROGRAM_NAME`]) and opening its maps go by id, which needs `CAP_SYS_ADMIN`.

use std::collections::BTreeMap;
use std::io;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_sys::protocols::NETLINK_ROUTE;
use synguard_common::PROGRAM_NAME;
use thiserror::Error;

use crate::datapath::snapshot::{ReadError, program_info};
use crate::kernel::netlink::DumpSocket;

#[derive(Debug, Error)]
pub enum FindError {
    #[error("listing the interfaces of this network namespace (rtnetlink)")]
    Links(#[source] io::Error),
    #[error("no interface `{0}` in this network namespace")]
    NoInterface(String),
    #[error(
        "no synguard on `{iface}`: it runs no XDP program, and it has no synguard pins ({pins})"
    )]
    NoXdp { iface: String, pins: String },
    #[error("`{iface}` runs XDP program {program} `{name}`, not synguard's `{PROGRAM_NAME}`")]
    NotSynguard {
        iface: String,
        program: u32,
        name: String,
    },
    #[error(
        "no synguard in this network namespace: no interface runs its XDP program, and there are no synguard pins ({pins})"
    )]
    NoneHere { pins: String },
    #[error(
        "several synguard programs run in this network namespace ({}); choose one with --iface",
        .0.join(", ")
    )]
    Several(Vec<String>),
    #[error("`{iface}` runs XDP program {program}, and it has no synguard pins to read it through")]
    Unreadable {
        iface: String,
        program: u32,
        #[source]
        source: ReadError,
    },
}

/// One XDP program on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedXdp {
    pub iface: String,
    pub program: u32,
}

/// Every XDP program attached to an interface of this network namespace, by interface name
/// (an interface with programs in several modes, e.g. native and skb, is listed once for each).
pub fn attached_xdp() -> io::Result<Vec<AttachedXdp>> {
    let mut socket = DumpSocket::open(NETLINK_ROUTE)?;
    let mut attached = Vec::new();
    socket.dump(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        |message| {
            if let RouteNetlinkMessage::NewLink(link) = message {
                attached.extend(link_programs(&link.attributes));
            }
        },
    )?;
    Ok(attached)
}

/// The XDP programs in one link message's attributes. `IFLA_XDP_PROG_ID` is the program of a
/// single attachment, the per-mode ids say the same again or, for several modes at once,
/// stand alone: each id counts once.
fn link_programs(attributes: &[LinkAttribute]) -> Vec<AttachedXdp> {
    let Some(iface) = attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name),
        _ => None,
    }) else {
        return Vec::new();
    };
    let mut programs: Vec<u32> = attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::Xdp(xdp) => Some(xdp),
            _ => None,
        })
        .flatten()
        .filter_map(|x| match *x {
            LinkXdp::ProgId(id)
            | LinkXdp::DrvProgId(id)
            | LinkXdp::SkbProgId(id)
            | LinkXdp::HwProgId(id) => Some(id),
            _ => None,
        })
        .filter(|&id| id != 0)
        .collect();
    programs.sort_unstable();
    programs.dedup();
    programs
        .into_iter()
        .map(|program| AttachedXdp {
            iface: iface.clone(),
            program,
        })
        .collect()
}

/// synguard's program on `iface`, or, without `iface`, the one synguard program of this
/// namespace (one daemon's program on several interfaces counts once). Returns the program's
/// id and the interfaces it runs on (`eth0,eth1`). `pins` says where pins were looked for, for
/// the errors.
pub fn find_synguard(iface: Option<&str>, pins: &str) -> Result<(u32, String), FindError> {
    let attached = attached_xdp().map_err(FindError::Links)?;
    match iface {
        Some(iface) => on_interface(&attached, iface, pins),
        None => only_program(&attached, pins),
    }
}

fn on_interface(
    attached: &[AttachedXdp],
    iface: &str,
    pins: &str,
) -> Result<(u32, String), FindError> {
    let on_it: Vec<&AttachedXdp> = attached.iter().filter(|a| a.iface == iface).collect();
    if on_it.is_empty() {
        return Err(if nix::net::if_::if_nametoindex(iface).is_ok() {
            FindError::NoXdp {
                iface: iface.to_owned(),
                pins: pins.to_owned(),
            }
        } else {
            FindError::NoInterface(iface.to_owned())
        });
    }
    // A device runs one program per mode; synguard's is the one with its name.
    let mut other = None;
    for a in on_it {
        match program_name(a)? {
            name if name == PROGRAM_NAME => return Ok((a.program, iface.to_owned())),
            name => other = Some((a.program, name)),
        }
    }
    let (program, name) = other.expect("at least one program");
    Err(FindError::NotSynguard {
        iface: iface.to_owned(),
        program,
        name,
    })
}

fn only_program(attached: &[AttachedXdp], pins: &str) -> Result<(u32, String), FindError> {
    // synguard program id -> its interfaces.
    let mut ours: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for a in attached {
        if program_name(a)? == PROGRAM_NAME {
            ours.entry(a.program).or_default().push(&a.iface);
        }
    }
    let mut programs = ours.into_iter();
    match (programs.next(), programs.next()) {
        (None, _) => Err(FindError::NoneHere {
            pins: pins.to_owned(),
        }),
        (Some((program, mut ifaces)), None) => {
            ifaces.sort_unstable();
            Ok((program, ifaces.join(",")))
        }
        (Some(first), Some(second)) => Err(FindError::Several(
            [first, second]
                .into_iter()
                .chain(programs)
                .map(|(program, ifaces)| format!("program {program} on {}", ifaces.join(",")))
                .collect(),
        )),
    }
}

/// The program's name, looked up by id.
fn program_name(a: &AttachedXdp) -> Result<String, FindError> {
    let info = program_info(a.program).map_err(|source| FindError::Unreadable {
        iface: a.iface.clone(),
        program: a.program,
        source,
    })?;
    Ok(info.name_as_str().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_program_of_a_link_counts_once() {
        let single = [
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Xdp(vec![
                LinkXdp::ProgId(42),
                LinkXdp::DrvProgId(42),
                LinkXdp::Flags(0),
            ]),
        ];
        assert_eq!(
            link_programs(&single),
            [AttachedXdp {
                iface: "eth0".into(),
                program: 42
            }]
        );
        let multi = [
            LinkAttribute::Xdp(vec![LinkXdp::SkbProgId(7), LinkXdp::DrvProgId(9)]),
            LinkAttribute::IfName("eth1".into()),
        ];
        let ids: Vec<u32> = link_programs(&multi).iter().map(|a| a.program).collect();
        assert_eq!(ids, [7, 9]);
        let none = [
            LinkAttribute::IfName("lo".into()),
            LinkAttribute::Xdp(vec![LinkXdp::Attached(
                netlink_packet_route::link::XdpAttached::None,
            )]),
        ];
        assert!(link_programs(&none).is_empty());
    }
}
