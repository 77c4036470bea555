//! What the datapath saw, for people and scrapers: `/metrics` (its HTTP server and the
//! exposition), the daemon's periodic stats log lines, and `synguard stats` / `synguard top`.

pub mod metrics;
pub mod report;
pub mod stats;
