//! Helpers of the `hostile_packets` test: frames, the reference model, the test bench.

pub mod bench;
pub mod client;
mod reply;
pub mod strategies;

// The corpus and the model live in the lab crate, whose veth test sends a sample of them.
pub use synguard_lab::hostile::{corpus, frame, model};
