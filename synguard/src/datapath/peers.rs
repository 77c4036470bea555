//! The daemon's half of the peer filter (`SG_PEERS`, see `synguard_common::MAP_PEERS`): it
//! marks the 4-tuples of the kernel's sockets on protected ports, read through sock_diag, so
//! that a SYN for a tuple the kernel still holds (TIME_WAIT reuse) is looked up even when its
//! connection was opened before the program was attached, or through an interface without it.
//! The datapath marks everything it sees itself; this covers the rest, at start and then
//! every [`SEED_PERIOD`].
//!
//! The map is mmapped: marks are single-byte stores, like the datapath's, so neither side can
//! undo a mark of the other (a map update would rewrite a whole line).

use std::io;
use std::net::IpAddr;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use aya::maps::MapData;
use netlink_packet_sock_diag::inet::StateFlags;
use std::os::fd::AsFd as _;
use synguard_common::{PEER_LINES, PeerLine, TupleWords, peer_mark};

use crate::kernel::kernel_view::{Connection, SockDiag};
use crate::settings::ports::PortSet;

/// How often the kernel's sockets are marked again: well inside a mark's life (137 s).
pub const SEED_PERIOD: Duration = Duration::from_secs(30);

const MAP_BYTES: usize = PEER_LINES as usize * size_of::<PeerLine>();

/// A writable mapping of `SG_PEERS`, and the program's hash seed.
pub struct PeerSeeder {
    marks: NonNull<AtomicU8>,
    seed: u64,
    sock_diag: SockDiag,
}

// SAFETY: the mapping is owned by this value and only accessed through atomics.
unsafe impl Send for PeerSeeder {}

impl PeerSeeder {
    /// Maps `peers` (the program's `SG_PEERS`, created mmapable) for a program whose hash
    /// seed is `seed`.
    pub fn new(peers: &MapData, seed: u64) -> io::Result<Self> {
        // SAFETY: a shared mapping of the map's whole value area (BPF_F_MMAPABLE array of
        // PEER_LINES 64-byte values); the kernel keeps the map alive while it is mapped.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&peers.fd().as_fd()),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let marks = NonNull::new(addr.cast::<AtomicU8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self {
            marks,
            seed,
            sock_diag: SockDiag::open()?,
        })
    }

    /// Marks every socket of a protected port that is not listening; returns how many.
    pub fn seed(&mut self, ports: &PortSet) -> io::Result<usize> {
        let states = StateFlags::all() - StateFlags::LISTEN;
        let connections = self.sock_diag.connections(states)?;
        let mark = peer_mark(monotonic_ns());
        let mut marked = 0;
        for connection in connections
            .iter()
            .filter(|c| ports.contains(c.local.port()))
        {
            let tuple = inbound_tuple(connection);
            for (line, at) in [tuple.address_slot(self.seed), tuple.tuple_slot(self.seed)] {
                let index = line as usize * size_of::<PeerLine>() + at;
                // SAFETY: index < MAP_BYTES (line and byte are masked to the map's size).
                unsafe { self.marks.add(index).as_ref() }.store(mark, Ordering::Relaxed);
            }
            marked += 1;
        }
        Ok(marked)
    }
}

impl Drop for PeerSeeder {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.marks.as_ptr().cast(), MAP_BYTES) };
    }
}

/// The tuple as the datapath sees it: the client's segments, remote to local. An IPv4
/// client of a dual-stack socket shows as `::ffff:a.b.c.d`, its packets are IPv4: one form.
fn inbound_tuple(connection: &Connection) -> TupleWords {
    TupleWords::of(
        mapped(connection.remote.ip()),
        mapped(connection.local.ip()),
        connection.remote.port(),
        connection.local.port(),
    )
}

fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_and_plain_ipv4_clients_are_one_tuple() {
        let plain = Connection {
            local: "10.0.0.1:8080".parse().unwrap(),
            remote: "10.0.0.2:40000".parse().unwrap(),
        };
        let mapped = Connection {
            local: "[::ffff:10.0.0.1]:8080".parse().unwrap(),
            remote: "[::ffff:10.0.0.2]:40000".parse().unwrap(),
        };
        assert_eq!(inbound_tuple(&plain), inbound_tuple(&mapped));
        let words = inbound_tuple(&plain);
        assert_eq!(words.src[2], synguard_common::V4_MAPPED_WORD);
        assert_eq!(words.src[3], u32::from_ne_bytes([10, 0, 0, 2]));
        assert_eq!(words.ports, u32::from_ne_bytes([0x9c, 0x40, 0x1f, 0x90]));
    }
}
