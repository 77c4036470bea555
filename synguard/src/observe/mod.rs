//! What the datapath saw, for people and scrapers: `/metrics` (its HTTP server and the
//! exposition), the daemon's periodic stats log lines, attack start and end events (the
//! detector and the lines), and `synguard stats` / `synguard top`.

pub mod attack_detector;
pub mod attack_events;
pub mod metrics;
pub mod report;
pub mod stats;
