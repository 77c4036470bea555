//! synguard as a library: the daemon's building blocks, shared by the `synguard` binary and
//! the tests that run the embedded XDP program through `BPF_PROG_TEST_RUN`.

pub mod cli;
pub mod counters;
pub mod loader;
pub mod nft;
pub mod ports;
pub mod stats;
pub mod sysctl;
