//! Faults from outside while the daemon runs (IPv4, native XDP):
//!
//! - An interface synguard protects is deleted: the daemon logs it and keeps protecting the
//!   other one (a client there still connects through XDP cookies); once the last one is
//!   deleted too, the daemon exits non-zero saying that no interface is left. With pins, the
//!   deleted interface's pin directory goes at once and the other's stays.
//! - `nft delete table inet synguard` from outside, then `nft flush chain inet synguard input`
//!   (the table stays, its synproxy rules go): each time the daemon logs a warning naming what
//!   it found (deleted, changed), the table is the same as before, and a legitimate client
//!   connects through it. (`firewall.rs` times it against a flood.)

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use synguard_common::Counter;
use synguard_lab::bpffs::Bpffs;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::daemon::{Daemon, XdpMode};
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::kernel::{self, Counters, xdp_prog_id};
use synguard_lab::netns::Netns;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{ClientLink, Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 4 * 1024;
const CONNECTIONS: usize = 5;
const TABLE: &str = "inet synguard";
/// The daemon restores the table on the change event (milliseconds) or else on its 10 s poll:
/// detected within a few seconds.
const DETECT: Duration = Duration::from_secs(5);
/// Shutdown after the last interface went: detection plus the clean-up.
const EXIT: Duration = Duration::from_secs(15);

/// `CONNECTIONS` connections from `client` to its server address, all of which must succeed;
/// XDP must have answered their SYNs (`syn_cookie_sent` of program `prog` moves).
fn connects_through_xdp(client: &ClientLink, prog: u32) -> Result<()> {
    let before = Counters::read(prog)?;
    let report = client::run(
        client.netns(),
        ClientConfig::new(
            client.server_addr(Family::V4, PORT),
            Protocol::RequestFirst,
            PAYLOAD,
            CONNECTIONS,
        ),
    )?;
    let delta = Counters::read(prog)?.since(&before);
    ensure!(
        report.successes() == CONNECTIONS,
        "client on {}: {}",
        client.server_iface().name(),
        report.summary()
    );
    let sent = delta.get(Counter::SynCookieSent);
    ensure!(
        sent >= CONNECTIONS as u64,
        "client on {}: syn_cookie_sent rose by {sent} for {CONNECTIONS} connections ({delta})",
        client.server_iface().name()
    );
    Ok(())
}

/// Deletes the server's end of `client`'s veth pair (its peer goes with it).
fn delete_link(server: &Netns, client: &ClientLink) -> Result<()> {
    server
        .ip(&["link", "del", "dev", client.server_iface().name()])
        .map(drop)
}

#[test]
fn deleted_interfaces_are_dropped_until_none_is_left() {
    let Some(_serial) = harness::start("faults", &[Need::Daemon]) else {
        return;
    };
    let cases = ["IPv4 native, no pins", "IPv4 native, --pin-dir"];
    run_cases("faults: interface deleted", cases, |case| {
        let bpffs = case.ends_with("--pin-dir").then(Bpffs::mount).transpose()?;
        let lab = Lab::with_second_client()?;
        let (a, b) = (lab.first_client(), lab.second_client()?);
        let _server = PayloadServer::start(lab.server(), PORT, PAYLOAD, Protocol::RequestFirst)?;
        let mut daemon = Daemon::start(
            lab.server(),
            a.server_iface().name(),
            &PORT.to_string(),
            XdpMode::Native,
            &[
                &["--iface", b.server_iface().name()][..],
                &bpffs
                    .as_ref()
                    .map_or(vec![], |p| vec!["--pin-dir", p.arg()]),
            ]
            .concat(),
        )?;
        let prog = xdp_prog_id(a.server_iface())?
            .ok_or_else(|| anyhow!("no XDP program on {}", a.server_iface().name()))?;
        connects_through_xdp(a, prog)?;
        connects_through_xdp(b, prog)?;

        let gone = b.server_iface().name();
        delete_link(lab.server(), b)?;
        let deleted_at = Instant::now();
        let line = daemon
            .wait_for_line(&format!("interface {gone} "), DETECT)
            .context("the deletion of the second interface was not logged")?;
        println!("after {:.1?}: {line}", deleted_at.elapsed());
        ensure!(
            line.contains("was deleted") && line.contains(a.server_iface().name()),
            "the log line should say that {gone} was deleted and name the interface left: {line}"
        );
        if let Some(bpffs) = &bpffs {
            let dir = |iface: &str| bpffs.path().join(iface);
            ensure!(
                !dir(gone).exists() && dir(a.server_iface().name()).join("link").exists(),
                "pins: the deleted interface's directory should be gone, the other's link stay"
            );
        }
        // Still running, still answering on the other interface.
        sleep(Duration::from_millis(500));
        ensure!(
            !daemon.log().contains("no interface left"),
            "the daemon stops with an interface left:\n{}",
            daemon.log()
        );
        connects_through_xdp(a, prog)?;

        delete_link(lab.server(), a)?;
        let line = daemon
            .wait_for_line("error: no interface left", EXIT)
            .context("the daemon did not stop after its last interface was deleted")?;
        let exit = daemon.stop()?;
        println!("then: {line} ({})", exit.status);
        ensure!(
            !exit.status.success() && exit.status.code().is_some(),
            "the daemon should exit non-zero by itself once no interface is left, exited with {}:\n{}",
            exit.status,
            exit.log
        );
        ensure!(
            line.contains(gone) && line.contains(a.server_iface().name()),
            "the error should name the deleted interfaces: {line}"
        );
        let tables = kernel::nft_tables(lab.server())?;
        ensure!(
            !tables.iter().any(|t| t == TABLE),
            "table {TABLE} left behind after the exit: {tables:?}\n{}",
            exit.log
        );
        Ok(())
    });
}

#[test]
fn a_deleted_or_changed_table_is_restored() {
    let Some(_serial) = harness::start("faults", &[Need::Daemon]) else {
        return;
    };
    run_cases("faults: table deleted or changed", ["IPv4 native"], |_| {
        let bench = Bench::protecting(PORT, PAYLOAD, XdpMode::Native)?;
        let (lab, mut daemon) = (&bench.lab, bench.daemon);
        let server = lab.server();
        let listed = |netns: &Netns| netns.exec("nft", &["list", "table", "inet", "synguard"]);
        let original = listed(server)?;
        let prog = xdp_prog_id(lab.server_iface())?
            .ok_or_else(|| anyhow!("no XDP program on {}", lab.server_iface().name()))?;

        let changes: [(&[&str], &str); 2] = [
            (&["delete", "table", "inet", "synguard"], "deleted"),
            (&["flush", "chain", "inet", "synguard", "input"], "changed"),
        ];
        for (change, found) in changes {
            server.exec("nft", change)?;
            let changed_at = Instant::now();
            let line = daemon
                .wait_for_line(&format!("was {found} from outside"), DETECT)
                .with_context(|| format!("`nft {}`: no restore logged", change.join(" ")))?;
            println!(
                "`nft {}`: logged after {:.1?}: {line}",
                change.join(" "),
                changed_at.elapsed()
            );
            ensure!(
                line.contains("WARN") && line.contains("restored it"),
                "the restore should be a warning: {line}"
            );
            let restored = listed(server)?;
            ensure!(
                restored == original,
                "the restored table differs:\nbefore:\n{original}\nafter:\n{restored}"
            );
        }
        connects_through_xdp(lab.first_client(), prog)?;

        let exit = daemon.stop()?;
        exit.ensure_success()?;
        ensure!(
            !kernel::nft_tables(server)?.iter().any(|t| t == TABLE),
            "table {TABLE} left behind after the exit"
        );
        Ok(())
    });
}
