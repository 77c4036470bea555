//! The XDP datapath: loading and attaching the embedded programs, the maps the daemon writes,
//! their pins, the counters and read-only snapshots of a running program, and peer seeding.

pub mod attach;
pub mod attached;
pub mod counters;
pub mod error;
pub mod load;
pub mod maps;
pub mod peers;
pub mod pins;
pub mod snapshot;
