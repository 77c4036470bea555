//! nftables change events (netlink group `NFNLGRP_NFTABLES`) of the network namespace the
//! daemon runs in: which committed transactions touched `table inet synguard`.
//!
//! The kernel sends one message per object a transaction adds or deletes (a `nft flush
//! ruleset` deletes every rule, set, chain and table), then `NFT_MSG_NEWGEN` when the
//! transaction is committed. Waiting for that end turns a burst into one check, made once the
//! ruleset is whole again. The nfnetlink header is read by hand: no maintained crate parses
//! nftables messages, and only the table named in each one is needed.

use std::io;
use std::time::Instant;

use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_NETFILTER;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::kernel::nft::rules::TABLE;

/// `NFNLGRP_NFTABLES` (linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nftables message's type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_NEWGEN`: a transaction was committed (the last message of its burst).
const NFT_MSG_NEWGEN: u16 = 15;
/// `NFPROTO_INET`, the family of an `inet` table (in the message's `nfgenmsg`).
const NFPROTO_INET: u8 = 1;
/// Attribute 1 of every nftables object message but NEWGEN names its table
/// (`NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, `NFTA_SET_TABLE`, ...).
const NFTA_OBJECT_TABLE: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// Attribute type bits that are flags (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// One datagram holds a few pages of messages at most.
const RECV_BUFFER: usize = 64 * 1024;
/// The socket's receive queue: a flush of a large ruleset is a message per rule, and an
/// overflow costs only a check (ENOBUFS), but fewer of them is better.
const RECV_QUEUE: usize = 4 * 1024 * 1024;

/// A socket subscribed to the namespace's nftables events.
pub struct NftEvents {
    socket: AsyncFd<Socket>,
    buf: Vec<u8>,
    /// When the first message about the table of the transaction not yet committed arrived.
    touched_at: Option<Instant>,
}

impl NftEvents {
    /// Subscribes (needs CAP_NET_ADMIN in the namespace, as nft itself does).
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.add_membership(NFNLGRP_NFTABLES)?;
        socket.set_rx_buf_sz(RECV_QUEUE)?;
        socket.set_non_blocking(true)?;
        // SAFETY: the Socket owns its descriptor until it is dropped (with the AsyncFd) and
        // always returns that one from as_raw_fd.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self {
            socket,
            buf: vec![0; RECV_BUFFER],
            touched_at: None,
        })
    }

    /// Waits until a committed transaction touched `table inet synguard`, or until events were
    /// lost to a full receive queue (ENOBUFS: any of them may have); returns when the first
    /// event calling for the check arrived. Cancel-safe: what was read stays in `self`.
    pub async fn changed(&mut self) -> io::Result<Instant> {
        loop {
            let mut ready = self.socket.readable().await?;
            let buf = &mut self.buf;
            let received = match ready.try_io(|socket| socket.get_ref().recv(&mut &mut buf[..], 0))
            {
                Ok(received) => received,
                Err(_would_block) => continue,
            };
            match received {
                Ok(size) => {
                    let scan = scan(&self.buf[..size.min(self.buf.len())]);
                    if scan.touched {
                        self.touched_at.get_or_insert_with(Instant::now);
                    }
                    if scan.committed
                        && let Some(at) = self.touched_at.take()
                    {
                        return Ok(at);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Ok(self.touched_at.take().unwrap_or_else(Instant::now));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What one datagram of events says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scan {
    /// A message names `table inet synguard` (or could not be read: assumed to).
    touched: bool,
    /// A transaction was committed (NEWGEN).
    committed: bool,
}

fn scan(datagram: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let length = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if length < NLMSG_HDRLEN || length > rest.len() {
            scan.touched = true;
            break;
        }
        let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
        if kind >> 8 == NFNL_SUBSYS_NFTABLES {
            if kind & 0xff == NFT_MSG_NEWGEN {
                scan.committed = true;
            } else if names_our_table(&rest[NLMSG_HDRLEN..length]) != Some(false) {
                scan.touched = true;
            }
        }
        rest = &rest[align4(length).min(rest.len())..];
    }
    scan
}

/// Whether an nftables object message (after its netlink header) is about
/// `table inet synguard`; `None` if it cannot be read.
fn names_our_table(message: &[u8]) -> Option<bool> {
    let (&family, _) = message.split_first()?;
    let mut attributes = message.get(NFGENMSG_LEN..)?;
    while attributes.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes(attributes[0..2].try_into().ok()?));
        let kind = u16::from_ne_bytes(attributes[2..4].try_into().ok()?) & NLA_TYPE_MASK;
        let value = attributes.get(4..length)?;
        if kind == NFTA_OBJECT_TABLE {
            let name = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(family == NFPROTO_INET && name == TABLE.as_bytes());
        }
        attributes = attributes.get(align4(length)..).unwrap_or_default();
    }
    None
}

fn align4(length: usize) -> usize {
    length.div_ceil(4) * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An nftables message of type `msg` for `family` with a table-name attribute.
    fn message(msg: u16, family: u8, table: &str) -> Vec<u8> {
        let mut attribute = Vec::new();
        let name_len = 4 + table.len() + 1;
        attribute.extend((name_len as u16).to_ne_bytes());
        attribute.extend(NFTA_OBJECT_TABLE.to_ne_bytes());
        attribute.extend(table.as_bytes());
        attribute.push(0);
        attribute.resize(align4(name_len), 0);
        let body = [&[family, 0, 0, 0][..], &attribute].concat();
        let length = NLMSG_HDRLEN + body.len();
        let mut out = Vec::new();
        out.extend((length as u32).to_ne_bytes());
        out.extend(((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        out.extend([0; 10]);
        out.extend(body);
        out
    }

    const NFT_MSG_DELTABLE: u16 = 2;
    const NFT_MSG_DELRULE: u16 = 8;

    #[test]
    fn only_messages_about_inet_synguard_touch_it() {
        let ours = message(NFT_MSG_DELRULE, NFPROTO_INET, "synguard");
        let theirs = message(NFT_MSG_DELTABLE, NFPROTO_INET, "filter");
        let other_family = message(NFT_MSG_DELTABLE, 2, "synguard");
        let generation = message(NFT_MSG_NEWGEN, 0, "");
        assert_eq!(
            scan(&[theirs.clone(), other_family.clone()].concat()),
            Scan::default()
        );
        assert_eq!(
            scan(&[theirs, ours, generation.clone()].concat()),
            Scan {
                touched: true,
                committed: true
            }
        );
        assert_eq!(
            scan(&[other_family, generation].concat()),
            Scan {
                touched: false,
                committed: true
            }
        );
    }

    #[test]
    fn unreadable_messages_count_as_touching_it() {
        let mut truncated = message(NFT_MSG_DELTABLE, NFPROTO_INET, "filter");
        truncated[0] = 200;
        assert!(scan(&truncated).touched);
        let mut no_table = message(NFT_MSG_DELTABLE, NFPROTO_INET, "filter");
        no_table[NLMSG_HDRLEN + NFGENMSG_LEN + 2] = 9;
        assert!(scan(&no_table).touched);
    }
}
