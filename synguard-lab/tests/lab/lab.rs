//! The harness itself, without synguard: the topology carries real traffic both ways (also
//! with the client cycling through a few source ports, as `no_stalls` does), a crafted SYN gets
//! the kernel's SYN-ACK and the capture decodes it, and everything the lab created is gone
//! after drop.

use std::time::Duration;

use anyhow::{Result, ensure};
use synguard_lab::capture::Capture;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::craft::{OptionStyle, Segment, TcpFrame};
use synguard_lab::harness::{self, run_cases};
use synguard_lab::kernel;
use synguard_lab::packet::PacketSocket;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 128 * 1024;
const REUSED_PORTS: std::ops::RangeInclusive<u16> = 40_000..=40_007;

#[test]
fn lab_carries_traffic_and_captures_the_kernels_synack() {
    let Some(_serial) = harness::start("lab", &[]) else {
        return;
    };
    let lab = Lab::new().expect("building the lab");
    let (server_ns, client_ns) = (
        lab.server().name().to_owned(),
        lab.client().name().to_owned(),
    );
    assert!(
        kernel::xdp_prog_id(lab.client_iface()).unwrap().is_some(),
        "the client veth has no pass-through XDP program"
    );
    let _server = PayloadServer::start(lab.server(), PORT, PAYLOAD, Protocol::ServerFirst)
        .expect("starting the server");
    run_cases("lab", Family::ALL, |&family| {
        download(&lab, family)?;
        kernel_synack(&lab, family)
    });
    drop(lab);
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.contains(&server_ns) && !left.contains(&client_ns),
        "namespaces left behind:\n{left}"
    );
}

fn download(lab: &Lab, family: Family) -> Result<()> {
    let target = lab.server_addr(family, PORT);
    for config in [
        ClientConfig::new(target, Protocol::ServerFirst, PAYLOAD, 5),
        ClientConfig::new(target, Protocol::ServerFirst, PAYLOAD, 100).source_ports(REUSED_PORTS),
    ] {
        let report = client::run(lab.client(), config)?;
        println!("{family} without synguard: {}", report.summary());
        ensure!(
            report.failures.is_empty(),
            "failures: {:?}",
            report.failures
        );
    }
    Ok(())
}

fn kernel_synack(lab: &Lab, family: Family) -> Result<()> {
    let capture = Capture::start(lab.client(), lab.client_iface().name())?;
    let socket = PacketSocket::open(
        lab.client(),
        lab.client_iface().name(),
        Duration::from_millis(100),
    )?;
    let syn = TcpFrame {
        l2: lab.client_to_server(None)?,
        src: lab.client_ip(family),
        dst: lab.server_ip(family),
        sport: 50_001,
        dport: PORT,
        seq: 0x1234_5678,
        segment: Segment::Syn {
            style: OptionStyle::Linux,
            tsval: 4242,
        },
    };
    socket.send(&syn.build()?)?;
    let replies = capture.wait_for(1, Duration::from_secs(2), |s| {
        s.is_synack() && s.dport == syn.sport
    })?;
    let reply = replies
        .first()
        .ok_or_else(|| anyhow::anyhow!("no SYN-ACK captured"))?;
    // The kernel leaves the TCP checksum to the veth's offload, so only check it when it is there.
    ensure!(
        reply.ip_checksum_ok && (reply.tcp_checksum_ok || reply.checksum_offloaded),
        "bad checksums: {reply:?}"
    );
    ensure!(
        reply.ack == syn.seq.wrapping_add(1),
        "ack {} for seq {}",
        reply.ack,
        syn.seq
    );
    ensure!(
        reply.timestamps().map(|t| t.1) == Some(4242),
        "TSecr: {reply:?}"
    );
    Ok(())
}
