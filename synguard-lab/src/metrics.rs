//! The daemon's `/metrics`, read as a scraper does: curl inside the server namespace (classic
//! Prometheus text format), and one sample picked out of the exposition.

use anyhow::{Context as _, Result, anyhow};

use crate::topology::Lab;

/// The daemon's default `--metrics-addr`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9787";

/// `/metrics` of the daemon listening on `addr` in the server namespace, in the classic
/// Prometheus text format (what curl gets).
pub fn scrape(lab: &Lab, addr: &str) -> Result<String> {
    lab.server()
        .exec("curl", &["-sSf", &format!("http://{addr}/metrics")])
}

/// The value of the sample `series` (name and labels exactly as exposed).
pub fn sample(text: &str, series: &str) -> Result<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .ok_or_else(|| anyhow!("no `{series}` in the exposition"))?
        .trim()
        .parse()
        .with_context(|| format!("value of `{series}`"))
}
