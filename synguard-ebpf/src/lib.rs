#![no_std]
// The datapath lives in the binary target (src/main.rs); this empty library only lets the
// daemon's build script depend on the crate so cargo rebuilds the object when it changes.
