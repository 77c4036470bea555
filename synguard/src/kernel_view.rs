//! The kernel's own view of its SYN queues, for the auto controller's cross-check: request
//! sockets (SYN_RECV) per listening port through NETLINK_SOCK_DIAG, and the listen-queue
//! drop counters of `/proc/net/netstat`.
//!
//! Both are per network namespace: the daemon's own (it runs where it attaches).

use std::collections::BTreeMap;
use std::fs;
use std::io;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// `/proc/net/netstat` TcpExt counters that rise when a listener's queue is full:
/// accept-queue overflows, every listen drop, and SYN-queue overflows the kernel answered
/// with its own cookies (those are not drops when `tcp_syncookies` is 1).
pub const PRESSURE_COUNTERS: [&str; 3] = ["ListenOverflows", "ListenDrops", "TCPReqQFullDoCookies"];

/// A NETLINK_SOCK_DIAG socket for SYN_RECV dumps.
pub struct SockDiag {
    socket: Socket,
    buf: Vec<u8>,
}

impl SockDiag {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Request sockets (SYN_RECV, IPv4 and IPv6) per local port.
    pub fn syn_recv_per_port(&mut self) -> io::Result<BTreeMap<u16, u64>> {
        let mut counts = BTreeMap::new();
        for (family, socket_id) in [
            (AF_INET, SocketId::new_v4()),
            (AF_INET6, SocketId::new_v6()),
        ] {
            self.dump(family, socket_id, &mut counts)?;
        }
        Ok(counts)
    }

    fn dump(
        &mut self,
        family: u8,
        socket_id: SocketId,
        counts: &mut BTreeMap<u16, u64>,
    ) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::SYN_RECV,
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let message =
                    NetlinkMessage::<SockDiagMessage>::deserialize(&self.buf[offset..size])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = message.header.length as usize;
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                        *counts
                            .entry(response.header.socket_id.source_port)
                            .or_default() += 1;
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(io::Error::other(format!("sock_diag dump: {e:?}")));
                    }
                    _ => {}
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
}

/// The sum of [`PRESSURE_COUNTERS`] (only its growth means something).
pub fn listen_pressure() -> io::Result<u64> {
    Ok(parse_pressure(&fs::read_to_string("/proc/net/netstat")?))
}

fn parse_pressure(netstat: &str) -> u64 {
    let lines: Vec<&str> = netstat.lines().collect();
    let mut sum = 0;
    for pair in lines.chunks(2) {
        let [names, values] = pair else { break };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if PRESSURE_COUNTERS.contains(&name) {
                sum += value.parse::<u64>().unwrap_or(0);
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_sums_the_tcpext_listen_counters() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPReqQFullDoCookies\n\
                    TcpExt: 9 2 3 4\n\
                    IpExt: ListenDrops\nIpExt: 100\n";
        assert_eq!(parse_pressure(text), 9);
    }
}
