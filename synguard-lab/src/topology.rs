//! The lab: a client namespace and a server namespace joined by one veth pair, IPv4 and IPv6,
//! optionally an 802.1Q sub-interface on both ends.
//!
//! All addresses exist only inside these two namespaces. Each namespace routes everything
//! else to the other one, so the server can answer spoofed flood sources (without a route the
//! kernel drops their SYNs early and never makes cookies); neither forwards, so such replies
//! die in the client namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context as _, Result};

use crate::craft::L2;
use crate::netns::{Iface, Netns, VethPair, unique_id};
use crate::peer_xdp::PassProgram;

/// Address family of a test case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Server and client addresses of one link, with their prefix lengths.
#[derive(Clone, Copy, Debug)]
pub struct Subnet {
    pub server_v4: Ipv4Addr,
    pub client_v4: Ipv4Addr,
    pub server_v6: Ipv6Addr,
    pub client_v6: Ipv6Addr,
}

impl Subnet {
    const V4_PREFIX: u8 = 24;
    const V6_PREFIX: u8 = 64;

    pub fn server(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.server_v4.into(),
            Family::V6 => self.server_v6.into(),
        }
    }

    pub fn client(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.client_v4.into(),
            Family::V6 => self.client_v6.into(),
        }
    }

    fn configure(&self, server: &Iface, client: &Iface) -> Result<()> {
        for family in Family::ALL {
            let prefix = match family {
                Family::V4 => Self::V4_PREFIX,
                Family::V6 => Self::V6_PREFIX,
            };
            server.add_address(self.server(family), prefix)?;
            client.add_address(self.client(family), prefix)?;
        }
        server.set_up()?;
        client.set_up()
    }
}

/// The untagged link.
pub const LINK: Subnet = Subnet {
    server_v4: Ipv4Addr::new(10, 201, 0, 1),
    client_v4: Ipv4Addr::new(10, 201, 0, 2),
    server_v6: Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 1),
    client_v6: Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 2),
};

/// The 802.1Q sub-interfaces' link.
pub const VLAN_LINK: Subnet = Subnet {
    server_v4: Ipv4Addr::new(10, 201, 1, 1),
    client_v4: Ipv4Addr::new(10, 201, 1, 2),
    server_v6: Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 1),
    client_v6: Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 2),
};

/// Client and server namespaces joined by a veth pair. Everything is removed on drop.
pub struct Lab {
    // Drop order: detach the client's program, then the link, then the namespaces.
    _peer_napi: PassProgram,
    veth: VethPair,
    client: Netns,
    server: Netns,
}

impl Lab {
    /// The plain lab: untagged link only.
    pub fn new() -> Result<Self> {
        Self::build(None)
    }

    /// The lab plus an 802.1Q sub-interface with id `vid` on both ends ([`VLAN_LINK`]). Fails
    /// on kernels without 802.1Q support: see [`vlan_supported`].
    pub fn with_vlan(vid: u16) -> Result<Self> {
        Self::build(Some(vid))
    }

    fn build(vid: Option<u16>) -> Result<Self> {
        let id = unique_id();
        let server = Netns::create(&format!("{id}-srv"))?;
        let client = Netns::create(&format!("{id}-cli"))?;
        let veth = VethPair::create(&server, &format!("{id}s"), &client, &format!("{id}c"))?;
        LINK.configure(&veth.a, &veth.b)?;
        // The sub-interfaces go with the namespaces.
        if let Some(vid) = vid {
            let server_vlan = add_vlan(&server, &veth.a, &format!("{id}sv"), vid)?;
            let client_vlan = add_vlan(&client, &veth.b, &format!("{id}cv"), vid)?;
            VLAN_LINK.configure(&server_vlan, &client_vlan)?;
        }
        for family in Family::ALL {
            let flag = match family {
                Family::V4 => "-4",
                Family::V6 => "-6",
            };
            for (ns, via) in [
                (&server, LINK.client(family)),
                (&client, LINK.server(family)),
            ] {
                ns.ip(&[flag, "route", "add", "default", "via", &via.to_string()])?;
            }
        }
        let peer_napi = PassProgram::attach(&client, veth.b.name())
            .context("the client veth needs an XDP program so the server's XDP_TX reaches it")?;
        Ok(Self {
            _peer_napi: peer_napi,
            veth,
            client,
            server,
        })
    }

    pub fn server(&self) -> &Netns {
        &self.server
    }

    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The server's veth end: where synguard attaches.
    pub fn server_iface(&self) -> &Iface {
        &self.veth.a
    }

    /// The client's veth end: where frames are crafted and captured.
    pub fn client_iface(&self) -> &Iface {
        &self.veth.b
    }

    pub fn server_ip(&self, family: Family) -> IpAddr {
        LINK.server(family)
    }

    pub fn client_ip(&self, family: Family) -> IpAddr {
        LINK.client(family)
    }

    /// Ethernet addressing of a frame crafted on the client's veth for the server.
    pub fn client_to_server(&self, vlan: Option<u16>) -> Result<L2> {
        Ok(L2 {
            src_mac: self.client_iface().mac()?,
            dst_mac: self.server_iface().mac()?,
            vlan,
        })
    }

    pub fn server_addr(&self, family: Family, port: u16) -> SocketAddr {
        SocketAddr::new(self.server_ip(family), port)
    }
}

fn add_vlan(ns: &Netns, parent: &Iface, name: &str, vid: u16) -> Result<Iface> {
    ns.ip(&[
        "link",
        "add",
        "link",
        parent.name(),
        "name",
        name,
        "type",
        "vlan",
        "id",
        &vid.to_string(),
    ])
    .with_context(|| format!("creating 802.1Q interface {name}"))?;
    Ok(Iface::new(ns, name))
}

/// Whether the kernel can create 802.1Q interfaces (tries it in a scratch namespace).
pub fn vlan_supported() -> Result<bool> {
    let id = unique_id();
    let ns = Netns::create(&format!("{id}-probe"))?;
    let _veth = VethPair::create(&ns, &format!("{id}a"), &ns, &format!("{id}b"))?;
    Ok(add_vlan(
        &ns,
        &Iface::new(&ns, &format!("{id}a")),
        &format!("{id}v"),
        1,
    )
    .is_ok())
}
