//! A netlink socket that sends one dump request and hands over each message of the
//! multi-part answer: the sock_diag socket dumps (`kernel_view`) and the link dump
//! (`datapath::attached`) share it.

use std::fmt::Debug;
use std::io;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

/// Receive buffer: a dump part is at most a page or two; 64 KiB holds what the kernel sends.
const RECV_BUFFER: usize = 64 * 1024;

/// A connected netlink socket of one protocol (`NETLINK_SOCK_DIAG`, `NETLINK_ROUTE`).
pub struct DumpSocket {
    socket: Socket,
    buf: Vec<u8>,
}

impl DumpSocket {
    pub fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// Sends `request` as a dump request and calls `each` with every message of the answer.
    pub fn dump<M>(&mut self, request: M, mut each: impl FnMut(M)) -> io::Result<()>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        request.finalize();
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let message = NetlinkMessage::<M>::deserialize(&self.buf[offset..size])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = message.header.length as usize;
                match message.payload {
                    NetlinkPayload::InnerMessage(inner) => each(inner),
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
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
