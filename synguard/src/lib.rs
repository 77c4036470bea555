//! synguard as a library: the daemon's building blocks, shared by the `synguard` binary and
//! the tests that run the embedded XDP program through `BPF_PROG_TEST_RUN`.
//!
//! Layers, each using only those above it: [`settings`] (what to do), [`kernel`] (the kernel's
//! knobs and views), [`datapath`] (the XDP program and its maps), [`observe`] (what it saw)
//! and [`runtime`] (the daemon's run). [`private`] guards the files all of them touch.

pub mod datapath;
pub mod kernel;
pub mod observe;
pub mod private;
pub mod runtime;
pub mod settings;
