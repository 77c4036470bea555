//! proptest strategies: random frames (structured, or raw bytes), and valid frames with bytes
//! flipped, overwritten, nudged, cut or added.

use proptest::collection::vec;
use proptest::option::weighted;
use proptest::prelude::*;
use proptest::sample::{Index, select};

use super::corpus::PROTECTED;
use super::frame::{
    ACK, CWR, ECE, EXT_DEST_OPTS, EXT_FRAGMENT, EXT_HOP_BY_HOP, EXT_ROUTING, Ext, Family, Ip, SYN,
    Spec, TPID_8021AD, TPID_8021Q, opt,
};

/// The shortest frame BPF_PROG_TEST_RUN accepts.
const MIN_FRAME: usize = 14;
/// Lies (overridden lengths, versions, ...) are rare, so most frames get deep into the parser.
const LIE: f64 = 0.08;

pub fn random_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => raw_frame(),
        6 => (random_spec(), weighted(0.1, any::<Index>())).prop_map(|(spec, cut)| {
            let mut frame = spec.build();
            if let Some(cut) = cut {
                frame.truncate(cut.index(frame.len()).max(MIN_FRAME));
            }
            frame
        }),
    ]
}

/// Random bytes behind an ethertype the program looks at.
fn raw_frame() -> impl Strategy<Value = Vec<u8>> {
    let ethertype = prop_oneof![
        Just(0x0800u16),
        Just(0x86dd),
        Just(TPID_8021Q),
        Just(TPID_8021AD),
        any::<u16>()
    ];
    (ethertype, vec(any::<u8>(), MIN_FRAME..160)).prop_map(|(ethertype, mut frame)| {
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        frame
    })
}

/// A TCP segment with random headers, options and lies.
fn random_spec() -> impl Strategy<Value = Spec> {
    let l2 = (
        any::<bool>(),
        prop_oneof![8 => vec(tpid(), 0..=2), 1 => vec(tpid(), 3..=3)],
        weighted(LIE / 2.0, any::<u16>()),
        0..32usize,
    );
    let ip = (
        weighted(LIE, 0..16u8),
        weighted(LIE, any::<u16>()),
        weighted(LIE, 0..16u8),
        prop_oneof![4 => Just(0x4000u16), 1 => Just(0), 1 => any::<u16>()],
        prop_oneof![8 => Just(6u8), 1 => any::<u8>()],
        prop_oneof![3 => Just(Vec::new()), 1 => vec(any::<u8>(), 0..=40)],
        prop_oneof![3 => Just(Vec::new()), 1 => vec((ext_kind(), 0..3u8), 1..=6)],
        weighted(LIE, any::<u16>()),
    );
    let tcp = (
        prop_oneof![
            Just(PROTECTED[0]),
            Just(PROTECTED[1]),
            Just(80),
            any::<u16>()
        ],
        prop_oneof![3 => Just(SYN), 2 => Just(ACK), 1 => Just(SYN | ECE | CWR), 2 => any::<u8>()],
        any::<(u32, u32)>(),
        weighted(LIE, 0..16u8),
        vec(tcp_option(), 0..8),
        0..64usize,
        weighted(LIE, any::<u16>()),
    );
    (l2, ip, tcp).prop_map(|(l2, ip, tcp)| {
        let (v6, tags, ethertype, padding) = l2;
        let (version, len, ihl, frag, protocol, ip_options, ext, ip_check) = ip;
        let (dport, flags, (seq, ack), data_offset, options, payload, tcp_check) = tcp;
        let family = if v6 { Family::V6 } else { Family::V4 };
        let mut options: Vec<u8> = options.concat();
        options.truncate(40);
        let mut spec = Spec::syn(family, &tags, dport, &options);
        spec.ethertype = ethertype;
        spec.padding = padding;
        match &mut spec.ip {
            Ip::V4(v4) => {
                v4.version = version.unwrap_or(4);
                v4.total_len = len;
                v4.ihl = ihl;
                v4.frag = frag;
                v4.protocol = protocol;
                v4.check = ip_check;
                v4.options = ip_options;
            }
            Ip::V6(v6) => {
                v6.version = version.unwrap_or(6);
                v6.payload_len = len;
                v6.ext = ext
                    .into_iter()
                    .map(|(kind, units)| Ext::new(kind, units))
                    .collect();
                v6.upper = protocol;
            }
        }
        spec.tcp.flags = flags;
        spec.tcp.seq = seq;
        spec.tcp.ack = ack;
        spec.tcp.data_offset = data_offset;
        spec.tcp.check = tcp_check;
        spec.tcp.payload = vec![0x5a; payload];
        spec
    })
}

fn tpid() -> impl Strategy<Value = u16> {
    prop_oneof![Just(TPID_8021Q), Just(TPID_8021AD)]
}

fn ext_kind() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(EXT_HOP_BY_HOP),
        Just(EXT_ROUTING),
        Just(EXT_DEST_OPTS),
        Just(EXT_FRAGMENT),
        any::<u8>()
    ]
}

/// One TCP option, well-formed or not.
fn tcp_option() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![opt::EOL]),
        Just(vec![opt::NOP]),
        Just(opt::SACK_PERM.to_vec()),
        any::<u16>().prop_map(opt::mss),
        any::<u8>().prop_map(opt::wscale),
        any::<(u32, u32)>().prop_map(|(value, echo)| opt::timestamp(value, echo)),
        (any::<u8>(), vec(any::<u8>(), 0..10))
            .prop_map(|(kind, body)| { [vec![kind, body.len() as u8 + 2], body].concat() }),
        // A kind and a length that need not match what follows.
        any::<(u8, u8)>().prop_map(|(kind, len)| vec![kind, len]),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    /// Adds a small number to the big-endian 32-bit word at the index (seq/ack off by a few).
    Nudge(Index, i8),
    Cut(Index),
    Extend(Vec<u8>),
}

/// One of `bases` with one to four mutations.
pub fn mutated(bases: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutation = prop_oneof![
        4 => (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        2 => any::<(Index, u8)>().prop_map(|(at, byte)| Mutation::Set(at, byte)),
        2 => any::<(Index, i8)>().prop_map(|(at, delta)| Mutation::Nudge(at, delta)),
        1 => any::<Index>().prop_map(Mutation::Cut),
        1 => vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
    ];
    (select(bases), vec(mutation, 1..=4)).prop_map(|(mut frame, mutations)| {
        for mutation in mutations {
            apply(&mut frame, mutation);
        }
        frame
    })
}

fn apply(frame: &mut Vec<u8>, mutation: Mutation) {
    let len = frame.len();
    match mutation {
        Mutation::Flip(at, bit) => frame[at.index(len)] ^= 1 << bit,
        Mutation::Set(at, byte) => frame[at.index(len)] = byte,
        Mutation::Nudge(at, delta) => {
            let at = at.index(len - 3);
            let word: [u8; 4] = frame[at..at + 4].try_into().unwrap();
            let nudged = u32::from_be_bytes(word).wrapping_add_signed(delta.into());
            frame[at..at + 4].copy_from_slice(&nudged.to_be_bytes());
        }
        Mutation::Cut(at) => frame.truncate(at.index(len).max(MIN_FRAME)),
        Mutation::Extend(bytes) => frame.extend(bytes),
    }
}
