//! The peer filter has no false negatives for sockets that existed before synguard: a SYN
//! reusing the 4-tuple of a connection the server still holds in TIME_WAIT must reach the
//! kernel (`syn_known_socket`) and connect, also when the connection was opened and closed
//! (server first: TIME_WAIT) before the daemon started, so that only the daemon's sock_diag
//! seeding can know its tuple. (A connection open across a first start cannot finish: its
//! segments are `ct state invalid` to the new conntrack table, `nf_conntrack_tcp_loose=0`.)
//!
//! And a spoofed flood's SYNs skip the socket lookup: `syn_peer_lookup` stays far below the
//! number of SYNs answered.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use socket2::{Domain, Socket, Type};
use synguard_common::Counter;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, PinnedBench, run_cases};
use synguard_lab::kernel::Counters;
use synguard_lab::server::{Protocol, REQUEST, payload};
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 4096;
const SOURCE_PORT: u16 = 41_000;

/// A connection from the client namespace's `SOURCE_PORT` to the server.
fn open(lab: &Lab, family: Family) -> Result<TcpStream> {
    let target = lab.server_addr(family, PORT);
    lab.client().run(move || {
        let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        let any: IpAddr = match target {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        socket.bind(&SocketAddr::new(any, SOURCE_PORT).into())?;
        socket.connect_timeout(&target.into(), Duration::from_secs(2))?;
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(stream)
    })
}

/// The request and the whole reply; the server closes first, so it holds TIME_WAIT.
fn finish(mut stream: TcpStream) -> Result<()> {
    stream.write_all(REQUEST)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    ensure!(
        reply == payload(PAYLOAD),
        "short reply: {} bytes",
        reply.len()
    );
    Ok(())
}

/// One more connection from the same source port, which meets the server's TIME_WAIT.
fn reuse(lab: &Lab, family: Family) -> Result<()> {
    let config = ClientConfig::new(
        lab.server_addr(family, PORT),
        Protocol::RequestFirst,
        PAYLOAD,
        1,
    )
    .source_ports(SOURCE_PORT..=SOURCE_PORT);
    let report = client::run(lab.client(), config)?;
    ensure!(
        report.failures.is_empty(),
        "the reused tuple did not connect: {:?}",
        report.failures
    );
    Ok(())
}

#[test]
fn sockets_from_before_the_start_are_looked_up() {
    let Some(_serial) = harness::start("peer_filter", &harness::PINNED_FLOOD_NEEDS) else {
        return;
    };
    run_cases("peer_filter", harness::cases(), |case| {
        let bench = PinnedBench::new(PORT, PAYLOAD)?;
        let lab = &bench.lab;
        // Closed before the start: TIME_WAIT on the server, nothing on the wire since.
        finish(open(lab, case.family)?).context("the connection before the start")?;
        let daemon = bench.start(case.mode, &[])?;
        let before = Counters::of(lab.server_iface())?;
        reuse(lab, case.family).context("reusing the tuple")?;
        // Through synguard: its TIME_WAIT is now in the peer filter by the datapath's marks.
        reuse(lab, case.family).context("reusing the tuple once more")?;
        let counters = Counters::of(lab.server_iface())?.since(&before);
        ensure!(
            counters.get(Counter::SynKnownSocket) == 2,
            "both reuses must reach the kernel's TIME_WAIT socket: {counters}"
        );

        // A spoofed flood: its SYNs are answered without asking the socket table.
        let before = Counters::of(lab.server_iface())?;
        Flood::start(
            lab,
            FloodKind::Syn,
            lab.server_ip(case.family),
            PORT,
            Duration::from_secs(2),
        )?
        .wait()?;
        let counters = Counters::of(lab.server_iface())?.since(&before);
        let answered = counters.get(Counter::SynCookieSent);
        let looked_up = counters.get(Counter::SynPeerLookup);
        println!("flood: {answered} SYNs answered, {looked_up} looked up in the socket table");
        ensure!(answered > 1000, "the flood did not arrive: {counters}");
        ensure!(
            looked_up * 100 < answered,
            "spoofed SYNs were looked up: {counters}"
        );
        daemon.stop()?.ensure_success()
    });
}
