//! Source CIDR allow/deny lists (longest prefix wins), for traffic to protected ports.
use aya_ebpf::{maps::lpm_trie::Key, programs::XdpContext};
use synguard_common::{DatapathConfig, POLICY_V4, POLICY_V6, Policy};

use crate::{
    maps::{POLICY4, POLICY6},
    parse::{
        Family, IPV4_HLEN, IPV6_HLEN, TcpPacket, bytes_at,
        field::{IPV4_SADDR, IPV6_SADDR},
    },
};

/// The policy for the packet's source address, if a list covers it. A subprogram of its own:
/// the trie key stays out of the dispatcher's frame (see `synack::answer_syn`).
#[inline(never)]
pub fn source_policy(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig) -> Option<Policy> {
    let value = match pkt.family {
        Family::V4 if cfg.policy & POLICY_V4 != 0 => {
            let ip = bytes_at::<IPV4_HLEN>(ctx, pkt.l2_len)?;
            let addr = [
                ip[IPV4_SADDR],
                ip[IPV4_SADDR + 1],
                ip[IPV4_SADDR + 2],
                ip[IPV4_SADDR + 3],
            ];
            *POLICY4.get(Key::new(32, addr))?
        }
        Family::V6 if cfg.policy & POLICY_V6 != 0 => {
            let ip = bytes_at::<IPV6_HLEN>(ctx, pkt.l2_len)?;
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&ip[IPV6_SADDR..IPV6_SADDR + 16]);
            *POLICY6.get(Key::new(128, addr))?
        }
        _ => return None,
    };
    match value {
        v if v == Policy::Allow as u8 => Some(Policy::Allow),
        v if v == Policy::Deny as u8 => Some(Policy::Deny),
        _ => None,
    }
}
