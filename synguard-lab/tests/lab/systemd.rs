//! systemd integration: the daemon's `sd_notify` messages on a socket the test owns
//! (READY=1 with a STATUS= after attach, RELOADING=1 with MONOTONIC_USEC then READY=1 around
//! SIGHUP, STOPPING=1 at shutdown), and `systemd-analyze verify` on the packaged unit.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::signal::Signal;
use synguard_lab::daemon::{Daemon, XdpMode, binary};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::netns::unique_id;
use synguard_lab::process::run_quiet;
use synguard_lab::topology::Lab;

/// Reads datagrams until one contains `needle`; returns everything read.
fn wait_for(socket: &UnixDatagram, needle: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]);
                seen.push_str(&message);
                seen.push('\n');
                if message.contains(needle) {
                    return Ok(seen);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("reading the notify socket"),
        }
    }
    bail!("no `{needle}` within 15 s; messages:\n{seen}")
}

#[test]
fn notify_messages() {
    let Some(_serial) = harness::start("notify", &[Need::Daemon]) else {
        return;
    };
    run_cases("notify", ["IPv4 skb"], |_| {
        let lab = Lab::new()?;
        let path = format!("/run/{}-notify.sock", unique_id());
        let socket = UnixDatagram::bind(&path).with_context(|| format!("binding {path}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let result = (|| {
            let daemon = Daemon::start_with_env(
                lab.server(),
                lab.server_iface().name(),
                "8080",
                XdpMode::Skb,
                &["--stats-interval", "1"],
                &[("NOTIFY_SOCKET", &path)],
            )?;
            let ready = wait_for(&socket, "READY=1")?;
            ensure!(
                ready.contains("STATUS=syncookies always; packets="),
                "READY=1 without a STATUS=: {ready}"
            );
            let status = wait_for(&socket, "STATUS=")?;
            println!("status update: {}", status.trim());
            daemon.signal(Signal::SIGHUP)?;
            let reload = wait_for(&socket, "RELOADING=1")?;
            ensure!(
                reload.contains("MONOTONIC_USEC="),
                "RELOADING=1 without MONOTONIC_USEC: {reload}"
            );
            wait_for(&socket, "READY=1")?;
            let exit = daemon.stop()?;
            exit.ensure_success()?;
            wait_for(&socket, "STOPPING=1")?;
            Ok(())
        })();
        let _ = fs::remove_file(&path);
        result
    });
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(_serial) = harness::start(
        "systemd-analyze",
        &[Need::Daemon, Need::Tool("systemd-analyze")],
    ) else {
        return;
    };
    run_cases("systemd-analyze verify", ["synguard.service"], |unit| {
        let packaged = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/systemd")
            .join(unit);
        let text = fs::read_to_string(&packaged)
            .with_context(|| format!("reading {}", packaged.display()))?;
        // verify checks that the executables exist: point it at the built daemon.
        let dir = Path::new("/run").join(format!("{}-unit", unique_id()));
        fs::create_dir_all(&dir)?;
        let copy = dir.join(unit);
        let binary = binary()?;
        fs::write(
            &copy,
            text.replace("/usr/bin/synguard", &binary.to_string_lossy()),
        )?;
        let verified = run_quiet(Command::new("systemd-analyze").arg("verify").arg(&copy));
        let _ = fs::remove_dir_all(&dir);
        verified
    });
}
