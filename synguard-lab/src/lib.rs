//! A network-namespace lab for synguard: a client and a server namespace joined by a veth
//! pair, the daemon under test in the server namespace, real TCP traffic (the lab's own server
//! and client, or nginx, ab and sshd from Debian), hping3 floods,
//! crafted SYNs, packet captures checked with an independent parser, and the kernel's and
//! synguard's counters. Everything it creates is named `sgl…` and removed by drop guards.
//!
//! Needs root; the integration tests in `tests/` print `SKIP:` when something is missing.

pub mod ab;
pub mod bpffs;
pub mod capture;
pub mod client;
pub mod craft;
pub mod daemon;
pub mod flood;
pub mod floodgen;
pub mod harness;
pub mod hostile;
pub mod kernel;
pub mod metrics;
pub mod netns;
pub mod packet;
pub mod peer_xdp;
pub mod process;
pub mod scratch;
pub mod server;
pub mod third_party;
pub mod top;
pub mod topology;
