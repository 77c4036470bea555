//! The client's half of the handshake: the ACK that completes a SYN-ACK the program sent.

use etherparse::{LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TransportSlice};

use super::frame::{ACK, Family, Ip, Spec};

/// The ACK a client sends for `reply`: seq = the SYN-ACK's ack, ack = its cookie + 1, same
/// VLAN tags, addresses and ports mirrored, no options.
pub fn ack_for(reply: &[u8]) -> Spec {
    let packet = SlicedPacket::from_ethernet(reply).expect("a verified SYN-ACK");
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        panic!("a SYN-ACK without an Ethernet header");
    };
    // The Ethernet type field holds the first TPID, each tag the next one.
    let tags: Vec<u16> = std::iter::once(eth.ether_type())
        .chain(packet.link_exts.iter().map(|ext| match ext {
            LinkExtSlice::Vlan(vlan) => vlan.ether_type(),
            LinkExtSlice::Macsec(_) => panic!("a SYN-ACK with MACsec"),
        }))
        .take(packet.link_exts.len())
        .map(|tpid| tpid.0)
        .collect();
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        panic!("a SYN-ACK without TCP");
    };
    let family = match &packet.net {
        Some(NetSlice::Ipv4(_)) => Family::V4,
        _ => Family::V6,
    };
    let mut ack = Spec::syn(family, &tags, tcp.source_port(), &[]);
    ack.dst_mac = eth.source();
    ack.src_mac = eth.destination();
    match (&mut ack.ip, &packet.net) {
        (Ip::V4(ip), Some(NetSlice::Ipv4(reply_ip))) => {
            ip.src = reply_ip.header().destination();
            ip.dst = reply_ip.header().source();
        }
        (Ip::V6(ip), Some(NetSlice::Ipv6(reply_ip))) => {
            ip.src = reply_ip.header().destination();
            ip.dst = reply_ip.header().source();
        }
        (_, net) => panic!("a SYN-ACK over {net:?}"),
    }
    ack.tcp.sport = tcp.destination_port();
    ack.tcp.seq = tcp.acknowledgment_number();
    ack.tcp.ack = tcp.sequence_number().wrapping_add(1);
    ack.tcp.flags = ACK;
    ack
}
