//! Source CIDR allow/deny lists (longest prefix wins), for traffic to protected ports.
use aya_ebpf::{maps::lpm_trie::Key, programs::XdpContext};
use synguard_common::{DatapathConfig, POLICY_V4, POLICY_V6, Policy};

use crate::{
    maps::{POLICY4, POLICY6},
    parse::{Family, IPV4_HLEN, IPV6_HLEN, TcpPacket, ptr_at},
};

/// The policy for the packet's source address, if a list covers it. A subprogram of its own:
/// the trie key stays out of the dispatcher's frame (see `synack::answer_syn`).
#[inline(never)]
pub fn source_policy(ctx: &XdpContext, pkt: &TcpPacket, cfg: &DatapathConfig) -> Option<Policy> {
    let value = match pkt.family {
        Family::V4 if cfg.policy & POLICY_V4 != 0 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV4_HLEN]>(ctx, pkt.l2_len)? };
            let addr = [ip[12], ip[13], ip[14], ip[15]];
            *POLICY4.get(Key::new(32, addr))?
        }
        Family::V6 if cfg.policy & POLICY_V6 != 0 => {
            // SAFETY: bounds-checked by ptr_at.
            let ip = unsafe { &*ptr_at::<[u8; IPV6_HLEN]>(ctx, pkt.l2_len)? };
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&ip[8..24]);
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
