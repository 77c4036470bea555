//! Hostile packets through the real XDP program, loaded (not attached) by the daemon's loader
//! and run with `BPF_PROG_TEST_RUN`, one packet per call. Each verdict, counter delta and
//! SYN-ACK is compared with a reference model written from the specification
//! (`support::model`); SYN-ACKs are parsed with `etherparse`. Needs root; prints `SKIP` without.

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use aya::programs::ProgramError;
use clap::Parser as _;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use synguard::datapath::maps::DatapathState;
use synguard::settings::cli::Cli;
use synguard::settings::merge::Settings;
use synguard_common::{Counter, DatapathConfig, PerSourceAction, SyncookieMode};
use synguard_lab::capture::TcpSegment;
use synguard_lab::harness::{self, Need};

use support::bench::Bench;
use support::corpus::{Case, JUMBO, PROTECTED, base, corpus};
use support::frame::{ACK, Family, Ip, RST, Spec, TPID_8021AD, TPID_8021Q, opt};
use support::model::{Listed, Policy};
use support::strategies;

/// Reply tunables unlike the defaults, to prove the program reads `SG_CONFIG`.
const CUSTOM: DatapathConfig = DatapathConfig {
    mss4: 1380,
    mss6: 1360,
    wscale: 11,
    ttl: 99,
    ..DatapathConfig::DEFAULT
};

const RANDOM_CASES: u32 = 4000;
const MUTATED_CASES: u32 = 4000;

#[test]
fn corpus_with_default_config() {
    check_corpus(DatapathConfig::DEFAULT, |case| case.category != JUMBO);
}

#[test]
fn corpus_with_custom_config() {
    check_corpus(CUSTOM, |case| case.category != JUMBO);
}

/// Mode `off`: every SYN goes to the kernel, invalid ACKs pass.
#[test]
fn corpus_in_mode_off() {
    let off = DatapathConfig {
        syncookies: SyncookieMode::Off as u8,
        ..DatapathConfig::DEFAULT
    };
    check_corpus(off, |case| case.category != JUMBO);
}

/// Mode `auto` before any port is under pressure: the kernel answers, invalid ACKs drop.
#[test]
fn corpus_in_mode_auto() {
    let auto = DatapathConfig {
        syncookies: SyncookieMode::Auto as u8,
        ..DatapathConfig::DEFAULT
    };
    check_corpus(auto, |case| case.category != JUMBO);
}

/// Source lists, configured like an operator would (`--deny`, `--allow`): the corpus's IPv4
/// client is in a denied /24, its IPv6 client allowed inside a denied /32 (the longest prefix
/// wins).
#[test]
fn corpus_with_source_lists() {
    if !running_as_root() {
        return;
    }
    let ports: Vec<String> = PROTECTED.iter().map(u16::to_string).collect();
    let args = [
        "synguard",
        "--iface",
        "unused",
        "--ports",
        &ports.join(","),
        "--deny",
        "192.0.2.0/24,2001:db8::/32",
        "--allow",
        "2001:db8::1",
    ];
    let cli = Cli::try_parse_from(args).expect("the flags parse");
    let settings = Settings::load(&cli).expect("valid settings");
    let policy = Policy::new(&PROTECTED, settings.datapath)
        .list("192.0.2.0".parse().unwrap(), 24, Listed::Deny)
        .list("2001:db8::".parse().unwrap(), 32, Listed::Deny)
        .list("2001:db8::1".parse().unwrap(), 128, Listed::Allow);
    run_corpus(
        Bench::with(&DatapathState::of(&settings), policy),
        "source lists",
        |case| case.category != JUMBO,
    );
}

/// 9000-byte frames, judged like any other by the specification. BPF_PROG_TEST_RUN hands them
/// to the program as multi-buffer packets (see [`JUMBO`]); this fails while the datapath
/// judges such a packet by its linear part alone.
#[test]
fn jumbo_frames() {
    check_corpus(DatapathConfig::DEFAULT, |case| case.category == JUMBO);
}

/// Whether the tests can load XDP programs (root); prints the `SKIP` line when not (fails in
/// CI).
fn running_as_root() -> bool {
    harness::has("hostile_packets", &[Need::Root])
}

/// The client's ACK completing `reply`, a SYN-ACK of the program (see [`Spec::ack_for`]).
fn ack_for(reply: &[u8]) -> Spec {
    let synack = TcpSegment::parse(reply)
        .expect("a SYN-ACK etherparse decodes")
        .expect("a SYN-ACK carrying TCP");
    Spec::ack_for(&synack)
}

/// [`run_corpus`] on the program protecting [`PROTECTED`] with `config`.
fn check_corpus(config: DatapathConfig, select: fn(&Case) -> bool) {
    if !running_as_root() {
        return;
    }
    run_corpus(
        Bench::load(&PROTECTED, config),
        &format!("{config:?}"),
        select,
    );
}

/// Every selected corpus frame agrees with the model; so does the client's ACK to every
/// SYN-ACK, and that ACK carries a valid cookie.
fn run_corpus(mut bench: Bench, label: &str, select: fn(&Case) -> bool) {
    let started = Instant::now();
    let all = corpus();
    assert!(all.len() >= 200, "only {} cases", all.len());
    let cases: Vec<Case> = all.into_iter().filter(select).collect();
    let mut per_category: BTreeMap<&str, usize> = BTreeMap::new();
    let mut acks = 0;
    let mut failures = Vec::new();
    for case in &cases {
        *per_category.entry(case.category).or_default() += 1;
        let verdict = match bench.check(&case.spec.build()) {
            Ok(verdict) => verdict,
            Err(disagreement) => {
                failures.push(format!("{}:\n{disagreement}", case.name));
                continue;
            }
        };
        let Some(reply) = verdict.reply else { continue };
        acks += 1;
        match bench.check(&ack_for(&reply).build()) {
            Ok(ack) if ack.outcome == Counter::AckCookieValid => {}
            Ok(ack) => failures.push(format!(
                "{}: the client's ACK is {}, not ack_cookie_valid",
                case.name,
                ack.outcome.name()
            )),
            Err(disagreement) => {
                failures.push(format!("{}, the client's ACK:\n{disagreement}", case.name));
            }
        }
    }
    println!(
        "corpus ({label}): {} frames {per_category:?}, {acks} completing ACKs, {:?}",
        cases.len(),
        started.elapsed()
    );
    println!("model outcomes: {}", bench.outcome_summary());
    assert!(
        failures.is_empty(),
        "{} of {} corpus frames disagree with the model:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn frames_shorter_than_ethernet_are_refused() {
    if !running_as_root() {
        return;
    }
    let bench = Bench::load(&PROTECTED, DatapathConfig::DEFAULT);
    let frame = base(Family::V4, &[]).build();
    for len in 0..14 {
        let before = bench.counters();
        match bench.run(&frame[..len]) {
            Err(ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => panic!("{len}-byte frame: {e}, not EINVAL"),
            Ok(run) => panic!("{len}-byte frame ran: {:?}", run.action),
        }
        assert_eq!(bench.counters(), before, "{len}-byte frame moved counters");
    }
}

/// ACKs to SYN-ACKs the program sent. The kernel's cookie keeps the client's MSS index in its
/// low bits and recovers it from `ack - seq`, so an ACK off by a little still passes when the
/// index it implies is valid (0..=3): the two columns are a SYN with MSS 9000 (index 3) and one
/// without MSS (index 0).
#[test]
fn acks_to_our_syn_acks() {
    if !running_as_root() {
        return;
    }
    type Edit = fn(&mut Spec);
    let variants: &[(&str, Edit, [bool; 2])] = &[
        ("completing ACK", |_| {}, [true, true]),
        (
            "with data",
            |a| a.tcp.payload = vec![0x5a; 100],
            [true, true],
        ),
        (
            "with timestamps",
            |a| a.tcp.options = opt::timestamp(9, 9),
            [true, true],
        ),
        ("RST+ACK", |a| a.tcp.flags = ACK | RST, [true, true]),
        ("seq and ack + 1", |a| nudge(a, 1, 1), [true, true]),
        ("seq + 1", |a| nudge(a, 1, 0), [true, false]),
        // A bare ACK with seq - 1 is a zero-window probe after a lost handshake ACK: repaired.
        ("seq - 1", |a| nudge(a, -1, 0), [true, true]),
        // ack - seq one more than a completing ACK: also repaired as a probe.
        ("ack + 1", |a| nudge(a, 0, 1), [true, true]),
        ("ack - 1", |a| nudge(a, 0, -1), [true, false]),
        ("seq + 4", |a| nudge(a, 4, 0), [false, false]),
        ("ack + 4", |a| nudge(a, 0, 4), [false, true]),
        ("ack 0", |a| a.tcp.ack = 0, [false, false]),
        ("other source port", |a| a.tcp.sport ^= 1, [false, false]),
        (
            "other protected port",
            |a| a.tcp.dport = PROTECTED[1],
            [false, false],
        ),
        ("other client address", |a| other_client(a), [false, false]),
    ];
    let mut bench = Bench::load(&PROTECTED, DatapathConfig::DEFAULT);
    let mut failures = Vec::new();
    let mut runs = 0;
    for tags in [&[][..], &[TPID_8021Q], &[TPID_8021AD, TPID_8021Q]] {
        for family in [Family::V4, Family::V6] {
            for (column, options) in [opt::linux(9000), Vec::new()].into_iter().enumerate() {
                let syn = Spec::syn(family, tags, PROTECTED[0], &options);
                let reply = bench
                    .check(&syn.build())
                    .unwrap_or_else(|d| panic!("SYN {family:?} {tags:x?}:\n{d}"))
                    .reply
                    .expect("a SYN-ACK");
                let ack = ack_for(&reply);
                for (name, edit, valid) in variants {
                    let mut variant = ack.clone();
                    edit(&mut variant);
                    runs += 1;
                    let label = format!(
                        "{family:?} tags {tags:x?}, {}: {name}",
                        ["SYN with MSS 9000", "SYN without MSS"][column]
                    );
                    let want = if valid[column] {
                        Counter::AckCookieValid
                    } else {
                        Counter::AckCookieInvalid
                    };
                    match bench.check(&variant.build()) {
                        Ok(verdict) if verdict.outcome == want => {}
                        Ok(verdict) => failures.push(format!(
                            "{label}: {} (program and model), want {}",
                            verdict.outcome.name(),
                            want.name()
                        )),
                        Err(d) => failures.push(format!("{label}:\n{d}")),
                    }
                }
            }
        }
    }
    println!("{runs} ACKs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Per-source budgets (`--per-source-half-open 3 --per-source-invalid-ack 2`): completed
/// handshakes give half-open budget back; the SYN that takes a source over its budget, and
/// everything after it, drops; so does everything after the invalid ACK that takes a source
/// over; sources are accounted per prefix (an IPv6 /64 shares one budget). In `off` the same
/// frames are only counted; with `--per-source-action log` each source over a budget counts
/// `source_over_budget` once and its frames fare as any other source's.
#[test]
fn per_source_budgets() {
    if !running_as_root() {
        return;
    }
    use Counter::{
        AckCookieInvalid as Invalid, AckCookieValid as Valid, DropSourceBlocked as Blocked,
        SynCookieSent as Answered,
    };
    // The threshold the daemon sets for these budgets: every source is heavy from its first
    // attempt, so its counts are exact.
    let budgets = DatapathConfig {
        per_source_half_open: 3,
        per_source_invalid_ack: 2,
        track_threshold: synguard_common::track_threshold(3, 2, 2),
        ..DatapathConfig::DEFAULT
    };
    assert_eq!(budgets.track_threshold, 1);
    let off = DatapathConfig {
        syncookies: SyncookieMode::Off as u8,
        ..budgets
    };
    let log = DatapathConfig {
        per_source_action: PerSourceAction::Log as u8,
        ..budgets
    };
    for family in [Family::V4, Family::V6] {
        // `a` and `a2` share an IPv6 /64, not an IPv4 /32; `b` is elsewhere.
        let (a, a2, b) = (
            source(family, 0xa, 1),
            source(family, 0xa, 2),
            source(family, 0xb, 1),
        );
        let a2_after_block = if family == Family::V6 {
            Blocked
        } else {
            Answered
        };
        let mut steps: Vec<(Step, [u8; 16], Counter)> = Vec::new();
        for _ in 0..3 {
            steps.push((Step::Handshake, a, Valid));
        }
        steps.extend([
            (Step::Syn, a, Answered),
            (Step::Syn, a, Answered),
            (Step::Syn, a, Answered),
            (Step::Syn, a, Blocked),
            (Step::Syn, a, Blocked),
            (Step::InvalidAck, a, Blocked),
            (Step::Syn, a2, a2_after_block),
            (Step::InvalidAck, b, Invalid),
            (Step::InvalidAck, b, Invalid),
            (Step::InvalidAck, b, Invalid),
            (Step::Syn, b, Blocked),
        ]);
        for config in [budgets, off, log] {
            let label = format!(
                "{family:?} syncookies {}, per-source action {}",
                config.syncookie_mode(),
                config.per_source_action()
            );
            let mut bench = Bench::load(&PROTECTED, config);
            let before = bench.counters();
            let mut outcomes = Vec::new();
            for (i, (step, client, _)) in steps.iter().enumerate() {
                let outcome = step
                    .run(&mut bench, family, *client, 40_000 + i as u16)
                    .unwrap_or_else(|d| panic!("{label}, step {i} ({step:?}):\n{d}"));
                outcomes.push(outcome);
            }
            let counters = bench.counters().since(&before);
            let blocks = counters.values()[Counter::SourceBlocks as usize];
            let marks = counters.values()[Counter::SourceOverBudget as usize];
            if config.syncookies == SyncookieMode::Off as u8 {
                assert!(!outcomes.contains(&Blocked), "{label}: {outcomes:?}");
                assert_eq!((blocks, marks), (0, 0), "{label}");
            } else if config.per_source_action() == PerSourceAction::Log {
                let want: Vec<Counter> = steps
                    .iter()
                    .map(|(step, _, want)| match (step, want) {
                        (Step::InvalidAck, Blocked) => Invalid,
                        (_, Blocked) => Answered,
                        _ => *want,
                    })
                    .collect();
                assert_eq!(outcomes, want, "{label}");
                assert_eq!(
                    (blocks, marks),
                    (0, 2),
                    "{label}: one mark per source over a budget"
                );
            } else {
                let want: Vec<Counter> = steps.iter().map(|(_, _, want)| *want).collect();
                assert_eq!(outcomes, want, "{label}");
                assert_eq!(
                    (blocks, marks),
                    (2, 0),
                    "{label}: one block per source over a budget"
                );
            }
        }
    }
}

/// One step of [`per_source_budgets`].
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A SYN; if answered, the client's completing ACK (whose outcome is the step's).
    Handshake,
    Syn,
    /// A bare ACK that completes no cookie.
    InvalidAck,
}

impl Step {
    /// Runs the step from `client` port `sport`, checked against the model.
    fn run(
        self,
        bench: &mut Bench,
        family: Family,
        client: [u8; 16],
        sport: u16,
    ) -> Result<Counter, Box<support::bench::Disagreement>> {
        let mut spec = Spec::syn(family, &[], PROTECTED[0], &opt::linux(1460));
        match &mut spec.ip {
            Ip::V4(ip) => ip.src.copy_from_slice(&client[12..]),
            Ip::V6(ip) => ip.src = client,
        }
        spec.tcp.sport = sport;
        if let Step::InvalidAck = self {
            spec.tcp.flags = ACK;
            spec.tcp.ack = 0x0bad_0bad;
        }
        let verdict = bench.check(&spec.build())?;
        match (self, verdict.reply) {
            (Step::Handshake, Some(reply)) => Ok(bench.check(&ack_for(&reply).build())?.outcome),
            _ => Ok(verdict.outcome),
        }
    }
}

/// Address `host` of network `net`: `192.0.2.<net><host>` (one nibble each) for IPv4,
/// `2001:db8:0:<net>::<host>` for IPv6; IPv4 in the last four bytes.
fn source(family: Family, net: u8, host: u8) -> [u8; 16] {
    let mut addr = [0; 16];
    match family {
        Family::V4 => addr[12..].copy_from_slice(&[192, 0, 2, net << 4 | host]),
        Family::V6 => {
            addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            addr[7] = net;
            addr[15] = host;
        }
    }
    addr
}

fn nudge(ack: &mut Spec, seq: i32, ack_delta: i32) {
    ack.tcp.seq = ack.tcp.seq.wrapping_add_signed(seq);
    ack.tcp.ack = ack.tcp.ack.wrapping_add_signed(ack_delta);
}

fn other_client(ack: &mut Spec) {
    match &mut ack.ip {
        Ip::V4(ip) => ip.src[3] ^= 1,
        Ip::V6(ip) => ip.src[15] ^= 1,
    }
}

#[test]
fn random_frames_agree_with_the_model() {
    if !running_as_root() {
        return;
    }
    let bench = Bench::load(&PROTECTED, DatapathConfig::DEFAULT);
    property(bench, RANDOM_CASES, strategies::random_frame());
}

/// Valid SYNs (several framings and option sets) and the ACKs completing their SYN-ACKs,
/// mutated.
#[test]
fn mutated_frames_agree_with_the_model() {
    if !running_as_root() {
        return;
    }
    let mut bench = Bench::load(&PROTECTED, DatapathConfig::DEFAULT);
    let mut bases = Vec::new();
    for tags in [&[][..], &[TPID_8021Q], &[TPID_8021AD, TPID_8021Q]] {
        for family in [Family::V4, Family::V6] {
            for options in [opt::linux(1460), Vec::new(), opt::timestamp(1, 0)] {
                let syn = Spec::syn(family, tags, PROTECTED[0], &options).build();
                let verdict = bench
                    .check(&syn)
                    .unwrap_or_else(|d| panic!("base SYN:\n{d}"));
                bases.push(ack_for(&verdict.reply.expect("a SYN-ACK")).build());
                bases.push(syn);
            }
        }
    }
    property(bench, MUTATED_CASES, strategies::mutated(bases));
}

/// Runs `cases` frames from `strategy`: never XDP_ABORTED, XDP_TX only for a SYN to a
/// protected port, replies at most 12 bytes longer, no XDP_DROP to unprotected ports (the
/// bench's invariants), and the model agrees on every frame.
fn property(bench: Bench, cases: u32, strategy: impl Strategy<Value = Vec<u8>>) {
    let started = Instant::now();
    let bench = RefCell::new(bench);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |frame| {
        bench
            .borrow_mut()
            .check(&frame)
            .map(drop)
            .map_err(|d| TestCaseError::fail(d.to_string()))
    });
    println!(
        "{cases} cases in {:?}; model outcomes: {}",
        started.elapsed(),
        bench.borrow().outcome_summary()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
