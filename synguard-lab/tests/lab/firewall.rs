//! Living with the host's firewall (IPv4, native XDP, a bounded hping3 SYN flood from the
//! attacker namespace, a legitimate client connecting all along):
//!
//! - `nft flush ruleset` three times, 2 s apart: each time the daemon sees the change on
//!   netlink and puts its table back within a second (the table is listed again, the restores
//!   are logged and counted in `synguard_nft_table_restores_total`), and no stretch of failed
//!   connections is as long as a second (each attempt times out after 200 ms).
//! - A user ruleset whose input chain drops by policy, installed before synguard and reloaded
//!   (its table recreated) after synguard started, so that its chain is the later registered:
//!   while it accepts established connections and synproxy's packets to the listener (`iif
//!   lo`, or the port) legitimate clients connect through XDP cookies and synproxy during the
//!   flood, even if it accepts the port only for `ct state new` or drops `ct state invalid`
//!   first (synguard's chain runs before filter-priority chains); without the established
//!   accept every connection fails. A port the chain does not accept stays closed (the policy
//!   is really in the path).

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use synguard_common::Counter;
use synguard_lab::client::{self, ClientConfig, ClientReport, LegitClient};
use synguard_lab::daemon::XdpMode;
use synguard_lab::flood::{Flood, FloodKind};
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::kernel::{self, Counters};
use synguard_lab::netns::{Iface, Netns};
use synguard_lab::scratch::ScratchDir;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{Family, Lab};

use synguard_lab::metrics::{DEFAULT_ADDR, sample, scrape};

const PORT: u16 = 8080;
/// Served but neither protected nor accepted by the user ruleset.
const CLOSED_PORT: u16 = 9090;
const PAYLOAD: usize = 1024;
const TABLE: &str = "inet synguard";
const FLUSHES: u32 = 3;
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// The flood covers the flushes with a second to spare on each side.
const FLOOD: Duration = Duration::from_secs(8);
/// A failed attempt ends within this, so a stretch of failures is measured finely (a lost
/// SYN would otherwise cost TCP's 1 s retransmission).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);
const ATTEMPT_EVERY: Duration = Duration::from_millis(20);
/// The issue's bound on the table's absence and on failed handshakes.
const RESTORE_BOUND: Duration = Duration::from_secs(1);
const COEXIST_FLOOD: Duration = Duration::from_secs(4);
const COEXIST_INTERVAL: Duration = Duration::from_millis(40);
/// A connection that works here takes milliseconds.
const COEXIST_TIMEOUT: Duration = Duration::from_millis(500);

const NEEDS: [Need; 4] = [
    Need::Daemon,
    Need::Tool("hping3"),
    Need::Tool("timeout"),
    Need::Tool("curl"),
];

/// A lab with an attacker, serving [`PORT`], synguard protecting it on the server's veths.
fn bench(lab: Lab) -> Result<Bench> {
    let attacker_end = lab.attacker()?.server_iface().name().to_owned();
    Bench::start(
        lab,
        PORT,
        PAYLOAD,
        &PORT.to_string(),
        XdpMode::Native,
        &["--iface", &attacker_end],
    )
}

/// A client connecting every [`ATTEMPT_EVERY`] until stopped; an attempt fails once its
/// connect, or a read of the payload, waits [`ATTEMPT_TIMEOUT`].
fn tight_client(lab: &Lab) -> Result<LegitClient> {
    let config = ClientConfig {
        connections: usize::MAX,
        io_timeout: ATTEMPT_TIMEOUT,
        ..ClientConfig::new(
            lab.server_addr(Family::V4, PORT),
            Protocol::RequestFirst,
            PAYLOAD,
            0,
        )
        .connect_timeout(ATTEMPT_TIMEOUT)
        .interval(ATTEMPT_EVERY)
    };
    LegitClient::spawn(lab.client(), config)
}

fn table_listed(server: &Netns) -> Result<bool> {
    Ok(kernel::nft_tables(server)?.iter().any(|t| t == TABLE))
}

/// Waits until the table is listed again; how long that took.
fn wait_for_table(server: &Netns, since: Instant) -> Result<Duration> {
    loop {
        if table_listed(server)? {
            return Ok(since.elapsed());
        }
        ensure!(
            since.elapsed() < RESTORE_BOUND,
            "table {TABLE} not back within {RESTORE_BOUND:?}"
        );
        sleep(Duration::from_millis(5));
    }
}

fn describe(report: &ClientReport) -> String {
    format!(
        "{}; longest failure {:.0?}; first failures: {:?}",
        report.summary(),
        report.longest_failure(),
        report.failures.iter().take(5).collect::<Vec<_>>()
    )
}

#[test]
fn flushed_ruleset_is_restored_within_a_second_during_a_flood() {
    let Some(_serial) = harness::start("firewall flush", &NEEDS) else {
        return;
    };
    run_cases("firewall: nft flush ruleset", ["IPv4 native"], |_| {
        let bench = bench(Lab::with_attacker()?)?;
        let lab = &bench.lab;
        let server = lab.server();
        let target = lab.server_addr(Family::V4, PORT);
        let before = Counters::of(lab.server_iface())?;
        let flood = Flood::start_from(lab.attacker()?, FloodKind::Syn, target.ip(), PORT, FLOOD)?;
        let legit = tight_client(lab)?;
        let mut back_after = Vec::new();
        for _ in 0..FLUSHES {
            sleep(FLUSH_EVERY);
            server.exec("nft", &["flush", "ruleset"])?;
            let flushed = Instant::now();
            back_after.push(wait_for_table(server, flushed).context("after a flush")?);
        }
        let sent = flood.wait()?;
        legit.stop();
        let report = legit.join()?;
        let counters = Counters::of(lab.server_iface())?.since(&before);
        let ifaces = [lab.server_iface(), lab.attacker()?.server_iface()].map(Iface::name);
        let restores = sample(
            &scrape(lab, DEFAULT_ADDR)?,
            &format!(
                r#"synguard_nft_table_restores_total{{iface="{}"}}"#,
                ifaces.join(",")
            ),
        )?;
        let log = bench.daemon.log();
        let restored: Vec<&str> = log.lines().filter(|l| l.contains("restored it")).collect();
        println!(
            "flood: {} SYNs in {:.1?} ({:.0}/s); synguard: {counters}",
            sent.sent,
            sent.elapsed,
            sent.rate()
        );
        println!("table listed again after {back_after:.1?}");
        println!(
            "restores: {restores} (metric); log:\n{}",
            restored.join("\n")
        );
        println!("legit: {}", describe(&report));

        ensure!(
            counters.get(Counter::SynCookieSent) > sent.sent / 2,
            "XDP answered {} of the flood's {} SYNs",
            counters.get(Counter::SynCookieSent),
            sent.sent
        );
        ensure!(
            restores == f64::from(FLUSHES) && restored.len() == FLUSHES as usize,
            "{FLUSHES} flushes: {restores} restores counted, {} logged",
            restored.len()
        );
        ensure!(
            restored.iter().all(|l| l.contains("WARN")
                && l.contains("was deleted from outside synguard")
                && l.contains("after the change")),
            "each restore should be a warning saying when: {restored:?}"
        );
        ensure!(
            report.longest_failure() < RESTORE_BOUND,
            "connections kept failing for {:.0?}: {}",
            report.longest_failure(),
            describe(&report)
        );
        // Connections kept succeeding between the flushes, not only before them.
        ensure!(
            report.successes() as f64
                > 0.5 * report.elapsed.as_secs_f64() / ATTEMPT_EVERY.as_secs_f64(),
            "too few connections succeeded: {}",
            describe(&report)
        );
        Ok(())
    });
}

/// A user's input chain, installed before synguard: it drops by policy and accepts with
/// `rules` (`PORT` stands for the protected port); whether the hand-off works beside it.
struct UserChain {
    name: &'static str,
    rules: &'static [&'static str],
    hand_off: bool,
}

impl std::fmt::Display for UserChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl UserChain {
    fn ruleset(&self) -> String {
        let rules: String = self
            .rules
            .iter()
            .map(|rule| format!("        {}\n", rule.replace("PORT", &PORT.to_string())))
            .collect();
        format!(
            "table inet filter {{\n    chain input {{\n        type filter hook input priority 0; policy drop;\n{rules}    }}\n}}\n"
        )
    }
}

const USER_CHAINS: [UserChain; 5] = [
    UserChain {
        name: "established, lo and the port accepted (the README's)",
        rules: &[
            "ct state established,related accept",
            "iif lo accept",
            "tcp dport PORT accept",
        ],
        hand_off: true,
    },
    UserChain {
        name: "established and the port accepted, no lo",
        rules: &[
            "ct state established,related accept",
            "tcp dport PORT accept",
        ],
        hand_off: true,
    },
    UserChain {
        name: "the port accepted for new connections only",
        rules: &[
            "ct state established,related accept",
            "iif lo accept",
            "tcp dport PORT ct state new accept",
        ],
        hand_off: true,
    },
    UserChain {
        name: "invalid dropped before the port is accepted",
        rules: &[
            "ct state invalid drop",
            "ct state established,related accept",
            "iif lo accept",
            "tcp dport PORT accept",
        ],
        hand_off: true,
    },
    UserChain {
        name: "the port accepted, nothing established",
        rules: &["iif lo accept", "tcp dport PORT ct state new accept"],
        hand_off: false,
    },
];

#[test]
fn user_rulesets_that_drop_by_policy() {
    let Some(_serial) = harness::start("firewall coexistence", &NEEDS) else {
        return;
    };
    run_cases("firewall: policy drop user ruleset", USER_CHAINS, |chain| {
        let lab = Lab::with_attacker()?;
        // In the server namespace: it goes with it.
        let files = ScratchDir::create()?;
        let ruleset = files.write("user.nft", chain.ruleset())?;
        lab.server()
            .exec("nft", &["-f", &ruleset.to_string_lossy()])?;
        let _closed =
            PayloadServer::start(lab.server(), CLOSED_PORT, PAYLOAD, Protocol::RequestFirst)?;
        let bench = bench(lab)?;
        let lab = &bench.lab;
        let target = lab.server_addr(Family::V4, PORT);
        // The user reloads their own table (not the whole ruleset): their chain is now
        // registered after synguard's, and of two base chains of one priority the later
        // one runs first.
        let reload = files.write(
            "reload.nft",
            format!("delete table inet filter\n{}", chain.ruleset()),
        )?;
        lab.server()
            .exec("nft", &["-f", &reload.to_string_lossy()])?;

        let before = Counters::of(lab.server_iface())?;
        let synproxy_before = kernel::synproxy(lab.server())?;
        let flood = Flood::start_from(
            lab.attacker()?,
            FloodKind::Syn,
            target.ip(),
            PORT,
            COEXIST_FLOOD,
        )?;
        let legit = LegitClient::spawn(
            lab.client(),
            ClientConfig {
                connections: usize::MAX,
                io_timeout: COEXIST_TIMEOUT,
                ..ClientConfig::new(target, Protocol::RequestFirst, PAYLOAD, 0)
                    .interval(COEXIST_INTERVAL)
                    .connect_timeout(COEXIST_TIMEOUT)
            },
        )?;
        let sent = flood.wait()?;
        legit.stop();
        let report = legit.join()?;
        let counters = Counters::of(lab.server_iface())?.since(&before);
        let synproxy = kernel::synproxy(lab.server())?.since(&synproxy_before);
        let closed = client::run(
            lab.client(),
            ClientConfig::new(
                lab.server_addr(Family::V4, CLOSED_PORT),
                Protocol::RequestFirst,
                PAYLOAD,
                1,
            )
            .connect_timeout(COEXIST_TIMEOUT),
        )?;
        println!("user chain:\n{}", chain.ruleset());
        println!("flood: {} SYNs; synguard: {counters}", sent.sent);
        println!(
            "SYNPROXY: {}",
            synproxy.show(&["cookie_valid", "cookie_invalid"])
        );
        println!("legit: {}", describe(&report));
        println!("port {CLOSED_PORT}: {:?}", closed.failures);

        ensure!(
            counters.get(Counter::SynCookieSent) > sent.sent / 2,
            "XDP should have answered the flood with cookies: {counters}"
        );
        ensure!(
            closed.successes() == 0,
            "port {CLOSED_PORT}, not accepted by the user's chain, answered: the policy is not in the path"
        );
        if chain.hand_off {
            ensure!(
                report.successes() >= 50 && report.failures.is_empty(),
                "legitimate connections beside the user ruleset: {}",
                describe(&report)
            );
            // A SYN whose 4-tuple the server still holds in TIME_WAIT goes to the kernel
            // (`syn_known_socket`), not through a cookie.
            let through_cookies =
                (report.successes() as u64).saturating_sub(counters.get(Counter::SynKnownSocket));
            ensure!(
                counters.get(Counter::AckCookieValid) >= through_cookies
                    && synproxy.get("cookie_valid") >= through_cookies,
                "XDP and synproxy should have validated a cookie per connection but those to a TIME_WAIT 4-tuple ({through_cookies}): {counters}; SYNPROXY {}",
                synproxy.show(&["cookie_valid"])
            );
        } else {
            ensure!(
                report.successes() == 0 && !report.failures.is_empty(),
                "this user chain should break the hand-off: {}",
                describe(&report)
            );
        }
        Ok(())
    });
}
