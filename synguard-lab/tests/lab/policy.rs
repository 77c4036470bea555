//! Source policy lists, from flags, from list files and from config keys, IPv4 and IPv6.
//!
//! Both clients' subnets are denied; the second client's own address is allowed, a longer
//! prefix inside its denied subnet. So:
//! - client A (denied): its SYNs to the protected port are dropped in XDP (`drop_denylisted`),
//!   no SYN-ACK comes back and its connect times out (bounded here); a port synguard does not
//!   protect still works for it (the lists are scoped to protected ports);
//! - client B (allowed, longest prefix wins): its SYNs pass untouched (`pass_allowlisted`),
//!   the kernel answers with its own SYN-ACK (window ≠ 0, the kernel's MSS, not synguard's)
//!   and its connections work.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use synguard_common::Counter;
use synguard_lab::capture::TcpSegment;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::daemon::{Daemon, XdpMode};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::kernel::Counters;
use synguard_lab::scratch::ScratchDir;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{ClientLink, Family, Lab};

const PROTECTED: u16 = 8080;
const OPEN: u16 = 9090;
const PAYLOAD: usize = 10 * 1024;
const CONNECTIONS: usize = 5;
/// Not the kernel's 1460/1440, so a SYN-ACK from XDP or SYNPROXY would show.
const MSS4: &str = "1400";
const MSS6: &str = "1380";
/// How long the denied client waits for a handshake that cannot happen.
const DENIED_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the lists come from.
#[derive(Clone, Copy, Debug)]
enum Lists {
    /// `--deny A,B` and `--allow C`.
    Flags,
    /// `--deny-file` and `--allow-file`, with comments and blank lines.
    Files,
    /// `allow = [...]` and `deny_file = "..."` (relative to the config file) in `--config`.
    Config,
}

struct Case(Lists, Family);

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.1, self.0)
    }
}

/// The client's subnet: its /24 (IPv4) or /64 (IPv6).
fn subnet(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => {
            let [x, y, z, _] = a.octets();
            format!("{x}.{y}.{z}.0/24")
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The daemon's arguments for `lists`: deny both clients' subnets, allow B's own address.
fn list_args(
    lists: Lists,
    a: &ClientLink,
    b: &ClientLink,
    scratch: &ScratchDir,
) -> Result<Vec<String>> {
    let deny: Vec<String> = [a, b]
        .iter()
        .flat_map(|c| Family::ALL.map(|f| subnet(c.ip(f))))
        .collect();
    let allow: Vec<String> = Family::ALL.map(|f| b.ip(f).to_string()).into();
    let deny_file = format!(
        "# both lab clients' subnets\n{}\n\n# (blank lines and comments are skipped)\n{}  # second client\n{}\n",
        deny[0..2].join("\n"),
        deny[2],
        deny[3]
    );
    Ok(match lists {
        Lists::Flags => vec![
            "--deny".into(),
            deny.join(","),
            "--allow".into(),
            allow.join(","),
        ],
        Lists::Files => {
            let allow_file = format!("# the second client itself\n{}\n", allow.join("\n"));
            vec![
                "--deny-file".into(),
                scratch.write("deny.txt", &deny_file)?.display().to_string(),
                "--allow-file".into(),
                scratch
                    .write("allow.txt", &allow_file)?
                    .display()
                    .to_string(),
            ]
        }
        Lists::Config => {
            scratch.write("deny.txt", &deny_file)?;
            let quoted: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
            let config = format!(
                "# policy test\nsyncookies = \"always\"\n# the second client itself, inside its denied subnet\nallow = [{}]\ndeny_file = \"deny.txt\"  # relative to this file\n",
                quoted.join(", ")
            );
            vec![
                "--config".into(),
                scratch
                    .write("synguard.toml", &config)?
                    .display()
                    .to_string(),
            ]
        }
    })
}

#[test]
fn deny_and_allow_lists() {
    let Some(_serial) = harness::start("policy", &[Need::Daemon]) else {
        return;
    };
    let cases = [Lists::Flags, Lists::Files, Lists::Config]
        .into_iter()
        .flat_map(|lists| Family::ALL.map(|family| Case(lists, family)));
    run_cases("policy", cases, |Case(lists, family)| {
        let family = *family;
        let lab = Lab::with_second_client()?;
        let (a, b) = (lab.first_client(), lab.second_client()?);
        let scratch = ScratchDir::create()?;
        let _protected =
            PayloadServer::start(lab.server(), PROTECTED, PAYLOAD, Protocol::RequestFirst)?;
        let _open = PayloadServer::start(lab.server(), OPEN, PAYLOAD, Protocol::RequestFirst)?;
        let mut args: Vec<String> = [
            "--iface",
            b.server_iface().name(),
            "--mss4",
            MSS4,
            "--mss6",
            MSS6,
        ]
        .map(String::from)
        .into();
        args.extend(list_args(*lists, a, b, &scratch)?);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let daemon = Daemon::start(
            lab.server(),
            a.server_iface().name(),
            &PROTECTED.to_string(),
            XdpMode::Native,
            &args,
        )?;
        let config = |client: &ClientLink, port, count| {
            ClientConfig::new(
                client.server_addr(family, port),
                Protocol::RequestFirst,
                PAYLOAD,
                count,
            )
        };

        let before = Counters::of(a.server_iface())?;
        let (denied, synacks) = client::run_captured(
            a.netns(),
            a.iface(),
            config(a, PROTECTED, 1).connect_timeout(DENIED_TIMEOUT),
        )?;
        let delta = Counters::of(a.server_iface())?.since(&before);
        println!("denied client A: {}; synguard: {delta}", denied.summary());
        ensure!(
            denied.successes() == 0 && synacks.is_empty(),
            "denied client A connected or got a SYN-ACK: {synacks:?}"
        );
        ensure!(
            delta.get(Counter::DropDenylisted) >= 1 && delta.get(Counter::SynCookieSent) == 0,
            "A's SYN was not dropped as denylisted: {delta}"
        );
        let open = client::run(a.netns(), config(a, OPEN, CONNECTIONS))?;
        ensure!(
            open.failures.is_empty(),
            "denied client A to unprotected port {OPEN}: {:?}",
            open.failures
        );

        let before = Counters::of(a.server_iface())?;
        let (allowed, synacks) =
            client::run_captured(b.netns(), b.iface(), config(b, PROTECTED, CONNECTIONS))?;
        let delta = Counters::of(a.server_iface())?.since(&before);
        println!("allowed client B: {}; synguard: {delta}", allowed.summary());
        ensure!(
            allowed.failures.is_empty(),
            "allowed client B: {:?}",
            allowed.failures
        );
        ensure!(
            delta.get(Counter::PassAllowlisted) >= CONNECTIONS as u64
                && delta.get(Counter::SynCookieSent) == 0
                && delta.get(Counter::DropDenylisted) == 0,
            "B's traffic was not passed as allowlisted: {delta}"
        );
        let kernel_made = |s: &TcpSegment| {
            s.window != 0
                && s.mss()
                    .is_some_and(|m| m.to_string() != MSS4 && m.to_string() != MSS6)
        };
        let seen: Vec<_> = synacks.iter().map(|s| (s.window, s.mss())).collect();
        ensure!(
            synacks.len() >= CONNECTIONS && synacks.iter().all(kernel_made),
            "B's SYN-ACKs (window, MSS) are not all the kernel's own (window 0 or synguard's MSS {MSS4}/{MSS6} would be XDP's or SYNPROXY's): {seen:?}"
        );
        println!("B's SYN-ACKs (window, MSS), all the kernel's: {seen:?}");
        let exit = daemon.stop()?;
        exit.ensure_success()?;
        println!("daemon: {}", exit.totals().unwrap_or("(no totals)"));
        Ok(())
    });
}
