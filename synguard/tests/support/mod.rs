//! Helpers of the `hostile_packets` test: the test bench, reply checks, proptest strategies.

pub mod bench;
mod reply;
pub mod strategies;

// The corpus and the model live in the lab crate, whose veth test sends a sample of them.
pub use synguard_lab::hostile::{corpus, frame, model};
