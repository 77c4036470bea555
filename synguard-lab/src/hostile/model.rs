//! Reference model of synguard's packet policy, written from the documented behaviour
//! ("Security and hostile input") and the README's operator controls (modes, source lists, per-source
//! budgets), not from the eBPF code: for any frame, the XDP action, the counters that move and,
//! for a SYN, the SYN-ACK the program must send.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use synguard_common::{Counter, DatapathConfig, PerSourceAction, SyncookieMode, TupleWords};

use super::frame::{ACK, CWR, ECE, FIN, Family, RST, SYN};
use super::segment::{Offered, Segment, be32};

/// An XDP verdict (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Aborted,
    Drop,
    Pass,
    Tx,
    Other(u32),
}

impl From<u32> for Action {
    fn from(raw: u32) -> Self {
        match raw {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            other => Self::Other(other),
        }
    }
}

/// What the program must do with one frame.
#[derive(Clone, Debug)]
pub struct Expectation {
    pub action: Action,
    /// The one outcome counter besides `packets`.
    pub outcome: Counter,
    /// A SYN whose option list ends badly also counts `malformed_tcp_options`.
    pub options_fault: bool,
    /// A zero-window probe rewritten into its handshake ACK also counts `ack_probe_repaired`.
    pub probe_repaired: bool,
    /// The frame took its source over a per-source budget: also counts this, `source_blocks`
    /// or under `--per-source-action log` `source_over_budget`.
    pub over_budget: Option<Counter>,
    /// A SYN whose tuple the peer filter holds also counts `syn_peer_lookup`.
    pub peer_lookup: bool,
    pub reply: Option<SynAck>,
}

impl Expectation {
    fn pass(outcome: Counter) -> Self {
        Self {
            action: Action::Pass,
            outcome,
            options_fault: false,
            probe_repaired: false,
            over_budget: None,
            peer_lookup: false,
            reply: None,
        }
    }

    fn drop(outcome: Counter) -> Self {
        Self {
            action: Action::Drop,
            ..Self::pass(outcome)
        }
    }

    /// Counter increments in [`Counter::ALL`] order.
    pub fn counter_deltas(&self) -> Vec<u64> {
        let mut deltas = vec![0; Counter::ALL.len()];
        deltas[Counter::Packets as usize] += 1;
        deltas[self.outcome as usize] += 1;
        if self.options_fault {
            deltas[Counter::MalformedTcpOptions as usize] += 1;
        }
        if self.probe_repaired {
            deltas[Counter::AckProbeRepaired as usize] += 1;
        }
        if let Some(counter) = self.over_budget {
            deltas[counter as usize] += 1;
        }
        if self.peer_lookup {
            deltas[Counter::SynPeerLookup as usize] += 1;
        }
        deltas
    }
}

/// The SYN-ACK the program must send back.
#[derive(Clone, Debug)]
pub struct SynAck {
    /// Length of the whole reply frame.
    pub len: usize,
    /// Ethernet header as received with the MACs swapped, VLAN tags kept.
    pub l2: Vec<u8>,
    /// Source and destination of the reply (the request's, swapped).
    pub addrs: Addrs,
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    pub ack: u32,
    pub flags: u8,
    pub options: Vec<ReplyOption>,
    /// What the cookie check of the client's ACK depends on.
    pub cookie: CookieInput,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addrs {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOption {
    Mss(u16),
    SackPermitted,
    Nop,
    /// Our TSval's low 6 bits (its high bits are a clock) and the echoed client TSval.
    Timestamp {
        low_bits: u32,
        echo: u32,
    },
    WindowScale(u8),
}

impl ReplyOption {
    const fn len(self) -> usize {
        match self {
            Self::Mss(_) => 4,
            Self::SackPermitted => 2,
            Self::Nop => 1,
            Self::Timestamp { .. } => 10,
            Self::WindowScale(_) => 3,
        }
    }
}

/// A tuple as the peer filter hashes it (`synguard_common::TupleWords`).
fn peer_words(tuple: &Tuple) -> TupleWords {
    let (src, dst) = match tuple.addrs {
        Addrs::V4 { src, dst } => (
            std::net::Ipv4Addr::from(src).to_ipv6_mapped().octets(),
            std::net::Ipv4Addr::from(dst).to_ipv6_mapped().octets(),
        ),
        Addrs::V6 { src, dst } => (src, dst),
    };
    TupleWords::of(src, dst, tuple.sport, tuple.dport)
}

/// The client's 4-tuple as its SYN carried it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub(super) addrs: Addrs,
    pub(super) sport: u16,
    pub(super) dport: u16,
}

#[derive(Clone, Debug)]
pub struct CookieInput {
    client: Tuple,
    isn: u32,
    /// Index of the client's MSS in the kernel's cookie MSS table.
    mss_index: u32,
}

/// A source list entry (`--allow`, `--deny`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    Allow,
    Deny,
}

/// The protected ports, tunables and source lists the program was loaded with, and what it
/// has counted per source since.
pub struct Policy {
    ports: BTreeSet<u16>,
    config: DatapathConfig,
    /// Ports whose SYNs XDP answers: every protected one in `always`; none in `off`, nor in
    /// `auto` before the daemon switches a port under pressure.
    cookie_ports: BTreeSet<u16>,
    lists: Vec<(IpAddr, u8, Listed)>,
    sources: HashMap<(bool, u128), SourceCount>,
    /// Peer-filter slots marked so far (the corpus's tuples have no kernel socket).
    peers: HashSet<(u32, usize)>,
}

/// One source prefix's counts (README, "Per-source limits"). The model keeps no clock: the
/// frames of a test must fall into one one-second window, and no block may expire during it.
/// It keeps no sketch either: a source is heavy (tracked exactly) from its
/// `track_threshold`-th attempt, as the sketch has it when no other source shares its cells
/// and the frames run on one CPU.
#[derive(Default)]
struct SourceCount {
    /// SYNs and invalid ACKs (the sketch's count).
    attempts: u32,
    /// SYNs minus completed handshakes.
    half_open: u32,
    invalid_acks: u32,
    /// Blocked, or under action log only marked: once per block time.
    over_budget: bool,
}

impl SourceCount {
    /// An attempt took the source over a budget: the counter that moves in addition. A block
    /// under action drop; under log a mark, and only if the source has none yet.
    fn exceed(&mut self, action: PerSourceAction) -> Option<Counter> {
        let marked = std::mem::replace(&mut self.over_budget, true);
        match action {
            PerSourceAction::Drop => Some(Counter::SourceBlocks),
            PerSourceAction::Log => (!marked).then_some(Counter::SourceOverBudget),
        }
    }
}

impl Policy {
    /// `ports` protected in the mode of `config.syncookies`, no source lists.
    pub fn new(ports: &[u16], config: DatapathConfig) -> Self {
        let ports: BTreeSet<u16> = ports.iter().copied().collect();
        let cookie_ports = if config.syncookies == SyncookieMode::Always as u8 {
            ports.clone()
        } else {
            BTreeSet::new()
        };
        Self {
            ports,
            config,
            cookie_ports,
            lists: Vec::new(),
            sources: HashMap::new(),
            peers: HashSet::new(),
        }
    }

    /// Adds `addr/len` to the allow or deny list.
    #[must_use]
    pub fn list(mut self, addr: IpAddr, len: u8, listed: Listed) -> Self {
        self.lists.push((addr, len, listed));
        self
    }

    /// What the program does with `frame`, the frames before it having been judged in order.
    pub fn expect(&mut self, frame: &[u8], cookies: &CookieBook) -> Expectation {
        let segment = match Segment::find(frame) {
            Ok(segment) => segment,
            Err(outcome) => return Expectation::pass(outcome),
        };
        if !self.ports.contains(&segment.tuple.dport) {
            return Expectation::pass(Counter::PassUnprotectedPort);
        }
        // The lists apply to everything to a protected port, before any other check.
        match self.listed(&segment.tuple.addrs) {
            Some(Listed::Deny) => {
                return Expectation {
                    action: Action::Drop,
                    ..Expectation::pass(Counter::DropDenylisted)
                };
            }
            Some(Listed::Allow) => return Expectation::pass(Counter::PassAllowlisted),
            None => {}
        }
        // `off` only observes: it counts per source but blocks nobody and drops nothing.
        let enforce = self.config.syncookies != SyncookieMode::Off as u8;
        // Action log reports sources over a budget but drops none of their packets.
        let action = self.config.per_source_action();
        let drops = enforce && action == PerSourceAction::Drop;
        let (half_open_budget, invalid_ack_budget) = (
            self.config.per_source_half_open,
            self.config.per_source_invalid_ack,
        );
        let flags = segment.tcp[13];
        let is_syn = flags & (SYN | ACK | RST | FIN) == SYN;
        let is_ack = flags & ACK != 0 && flags & SYN == 0;
        if !is_syn && !is_ack {
            return Expectation::pass(Counter::PassOtherFlags);
        }
        let threshold = self.config.track_threshold;
        let peer_slot = peer_words(&segment.tuple).peer_slot(self.config.hash_seed);
        let source = self.source(&segment.tuple.addrs);
        if is_syn {
            source.attempts = source.attempts.saturating_add(1);
            // A blocked source's SYNs drop (only a heavy source can be blocked).
            let mut over_budget = None;
            if source.attempts >= threshold {
                if drops && source.over_budget {
                    return Expectation::drop(Counter::DropSourceBlocked);
                }
                source.half_open = source.half_open.saturating_add(1);
                if enforce && half_open_budget != 0 && source.half_open > half_open_budget {
                    over_budget = source.exceed(action);
                    if drops {
                        return Expectation {
                            over_budget,
                            ..Expectation::drop(Counter::DropSourceBlocked)
                        };
                    }
                }
            }
            // Only a tuple XDP has seen reach the kernel is looked up (and none of the
            // corpus's has a kernel socket). A SYN the kernel would drop for a wrong checksum
            // gets no SYN-ACK either; the kernel itself verifies the SYNs it answers.
            let peer_lookup = self.peers.contains(&peer_slot);
            let judged = if !self.cookie_ports.contains(&segment.tuple.dport) {
                self.peers.insert(peer_slot);
                Expectation::pass(Counter::SynToKernel)
            } else if segment.checksums_ok() {
                self.answer(frame, &segment)
            } else {
                Expectation::drop(Counter::DropBadChecksum)
            };
            return Expectation {
                over_budget,
                peer_lookup,
                ..judged
            };
        }
        let heavy = source.attempts >= threshold;
        // A blocked source's new-connection ACKs drop (no socket matches the corpus's
        // addresses, so every ACK here is a new-connection one).
        if drops && heavy && source.over_budget {
            return Expectation::drop(Counter::DropSourceBlocked);
        }
        // A bare ACK one short of a completing ACK is a zero-window probe after a lost
        // handshake ACK (our SYN-ACK announced window 0): the program repairs it.
        let bare_ack = segment.payload_len == 0 && flags & (SYN | ACK | RST | FIN) == ACK;
        let probe = !cookies.accepts(&segment, 0) && bare_ack && cookies.accepts(&segment, 1);
        if cookies.accepts(&segment, 0) || probe {
            if heavy {
                source.half_open = source.half_open.saturating_sub(1);
            }
            self.peers.insert(peer_slot);
            return Expectation {
                probe_repaired: probe,
                ..Expectation::pass(Counter::AckCookieValid)
            };
        }
        source.attempts = source.attempts.saturating_add(1);
        let mut over_budget = None;
        if source.attempts >= threshold {
            source.invalid_acks = source.invalid_acks.saturating_add(1);
            if enforce && invalid_ack_budget != 0 && source.invalid_acks > invalid_ack_budget {
                over_budget = source.exceed(action);
            }
        }
        let judged = if enforce {
            Expectation::drop(Counter::AckCookieInvalid)
        } else {
            Expectation::pass(Counter::AckInvalidPassed)
        };
        Expectation {
            over_budget,
            ..judged
        }
    }

    /// The counts of the source prefix (`source_prefix4/6` long) holding the client.
    fn source(&mut self, addrs: &Addrs) -> &mut SourceCount {
        let (client, len) = match *addrs {
            Addrs::V4 { src, .. } => (IpAddr::from(src), self.config.source_prefix4),
            Addrs::V6 { src, .. } => (IpAddr::from(src), self.config.source_prefix6),
        };
        let key = (client.is_ipv4(), bits(client) & mask(len));
        self.sources.entry(key).or_default()
    }

    /// The list of the longest prefix holding the client's address (lists never hold one
    /// prefix twice).
    fn listed(&self, addrs: &Addrs) -> Option<Listed> {
        let source: IpAddr = match *addrs {
            Addrs::V4 { src, .. } => src.into(),
            Addrs::V6 { src, .. } => src.into(),
        };
        self.lists
            .iter()
            .filter(|(net, len, _)| contains(*net, *len, source))
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, listed)| *listed)
    }

    fn answer(&self, frame: &[u8], segment: &Segment<'_>) -> Expectation {
        let offered = Offered::parse(&segment.tcp[20..]);
        let flags = segment.tcp[13];
        let ecn = offered.timestamp.is_some() && flags & (ECE | CWR) == ECE | CWR;
        let (ip_len, mss) = match segment.family {
            Family::V4 => (20, self.config.mss4),
            Family::V6 => (40, self.config.mss6),
        };
        let mut options = vec![ReplyOption::Mss(mss)];
        if let Some(tsval) = offered.timestamp {
            if offered.sack {
                options.push(ReplyOption::SackPermitted);
            } else {
                options.extend([ReplyOption::Nop, ReplyOption::Nop]);
            }
            options.push(ReplyOption::Timestamp {
                low_bits: u32::from(offered.wscale.unwrap_or(0x0f))
                    | u32::from(offered.sack) << 4
                    | u32::from(ecn) << 5,
                echo: tsval,
            });
            if offered.wscale.is_some() {
                options.extend([
                    ReplyOption::Nop,
                    ReplyOption::WindowScale(self.config.wscale),
                ]);
            }
        }
        let tcp_len = 20 + options.iter().map(|o| o.len()).sum::<usize>();
        let mut l2 = frame[..segment.l3].to_vec();
        let (dst_mac, src_mac) = l2.split_at_mut(6);
        dst_mac.swap_with_slice(&mut src_mac[..6]);
        let isn = be32(segment.tcp, 4);
        Expectation {
            action: Action::Tx,
            outcome: Counter::SynCookieSent,
            options_fault: offered.fault,
            probe_repaired: false,
            over_budget: None,
            peer_lookup: false,
            reply: Some(SynAck {
                len: segment.l3 + ip_len + tcp_len,
                l2,
                addrs: segment.tuple.addrs.swapped(),
                ttl: self.config.ttl,
                sport: segment.tuple.dport,
                dport: segment.tuple.sport,
                ack: isn.wrapping_add(1),
                flags: SYN | ACK | if ecn { ECE } else { 0 },
                options,
                cookie: CookieInput {
                    client: segment.tuple.clone(),
                    isn,
                    mss_index: mss_index(segment.family, offered.mss),
                },
            }),
        }
    }
}

impl Addrs {
    fn swapped(&self) -> Self {
        match *self {
            Self::V4 { src, dst } => Self::V4 { src: dst, dst: src },
            Self::V6 { src, dst } => Self::V6 { src: dst, dst: src },
        }
    }
}

/// The kernel's cookie MSS tables (net/ipv4/syncookies.c, net/ipv6/syncookies.c) and the MSS
/// `bpf_tcp_raw_gen_syncookie_ipv4/6` assume when the SYN has none.
fn mss_index(family: Family, offered: Option<u16>) -> u32 {
    let (table, assumed) = match family {
        Family::V4 => ([536, 1300, 1440, 1460], 536),
        Family::V6 => ([1220, 1420, 1440, 8940], 1220),
    };
    let mss = offered.unwrap_or(assumed);
    table.iter().rposition(|&entry| mss >= entry).unwrap_or(0) as u32
}

/// The SYN-ACKs the program has sent, to judge ACKs (spec item g).
///
/// The kernel's cookie is `hash(tuple, minute) + ISN + mss_index` in its low 24 bits, and the
/// check recovers the index from `ack - seq`: besides the exact completion (ack - seq =
/// cookie - ISN), an ACK whose `ack - seq` is off by `d` passes when `mss_index + d` is
/// another valid index (0..=3), as for any kernel SYN cookie. The model accepts exactly those.
#[derive(Default)]
pub struct CookieBook(HashMap<Tuple, Vec<Issued>>);

#[derive(Clone, Copy)]
struct Issued {
    /// cookie - ISN
    offset: u32,
    mss_index: u32,
}

impl CookieBook {
    /// Notes a SYN-ACK the program sent with sequence number `cookie`.
    pub fn record(&mut self, reply: &SynAck, cookie: u32) {
        let input = &reply.cookie;
        self.0
            .entry(input.client.clone())
            .or_default()
            .push(Issued {
                offset: cookie.wrapping_sub(input.isn),
                mss_index: input.mss_index,
            });
    }

    /// Whether the segment, its sequence number raised by `seq_fix`, completes a cookie.
    fn accepts(&self, segment: &Segment<'_>, seq_fix: u32) -> bool {
        let seq = be32(segment.tcp, 4).wrapping_add(seq_fix);
        let ack = be32(segment.tcp, 8);
        self.0.get(&segment.tuple).is_some_and(|issued| {
            issued.iter().any(|i| {
                let index = ack
                    .wrapping_sub(seq)
                    .wrapping_sub(i.offset)
                    .wrapping_add(i.mss_index);
                index <= 3
            })
        })
    }
}

/// An address's bits, most significant first (IPv4 in the top 32).
fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The first `len` bits.
fn mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Whether `net/len` holds `addr` (same family, the first `len` bits equal).
fn contains(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    net.is_ipv4() == addr.is_ipv4() && (bits(net) ^ bits(addr)) & mask(len) == 0
}
