//! When a port is under attack: per port, readings of its `SG_PORT_LOAD` totals (every
//! [`crate::observe::attack_events::SAMPLE`]) become an attack's start and end, with
//! hysteresis so that a flood that wavers is one attack, not many.
//!
//! - **Start**: the port's SYN rate (SYNs answered by XDP with cookies plus SYNs passed to the
//!   kernel, per second since the previous reading) reaches `syn_rate`, or the auto controller
//!   switched the port to cookies.
//! - **End**: the rate stayed below [`END_FRACTION`] of `syn_rate` and the port's cookies are
//!   off again, for `cooldown`. While the auto controller keeps cookies on, the attack goes on:
//!   the controller itself waits `cooldown` of calm before it turns them off, so a reading with
//!   cookies on says the load was high at most `cooldown` before it.
//!
//! The attack's duration runs from the reading before its start to the last reading that saw
//! it busy, so it does not include the cooldown that ends it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use synguard_common::PortLoad;

/// An attack is calm once its rate is below this fraction of the start rate: a flood hovering
/// around the threshold does not start and end over and over.
pub const END_FRACTION: f64 = 0.5;

/// The settings the detector decides with (`--attack-syn-rate`, `--cooldown`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// SYNs per second on one port that start an attack.
    pub syn_rate: f64,
    pub cooldown: Duration,
}

/// What started an attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The auto controller answered the port's SYNs with cookies.
    Cookies,
    /// The SYN rate reached the threshold.
    SynRate,
}

impl Trigger {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cookies => "cookies",
            Self::SynRate => "syn_rate",
        }
    }
}

/// One reading of a port.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub at: Instant,
    /// The port's totals (wrapping counters).
    pub load: PortLoad,
    /// The auto controller answers the port with cookies (always false in other modes, where
    /// cookies say nothing about an attack).
    pub cookies: bool,
}

/// A start or an end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transition {
    Started {
        trigger: Trigger,
        /// SYNs per second at the reading that started it.
        syn_rate: f64,
    },
    Ended(Summary),
}

/// A finished attack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub trigger: Trigger,
    /// From the reading before the start to the last busy reading.
    pub duration: Duration,
    /// How long it had been calm when it ended (at least the cooldown).
    pub calm_for: Duration,
    /// The highest SYN rate of one reading.
    pub peak_syn_rate: f64,
    /// The port's counts during the attack.
    pub load: PortLoad,
}

/// SYNs the port received and answered: by XDP with a cookie or by the kernel.
fn syns(load: &PortLoad) -> u64 {
    load.syns_to_kernel.wrapping_add(load.cookies_sent)
}

/// `later - earlier`, field by field, for wrapping counters.
fn growth(later: &PortLoad, earlier: &PortLoad) -> PortLoad {
    PortLoad {
        syns_to_kernel: later.syns_to_kernel.wrapping_sub(earlier.syns_to_kernel),
        handshakes_completed: later
            .handshakes_completed
            .wrapping_sub(earlier.handshakes_completed),
        cookies_sent: later.cookies_sent.wrapping_sub(earlier.cookies_sent),
        cookies_validated: later
            .cookies_validated
            .wrapping_sub(earlier.cookies_validated),
    }
}

#[derive(Clone, Copy, Debug)]
struct Ongoing {
    trigger: Trigger,
    started: Instant,
    at_start: PortLoad,
    peak_syn_rate: f64,
    last_busy: Instant,
}

#[derive(Debug, Default)]
struct PortState {
    last: Option<(Instant, PortLoad)>,
    attack: Option<Ongoing>,
}

/// Attack state of every port it was given readings of.
#[derive(Debug, Default)]
pub struct AttackDetector {
    ports: BTreeMap<u16, PortState>,
    /// When the previous round of readings was taken: a port first seen later had no load
    /// entry then, i.e. zero SYNs.
    last_round: Option<Instant>,
}

impl AttackDetector {
    /// Ports with an attack going on.
    pub fn active(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .filter(|(_, s)| s.attack.is_some())
            .map(|(&port, _)| port)
    }

    /// Marks the end of a round of [`Self::observe`] calls taken at `at`.
    pub fn round_done(&mut self, at: Instant) {
        self.last_round = Some(at);
    }

    /// Feeds one reading of `port`; returns a start or an end if one happened.
    pub fn observe(&mut self, port: u16, reading: Reading, t: Thresholds) -> Option<Transition> {
        let last_round = self.last_round;
        let state = self.ports.entry(port).or_default();
        let (then, before) = state.last.replace((reading.at, reading.load)).unwrap_or(
            // New since the last round: the datapath made its entry with its first SYN.
            match last_round {
                Some(at) => (at, PortLoad::default()),
                None => (reading.at, reading.load),
            },
        );
        let seconds = reading.at.saturating_duration_since(then).as_secs_f64();
        let rate = if seconds > 0.0 {
            syns(&reading.load).wrapping_sub(syns(&before)) as f64 / seconds
        } else {
            0.0
        };
        let Some(attack) = &mut state.attack else {
            let trigger = if reading.cookies {
                Trigger::Cookies
            } else if rate >= t.syn_rate {
                Trigger::SynRate
            } else {
                return None;
            };
            state.attack = Some(Ongoing {
                trigger,
                started: then,
                at_start: before,
                peak_syn_rate: rate,
                last_busy: reading.at,
            });
            return Some(Transition::Started {
                trigger,
                syn_rate: rate,
            });
        };
        attack.peak_syn_rate = attack.peak_syn_rate.max(rate);
        if rate >= t.syn_rate * END_FRACTION {
            attack.last_busy = reading.at;
        }
        if reading.cookies {
            if let Some(busy) = reading.at.checked_sub(t.cooldown) {
                attack.last_busy = attack.last_busy.max(busy);
            }
            return None;
        }
        let calm_for = reading.at.saturating_duration_since(attack.last_busy);
        if calm_for < t.cooldown {
            return None;
        }
        let attack = state.attack.take()?;
        Some(Transition::Ended(Summary {
            trigger: attack.trigger,
            duration: attack.last_busy.saturating_duration_since(attack.started),
            calm_for,
            peak_syn_rate: attack.peak_syn_rate,
            load: growth(&reading.load, &attack.at_start),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        syn_rate: 1000.0,
        cooldown: Duration::from_secs(3),
    };

    /// Feeds one reading per second of port 80: `(SYNs in that second, cookies on)`; returns
    /// the transitions with the second they happened in.
    fn run(seconds: &[(u64, bool)]) -> Vec<(u64, Transition)> {
        let start = Instant::now();
        let mut detector = AttackDetector::default();
        let mut load = PortLoad::default();
        let mut seen = Vec::new();
        for (second, &(syns, cookies)) in (0u64..).zip(seconds) {
            if cookies {
                load.cookies_sent += syns;
            } else {
                load.syns_to_kernel += syns;
            }
            let at = start + Duration::from_secs(second);
            let reading = Reading { at, load, cookies };
            if let Some(transition) = detector.observe(80, reading, T) {
                seen.push((second, transition));
            }
            detector.round_done(at);
        }
        seen
    }

    const fn started(trigger: Trigger, syn_rate: f64) -> Transition {
        Transition::Started { trigger, syn_rate }
    }

    fn ended(seen: &[(u64, Transition)]) -> Vec<(u64, Summary)> {
        seen.iter()
            .filter_map(|&(s, t)| match t {
                Transition::Ended(summary) => Some((s, summary)),
                Transition::Started { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_flood_starts_one_attack_and_ends_it_after_the_cooldown() {
        // Quiet, four seconds at 5000/s with one dip to 600/s (above the end mark of 500),
        // then quiet.
        let mut seconds = vec![(0, false), (10, false)];
        seconds.extend([(5000, false), (600, false), (5000, false), (4000, false)]);
        seconds.extend([(0, false); 6]);
        let seen = run(&seconds);
        assert_eq!(seen[0], (2, started(Trigger::SynRate, 5000.0)));
        let ends = ended(&seen);
        assert_eq!(seen.len(), 2, "{seen:?}");
        let (second, summary) = ends[0];
        // Last busy second 5, calm for the cooldown at second 8.
        assert_eq!(second, 8);
        assert_eq!(summary.duration, Duration::from_secs(4));
        assert_eq!(summary.calm_for, T.cooldown);
        assert_eq!(summary.peak_syn_rate, 5000.0);
        assert_eq!(summary.load.syns_to_kernel, 14_600);
    }

    #[test]
    fn a_rate_hovering_around_the_threshold_is_one_attack() {
        let mut seconds = vec![(0, false)];
        for _ in 0..5 {
            // Below the start rate, above the end mark: still the same attack.
            seconds.extend([(1200, false), (700, false)]);
        }
        seconds.extend([(0, false); 4]);
        let seen = run(&seconds);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(ended(&seen)[0].1.duration, Duration::from_secs(10));
    }

    #[test]
    fn two_floods_further_apart_than_the_cooldown_are_two_attacks() {
        let mut seconds = vec![(0, false), (3000, false)];
        seconds.extend([(0, false); 4]);
        seconds.push((3000, false));
        seconds.extend([(0, false); 4]);
        let seen = run(&seconds);
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(ended(&seen).len(), 2);
    }

    #[test]
    fn cookies_start_an_attack_and_hold_it_until_they_are_off() {
        // 300 SYNs/s (below the threshold) that the auto controller answers with cookies for
        // three seconds, then the cooldown's seconds with cookies still on, then off.
        let mut seconds = vec![(0, false), (300, true), (300, true), (300, true)];
        seconds.extend([(0, true); 3]);
        seconds.extend([(0, false); 3]);
        let seen = run(&seconds);
        assert_eq!(seen[0], (1, started(Trigger::Cookies, 300.0)));
        let ends = ended(&seen);
        assert_eq!(ends.len(), 1, "{seen:?}");
        // The last reading with cookies on (second 6) says the load was high until second 3:
        // the attack lasted from second 0 to 3 and ended as the cookies went off.
        assert_eq!(ends[0].0, 7);
        assert_eq!(ends[0].1.duration, Duration::from_secs(3));
        assert_eq!(ends[0].1.load.cookies_sent, 900);
    }

    #[test]
    fn a_port_seen_late_counts_from_zero_and_the_first_round_from_itself() {
        let start = Instant::now();
        let mut detector = AttackDetector::default();
        let load = |syns| PortLoad {
            cookies_sent: syns,
            ..PortLoad::default()
        };
        let reading = |second, syns| Reading {
            at: start + Duration::from_secs(second),
            load: load(syns),
            cookies: false,
        };
        // Adopted (pinned) counters: the first round has no rate.
        assert_eq!(detector.observe(80, reading(0, 1_000_000), T), None);
        detector.round_done(start);
        // Port 81's entry appeared during the second: all its SYNs are new.
        assert_eq!(
            detector.observe(81, reading(1, 4000), T),
            Some(started(Trigger::SynRate, 4000.0))
        );
        assert_eq!(detector.active().collect::<Vec<_>>(), [81]);
    }
}
