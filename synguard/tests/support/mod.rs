//! Helpers of the `hostile_packets` test: frames, the reference model, the test bench.

pub mod bench;
pub mod client;
pub mod corpus;
pub mod frame;
pub mod model;
mod reply;
pub mod strategies;
