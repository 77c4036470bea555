//! The config file: `synguard check-config` accepts the packaged file and rejects an unknown
//! key and a bad value, naming the key and the line, with a non-zero exit code, and touches
//! nothing (no nftables table, no XDP program in the namespace it runs in); and flags given on
//! the command line override the file's values.

use std::path::Path;

use anyhow::ensure;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::daemon::{Daemon, XdpMode, run_once};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::kernel::{nft_tables, xdp_prog_id};
use synguard_lab::scratch::ScratchDir;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 1024;

/// A config file for `check-config` and what it must answer.
struct Case {
    name: &'static str,
    /// `None`: the packaged `packaging/synguard.toml`.
    text: Option<&'static str>,
    /// `None`: accepted; else a part of the one-line error (after the file name).
    error: Option<&'static str>,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

#[test]
fn check_config_validates_without_touching_the_system() {
    let Some(_serial) = harness::start("check-config", &[Need::Daemon]) else {
        return;
    };
    let cases = [
        Case {
            name: "packaged",
            text: None,
            error: None,
        },
        Case {
            name: "unknown key",
            text: Some("iface = [\"eth0\"]\nports = [80]\n# a typo\nmss5 = 1400\n"),
            error: Some(":4: key `mss5`: unknown field `mss5`"),
        },
        Case {
            name: "bad value",
            text: Some("iface = [\"eth0\"]\nports = [80, \"443-8000\"]\n\nmss4 = 100\n"),
            error: Some(":4: key `mss4`: 100 is out of range (536-9000)"),
        },
    ];
    run_cases("check-config", cases, |case| {
        let lab = Lab::new()?;
        let scratch = ScratchDir::create()?;
        let path = match case.text {
            Some(text) => scratch.write("synguard.toml", text)?,
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/synguard.toml"),
        };
        let shown = path.display().to_string();
        let (ok, out) = run_once(lab.server(), &["check-config", &shown])?;
        println!("check-config {}: {}", case.name, out.trim());
        match case.error {
            None => ensure!(ok && out.contains(": ok"), "rejected: {out}"),
            Some(error) => ensure!(
                !ok && out.trim().lines().count() == 1 && out.contains(&format!("{shown}{error}")),
                "expected one line with `{shown}{error}` and a failure, got success {ok}: {out}"
            ),
        }
        let tables = nft_tables(lab.server())?;
        ensure!(
            tables.is_empty(),
            "check-config made nftables tables: {tables:?}"
        );
        ensure!(
            xdp_prog_id(lab.server_iface())?.is_none(),
            "check-config attached XDP"
        );
        Ok(())
    });
}

#[test]
fn flags_override_the_file() {
    let Some(_serial) = harness::start("config override", &[Need::Daemon]) else {
        return;
    };
    run_cases(
        "config override",
        ["--iface, --ports, --mss4 over the file"],
        |_| {
            let lab = Lab::new()?;
            let scratch = ScratchDir::create()?;
            // An interface that does not exist and another port: the flags must win, or the
            // daemon would not start or would protect the wrong port.
            let path = scratch.write(
            "synguard.toml",
            "iface = [\"sglnosuchif\"]\nports = [9999]\nsyncookies = \"always\"\nmss4 = 1400\nmss6 = 1380\n",
        )?;
            let _server =
                PayloadServer::start(lab.server(), PORT, PAYLOAD, Protocol::RequestFirst)?;
            let daemon = Daemon::start(
                lab.server(),
                lab.server_iface().name(),
                &PORT.to_string(),
                XdpMode::Native,
                &["--config", &path.display().to_string(), "--mss4", "1300"],
            )?;
            // IPv4: the flag's MSS; IPv6: the file's.
            for (family, expected) in [(Family::V4, 1300), (Family::V6, 1380)] {
                let config = ClientConfig::new(
                    lab.server_addr(family, PORT),
                    Protocol::RequestFirst,
                    PAYLOAD,
                    1,
                );
                let (report, synacks) =
                    client::run_captured(lab.client(), lab.client_iface(), config)?;
                let seen: Vec<_> = synacks.iter().map(|s| (s.window, s.mss())).collect();
                println!(
                    "{family}: SYN-ACK (window, MSS) {seen:?}; {}",
                    report.summary()
                );
                ensure!(
                    report.failures.is_empty(),
                    "{family}: {:?}",
                    report.failures
                );
                ensure!(
                    !seen.is_empty() && seen.iter().all(|s| *s == (0, Some(expected))),
                    "{family}: expected XDP SYN-ACKs with MSS {expected}, got {seen:?}"
                );
            }
            daemon.stop()?.ensure_success()
        },
    );
}
