//! Checks a SYN-ACK the program sent against the model's, decoded by the lab's
//! [`TcpSegment`] (etherparse: a parser independent of both the datapath and the model).

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, TcpHeader, TcpOptionElement};
use synguard_lab::capture::{IpHeader, TcpSegment};

use super::frame::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
use super::model::{Addrs, ReplyOption, SynAck};

/// Our TSval carries the client's options in its low 6 bits; the rest is a clock.
const TS_OPTION_BITS: u32 = 0x3f;

/// Returns the cookie (the reply's sequence number), or every way the reply is wrong.
pub fn verify(reply: &[u8], want: &SynAck) -> Result<u32, Vec<String>> {
    let mut problems = Vec::new();
    if reply.len() != want.len {
        problems.push(format!(
            "reply is {} bytes, the model's {}",
            reply.len(),
            want.len
        ));
    }
    if !reply.starts_with(&want.l2) {
        problems.push(format!(
            "L2 header {:02x?}, want {:02x?} (MACs swapped, tags kept)",
            &reply[..want.l2.len().min(reply.len())],
            want.l2
        ));
    }
    let segment = match TcpSegment::parse(reply) {
        Ok(Some(segment)) => segment,
        Ok(None) => {
            problems.push("etherparse finds no IPv4 or IPv6 TCP segment in the reply".to_owned());
            return Err(problems);
        }
        Err(e) => {
            problems.push(format!("etherparse cannot decode the reply: {e:#}"));
            return Err(problems);
        }
    };
    let got = &segment.tcp_header;
    let tcp_len = (got.header_len() + segment.payload_len) as u16;
    match (&segment.ip_header, &want.addrs) {
        (IpHeader::V4(got), &Addrs::V4 { src, dst }) => {
            if !segment.ip_checksum_ok {
                problems.push(format!(
                    "IPv4 header checksum {:#06x}, correct is {:#06x}",
                    got.header_checksum,
                    got.calc_header_checksum()
                ));
            }
            let mut want_ip = Ipv4Header::new(tcp_len, want.ttl, IpNumber::TCP, src, dst)
                .expect("a short TCP segment");
            want_ip.header_checksum = got.header_checksum;
            if *got != want_ip {
                problems.push(format!("IPv4 header {got:?}, want {want_ip:?}"));
            }
        }
        (IpHeader::V6(got), &Addrs::V6 { src, dst }) => {
            let want_ip = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: tcp_len,
                next_header: IpNumber::TCP,
                hop_limit: want.ttl,
                source: src,
                destination: dst,
            };
            if *got != want_ip {
                problems.push(format!("IPv6 header {got:?}, want {want_ip:?}"));
            }
        }
        (ip, _) => {
            problems.push(format!("network layer {ip:?}, want {:?}", want.addrs));
            return Err(problems);
        }
    }
    if !segment.tcp_checksum_ok {
        problems.push(format!("TCP checksum {:#06x} is wrong", got.checksum));
    }
    let want_tcp = expected_tcp(got, want);
    if *got != want_tcp {
        problems.push(format!("TCP header {got:?}, want {want_tcp:?}"));
    }
    if segment.payload_len != 0 {
        problems.push(format!("{} bytes of TCP payload", segment.payload_len));
    }
    if problems.is_empty() {
        Ok(got.sequence_number)
    } else {
        Err(problems)
    }
}

/// The model's TCP header, with the two fields only the program knows taken from `got`: the
/// cookie (sequence number) and the clock bits of our TSval. Checksums are checked apart.
fn expected_tcp(got: &TcpHeader, want: &SynAck) -> TcpHeader {
    let got_tsval = got.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::Timestamp(value, _)) => Some(value),
        _ => None,
    });
    let options: Vec<TcpOptionElement> = want
        .options
        .iter()
        .map(|option| match *option {
            ReplyOption::Mss(mss) => TcpOptionElement::MaximumSegmentSize(mss),
            ReplyOption::SackPermitted => TcpOptionElement::SelectiveAcknowledgementPermitted,
            ReplyOption::Nop => TcpOptionElement::Noop,
            ReplyOption::Timestamp { low_bits, echo } => TcpOptionElement::Timestamp(
                got_tsval.unwrap_or(0) & !TS_OPTION_BITS | low_bits,
                echo,
            ),
            ReplyOption::WindowScale(shift) => TcpOptionElement::WindowScale(shift),
        })
        .collect();
    let flag = |bit: u8| want.flags & bit != 0;
    let mut tcp = TcpHeader {
        source_port: want.sport,
        destination_port: want.dport,
        sequence_number: got.sequence_number,
        acknowledgment_number: want.ack,
        ns: false,
        fin: flag(FIN),
        syn: flag(SYN),
        rst: flag(RST),
        psh: flag(PSH),
        ack: flag(ACK),
        urg: flag(URG),
        ece: flag(ECE),
        cwr: flag(CWR),
        window_size: 0,
        checksum: got.checksum,
        urgent_pointer: 0,
        ..TcpHeader::default()
    };
    tcp.set_options(&options)
        .expect("the model's options fit in 40 bytes");
    tcp
}
