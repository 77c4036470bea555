//! The hostile corpus: tables of edits, each applied to a valid SYN in every L2 framing and IP
//! version it makes sense for, plus cuts at every header boundary.

use super::frame::{
    ACK, CWR, ECE, EXT_DEST_OPTS, EXT_FRAGMENT, EXT_HOP_BY_HOP, EXT_ROUTING, Ext, FIN, Family, PSH,
    RST, SYN, Spec, TPID_8021AD, TPID_8021Q, URG, opt,
};

/// The ports the program protects in these tests.
pub const PROTECTED: [u16; 2] = [8080, 443];
const UNPROTECTED: u16 = 80;

/// The category of 9000-byte frames. BPF_PROG_TEST_RUN puts at most a page minus headroom and
/// `skb_shared_info` (3520 bytes on x86-64) in the linear area; the rest of a longer frame
/// goes into fragments, even for a program not loaded as `xdp.frags`.
pub const JUMBO: &str = "jumbo";
const JUMBO_LEN: usize = 9000;

pub struct Case {
    pub category: &'static str,
    pub name: String,
    pub spec: Spec,
}

type Edit = fn(&mut Spec);

struct Table {
    category: &'static str,
    families: &'static [Family],
    edits: &'static [(&'static str, Edit)],
}

const BOTH: &[Family] = &[Family::V4, Family::V6];

const FRAMINGS: [(&str, &[u16]); 4] = [
    ("untagged", &[]),
    ("802.1Q", &[TPID_8021Q]),
    ("802.1ad", &[TPID_8021AD]),
    ("QinQ", &[TPID_8021AD, TPID_8021Q]),
];

const TABLES: &[Table] = &[
    Table {
        category: "l2",
        families: BOTH,
        edits: &[
            ("ARP ethertype", |s| s.ethertype = Some(0x0806)),
            ("LLDP ethertype", |s| s.ethertype = Some(0x88cc)),
            ("ethertype 0", |s| s.ethertype = Some(0)),
            ("the other IP version's ethertype", |s| {
                s.ethertype = Some(match s.v4() {
                    Some(_) => 0x86dd,
                    None => 0x0800,
                });
            }),
            ("one more 802.1Q tag", |s| s.tags.push(TPID_8021Q)),
            ("broadcast destination MAC", |s| s.dst_mac = [0xff; 6]),
        ],
    },
    Table {
        category: "ipv4",
        families: &[Family::V4],
        edits: &[
            ("version 0", |s| v4(s).version = 0),
            ("version 5", |s| v4(s).version = 5),
            ("version 6", |s| v4(s).version = 6),
            ("IHL 0", |s| v4(s).ihl = Some(0)),
            ("IHL 4", |s| v4(s).ihl = Some(4)),
            ("IHL 6 with 4 option bytes", |s| {
                v4(s).options = vec![opt::NOP, opt::NOP, opt::NOP, opt::EOL];
            }),
            ("IHL 15 with 40 option bytes (record route)", |s| {
                v4(s).options = [vec![7, 39, 4], vec![0; 36]].concat();
            }),
            ("IHL 6 lying: no options", |s| v4(s).ihl = Some(6)),
            ("IHL 15 lying: no options", |s| v4(s).ihl = Some(15)),
            ("total length 0", |s| v4(s).total_len = Some(0)),
            ("total length 19", |s| v4(s).total_len = Some(19)),
            ("total length below IHL*4", |s| {
                let ip = v4(s);
                ip.options = vec![opt::NOP; 8];
                ip.total_len = Some(24);
            }),
            ("total length one past the frame", |s| {
                let layout = s.layout();
                v4(s).total_len = Some((layout.end - layout.l3 + 1) as u16);
            }),
            ("total length 65535", |s| v4(s).total_len = Some(u16::MAX)),
            ("datagram ends inside the TCP header", |s| {
                v4(s).total_len = Some(20 + 12);
            }),
            ("datagram ends inside the TCP options", |s| {
                v4(s).total_len = Some(20 + 24);
            }),
            ("total length excludes the payload", |s| {
                s.tcp.payload = vec![0xab; 20];
                let layout = s.layout();
                v4(s).total_len = Some((layout.tcp_end - layout.l3) as u16);
            }),
            ("trailing padding", |s| s.padding = 30),
            ("first fragment (MF)", |s| v4(s).frag = 0x2000),
            ("MF and DF", |s| v4(s).frag = 0x6000),
            ("later fragment (offset 185)", |s| v4(s).frag = 185),
            ("last fragment (offset 8191)", |s| v4(s).frag = 0x1fff),
            ("reserved flag only: not a fragment", |s| {
                v4(s).frag = 0x8000
            }),
            ("no DF", |s| v4(s).frag = 0),
            ("UDP", |s| v4(s).protocol = 17),
            ("ICMP", |s| v4(s).protocol = 1),
            ("protocol 255", |s| v4(s).protocol = 255),
            ("UDP fragment", |s| {
                let ip = v4(s);
                ip.protocol = 17;
                ip.frag = 0x2000;
            }),
            ("fragment with IHL 4", |s| {
                let ip = v4(s);
                ip.ihl = Some(4);
                ip.frag = 0x2000;
            }),
        ],
    },
    Table {
        category: "ipv6",
        families: &[Family::V6],
        edits: &[
            ("version 0", |s| v6(s).version = 0),
            ("version 4", |s| v6(s).version = 4),
            ("version 7", |s| v6(s).version = 7),
            ("payload length 0", |s| v6(s).payload_len = Some(0)),
            ("payload ends inside the TCP header", |s| {
                v6(s).payload_len = Some(12);
            }),
            ("payload length one past the frame", |s| {
                let layout = s.layout();
                v6(s).payload_len = Some((layout.end - layout.l3 - 40 + 1) as u16);
            }),
            ("payload length 65535", |s| {
                v6(s).payload_len = Some(u16::MAX)
            }),
            ("trailing padding", |s| s.padding = 30),
            ("UDP", |s| v6(s).upper = 17),
            ("ICMPv6", |s| v6(s).upper = 58),
            ("no next header (59)", |s| v6(s).upper = 59),
            ("hop-by-hop", |s| {
                v6(s).ext = vec![Ext::new(EXT_HOP_BY_HOP, 0)]
            }),
            ("routing", |s| v6(s).ext = vec![Ext::new(EXT_ROUTING, 2)]),
            ("destination options", |s| {
                v6(s).ext = vec![Ext::new(EXT_DEST_OPTS, 1)];
            }),
            ("hop-by-hop of 2048 bytes", |s| {
                v6(s).ext = vec![Ext::new(EXT_HOP_BY_HOP, 255)];
            }),
            ("four extension headers", |s| v6(s).ext = chain(4, None)),
            ("five extension headers", |s| v6(s).ext = chain(5, None)),
            ("six extension headers", |s| v6(s).ext = chain(6, None)),
            ("fragment header", |s| {
                v6(s).ext = vec![Ext::new(EXT_FRAGMENT, 0)]
            }),
            ("hop-by-hop then fragment", |s| {
                v6(s).ext = chain(1, Some(EXT_FRAGMENT))
            }),
            ("four extension headers then fragment", |s| {
                v6(s).ext = chain(4, Some(EXT_FRAGMENT));
            }),
            ("five extension headers then fragment", |s| {
                v6(s).ext = chain(5, Some(EXT_FRAGMENT));
            }),
            ("four extension headers then UDP", |s| {
                let ip = v6(s);
                ip.ext = chain(4, None);
                ip.upper = 17;
            }),
            ("extension header longer than the frame", |s| {
                v6(s).ext = vec![Ext::new(EXT_HOP_BY_HOP, 255)];
                let l3 = s.layout().l3;
                v6(s).payload_len = Some(8);
                s.cut = Some(l3 + 40 + 8);
            }),
            ("extension header cut after one byte", |s| {
                v6(s).ext = vec![Ext::new(EXT_DEST_OPTS, 0)];
                let l3 = s.layout().l3;
                v6(s).payload_len = Some(1);
                s.cut = Some(l3 + 40 + 1);
            }),
            ("payload length 0 with a hop-by-hop header", |s| {
                let ip = v6(s);
                ip.ext = vec![Ext::new(EXT_HOP_BY_HOP, 0)];
                ip.payload_len = Some(0);
            }),
        ],
    },
    Table {
        category: "tcp header",
        families: BOTH,
        edits: &[
            ("data offset 0", |s| s.tcp.data_offset = Some(0)),
            ("data offset 4", |s| s.tcp.data_offset = Some(4)),
            ("data offset 15 past the end", |s| {
                s.tcp.data_offset = Some(15)
            }),
            ("data offset 15 covering the payload", |s| {
                s.tcp.data_offset = Some(15);
                s.tcp.payload = vec![0; 40];
            }),
            ("data offset 6 cuts the options short", |s| {
                s.tcp.data_offset = Some(6)
            }),
            ("data offset 5: options become payload", |s| {
                s.tcp.data_offset = Some(5)
            }),
        ],
    },
    Table {
        category: "tcp options",
        families: BOTH,
        edits: &[
            ("no options (hping3)", |s| s.tcp.options.clear()),
            ("timestamps only", |s| s.tcp.options = opt::timestamp(7, 0)),
            ("timestamps and SACK-perm", |s| {
                s.tcp.options = [opt::SACK_PERM.to_vec(), opt::timestamp(7, 0)].concat();
            }),
            ("timestamps and window scale", |s| {
                s.tcp.options = [opt::timestamp(7, 0), opt::wscale(2)].concat();
            }),
            ("window scale without timestamps", |s| {
                s.tcp.options = [opt::mss(1460), opt::wscale(7)].concat();
            }),
            ("SACK-perm without timestamps", |s| {
                s.tcp.options = [opt::mss(1460), opt::SACK_PERM.to_vec()].concat();
            }),
            ("window scale 14", |s| set_wscale(s, 14)),
            ("window scale 15 (clamped)", |s| set_wscale(s, 15)),
            ("window scale 255 (clamped)", |s| set_wscale(s, 255)),
            ("MSS 0", |s| s.tcp.options = opt::linux(0)),
            ("MSS 1", |s| s.tcp.options = opt::linux(1)),
            ("MSS 65535", |s| s.tcp.options = opt::linux(u16::MAX)),
            ("no MSS", |s| s.tcp.options = opt::linux(1460)[4..].to_vec()),
            ("option length 0 first", |s| prepend(s, &[254, 0])),
            ("option length 1 first", |s| prepend(s, &[30, 1])),
            ("option length 0 after timestamps", |s| {
                s.tcp.options.extend([254, 0])
            }),
            ("option length 1 after timestamps", |s| {
                s.tcp.options.extend([30, 1])
            }),
            ("timestamps running past the header", |s| {
                s.tcp.options =
                    [vec![opt::NOP, opt::NOP], opt::timestamp(7, 0)[..6].to_vec()].concat();
            }),
            ("window scale running past the header", |s| {
                s.tcp.options.extend([3, 8])
            }),
            ("kind without a length byte at the end", |s| {
                s.tcp.options.extend([opt::NOP, opt::NOP, opt::NOP, 30]);
            }),
            ("EOL first, timestamps after", |s| prepend(s, &[opt::EOL])),
            ("EOL between MSS and timestamps", |s| {
                s.tcp.options = [opt::mss(1460), vec![opt::EOL], opt::timestamp(7, 0)].concat();
            }),
            ("NOP soup then timestamps", |s| {
                s.tcp.options = [vec![opt::NOP; 30], opt::timestamp(7, 0)].concat();
            }),
            ("40 NOPs", |s| s.tcp.options = vec![opt::NOP; 40]),
            ("40 EOLs", |s| s.tcp.options = vec![opt::EOL; 40]),
            ("NOP and EOL soup", |s| {
                s.tcp.options = [vec![opt::NOP; 7], vec![opt::EOL, opt::NOP, 8, 10]].concat();
            }),
            ("duplicate timestamps (last wins)", |s| {
                s.tcp.options = [opt::timestamp(1, 0), opt::timestamp(2, 0)].concat();
            }),
            ("duplicate window scale (last wins)", |s| {
                s.tcp.options = [opt::wscale(3), opt::timestamp(7, 0), opt::wscale(9)].concat();
            }),
            ("duplicate MSS", |s| {
                s.tcp.options = [opt::mss(536), opt::linux(1460)].concat();
            }),
            ("duplicate SACK-perm", |s| {
                s.tcp.options = [opt::SACK_PERM.to_vec(), opt::linux(1460)].concat();
            }),
            ("unknown options around timestamps", |s| {
                let mptcp = vec![30, 12, 0, 0x81, 1, 2, 3, 4, 5, 6, 7, 8];
                s.tcp.options = [vec![254, 4, 0xf9, 0x89], opt::timestamp(7, 0), mptcp].concat();
            }),
            ("fast open cookie", |s| {
                s.tcp.options = [opt::linux(1460), vec![34, 10, 1, 2, 3, 4, 5, 6, 7, 8]].concat();
            }),
            ("timestamps with length 8", |s| {
                s.tcp.options = [opt::mss(1460), vec![8, 8, 0, 0, 0, 7, 0, 0]].concat();
            }),
            ("window scale with length 4", |s| {
                s.tcp.options = [opt::timestamp(7, 0), vec![3, 4, 7, 0]].concat();
            }),
            ("SACK-perm with length 3", |s| {
                s.tcp.options = [opt::timestamp(7, 0), vec![4, 3, 0]].concat();
            }),
            ("MSS with length 3", |s| {
                s.tcp.options = [vec![2, 3, 5], opt::timestamp(7, 0)].concat();
            }),
        ],
    },
    Table {
        category: "flags",
        families: BOTH,
        edits: &[
            ("SYN+FIN", |s| s.tcp.flags = SYN | FIN),
            ("SYN+RST", |s| s.tcp.flags = SYN | RST),
            ("SYN+ACK", |s| s.tcp.flags = SYN | ACK),
            ("all flags", |s| s.tcp.flags = 0xff),
            ("SYN+URG", |s| s.tcp.flags = SYN | URG),
            ("SYN+PSH", |s| s.tcp.flags = SYN | PSH),
            ("SYN+ECE+CWR (ECN setup)", |s| s.tcp.flags = SYN | ECE | CWR),
            ("SYN+ECE", |s| s.tcp.flags = SYN | ECE),
            ("SYN+ECE+CWR without timestamps", |s| {
                s.tcp.flags = SYN | ECE | CWR;
                s.tcp.options = opt::mss(1460);
            }),
            ("SYN with 100 bytes of data", |s| {
                s.tcp.payload = vec![0x5a; 100]
            }),
            ("no flags", |s| s.tcp.flags = 0),
            ("FIN", |s| s.tcp.flags = FIN),
            ("RST", |s| s.tcp.flags = RST),
            ("URG", |s| s.tcp.flags = URG),
            ("PSH", |s| s.tcp.flags = PSH),
            ("ACK", |s| s.tcp.flags = ACK),
            ("ACK+PSH with data", |s| {
                s.tcp.flags = ACK | PSH;
                s.tcp.payload = vec![0x5a; 100];
            }),
            ("ACK+FIN", |s| s.tcp.flags = ACK | FIN),
            ("ACK+RST", |s| s.tcp.flags = ACK | RST),
            ("ACK+URG", |s| s.tcp.flags = ACK | URG),
        ],
    },
    Table {
        category: "checksums",
        families: BOTH,
        edits: &[
            ("TCP checksum one bit off", |s| {
                s.tcp.check = Some(s.tcp_check() ^ 1)
            }),
            ("TCP checksum 0", |s| {
                s.tcp.check = Some(if s.tcp_check() == 0 { 1 } else { 0 });
            }),
            ("TCP checksum leaving out the payload", |s| {
                let header_only = s.tcp_check();
                s.tcp.payload = vec![0x5a; 100];
                s.tcp.check = Some(header_only);
            }),
            ("TCP checksum left to offload (pseudo-header sum)", |s| {
                s.tcp.check = Some(s.offloaded_tcp_check());
            }),
            ("TCP checksum left to offload, with data", |s| {
                s.tcp.payload = vec![0x5a; 100];
                s.tcp.check = Some(s.offloaded_tcp_check());
            }),
            ("TCP checksum one bit off, with data", |s| {
                s.tcp.payload = vec![0x5a; 101];
                s.tcp.check = Some(s.tcp_check() ^ 0x8000);
            }),
            ("SYN+FIN with a wrong TCP checksum", |s| {
                s.tcp.flags = SYN | FIN;
                s.tcp.check = Some(s.tcp_check() ^ 1);
            }),
        ],
    },
    Table {
        category: "ipv4 checksum",
        families: &[Family::V4],
        edits: &[
            ("header checksum one bit off", |s| {
                v4(s).check = Some(s.ip_check() ^ 1)
            }),
            ("header checksum 0", |s| v4(s).check = Some(0)),
            ("header checksum wrong with options", |s| {
                v4(s).options = vec![opt::NOP, opt::NOP, opt::NOP, opt::EOL];
                v4(s).check = Some(s.ip_check() ^ 0x0010);
            }),
            ("header checksum without the options", |s| {
                let without = s.ip_check();
                v4(s).options = vec![opt::NOP, opt::NOP, opt::NOP, opt::EOL];
                v4(s).check = Some(without);
            }),
            ("both checksums wrong", |s| {
                s.tcp.check = Some(s.tcp_check() ^ 1);
                v4(s).check = Some(s.ip_check() ^ 1);
            }),
        ],
    },
    Table {
        category: "ports",
        families: BOTH,
        edits: &[
            ("second protected port", |s| s.tcp.dport = PROTECTED[1]),
            ("unprotected port", |s| s.tcp.dport = UNPROTECTED),
            ("port next to a protected one", |s| {
                s.tcp.dport = PROTECTED[0] + 1
            }),
            ("port 0", |s| s.tcp.dport = 0),
            ("ACK to an unprotected port", |s| {
                s.tcp.dport = UNPROTECTED;
                s.tcp.flags = ACK;
            }),
            ("from a protected port to an unprotected one", |s| {
                s.tcp.sport = PROTECTED[0];
                s.tcp.dport = 1234;
            }),
        ],
    },
    Table {
        category: "sizes",
        families: BOTH,
        edits: &[
            ("minimum SYN, padded to 60 bytes", |s| {
                s.tcp.options.clear();
                s.padding = 60usize.saturating_sub(s.layout().end);
            }),
            ("1514-byte SYN", |s| grow_payload(s, 1514)),
            ("3000-byte SYN", |s| grow_payload(s, 3000)),
        ],
    },
    Table {
        category: JUMBO,
        families: BOTH,
        edits: &[
            ("9000-byte SYN", |s| grow_payload(s, JUMBO_LEN)),
            ("9000-byte frame: short SYN and padding", |s| {
                s.padding = JUMBO_LEN - s.layout().end;
            }),
            ("9000-byte ACK", |s| {
                s.tcp.flags = ACK;
                grow_payload(s, JUMBO_LEN);
            }),
            ("9000-byte UDP datagram", |s| {
                grow_payload(s, JUMBO_LEN);
                match s.v4() {
                    Some(ip) => ip.protocol = 17,
                    None => v6(s).upper = 17,
                }
            }),
        ],
    },
];

/// Every case: the tables, then cuts at every header boundary.
pub fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for table in TABLES {
        for (framing, tags) in FRAMINGS {
            for &family in table.families {
                for (name, edit) in table.edits {
                    let mut spec = base(family, tags);
                    edit(&mut spec);
                    cases.push(Case {
                        category: table.category,
                        name: format!("{family:?} {framing}: {name}"),
                        spec,
                    });
                }
            }
        }
    }
    cases.extend(truncations());
    cases
}

/// The valid SYN every edit starts from: Linux's options, to the first protected port.
pub fn base(family: Family, tags: &[u16]) -> Spec {
    Spec::syn(family, tags, PROTECTED[0], &opt::linux(1460))
}

/// The frames a truncation test starts from: with IPv4 options or IPv6 extension headers too,
/// so that those boundaries exist.
fn truncation_bases() -> Vec<(String, Spec)> {
    let mut bases = Vec::new();
    for (framing, tags) in FRAMINGS {
        for family in [Family::V4, Family::V6] {
            bases.push((format!("{family:?} {framing}"), base(family, tags)));
        }
        let mut with_options = base(Family::V4, tags);
        v4(&mut with_options).options = vec![opt::NOP, opt::NOP, opt::NOP, opt::EOL];
        bases.push((format!("V4 {framing} with IP options"), with_options));
        let mut with_ext = base(Family::V6, tags);
        v6(&mut with_ext).ext = chain(2, None);
        bases.push((format!("V6 {framing} with extension headers"), with_ext));
    }
    bases
}

fn truncations() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, spec) in truncation_bases() {
        let layout = spec.layout();
        let tags = (14..layout.l3).step_by(4);
        let boundaries = tags
            .chain([layout.l3, layout.l3 + 20, layout.l3 + 40])
            .chain(layout.ext_ends.iter().copied())
            .chain([layout.l4, layout.l4 + 20, layout.tcp_end]);
        let mut cuts: Vec<usize> = boundaries
            .flat_map(|b| [b - 1, b, b + 1])
            .filter(|&cut| (14..layout.end).contains(&cut))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            let mut truncated = spec.clone();
            truncated.cut = Some(cut);
            cases.push(Case {
                category: "truncation",
                name: format!("{name}: cut to {cut} of {} bytes", layout.end),
                spec: truncated,
            });
        }
    }
    cases
}

fn v4(spec: &mut Spec) -> &mut super::frame::V4 {
    spec.v4().expect("an IPv4 edit on an IPv4 frame")
}

fn v6(spec: &mut Spec) -> &mut super::frame::V6 {
    spec.v6().expect("an IPv6 edit on an IPv6 frame")
}

/// `count` hop-by-hop/routing/destination-options headers, then `last` if given.
fn chain(count: usize, last: Option<u8>) -> Vec<Ext> {
    let kinds = [EXT_HOP_BY_HOP, EXT_DEST_OPTS, EXT_ROUTING, EXT_DEST_OPTS];
    let mut ext: Vec<Ext> = kinds
        .iter()
        .cycle()
        .take(count)
        .map(|&kind| Ext::new(kind, 0))
        .collect();
    ext.extend(last.map(|kind| Ext::new(kind, 0)));
    ext
}

fn set_wscale(spec: &mut Spec, shift: u8) {
    spec.tcp.options = [opt::timestamp(7, 0), opt::wscale(shift)].concat();
}

fn prepend(spec: &mut Spec, bytes: &[u8]) {
    spec.tcp.options.splice(0..0, bytes.iter().copied());
}

/// Adds TCP payload until the frame is `len` bytes long.
fn grow_payload(spec: &mut Spec, len: usize) {
    let missing = len - spec.layout().end;
    spec.tcp.payload.resize(spec.tcp.payload.len() + missing, 0);
}
