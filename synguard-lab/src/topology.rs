//! The lab: a client namespace and a server namespace joined by one veth pair, IPv4 and IPv6,
//! optionally an 802.1Q sub-interface on both ends, optionally a second client namespace and
//! an attacker namespace, each on a veth pair and subnet of its own.
//!
//! All addresses exist only inside these namespaces. Each client routes everything to the
//! server; the server routes everything but its links to the attacker if there is one, else
//! to the first client, so it can answer spoofed flood sources (without a route the kernel
//! drops their SYNs early and never makes cookies). No namespace forwards, so such replies die
//! in the first client's namespace, or in the attacker's XDP program: a flood's reflected
//! SYN-ACKs then never share a veth ring with the legitimate client's segments.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context as _, Result, anyhow};

use crate::craft::L2;
use crate::daemon;
use crate::netns::{Iface, Netns, VethPair, unique_id};
use crate::peer_xdp::NativeProgram;

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

/// Checksum offload on the lab's veths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offloads {
    /// As veth comes: the sender leaves TCP checksums to "hardware" (`CHECKSUM_PARTIAL`),
    /// which the receiver trusts.
    On,
    /// `ethtool -K tx off` on both ends of the first client's link: every packet arrives
    /// `CHECKSUM_NONE`, as from a NIC without receive checksum offload (virtio-net once XDP is
    /// attached).
    TxOff,
}

impl Offloads {
    pub const ALL: [Offloads; 2] = [Offloads::On, Offloads::TxOff];

    pub fn name(self) -> &'static str {
        match self {
            Offloads::On => "offloads on",
            Offloads::TxOff => "tx offload off",
        }
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

/// The second client's link ([`Lab::with_second_client`]): a subnet of its own, routed by
/// the server namespace, so each client is a distinct source to synguard.
pub const SECOND_LINK: Subnet = Subnet {
    server_v4: Ipv4Addr::new(10, 201, 2, 1),
    client_v4: Ipv4Addr::new(10, 201, 2, 2),
    server_v6: Ipv6Addr::new(0xfd00, 0x201, 2, 0, 0, 0, 0, 1),
    client_v6: Ipv6Addr::new(0xfd00, 0x201, 2, 0, 0, 0, 0, 2),
};

/// The attacker's link ([`Lab::with_attacker`]).
pub const ATTACKER_LINK: Subnet = Subnet {
    server_v4: Ipv4Addr::new(10, 201, 3, 1),
    client_v4: Ipv4Addr::new(10, 201, 3, 2),
    server_v6: Ipv6Addr::new(0xfd00, 0x201, 3, 0, 0, 0, 0, 1),
    client_v6: Ipv6Addr::new(0xfd00, 0x201, 3, 0, 0, 0, 0, 2),
};

/// What the namespace at the far end of a [`ClientLink`] does with the server's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// Receives them: an `XDP_PASS` program, so that the server's `XDP_TX` reaches it.
    Client,
    /// Sinks them: an `XDP_DROP` program, so that SYN-ACKs to its spoofed sources cost it
    /// nothing. It drops ARP and neighbour discovery too, so both ends get permanent
    /// neighbour entries instead.
    Attacker,
}

/// A client (or attacker) namespace joined to the server namespace by a veth pair of its own,
/// with a default route to the server. Removed on drop.
pub struct ClientLink {
    // Drop order: detach the client's program, then the link, then the namespace.
    _peer_napi: NativeProgram,
    veth: VethPair,
    netns: Netns,
    subnet: Subnet,
}

impl Drop for ClientLink {
    fn drop(&mut self) {
        daemon::remove_run_files(self.veth.a.name());
    }
}

impl ClientLink {
    /// Namespace `{id}-{role}`, veth ends `{id}s{suffix}` (server) and `{id}c{suffix}`.
    fn create(
        server: &Netns,
        id: &str,
        role: &str,
        suffix: &str,
        subnet: Subnet,
        peer: Peer,
        queues: u32,
    ) -> Result<Self> {
        let netns = Netns::create(&format!("{id}-{role}"))?;
        let veth = VethPair::with_queues(
            server,
            &format!("{id}s{suffix}"),
            &netns,
            &format!("{id}c{suffix}"),
            queues,
        )?;
        subnet.configure(&veth.a, &veth.b)?;
        for family in Family::ALL {
            let via = subnet.server(family).to_string();
            netns.ip(&[family_flag(family), "route", "add", "default", "via", &via])?;
        }
        let peer_napi = match peer {
            Peer::Client => NativeProgram::pass(&netns, veth.b.name()).context(
                "the client veth needs an XDP program so the server's XDP_TX reaches it",
            )?,
            Peer::Attacker => NativeProgram::drop_all(&netns, veth.b.name())?,
        };
        let link = Self {
            _peer_napi: peer_napi,
            veth,
            netns,
            subnet,
        };
        if peer == Peer::Attacker {
            link.static_neighbours()?;
        }
        Ok(link)
    }

    /// Permanent neighbour entries for both ends' addresses on both ends: nothing on this
    /// link needs ARP or neighbour discovery afterwards.
    pub fn static_neighbours(&self) -> Result<()> {
        let (server_mac, client_mac) = (self.server_iface().mac()?, self.iface().mac()?);
        for family in Family::ALL {
            self.iface()
                .add_permanent_neighbour(self.server_ip(family), server_mac)?;
            self.server_iface()
                .add_permanent_neighbour(self.ip(family), client_mac)?;
        }
        Ok(())
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The client's veth end: where frames are crafted and captured.
    pub fn iface(&self) -> &Iface {
        &self.veth.b
    }

    /// The server's end of this client's veth: where synguard attaches.
    pub fn server_iface(&self) -> &Iface {
        &self.veth.a
    }

    pub fn ip(&self, family: Family) -> IpAddr {
        self.subnet.client(family)
    }

    /// The server's address on this link.
    pub fn server_ip(&self, family: Family) -> IpAddr {
        self.subnet.server(family)
    }

    pub fn server_addr(&self, family: Family, port: u16) -> SocketAddr {
        SocketAddr::new(self.server_ip(family), port)
    }

    /// Ethernet addressing of a frame crafted on the client's veth for the server.
    pub fn to_server(&self, vlan: Option<u16>) -> Result<L2> {
        Ok(L2 {
            src_mac: self.iface().mac()?,
            dst_mac: self.server_iface().mac()?,
            vlan,
        })
    }
}

fn family_flag(family: Family) -> &'static str {
    match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    }
}

/// What a [`Lab`] is built with besides the first client's link.
struct Shape {
    /// An 802.1Q sub-interface with this id on the first link.
    vlan: Option<u16>,
    second: bool,
    attacker: bool,
    /// Queues of the first link's veth pair.
    queues: u32,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            vlan: None,
            second: false,
            attacker: false,
            queues: 1,
        }
    }
}

/// Client and server namespaces joined by a veth pair, optionally a second client namespace
/// and an attacker namespace with veth pairs of their own. Everything is removed on drop.
pub struct Lab {
    // Drop order: the clients (programs, links, namespaces), then the server namespace.
    attacker: Option<ClientLink>,
    second: Option<ClientLink>,
    first: ClientLink,
    server: Netns,
}

impl Lab {
    /// The plain lab: untagged link only.
    pub fn new() -> Result<Self> {
        Self::build(Shape::default())
    }

    /// The plain lab with `queues` receive and transmit queues on both ends of the veth pair
    /// ([`VethPair::with_queues`]).
    pub fn with_queues(queues: u32) -> Result<Self> {
        Self::build(Shape {
            queues,
            ..Shape::default()
        })
    }

    /// The plain lab with `offloads` on the veth pair.
    pub fn with_offloads(offloads: Offloads) -> Result<Self> {
        Self::new()?.offloads(offloads)
    }

    /// This lab with `offloads` on the first client's veth pair.
    pub fn offloads(self, offloads: Offloads) -> Result<Self> {
        if offloads == Offloads::TxOff {
            self.server_iface().disable_tx_checksum()?;
            self.client_iface().disable_tx_checksum()?;
        }
        Ok(self)
    }

    /// The lab plus an 802.1Q sub-interface with id `vid` on both ends ([`VLAN_LINK`]). Fails
    /// on kernels without 802.1Q support: see [`vlan_supported`].
    pub fn with_vlan(vid: u16) -> Result<Self> {
        Self::build(Shape {
            vlan: Some(vid),
            ..Shape::default()
        })
    }

    /// The plain lab plus a second client namespace on its own veth pair and subnet
    /// ([`SECOND_LINK`]); synguard must attach to both server ends
    /// ([`ClientLink::server_iface`]: `--iface` twice).
    pub fn with_second_client() -> Result<Self> {
        Self::build(Shape {
            second: true,
            ..Shape::default()
        })
    }

    /// The plain lab plus an attacker namespace on its own veth pair and subnet
    /// ([`ATTACKER_LINK`]) whose end drops every frame in XDP, and the server's default route
    /// through it: replies to a flood's spoofed sources, the kernel's and synguard's, go there
    /// and die, not into the first client's veth. synguard must attach to both server ends.
    pub fn with_attacker() -> Result<Self> {
        Self::build(Shape {
            attacker: true,
            ..Shape::default()
        })
    }

    fn build(shape: Shape) -> Result<Self> {
        let Shape {
            vlan,
            second,
            attacker,
            queues,
        } = shape;
        let id = unique_id();
        let server = Netns::create(&format!("{id}-srv"))?;
        let first = ClientLink::create(&server, &id, "cli", "", LINK, Peer::Client, queues)?;
        // The sub-interfaces go with the namespaces.
        if let Some(vid) = vlan {
            let server_vlan = add_vlan(&server, first.server_iface(), &format!("{id}sv"), vid)?;
            let client_vlan = add_vlan(first.netns(), first.iface(), &format!("{id}cv"), vid)?;
            VLAN_LINK.configure(&server_vlan, &client_vlan)?;
        }
        let second = second
            .then(|| ClientLink::create(&server, &id, "cl2", "2", SECOND_LINK, Peer::Client, 1))
            .transpose()?;
        let attacker = attacker
            .then(|| ClientLink::create(&server, &id, "atk", "a", ATTACKER_LINK, Peer::Attacker, 1))
            .transpose()?;
        // Everything else (spoofed flood sources) goes to the attacker, or back to the first
        // client.
        let sink = attacker.as_ref().map_or(LINK, |a| a.subnet);
        for family in Family::ALL {
            let via = sink.client(family).to_string();
            server.ip(&[family_flag(family), "route", "add", "default", "via", &via])?;
        }
        Ok(Self {
            attacker,
            second,
            first,
            server,
        })
    }

    pub fn server(&self) -> &Netns {
        &self.server
    }

    pub fn client(&self) -> &Netns {
        self.first.netns()
    }

    /// The first client's link.
    pub fn first_client(&self) -> &ClientLink {
        &self.first
    }

    /// The second client's link; an error unless built with [`Self::with_second_client`].
    pub fn second_client(&self) -> Result<&ClientLink> {
        self.second
            .as_ref()
            .ok_or_else(|| anyhow!("the lab has no second client (Lab::with_second_client)"))
    }

    /// The attacker's link; an error unless built with [`Self::with_attacker`].
    pub fn attacker(&self) -> Result<&ClientLink> {
        self.attacker
            .as_ref()
            .ok_or_else(|| anyhow!("the lab has no attacker (Lab::with_attacker)"))
    }

    /// The server's veth end of the first client: where synguard attaches.
    pub fn server_iface(&self) -> &Iface {
        self.first.server_iface()
    }

    /// The first client's veth end: where frames are crafted and captured.
    pub fn client_iface(&self) -> &Iface {
        self.first.iface()
    }

    pub fn server_ip(&self, family: Family) -> IpAddr {
        self.first.server_ip(family)
    }

    pub fn client_ip(&self, family: Family) -> IpAddr {
        self.first.ip(family)
    }

    /// Ethernet addressing of a frame crafted on the first client's veth for the server.
    pub fn client_to_server(&self, vlan: Option<u16>) -> Result<L2> {
        self.first.to_server(vlan)
    }

    pub fn server_addr(&self, family: Family, port: u16) -> SocketAddr {
        self.first.server_addr(family, port)
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
