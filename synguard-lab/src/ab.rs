//! ApacheBench (`ab`, Debian's apache2-utils) as the HTTP load: without `-k` it sends HTTP/1.0
//! requests without keep-alive, so every request is a new connection (handshake, request,
//! response, the server's close). Runs in a namespace for a bounded time; its summary and its
//! percentile table (`-e`, sub-millisecond) are parsed.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};

use crate::netns::Netns;
use crate::process::run;
use crate::scratch::ScratchDir;

/// The most requests one run may make (ab stops at its time limit long before).
const MAX_REQUESTS: &str = "1000000";
/// How long ab waits for one response before counting it failed.
const RESPONSE_TIMEOUT_SECS: u64 = 10;

/// What ab reported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AbReport {
    pub complete: u64,
    /// Connect, receive, length and exception failures.
    pub failed: u64,
    pub non_2xx: u64,
    /// The first response's body length; ab counts one of another length as failed.
    pub document_length: u64,
    /// Whole-request times (connect to the response's end), 50th and 99th percentile and max.
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl AbReport {
    /// Requests that did not get a whole 2xx response.
    pub fn unsuccessful(&self) -> u64 {
        self.failed + self.non_2xx
    }

    pub fn summary(&self) -> String {
        format!(
            "{} complete, {} failed, {} non-2xx; whole request p50 {:.2?} p99 {:.2?} max {:.2?}",
            self.complete, self.failed, self.non_2xx, self.p50, self.p99, self.max
        )
    }
}

/// Runs `ab -c concurrency -t duration` for `http://target{path}` in `netns`, its percentile
/// file in `files`. Fails if ab itself fails (it exits on errors it cannot count).
pub fn run_for(
    netns: &Netns,
    target: SocketAddr,
    path: &str,
    concurrency: usize,
    duration: Duration,
    files: &ScratchDir,
) -> Result<AbReport> {
    let csv = files.path("ab-percentiles.csv");
    let secs = duration.as_secs().max(1);
    let mut cmd = netns.command("timeout");
    // ab keeps to -t, but a hung run must not hang the test.
    cmd.args(["-k", "5", &(secs + 2 * RESPONSE_TIMEOUT_SECS).to_string()])
        .args(["ab", "-q", "-r"])
        .args(["-c", &concurrency.to_string()])
        .args(["-t", &secs.to_string(), "-n", MAX_REQUESTS])
        .args(["-s", &RESPONSE_TIMEOUT_SECS.to_string()])
        .arg("-e")
        .arg(&csv)
        .arg(format!("http://{target}{path}"));
    let summary = run(&mut cmd)?;
    let percentiles = std::fs::read_to_string(&csv)
        .with_context(|| format!("reading ab's percentiles {}", csv.display()))?;
    parse(&summary, &percentiles).with_context(|| format!("parsing ab's output:\n{summary}"))
}

fn parse(summary: &str, percentiles: &str) -> Result<AbReport> {
    let field = |name: &str| -> Option<u64> {
        summary.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.trim_start().strip_prefix(':')?;
            value.split_whitespace().next()?.parse().ok()
        })
    };
    let required = |name: &str| field(name).ok_or_else(|| anyhow!("no `{name}:` line"));
    let percentile = |p: u32| -> Result<Duration> {
        let ms = percentiles
            .lines()
            .find_map(|line| {
                let (at, ms) = line.split_once(',')?;
                (at.trim() == p.to_string()).then(|| ms.trim().parse::<f64>().ok())?
            })
            .ok_or_else(|| anyhow!("no {p}th percentile in ab's table"))?;
        Ok(Duration::from_nanos((ms * 1e6).round() as u64))
    };
    Ok(AbReport {
        complete: required("Complete requests")?,
        failed: required("Failed requests")?,
        // Printed only when there are some.
        non_2xx: field("Non-2xx responses").unwrap_or(0),
        document_length: required("Document Length")?,
        p50: percentile(50)?,
        p99: percentile(99)?,
        max: percentile(100)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_percentiles() {
        let summary = "Server Software:        nginx/1.22.1\n\
                       Document Path:          /body.bin\n\
                       Document Length:        4096 bytes\n\n\
                       Complete requests:      7649\n\
                       Failed requests:        2\n   (Connect: 0, Receive: 0, Length: 2, Exceptions: 0)\n\
                       Non-2xx responses:      3\n\
                       Total transferred:      33135468 bytes\n\
                       HTML transferred:       31330304 bytes\n";
        let csv = "Percentage served,Time in ms\n0,0.103\n50,0.250\n99,5.310\n100,7.773\n";
        let report = parse(summary, csv).unwrap();
        assert_eq!(
            (report.complete, report.failed, report.non_2xx),
            (7649, 2, 3)
        );
        assert_eq!(report.unsuccessful(), 5);
        assert_eq!(report.document_length, 4096);
        assert_eq!(report.p99, Duration::from_micros(5310));
        assert_eq!(report.max, Duration::from_micros(7773));
        let clean = summary.replace("Non-2xx responses:      3\n", "");
        assert_eq!(parse(&clean, csv).unwrap().non_2xx, 0);
        assert!(parse("Complete requests: 1\n", csv).is_err());
    }
}
