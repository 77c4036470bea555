//! An AF_PACKET socket bound to one interface: sends whole Ethernet frames and receives the
//! frames arriving on it, with their 802.1Q tag put back in place.
//!
//! The kernel strips a VLAN tag on receive (into skb metadata) before packet sockets see the
//! frame; PACKET_AUXDATA hands the tag back and [`PacketSocket::recv`] re-inserts it, so the
//! frame is what came over the wire.

use std::ffi::CString;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

/// How often and how long [`PacketSocket::send`] waits for room in a full device queue.
const SEND_RETRIES: u32 = 1000;
const SEND_BACKOFF: std::time::Duration = std::time::Duration::from_micros(100);

const ETH_P_ALL: u16 = 0x0003;
/// `virtio_net_hdr.flags`: the checksum is left to offload (include/uapi/linux/virtio_net.h).
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const ETH_P_8021Q: u16 = 0x8100;
/// Ethernet destination + source.
const MAC_HEADERS: usize = 12;

/// A received frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub data: Vec<u8>,
    /// The sender left the TCP/UDP checksum to offload (CHECKSUM_PARTIAL): the field holds only
    /// the pseudo-header sum, so it cannot be checked. Frames built by XDP never are.
    pub checksum_offloaded: bool,
}

pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    iface: String,
}

fn check(ret: libc::c_int, what: &str) -> Result<()> {
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_owned());
    }
    Ok(())
}

fn set_option<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    what: &str,
) -> Result<()> {
    // SAFETY: `value` points to a live T whose size is passed.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(ret, what)
}

impl PacketSocket {
    /// Opens the socket on `iface` inside `netns`. Incoming frames only (not the ones this
    /// host sends), receive calls time out after `recv_timeout` so callers can poll a flag.
    pub fn open(netns: &Netns, iface: &str, recv_timeout: Duration) -> Result<Self> {
        let c_iface = CString::new(iface)?;
        netns.run(|| {
            // SAFETY: valid NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {iface} in {}", netns.name());
            }
            // Protocol 0: receive nothing until bound to the interface, so no frame from
            // another interface slips in between socket() and bind().
            // SAFETY: plain syscall.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            check(raw, "creating an AF_PACKET socket")?;
            // SAFETY: a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let ifindex = i32::try_from(ifindex)?;
            let socket = Self {
                fd,
                ifindex,
                iface: iface.to_owned(),
            };
            let one: libc::c_int = 1;
            set_option(
                &socket.fd,
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                &one,
                "PACKET_AUXDATA",
            )?;
            set_option(
                &socket.fd,
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                &one,
                "PACKET_IGNORE_OUTGOING",
            )?;
            let timeout = libc::timeval {
                tv_sec: recv_timeout.as_secs() as libc::time_t,
                tv_usec: recv_timeout.subsec_micros() as libc::suseconds_t,
            };
            set_option(
                &socket.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout,
                "SO_RCVTIMEO",
            )?;
            let addr = socket.address(ETH_P_ALL);
            // SAFETY: `addr` is a sockaddr_ll of the size passed.
            let ret = unsafe {
                libc::bind(
                    socket.fd.as_raw_fd(),
                    std::ptr::from_ref(&addr).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            check(ret, "binding the AF_PACKET socket")?;
            Ok(socket)
        })
    }

    fn address(&self, protocol: u16) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol.to_be();
        addr.sll_ifindex = self.ifindex;
        addr
    }

    /// Opens a socket like [`Self::open`] whose frames go out as a local sender with checksum
    /// offload sends them (PACKET_VNET_HDR, CHECKSUM_PARTIAL): send with
    /// [`Self::send_offloaded`] only.
    pub fn open_offloading(netns: &Netns, iface: &str) -> Result<Self> {
        let socket = Self::open(netns, iface, Duration::from_millis(100))?;
        let one: libc::c_int = 1;
        set_option(
            &socket.fd,
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            &one,
            "PACKET_VNET_HDR",
        )?;
        Ok(socket)
    }

    /// Sends one frame on a socket from [`Self::open_offloading`], its checksum at
    /// `csum_offset` bytes into the data from `csum_start` left to offload: the field must
    /// hold the pseudo-header sum, and the receiver of a veth sees CHECKSUM_PARTIAL, as for
    /// the kernel's own segments.
    pub fn send_offloaded(&self, frame: &[u8], csum_start: u16, csum_offset: u16) -> Result<()> {
        // struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
        // (host byte order, as a little-endian virtio device has them).
        let mut packet = vec![VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&csum_start.to_ne_bytes());
        packet.extend_from_slice(&csum_offset.to_ne_bytes());
        packet.extend_from_slice(frame);
        self.send(&packet)
    }

    /// Sends one complete Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let addr = self.address(0);
        let mut full_queue_retries = 0;
        let sent = loop {
            // SAFETY: `frame` and `addr` are live for the call, sizes passed.
            let sent = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    std::ptr::from_ref(&addr).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if sent >= 0 {
                break sent;
            }
            let error = std::io::Error::last_os_error();
            // A flood fills the device queue faster than the peer drains it: wait for room
            // (bounded) instead of failing the test that floods.
            if error.raw_os_error() == Some(libc::ENOBUFS) && full_queue_retries < SEND_RETRIES {
                full_queue_retries += 1;
                std::thread::sleep(SEND_BACKOFF);
                continue;
            }
            return Err(error).with_context(|| format!("sending a frame on {}", self.iface));
        };
        if sent as usize != frame.len() {
            bail!(
                "short send on {}: {sent} of {} bytes",
                self.iface,
                frame.len()
            );
        }
        Ok(())
    }

    /// Receives one frame, VLAN tag restored. `None` when the receive timeout passes first.
    pub fn recv(&self) -> Result<Option<Frame>> {
        let mut buf = vec![0u8; 65_536];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: msg points to live buffers of the sizes given.
        let len = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, 0) };
        if len < 0 {
            let err = std::io::Error::last_os_error();
            if matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                return Ok(None);
            }
            return Err(err).with_context(|| format!("receiving on {}", self.iface));
        }
        buf.truncate(len as usize);
        let aux = auxdata(&msg);
        let status = aux.map_or(0, |a| a.tp_status);
        if let Some(aux) = aux.filter(|_| status & libc::TP_STATUS_VLAN_VALID != 0)
            && buf.len() >= MAC_HEADERS
        {
            let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                ETH_P_8021Q
            };
            let mut tag = Vec::with_capacity(4);
            tag.extend_from_slice(&tpid.to_be_bytes());
            tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
            buf.splice(MAC_HEADERS..MAC_HEADERS, tag);
        }
        Ok(Some(Frame {
            data: buf,
            checksum_offloaded: status & libc::TP_STATUS_CSUMNOTREADY != 0,
        }))
    }
}

/// The PACKET_AUXDATA control message: VLAN tag the kernel stripped, checksum status.
fn auxdata(msg: &libc::msghdr) -> Option<libc::tpacket_auxdata> {
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk its control buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == libc::PACKET_AUXDATA {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()));
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}
