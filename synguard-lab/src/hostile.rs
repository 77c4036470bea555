//! The hostile-packet corpus and the reference model of synguard's packet policy, shared by
//! the `BPF_PROG_TEST_RUN` tests of the `synguard` crate (`synguard/tests/hostile_packets.rs`)
//! and the lab test that sends a sample over a real veth (`tests/lab/hostile_veth.rs`).

pub mod corpus;
pub mod frame;
pub mod model;
mod segment;
