//! What the daemon is told to do: the command line and the config file, their values, bounds
//! and errors, the source policy lists and the protected ports, merged into `Settings`.

pub mod cli;
pub mod error;
mod file;
pub mod merge;
pub mod policy;
pub mod ports;
pub mod values;
