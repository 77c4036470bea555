//! The XDP program loaded (not attached) by the daemon's own loader, fed one frame per
//! `BPF_PROG_TEST_RUN` call and judged against the model.

use std::collections::BTreeMap;
use std::fmt;

use aya::programs::{ProgramError, TestRun, TestRunOptions};
use synguard::datapath::counters::CounterTotals;
use synguard::datapath::load::Datapath;
use synguard::datapath::maps::DatapathState;
use synguard::settings::ports::PortSet;
use synguard_common::{Counter, DatapathConfig};

use super::model::{Action, CookieBook, Expectation, Policy};
use super::reply;

/// Room for a reply longer than its request, so that a too-long one is seen, not refused.
const OUTPUT_SLACK: usize = 256;
/// A SYN-ACK may be longer than the SYN by at most this much: answering spoofed SYNs must not
/// amplify them.
pub const MAX_GROWTH: usize = 12;

pub struct Bench {
    datapath: Datapath,
    policy: Policy,
    cookies: CookieBook,
    /// How many checked frames the model put in each outcome.
    outcomes: BTreeMap<&'static str, usize>,
}

/// A frame on which the program and the model agree.
pub struct Verdict {
    pub outcome: Counter,
    /// The SYN-ACK, for a SYN.
    pub reply: Option<Vec<u8>>,
}

/// What one run of the program did.
pub struct Run {
    pub action: Action,
    /// The packet after the program (the reply, for XDP_TX).
    pub output: Vec<u8>,
    pub counters: CounterTotals,
}

impl Bench {
    /// The program protecting `ports` with `config`, judged by the model of the same.
    pub fn load(ports: &[u16], config: DatapathConfig) -> Self {
        let ranges: Vec<_> = ports.iter().map(|&port| port..=port).collect();
        let state = DatapathState::new(config, PortSet::new(&ranges));
        Self::with(&state, Policy::new(ports, config))
    }

    /// The program loaded with `state` (as the daemon would), judged by `policy`, which the
    /// caller builds from the same settings.
    pub fn with(state: &DatapathState, policy: Policy) -> Self {
        let datapath =
            Datapath::load(state).unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
        Self {
            datapath,
            policy,
            cookies: CookieBook::default(),
            outcomes: BTreeMap::new(),
        }
    }

    /// One frame through the program. Always `repeat` 1: the program rewrites the packet, and
    /// the kernel does not restore it between repetitions.
    pub fn run(&self, frame: &[u8]) -> Result<Run, ProgramError> {
        let program = self.datapath.program().expect("the loaded program");
        let before = self.counters();
        let mut output = vec![0; frame.len() + OUTPUT_SLACK];
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut output),
            ..TestRunOptions::new()
        })?;
        output.truncate(result.data_size_out as usize);
        Ok(Run {
            action: Action::from(result.return_value),
            output,
            counters: self.counters().since(&before),
        })
    }

    pub fn counters(&self) -> CounterTotals {
        CounterTotals::read(self.datapath.counters()).expect("reading SG_COUNTERS")
    }

    /// Runs `frame` and compares with the model. A SYN-ACK's cookie is remembered so that the
    /// model can judge ACKs to it.
    pub fn check(&mut self, frame: &[u8]) -> Result<Verdict, Box<Disagreement>> {
        let expected = self.policy.expect(frame, &self.cookies);
        *self.outcomes.entry(expected.outcome.name()).or_default() += 1;
        let disagree = |observed, problems| {
            Box::new(Disagreement {
                frame: frame.to_vec(),
                expected: expected.clone(),
                observed,
                problems,
            })
        };
        let run = match self.run(frame) {
            Ok(run) => run,
            Err(e) => return Err(disagree(None, vec![format!("BPF_PROG_TEST_RUN: {e}")])),
        };
        let mut problems = invariant_violations(frame, &run, &expected);
        if run.action != expected.action {
            problems.push(format!(
                "action {:?}, the model's {:?}",
                run.action, expected.action
            ));
        }
        if run.counters.values() != expected.counter_deltas() {
            problems.push(format!(
                "counters {}, the model's {}",
                named(run.counters.values()),
                named(&expected.counter_deltas())
            ));
        }
        if let (Action::Tx, Some(want)) = (run.action, &expected.reply) {
            match reply::verify(&run.output, want) {
                Ok(cookie) => self.cookies.record(want, cookie),
                Err(wrong) => problems.extend(wrong),
            }
        }
        if problems.is_empty() {
            Ok(Verdict {
                outcome: expected.outcome,
                reply: (run.action == Action::Tx).then_some(run.output),
            })
        } else {
            Err(disagree(Some(run), problems))
        }
    }

    /// `outcome=frames` for every outcome the model saw, e.g. to show what a generator reaches.
    pub fn outcome_summary(&self) -> String {
        let items: Vec<String> = self
            .outcomes
            .iter()
            .map(|(name, count)| format!("{name}={count}"))
            .collect();
        items.join(" ")
    }
}

/// The properties that hold whatever the model says.
fn invariant_violations(frame: &[u8], run: &Run, expected: &Expectation) -> Vec<String> {
    let mut violations = Vec::new();
    if run.action == Action::Aborted {
        violations.push("XDP_ABORTED".to_owned());
    }
    if run.action == Action::Tx && expected.reply.is_none() {
        violations.push("XDP_TX for a frame that is not a SYN to a protected port".to_owned());
    }
    if run.action == Action::Tx && run.output.len() > frame.len() + MAX_GROWTH {
        violations.push(format!(
            "a {}-byte reply to a {}-byte request (at most +{MAX_GROWTH})",
            run.output.len(),
            frame.len()
        ));
    }
    if run.action == Action::Drop && expected.outcome == Counter::PassUnprotectedPort {
        violations.push("XDP_DROP for a packet to an unprotected port".to_owned());
    }
    violations
}

/// The program and the model differ on one frame.
pub struct Disagreement {
    frame: Vec<u8>,
    expected: Expectation,
    observed: Option<Run>,
    problems: Vec<String>,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frame ({} bytes): {}",
            self.frame.len(),
            hex(&self.frame)
        )?;
        writeln!(
            f,
            "model:   {:?}, {}",
            self.expected.action,
            named(&self.expected.counter_deltas())
        )?;
        if let Some(run) = &self.observed {
            writeln!(
                f,
                "program: {:?}, {}",
                run.action,
                named(run.counters.values())
            )?;
            if run.action == Action::Tx {
                writeln!(
                    f,
                    "reply ({} bytes): {}",
                    run.output.len(),
                    hex(&run.output)
                )?;
            }
        }
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Non-zero counters as `name=value`.
fn named(values: &[u64]) -> String {
    let items: Vec<String> = Counter::ALL
        .iter()
        .zip(values)
        .filter(|(_, value)| **value != 0)
        .map(|(counter, value)| format!("{}={value}", counter.name()))
        .collect();
    items.join(" ")
}

/// Hex of a frame; a long one shows its head and how many zero bytes follow, if only zeros do.
fn hex(bytes: &[u8]) -> String {
    const HEAD: usize = 160;
    let digits = |b: &[u8]| {
        b.iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    match bytes.split_at_checked(HEAD) {
        Some((head, tail)) if tail.iter().all(|&b| b == 0) && !tail.is_empty() => {
            format!("{} + {} zero bytes", digits(head), tail.len())
        }
        _ => digits(bytes),
    }
}
