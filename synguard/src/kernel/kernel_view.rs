//! The kernel's own view of its handshakes, for the auto controller's cross-check and the
//! metrics: request sockets (SYN_RECV) and TIME_WAIT sockets per local port through
//! NETLINK_SOCK_DIAG, the TcpExt counters of `/proc/net/netstat` and the SYNPROXY counters of
//! `/proc/net/stat/synproxy`.
//!
//! All are per network namespace: the daemon's own (it runs where it attaches).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::SocketAddr;

use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, TCP_SYN_RECV, TCP_TIME_WAIT},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use crate::kernel::netlink::DumpSocket;

/// `/proc/net/netstat` TcpExt counters that rise when a listener's queue is full:
/// accept-queue overflows, every listen drop, and SYN-queue overflows the kernel answered
/// with its own cookies (those are not drops when `tcp_syncookies` is 1).
pub const PRESSURE_COUNTERS: [&str; 3] = ["ListenOverflows", "ListenDrops", "TCPReqQFullDoCookies"];

/// The TcpExt counters the metrics export: the kernel's own SYN cookies and listen-queue
/// overflows and drops.
pub const TCPEXT_EXPORTED: [&str; 6] = [
    "SyncookiesSent",
    "SyncookiesRecv",
    "SyncookiesFailed",
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDoCookies",
];

/// Sockets of one local port by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSockets {
    /// Request sockets: handshakes the kernel answered and waits to complete.
    pub syn_recv: u64,
    pub time_wait: u64,
}

/// A NETLINK_SOCK_DIAG socket for socket dumps.
pub struct SockDiag(DumpSocket);

impl SockDiag {
    pub fn open() -> io::Result<Self> {
        DumpSocket::open(NETLINK_SOCK_DIAG).map(Self)
    }

    /// Sockets (IPv4 and IPv6) in `states` (SYN_RECV, TIME_WAIT) per local port.
    pub fn per_port(&mut self, states: StateFlags) -> io::Result<BTreeMap<u16, PortSockets>> {
        let mut counts: BTreeMap<u16, PortSockets> = BTreeMap::new();
        self.each_socket(states, |response| {
            let port = counts
                .entry(response.header.socket_id.source_port)
                .or_default();
            match response.header.state {
                TCP_SYN_RECV => port.syn_recv += 1,
                TCP_TIME_WAIT => port.time_wait += 1,
                _ => {}
            }
        })?;
        Ok(counts)
    }

    /// Every TCP socket (IPv4 and IPv6) in `states`, as (local, remote) address and port.
    pub fn connections(&mut self, states: StateFlags) -> io::Result<Vec<Connection>> {
        let mut connections = Vec::new();
        self.each_socket(states, |response| {
            let id = &response.header.socket_id;
            connections.push(Connection {
                local: SocketAddr::new(id.source_address, id.source_port),
                remote: SocketAddr::new(id.destination_address, id.destination_port),
            });
        })?;
        Ok(connections)
    }

    fn each_socket(
        &mut self,
        states: StateFlags,
        mut visit: impl FnMut(&InetResponse),
    ) -> io::Result<()> {
        for (family, socket_id) in [
            (AF_INET, SocketId::new_v4()),
            (AF_INET6, SocketId::new_v6()),
        ] {
            let request = SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: states.clone(),
                socket_id,
            });
            self.0.dump(request, |message| {
                if let SockDiagMessage::InetResponse(response) = message {
                    visit(&response);
                }
            })?;
        }
        Ok(())
    }
}

/// A socket's two ends, as sock_diag reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// The sum of [`PRESSURE_COUNTERS`] (only its growth means something).
pub fn listen_pressure() -> io::Result<u64> {
    let tcpext = tcpext()?;
    Ok(PRESSURE_COUNTERS
        .iter()
        .filter_map(|name| tcpext.get(*name))
        .sum())
}

/// The TcpExt counters of `/proc/net/netstat` by name (`SyncookiesSent`, `ListenDrops`, ...).
pub fn tcpext() -> io::Result<BTreeMap<String, u64>> {
    Ok(parse_tcpext(&fs::read_to_string("/proc/net/netstat")?))
}

fn parse_tcpext(netstat: &str) -> BTreeMap<String, u64> {
    let lines: Vec<&str> = netstat.lines().collect();
    let mut counters = BTreeMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { break };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (name, value) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if let Ok(value) = value.parse() {
                counters.insert(name.to_owned(), value);
            }
        }
    }
    counters
}

/// `/proc/net/stat/synproxy` summed over CPUs, by column (`syn_received`, `cookie_invalid`,
/// `cookie_valid`, `cookie_retrans`, `conn_reopened`); the unused `entries` column is left
/// out. Fails when the kernel has no SYNPROXY (module not loaded).
pub fn synproxy() -> io::Result<BTreeMap<String, u64>> {
    parse_synproxy(&fs::read_to_string("/proc/net/stat/synproxy")?)
}

fn parse_synproxy(text: &str) -> io::Result<BTreeMap<String, u64>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let mut sums = BTreeMap::new();
    for line in lines {
        for (name, value) in header.iter().zip(line.split_whitespace()) {
            let value = u64::from_str_radix(value, 16).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{name} `{value}`: {e}"))
            })?;
            let sum: &mut u64 = sums.entry((*name).to_owned()).or_default();
            *sum = sum.wrapping_add(value);
        }
    }
    sums.remove("entries");
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpext_counters_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPReqQFullDoCookies\n\
                    TcpExt: 9 2 3 4\n\
                    IpExt: ListenDrops\nIpExt: 100\n";
        let counters = parse_tcpext(text);
        assert_eq!(counters["SyncookiesSent"], 9);
        assert_eq!(counters["ListenDrops"], 3);
        assert_eq!(counters.len(), 4);
    }

    #[test]
    fn synproxy_columns_sum_over_cpus() {
        let text = "entries\t\tsyn_received\t cookie_invalid\t cookie_valid\t cookie_retrans\t conn_reopened\n\
                    00000000\t0000000a\t00000000\t00000001\t00000000\t00000000\n\
                    00000000\t00000005\t00000000\t000000ff\t00000000\t00000000\n";
        let sums = parse_synproxy(text).unwrap();
        assert_eq!(sums["syn_received"], 15);
        assert_eq!(sums["cookie_valid"], 256);
        assert!(!sums.contains_key("entries"));
        assert!(parse_synproxy("a\nzz\n").is_err());
    }
}
