//! Reading `synguard top`'s table in tests.

use anyhow::{Result, anyhow};

/// The block time left (seconds) that `synguard top` shows for `source` (`addr/len`) among its
/// blocked sources; an error naming what is missing if it does not list it.
pub fn block_time_left(top: &str, source: &str) -> Result<f64> {
    time_left(top, "blocked sources", source)
}

/// The same among the sources over a budget that `--per-source-action log` does not block.
pub fn monitored_time_left(top: &str, source: &str) -> Result<f64> {
    time_left(top, "monitored sources", source)
}

fn time_left(top: &str, list: &str, source: &str) -> Result<f64> {
    let row = top
        .lines()
        .skip_while(|l| !l.starts_with(list))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find(|l| l.starts_with(source))
        .ok_or_else(|| anyhow!("{source} is not among the {list}:\n{top}"))?;
    row.split_whitespace()
        .last()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| anyhow!("no time left in `{row}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_blocked_sources_time_left() {
        let top = "synguard top on eth0: ...\n\n\
            blocked sources        half-open  time left\n\
            10.0.0.2/32                   25      28.0s\n\
            \n\
            most half-open / invalid ACKs (last window)\n\
            10.0.0.3/32                   25   1.0s ago\n";
        assert_eq!(block_time_left(top, "10.0.0.2/32").unwrap(), 28.0);
        assert!(block_time_left(top, "10.0.0.3/32").is_err());
        assert!(monitored_time_left(top, "10.0.0.2/32").is_err());
        let monitored = top.replace(
            "blocked sources ",
            "monitored sources (over budget, not blocked) ",
        );
        assert_eq!(
            monitored_time_left(&monitored, "10.0.0.2/32").unwrap(),
            28.0
        );
    }
}
