//! The legitimate client: sequential connections from the client namespace, each reading the
//! server's payload and checking it byte for byte (or, for a server that speaks first and then
//! waits, such as sshd, only its first line), with per-connection timings.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use socket2::{Domain, Socket, Type};

use crate::capture::{Capture, TcpSegment};
use crate::netns::{Iface, Netns, join};
use crate::server::{Protocol, REQUEST, payload};

/// What the client does.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub target: SocketAddr,
    /// Must match the server's.
    pub protocol: Protocol,
    /// Size of the server's payload.
    pub payload_len: usize,
    /// Read only the server's first line instead of a payload, check that it starts with this
    /// and close (a server that speaks first and then waits for the client, like sshd).
    pub banner: Option<&'static [u8]>,
    /// Connections to make (the client also stops when told to).
    pub connections: usize,
    /// Bind each connection to the next port of this range (round robin, SO_REUSEADDR).
    pub source_ports: Option<RangeInclusive<u16>>,
    /// Start connections at most this often (none: back to back).
    pub interval: Option<Duration>,
    pub connect_timeout: Duration,
    /// Read timeout while downloading.
    pub io_timeout: Duration,
}

impl ClientConfig {
    pub fn new(
        target: SocketAddr,
        protocol: Protocol,
        payload_len: usize,
        connections: usize,
    ) -> Self {
        Self {
            target,
            protocol,
            payload_len,
            connections,
            banner: None,
            source_ports: None,
            interval: None,
            connect_timeout: Duration::from_secs(3),
            io_timeout: Duration::from_secs(5),
        }
    }

    /// A [`Protocol::ServerFirst`] client of a server whose first line starts with `prefix`
    /// (see [`Self::banner`]).
    pub fn banner(target: SocketAddr, prefix: &'static [u8], connections: usize) -> Self {
        Self {
            banner: Some(prefix),
            ..Self::new(target, Protocol::ServerFirst, 0, connections)
        }
    }

    pub fn source_ports(mut self, ports: RangeInclusive<u16>) -> Self {
        self.source_ports = Some(ports);
        self
    }

    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// Timings of one successful connection.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// From connect() to established.
    pub connect: Duration,
    /// From connect() to the server's FIN after the whole payload (request included), or to
    /// the end of the banner line.
    pub total: Duration,
}

/// When one connection was tried and whether it succeeded.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    pub started: Instant,
    pub ended: Instant,
    pub ok: bool,
}

/// The outcome of a client run.
#[derive(Clone, Debug, Default)]
pub struct ClientReport {
    pub samples: Vec<Sample>,
    /// One message per failed connection.
    pub failures: Vec<String>,
    /// Every connection in order.
    pub attempts: Vec<Attempt>,
    pub elapsed: Duration,
}

impl ClientReport {
    pub fn successes(&self) -> usize {
        self.samples.len()
    }

    pub fn attempts(&self) -> usize {
        self.samples.len() + self.failures.len()
    }

    pub fn success_percent(&self) -> f64 {
        if self.attempts() == 0 {
            return 0.0;
        }
        100.0 * self.successes() as f64 / self.attempts() as f64
    }

    /// The `p`-th percentile (0–100) of `metric` over successful connections.
    pub fn percentile(&self, metric: fn(&Sample) -> Duration, p: f64) -> Duration {
        let mut values: Vec<Duration> = self.samples.iter().map(metric).collect();
        values.sort_unstable();
        if values.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
        values[rank.min(values.len() - 1)]
    }

    /// The longest time new connections kept failing: from the start of the first failed
    /// attempt of a run to the start of the next successful one (or the end of the run's
    /// last attempt, if none followed).
    pub fn longest_failure(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut run_start: Option<Instant> = None;
        for attempt in &self.attempts {
            match (attempt.ok, run_start) {
                (false, None) => run_start = Some(attempt.started),
                (true, Some(start)) => {
                    longest = longest.max(attempt.started - start);
                    run_start = None;
                }
                _ => {}
            }
        }
        if let (Some(start), Some(last)) = (run_start, self.attempts.last()) {
            longest = longest.max(last.ended - start);
        }
        longest
    }

    pub fn max(&self, metric: fn(&Sample) -> Duration) -> Duration {
        self.samples.iter().map(metric).max().unwrap_or_default()
    }

    /// Connections where `metric` exceeded `limit`.
    pub fn slower_than(&self, metric: fn(&Sample) -> Duration, limit: Duration) -> usize {
        self.samples.iter().filter(|s| metric(s) > limit).count()
    }

    /// A histogram of `metric` in power-of-two millisecond buckets.
    pub fn distribution(&self, metric: fn(&Sample) -> Duration) -> String {
        const BOUNDS_MS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 200, 500, 1000, 2000];
        let mut counts = [0usize; BOUNDS_MS.len() + 1];
        for sample in &self.samples {
            let ms = metric(sample).as_secs_f64() * 1000.0;
            let bucket = BOUNDS_MS
                .iter()
                .position(|&b| ms <= b as f64)
                .unwrap_or(BOUNDS_MS.len());
            counts[bucket] += 1;
        }
        let mut out = String::new();
        let mut lower = 0;
        for (i, count) in counts.iter().enumerate() {
            if *count > 0 {
                let label = BOUNDS_MS
                    .get(i)
                    .map_or_else(|| format!(">{lower} ms"), |b| format!("{lower}-{b} ms"));
                out.push_str(&format!("  {label:>12}: {count}\n"));
            }
            lower = BOUNDS_MS.get(i).copied().unwrap_or(lower);
        }
        out
    }

    /// One line: counts and connect-latency percentiles.
    pub fn summary(&self) -> String {
        let connect = |s: &Sample| s.connect;
        let total = |s: &Sample| s.total;
        format!(
            "{} ok, {} failed in {:.1?}; connect p50 {:.2?} p99 {:.2?} max {:.2?}; whole connection p50 {:.2?} p99 {:.2?} max {:.2?}",
            self.successes(),
            self.failures.len(),
            self.elapsed,
            self.percentile(connect, 50.0),
            self.percentile(connect, 99.0),
            self.max(connect),
            self.percentile(total, 50.0),
            self.percentile(total, 99.0),
            self.max(total),
        )
    }
}

/// Live counts, readable while the client runs.
#[derive(Debug, Default)]
pub struct Progress {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Progress {
    /// (successful, failed) connections so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A client running on its own thread in the client namespace; told to stop when dropped.
pub struct LegitClient {
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<ClientReport>>>,
}

impl LegitClient {
    pub fn spawn(netns: &Netns, config: ClientConfig) -> Result<Self> {
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (progress, stop) = (Arc::clone(&progress), Arc::clone(&stop));
            netns.spawn("legit-client", move || {
                Ok(run_loop(&config, &progress, &stop))
            })?
        };
        Ok(Self {
            progress,
            stop,
            thread: Some(thread),
        })
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Asks the client to stop after the current connection.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the client to finish (all connections made, or stopped) and reports.
    pub fn join(mut self) -> Result<ClientReport> {
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("client already joined"))?;
        join(thread)
    }
}

impl Drop for LegitClient {
    fn drop(&mut self) {
        // Not joined: the thread ends after its current connection.
        self.stop();
    }
}

/// Runs `config` in `netns` to completion.
pub fn run(netns: &Netns, config: ClientConfig) -> Result<ClientReport> {
    LegitClient::spawn(netns, config)?.join()
}

/// Makes `connections` [`Protocol::RequestFirst`] connections to `target` from `netns`, each
/// downloading `payload_len` bytes; an error (with the report) unless all succeed.
pub fn ensure_all_connect(
    netns: &Netns,
    target: SocketAddr,
    payload_len: usize,
    connections: usize,
) -> Result<()> {
    let config = ClientConfig::new(target, Protocol::RequestFirst, payload_len, connections);
    let report = run(netns, config)?;
    ensure!(
        report.successes() == connections,
        "connections to {target}: {}",
        report.summary()
    );
    Ok(())
}

/// Runs `config` in `netns` while capturing on `iface` (the namespace's veth): the report and
/// the SYN-ACKs the target sent (at least one per successful connection, if they arrived
/// within a second). For a quiet lab: the capture keeps every frame.
pub fn run_captured(
    netns: &Netns,
    iface: &Iface,
    config: ClientConfig,
) -> Result<(ClientReport, Vec<TcpSegment>)> {
    let target = config.target;
    let capture = Capture::start(netns, iface.name())?;
    let report = run(netns, config)?;
    // The capture thread may still be reading: wait for one SYN-ACK per connection made.
    let synacks = capture.wait_for(report.successes(), Duration::from_secs(1), |s| {
        s.is_synack() && s.src == target.ip() && s.sport == target.port()
    })?;
    capture.stop()?;
    Ok((report, synacks))
}

fn run_loop(config: &ClientConfig, progress: &Progress, stop: &AtomicBool) -> ClientReport {
    let expected = payload(config.payload_len);
    let ports: Vec<u16> = config
        .source_ports
        .clone()
        .map(Iterator::collect)
        .unwrap_or_default();
    let mut report = ClientReport::default();
    let start = Instant::now();
    for i in 0..config.connections {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(interval) = config.interval {
            let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let port = (!ports.is_empty()).then(|| ports[i % ports.len()]);
        let started = Instant::now();
        let outcome = connection(config, port, &expected);
        report.attempts.push(Attempt {
            started,
            ended: Instant::now(),
            ok: outcome.is_ok(),
        });
        match outcome {
            Ok(sample) => {
                report.samples.push(sample);
                progress.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let from = port.map_or_else(String::new, |p| format!(" from port {p}"));
                report
                    .failures
                    .push(format!("connection #{i}{from}: {e:#}"));
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    report.elapsed = start.elapsed();
    report
}

fn connection(config: &ClientConfig, source_port: Option<u16>, expected: &[u8]) -> Result<Sample> {
    let target = config.target;
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if let Some(port) = source_port {
        let any: IpAddr = match target {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        socket.set_reuse_address(true)?;
        socket
            .bind(&SocketAddr::new(any, port).into())
            .with_context(|| format!("binding source port {port}"))?;
    }
    let start = Instant::now();
    socket
        .connect_timeout(&target.into(), config.connect_timeout)
        .with_context(|| format!("connecting to {target}"))?;
    let connect = start.elapsed();
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(config.io_timeout))?;
    stream.set_write_timeout(Some(config.io_timeout))?;
    if let Some(prefix) = config.banner {
        let mut line = Vec::new();
        BufReader::new(&stream)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading the banner after {} bytes", line.len()))?;
        let total = start.elapsed();
        if !line.starts_with(prefix) || !line.ends_with(b"\n") {
            bail!(
                "banner {:?} is not a line starting with {:?}",
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(prefix)
            );
        }
        return Ok(Sample { connect, total });
    }
    if config.protocol == Protocol::RequestFirst {
        stream.write_all(REQUEST).context("sending the request")?;
    }
    let mut received = Vec::with_capacity(expected.len());
    stream
        .read_to_end(&mut received)
        .with_context(|| format!("reading after {} bytes", received.len()))?;
    let total = start.elapsed();
    if received != expected {
        let at = received.iter().zip(expected).position(|(a, b)| a != b);
        bail!(
            "payload mismatch: got {} bytes, expected {}; first difference at {}",
            received.len(),
            expected.len(),
            at.map_or_else(|| "the end".to_owned(), |i| format!("byte {i}")),
        );
    }
    Ok(Sample { connect, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ms: &[u64]) -> ClientReport {
        ClientReport {
            attempts: Vec::new(),
            samples: ms
                .iter()
                .map(|&m| Sample {
                    connect: Duration::from_millis(m),
                    total: Duration::from_millis(m * 2),
                })
                .collect(),
            failures: vec!["x".into()],
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn percentiles_and_counts() {
        let r = report(&[1, 2, 3, 4, 100]);
        let connect = |s: &Sample| s.connect;
        assert_eq!(r.percentile(connect, 50.0), Duration::from_millis(3));
        assert_eq!(r.percentile(connect, 99.0), Duration::from_millis(100));
        assert_eq!(r.max(|s| s.total), Duration::from_millis(200));
        assert_eq!(r.slower_than(connect, Duration::from_millis(3)), 2);
        assert_eq!((r.successes(), r.attempts()), (5, 6));
        assert_eq!(r.longest_failure(), Duration::ZERO);
        let hist = r.distribution(connect);
        assert!(
            hist.contains("0-1 ms: 1") && hist.contains("64-128 ms: 1"),
            "{hist}"
        );
    }

    #[test]
    fn longest_failure_runs_to_the_next_success() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let attempt = |start: u64, end: u64, ok: bool| Attempt {
            started: t0 + ms(start),
            ended: t0 + ms(end),
            ok,
        };
        let mut r = ClientReport {
            attempts: vec![
                attempt(0, 5, true),
                attempt(10, 20, false),
                attempt(20, 30, false),
                attempt(40, 45, true),
                attempt(50, 60, false),
                attempt(60, 300, false),
                attempt(300, 310, true),
            ],
            ..ClientReport::default()
        };
        assert_eq!(r.longest_failure(), ms(250));
        r.attempts.push(attempt(400, 1000, false));
        assert_eq!(r.longest_failure(), ms(600));
    }
}
