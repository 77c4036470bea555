//! A real TCP server in the server namespace: sends a fixed, deterministic payload to every
//! connection and closes first, so TIME_WAIT lands on the server side (the case where
//! reused client ports meet old 4-tuples). One dual-stack socket serves IPv4 and IPv6.
//!
//! Two protocols: the client sends a request line first (like HTTP), or the server speaks
//! first (like SMTP or SSH) — then the server's first data segment follows the handshake at
//! once, with no client segment in between.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::{Domain, Socket, Type};

use crate::netns::{Netns, join};

/// How often the accept loop looks at its stop flag.
const POLL_INTERVAL_MS: u16 = 50;
const BACKLOG: i32 = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The request line a [`Protocol::RequestFirst`] client sends.
pub const REQUEST: &[u8] = b"GET /payload\n";

/// Who sends first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The client sends [`REQUEST`], then the server the payload.
    RequestFirst,
    /// The server sends the payload as soon as the connection is accepted.
    ServerFirst,
}

/// The payload every connection receives: `len` bytes of a pattern that is not periodic in
/// any small power of two, so misplaced or dropped segments show up in a comparison.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8).wrapping_mul(7) ^ (i >> 16)) as u8)
        .collect()
}

/// The running server; stops on drop.
pub struct PayloadServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl PayloadServer {
    /// Listens on `[::]:port` (IPv4 and IPv6) in `netns` and serves `payload_len` bytes.
    pub fn start(netns: &Netns, port: u16, payload_len: usize, protocol: Protocol) -> Result<Self> {
        let listener = netns.run(|| {
            let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
            socket.set_only_v6(false)?;
            socket.set_reuse_address(true)?;
            let addr: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, port).into();
            socket
                .bind(&addr.into())
                .with_context(|| format!("binding [::]:{port} in {}", netns.name()))?;
            socket.listen(BACKLOG)?;
            Ok(socket)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let payload = Arc::new(payload(payload_len));
            std::thread::Builder::new()
                .name(format!("server-{port}"))
                .spawn(move || accept_loop(&listener, protocol, &payload, &stop))
                .context("spawning the server thread")?
        };
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PayloadServer {
    /// Stops accepting and reports a failure of the accept loop.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(Err(e)) = self.thread.take().map(join) {
            eprintln!("server on port {}: {e:#}", self.port);
        }
    }
}

fn accept_loop(
    listener: &Socket,
    protocol: Protocol,
    payload: &Arc<Vec<u8>>,
    stop: &AtomicBool,
) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(POLL_INTERVAL_MS)).context("polling the listener")? == 0
        {
            continue;
        }
        let (socket, _peer) = match listener.accept() {
            Ok(accepted) => accepted,
            // The connection may be gone (reset) between poll and accept.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e).context("accepting"),
        };
        let stream = TcpStream::from(socket);
        let payload = Arc::clone(payload);
        std::thread::Builder::new()
            .name("server-conn".into())
            .spawn(move || {
                // Errors show up on the client side, which checks every byte.
                let _ = serve(stream, protocol, &payload);
            })
            .context("spawning a connection thread")?;
    }
    Ok(())
}

/// Reads the request if the protocol has one, writes the payload and closes: the server sends
/// the first FIN.
fn serve(mut stream: TcpStream, protocol: Protocol, payload: &[u8]) -> std::io::Result<()> {
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    if protocol == Protocol::RequestFirst {
        let mut request = Vec::with_capacity(REQUEST.len());
        BufReader::new(&stream).read_until(b'\n', &mut request)?;
        if request != REQUEST {
            return Err(std::io::Error::other("unexpected request"));
        }
    }
    stream.write_all(payload)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::payload;

    #[test]
    fn payload_is_deterministic_and_not_short_periodic() {
        let p = payload(200_000);
        assert_eq!(p, payload(200_000));
        for period in [256, 512, 1024, 4096, 65_536] {
            assert!(p[..1000] != p[period..period + 1000], "period {period}");
        }
    }
}
