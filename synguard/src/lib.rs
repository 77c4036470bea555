//! synguard as a library: the daemon's building blocks, shared by the `synguard` binary and
//! the tests that run the embedded XDP program through `BPF_PROG_TEST_RUN`.

pub mod attached;
pub mod auto;
pub mod cli;
pub mod config;
pub mod control;
pub mod counters;
pub mod datapath;
pub mod detach;
pub mod kernel_view;
pub mod lifecycle;
pub mod loader;
pub mod metrics;
pub mod netlink;
pub mod nft;
pub mod notify;
pub mod peers;
pub mod pins;
pub mod ports;
pub mod private;
pub mod privileges;
pub mod report;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod sysctl;
pub mod tuning;
pub mod watch;
