//! Prometheus metrics on `--metrics-addr`: the HTTP server that answers scrapes and samples
//! the port loads, and the exposition that each scrape reads afresh from the maps and kernel.

pub mod exposition;
pub mod server;
