//! The lab's integration tests, one module per concern, in one test binary so that the suite
//! links once (as aya's `test/integration-test` does). Root-only: each test takes its turn on
//! the machine through `synguard_lab::harness::start` and prints `SKIP:` when something is
//! missing. Run them one at a time, as `cargo xtask test` does:
//! `cargo test --release -p synguard-lab --test lab -- --test-threads=1 [NAME]`.

mod ack_flood;
mod attack_events;
mod capabilities;
mod cleanup;
mod config;
mod download;
mod faults;
mod firewall;
mod flood;
mod hostile_veth;
mod lab;
mod modes;
mod monitor_mode;
mod monitoring;
mod no_stalls;
mod observability;
mod operator_input;
mod package;
mod peer_filter;
mod per_source;
mod pinning;
mod policy;
mod real_servers;
mod reload;
mod restart;
mod rx_checksum;
mod soak;
mod stats_without_pins;
mod synack_format;
mod systemd;
mod unanswered_syns;
mod unprotected;
