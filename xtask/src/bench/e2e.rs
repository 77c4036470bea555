//! The end-to-end comparison: one lab, the same SYN flood at the same offered rates against
//! four defenses of the same server, alternating (for each rate, every scenario in turn):
//!
//! - `kernel_only`: the kernel's own SYN cookies (`tcp_syncookies=1`; the lab routes the
//!   flood's sources back to the client, so the kernel really answers them);
//! - `synproxy_only`: nftables `synproxy` without XDP ([`SynproxyTable`]);
//! - `synguard_native`, `synguard_skb`: the daemon (`--syncookies always`) in native and
//!   generic XDP mode;
//! - `xdp_reflect_floor`: no defense but a native XDP program that swaps the addresses and
//!   ports and returns `XDP_TX`, the cheapest possible XDP responder: what the veth, NAPI
//!   and `XDP_TX` cost per SYN whatever the program does. Without a legitimate client (it
//!   would get its own SYNs back).
//!
//! The server veth's receive path (XDP, the IP/TCP stack, nftables, the SYN-ACKs' transmit)
//! runs in its threaded-NAPI kthread alone on [`SERVER_CPU`]; everything else runs on
//! [`GEN_CPU`]: the generator (floodgen's live frames, random sources, at nice 19), the
//! client veth's receive path (the SYN-ACKs; both kthreads pinned and `SCHED_FIFO`), the
//! legitimate client, the payload server's threads and the daemon. `SGL_DEBUG=1` prints the
//! veths' and synguard's counters after each run. The server's CPU time is read as described in
//! [`super::cpu`]; a legitimate client connects every [`LEGIT_INTERVAL`] throughout each run.
//!
//! Two more series run synguard alone: the source sweep ([`source_sweep`]: 1 to 16 M distinct
//! sources) and multi-queue scaling ([`queue_scaling`]: the same floods into one receive queue
//! and into two, one per CPU, so that both CPUs run the program on one flood).

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use synguard_lab::client::{ClientConfig, ClientReport, LegitClient, Sample};
use synguard_lab::daemon::{Daemon, XdpMode};
use synguard_lab::flood::FloodReport;
use synguard_lab::floodgen::bpf::{enable_run_time_stats, reflect_program};
use synguard_lab::floodgen::{self, FloodSpec, Method};
use synguard_lab::kernel::{self, link_stats};
use synguard_lab::netns::Netns;
use synguard_lab::peer_xdp::NativeProgram;
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{Family, Lab};

use super::Metric;
use super::cpu::{self, ServerCpu};
use super::generators::{GEN_CPU, PORT, syn_spec};
use super::profile::Profile;

/// The CPU of the server's receive path.
pub const SERVER_CPU: usize = 1;
const PAYLOAD: usize = 1024;
const LEGIT_INTERVAL: Duration = Duration::from_millis(10);
/// Time for the previous scenario's leftovers (request sockets, queued frames) to go.
const SETTLE: Duration = Duration::from_secs(1);

/// Where a run's receive path and generator run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The CPU of each of the server veth's queues' NAPI kthreads, queue by queue.
    pub server: &'static [usize],
    /// One generator thread on each of these.
    pub generators: &'static [usize],
    /// The CPU of each of the client veth's queues' NAPI kthreads (the SYN-ACKs' receive
    /// path), queue by queue.
    pub client: &'static [usize],
}

impl Placement {
    /// The scenarios' and the sweep's: one queue, its receive path alone on [`SERVER_CPU`],
    /// the generator on [`GEN_CPU`].
    pub const SPLIT: Self = Self {
        server: &[SERVER_CPU],
        generators: &[GEN_CPU],
        client: &[GEN_CPU],
    };
    /// The scaling reference: one queue on [`SERVER_CPU`], a generator on each CPU (both
    /// generators' frames reach the one queue).
    pub const ONE_QUEUE: Self = Self {
        server: &[SERVER_CPU],
        generators: &[GEN_CPU, SERVER_CPU],
        client: &[GEN_CPU],
    };
    /// Two queues, one per CPU, and a generator on each CPU: veth puts a CPU's frames on its
    /// own queue, so every CPU runs the program on the same flood, as a multi-queue NIC's RSS
    /// would spread it.
    /// The SYN-ACKs come back on the client's queue of the CPU that sent them.
    pub const TWO_QUEUES: Self = Self {
        server: &[GEN_CPU, SERVER_CPU],
        generators: &[GEN_CPU, SERVER_CPU],
        client: &[GEN_CPU, SERVER_CPU],
    };

    pub fn queues(self) -> usize {
        self.server.len()
    }
}

/// A defense of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    KernelOnly,
    SynproxyOnly,
    SynguardNative,
    SynguardSkb,
    ReflectFloor,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::KernelOnly,
        Scenario::SynproxyOnly,
        Scenario::SynguardNative,
        Scenario::SynguardSkb,
        Scenario::ReflectFloor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::KernelOnly => "kernel_only",
            Scenario::SynproxyOnly => "synproxy_only",
            Scenario::SynguardNative => "synguard_native",
            Scenario::SynguardSkb => "synguard_skb",
            Scenario::ReflectFloor => "xdp_reflect_floor",
        }
    }

    /// Puts the defense in place on the lab's server; it stays until the result is dropped.
    fn start(self, lab: &Lab) -> Result<Defense<'_>> {
        let daemon = |mode| {
            Daemon::start(
                lab.server(),
                lab.server_iface().name(),
                &PORT.to_string(),
                mode,
                &["--metrics-addr", "none"],
            )
            .map(Defense::Daemon)
        };
        match self {
            Scenario::KernelOnly => Ok(Defense::Kernel),
            Scenario::SynproxyOnly => SynproxyTable::install(lab.server()).map(Defense::Synproxy),
            Scenario::SynguardNative => daemon(XdpMode::Native),
            Scenario::SynguardSkb => daemon(XdpMode::Skb),
            Scenario::ReflectFloor => NativeProgram::attach(
                lab.server(),
                lab.server_iface().name(),
                "sgl_reflect",
                &reflect_program(),
            )
            .map(Defense::Program),
        }
    }

    /// Whether a legitimate client can be served.
    fn serves(self) -> bool {
        self != Scenario::ReflectFloor
    }
}

/// What a scenario keeps running; removed when dropped (the daemon stops, the table goes).
enum Defense<'a> {
    Kernel,
    Synproxy(SynproxyTable<'a>),
    Daemon(Daemon),
    Program(NativeProgram),
}

impl Defense<'_> {
    /// Ends the defense, failing if the daemon did not exit cleanly.
    fn end(self) -> Result<()> {
        match self {
            Defense::Kernel => Ok(()),
            // Dropping it detaches the program.
            Defense::Program(program) => {
                drop(program);
                Ok(())
            }
            // Dropping it deletes the table.
            Defense::Synproxy(table) => {
                drop(table);
                Ok(())
            }
            Defense::Daemon(daemon) => daemon.stop()?.ensure_success(),
        }
    }
}

/// The textbook nftables synproxy table (SYNs untracked in raw prerouting, synproxy on
/// untracked and invalid packets, other invalid ones dropped), plus synguard's raw-output
/// `notrack` of synproxy's own handshake ACK, without which Linux ≥ 6.14 stalls a share of
/// the connections for a second (docs/design.md, "Why synguard's rules differ"): the latency column
/// then shows the load, not that stall. IPv4 flood, so the IPv4 MSS.
struct SynproxyTable<'a> {
    netns: &'a Netns,
}

const SYNPROXY_TABLE: &str = "sgl_synproxy";

impl<'a> SynproxyTable<'a> {
    fn install(netns: &'a Netns) -> Result<Self> {
        // Synproxy needs strict conntrack to see cookie ACKs as invalid. Per namespace: it
        // goes with the lab.
        kernel::set_sysctl(netns, "net.netfilter.nf_conntrack_tcp_loose", "0")?;
        let rules = format!(
            "table inet {SYNPROXY_TABLE} {{
  chain prerouting {{
    type filter hook prerouting priority raw;
    tcp dport {PORT} tcp flags & (fin|syn|rst|ack) == syn notrack
  }}
  chain output {{
    type filter hook output priority raw;
    tcp dport {PORT} tcp flags & (fin|syn|rst|ack) == ack fib saddr type != local notrack
  }}
  chain input {{
    type filter hook input priority filter;
    iifname != \"lo\" tcp dport {PORT} ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    iifname != \"lo\" tcp dport {PORT} ct state invalid drop
  }}
}}
"
        );
        let mut child = netns
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nft")?;
        child
            .stdin
            .take()
            .context("nft's stdin")?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft refused the synproxy table: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self { netns })
    }
}

impl Drop for SynproxyTable<'_> {
    fn drop(&mut self) {
        if let Err(e) = self
            .netns
            .exec("nft", &["delete", "table", "inet", SYNPROXY_TABLE])
        {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// An offered flood rate: frames per second, or as fast as the generator goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rate {
    Pps(u64),
    Max,
}

impl Rate {
    fn limit(self) -> Option<u64> {
        match self {
            Rate::Pps(pps) => Some(pps),
            Rate::Max => None,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Pps(pps) => write!(f, "{pps}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "max" => Ok(Rate::Max),
            _ => match s.parse::<u64>() {
                Ok(pps) if pps > 0 => Ok(Rate::Pps(pps)),
                _ => Err(format!("`{s}`: a rate is frames per second (> 0) or `max`")),
            },
        }
    }
}

/// One scenario at one rate.
pub struct Run {
    pub scenario: Scenario,
    pub rate: Rate,
    /// Distinct flood sources, for the source sweep (otherwise the scenarios' 4 M).
    pub sources: Option<u32>,
    pub placement: Placement,
    /// Flood frames the generator sent, per second.
    pub offered_pps: f64,
    /// Frames the server's veth received, per second (the flood plus the legitimate client's
    /// few hundred).
    pub received_pps: f64,
    /// The receive-path kthread and the server namespace's processes, per received frame.
    pub cpu_ns_per_syn: f64,
    /// The server CPU's busy time (`/proc/stat`), per received frame.
    pub cpu_busy_ns_per_syn: f64,
    /// The receive-path kthread and processes, as a share of one CPU.
    pub server_cpu_percent: f64,
    /// Frames the client's veth received, per second: the SYN-ACKs.
    pub synack_pps: f64,
    /// `TcpInSegs` of the server's kernel, per second.
    pub tcp_in_segs_ps: f64,
    /// The server veth's XDP program's own run time per packet (the kernel's BPF run-time
    /// statistics), None without a program.
    pub xdp_ns_per_packet: Option<f64>,
    /// Frames each of the server veth's queues ran through XDP, per second.
    pub queue_pps: Vec<f64>,
    /// None for a scenario that serves nobody.
    pub legit: Option<ClientReport>,
}

impl Run {
    fn connect(s: &Sample) -> Duration {
        s.connect
    }

    /// None without a legitimate client or without a connection that succeeded.
    fn legit_percentile_ms(&self, percentile: f64) -> Option<f64> {
        let legit = self.legit.as_ref().filter(|l| l.successes() > 0)?;
        Some(legit.percentile(Self::connect, percentile).as_secs_f64() * 1e3)
    }

    pub fn legit_p50_ms(&self) -> Option<f64> {
        self.legit_percentile_ms(50.0)
    }

    pub fn legit_p99_ms(&self) -> Option<f64> {
        self.legit_percentile_ms(99.0)
    }

    /// The tables' cells: XDP ns/packet, legit successes, legit p99 (`–` where none).
    fn xdp_cell(&self) -> String {
        self.xdp_ns_per_packet
            .map_or_else(|| "–".to_owned(), |ns| format!("{ns:.0}"))
    }

    fn legit_ok_cell(&self) -> String {
        self.legit.as_ref().map_or_else(
            || "–".to_owned(),
            |l| format!("{:.1}% ({})", l.success_percent(), l.attempts()),
        )
    }

    fn legit_p99_cell(&self) -> String {
        self.legit_p99_ms()
            .map_or_else(|| "–".to_owned(), |ms| format!("{ms:.2} ms"))
    }
}

/// Counters read before and after a flood.
struct Reading {
    at: Instant,
    cpu: cpu::Sample,
    server_rx: u64,
    client_rx: u64,
    tcp_in_segs: u64,
    xdp_run: Option<(u64, u64)>,
    /// Frames each of the server veth's queues ran through XDP.
    queue_frames: Vec<u64>,
}

impl Reading {
    fn take(lab: &Lab, server_cpu: &ServerCpu) -> Result<Self> {
        let driver = kernel::driver_stats(lab.server_iface())?;
        Ok(Self {
            queue_frames: (0..server_cpu.cpus.len())
                .map(|q| driver.get(&format!("rx_queue_{q}_xdp_packets")))
                .collect(),
            at: Instant::now(),
            cpu: server_cpu.sample()?,
            server_rx: link_stats(lab.server_iface())?.get("rx_packets"),
            client_rx: link_stats(lab.client_iface())?.get("rx_packets"),
            tcp_in_segs: kernel::snmp(lab.server())?.get("TcpInSegs"),
            xdp_run: kernel::xdp_run_stats(lab.server_iface())?,
        })
    }
}

/// A lab for `placement`'s queues, its payload server, and threaded NAPI on both veth ends
/// pinned as the placement says.
struct BenchLab {
    // Drop order: the server's process, then the lab.
    _server: PayloadServer,
    lab: Lab,
    placement: Placement,
}

impl BenchLab {
    fn prepare(placement: Placement) -> Result<Self> {
        let lab = Lab::with_queues(u32::try_from(placement.queues())?)?;
        let server = PayloadServer::start(lab.server(), PORT, PAYLOAD, Protocol::RequestFirst)?;
        cpu::threaded_napi(lab.server(), lab.server_iface().name(), placement.server)?;
        cpu::threaded_napi(lab.client(), lab.client_iface().name(), placement.client)?;
        Ok(Self {
            _server: server,
            lab,
            placement,
        })
    }
}

/// Every scenario at every rate (ascending), `seconds` each, alternating. Everything but the
/// server's receive path runs on [`GEN_CPU`]: the legitimate client, the payload server's
/// threads and the daemon (whose CPU time is counted wherever it runs), and the generator at
/// nice 19, so that the client's side answers promptly and the flood takes what is left.
/// With `profiles`, each flood's server-CPU profile goes there ([`Profile`]).
pub fn run(rates: &[Rate], seconds: u64, profiles: Option<&Path>) -> Result<Vec<Run>> {
    cpu::on_cpu(GEN_CPU, || run_all(rates, seconds, profiles))
}

fn run_all(rates: &[Rate], seconds: u64, profiles: Option<&Path>) -> Result<Vec<Run>> {
    let mut rates = rates.to_vec();
    rates.sort_unstable();
    rates.dedup();
    let bench = BenchLab::prepare(Placement::SPLIT)?;
    let BenchLab { lab, placement, .. } = &bench;
    kernel::set_sysctl(lab.server(), "net.ipv4.tcp_syncookies", "1")?;
    let _run_time_stats = enable_run_time_stats()?;
    let mut runs = Vec::new();
    for &rate in &rates {
        for scenario in Scenario::ALL {
            let flood = Flood {
                rate,
                duration: Duration::from_secs(seconds),
                sources: None,
                placement: *placement,
            };
            let run = one(lab, scenario, &flood, profiles)
                .with_context(|| format!("{} at {rate}", scenario.name()))?;
            println!(
                "e2e {:<16} {:>8}: offered {:>9.0}/s received {:>9.0}/s, server CPU {:>5.1}% = {:>6.0} ns/SYN ({:>6.0} by /proc/stat), XDP {:>5.0} ns/packet, SYN-ACKs {:>9.0}/s, TcpInSegs {:>9.0}/s, legit {}",
                scenario.name(),
                rate,
                run.offered_pps,
                run.received_pps,
                run.server_cpu_percent,
                run.cpu_ns_per_syn,
                run.cpu_busy_ns_per_syn,
                run.xdp_ns_per_packet.unwrap_or(f64::NAN),
                run.synack_pps,
                run.tcp_in_segs_ps,
                run.legit.as_ref().map_or_else(
                    || "none (the floor serves nobody)".to_owned(),
                    ClientReport::summary
                )
            );
            runs.push(run);
        }
    }
    Ok(runs)
}

/// Distinct flood sources of the sweep: every SYN of the flood comes from a random one of them.
pub const SWEEP_SOURCES: [u32; 5] = [1, 1 << 10, 1 << 16, 1 << 20, 1 << 24];

/// synguard native at the unpaced rate, once per [`SWEEP_SOURCES`] count (in the same bench
/// run as the scenarios, whose kernel-only figure is the reference).
pub fn source_sweep(seconds: u64, profiles: Option<&Path>) -> Result<Vec<Run>> {
    cpu::on_cpu(GEN_CPU, || {
        let bench = BenchLab::prepare(Placement::SPLIT)?;
        let BenchLab { lab, placement, .. } = &bench;
        let _run_time_stats = enable_run_time_stats()?;
        let mut runs = Vec::new();
        for sources in SWEEP_SOURCES {
            let flood = Flood {
                rate: Rate::Max,
                duration: Duration::from_secs(seconds),
                sources: Some(sources),
                placement: *placement,
            };
            let run = one(lab, Scenario::SynguardNative, &flood, profiles)
                .with_context(|| format!("synguard native, {sources} sources"))?;
            println!(
                "sweep {sources:>9} sources: received {:>9.0}/s, {:>6.0} ns/SYN, XDP {:>5.0} ns/packet",
                run.received_pps,
                run.cpu_ns_per_syn,
                run.xdp_ns_per_packet.unwrap_or(f64::NAN)
            );
            runs.push(run);
        }
        Ok(runs)
    })
}

/// `e2e.sources.<N>.cpu_ns_per_syn` and `.xdp_ns_per_packet`, and the 16 M / 1 K ratio.
pub fn sweep_metrics(runs: &[Run]) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for r in runs {
        let Some(n) = r.sources else { continue };
        metrics.push(Metric::new(
            format!("e2e.sources.{n}.cpu_ns_per_syn"),
            r.cpu_ns_per_syn,
            "ns",
        ));
        metrics.push(Metric::new(
            format!("e2e.sources.{n}.received_pps"),
            r.received_pps,
            "packets/s",
        ));
        if let Some(ns) = r.xdp_ns_per_packet {
            metrics.push(Metric::new(
                format!("e2e.sources.{n}.xdp_ns_per_packet"),
                ns,
                "ns",
            ));
        }
    }
    let at = |n: u32| {
        runs.iter()
            .find(|r| r.sources == Some(n))
            .map(|r| r.cpu_ns_per_syn)
    };
    if let (Some(most), Some(few)) = (at(1 << 24), at(1 << 10)) {
        metrics.push(Metric::new(
            "e2e.sources.ratio_16m_to_1k",
            most / few,
            "ratio",
        ));
    }
    metrics
}

/// The sweep as a markdown table.
pub fn sweep_table(runs: &[Run]) -> String {
    let mut md = String::from(
        "| distinct sources | received/s | server CPU | CPU ns/SYN | XDP program ns/packet | legit ok | legit p99 |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in runs {
        let Some(n) = r.sources else { continue };
        md.push_str(&format!(
            "| {n} | {:.0} | {:.1}% | {:.0} | {} | {} | {} |\n",
            r.received_pps,
            r.server_cpu_percent,
            r.cpu_ns_per_syn,
            r.xdp_cell(),
            r.legit_ok_cell(),
            r.legit_p99_cell(),
        ));
    }
    md
}

/// The scaling runs' floods, each with one queue and with two: synguard native from 16 M
/// random sources and from a single one (whose SYNs reach both CPUs: what it writes must
/// not be shared), and the reflect floor from 16 M.
const SCALING_FLOODS: [(Scenario, u32); 3] = [
    (Scenario::SynguardNative, 1 << 24),
    (Scenario::SynguardNative, 1),
    (Scenario::ReflectFloor, 1 << 24),
];

/// Multi-queue scaling: [`SCALING_FLOODS`] at the unpaced rate in a one-queue lab
/// ([`Placement::ONE_QUEUE`]) and a two-queue lab ([`Placement::TWO_QUEUES`]), alternating.
/// With two queues both CPUs run the program and the generators, so the CPU figures are the
/// receive path's kthreads only; the XDP figure is the program's run time on either CPU.
pub fn queue_scaling(seconds: u64, profiles: Option<&Path>) -> Result<Vec<Run>> {
    cpu::on_cpu(GEN_CPU, || {
        let _run_time_stats = enable_run_time_stats()?;
        let labs = [Placement::ONE_QUEUE, Placement::TWO_QUEUES]
            .map(BenchLab::prepare)
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let mut runs = Vec::new();
        for (scenario, sources) in SCALING_FLOODS {
            for BenchLab { lab, placement, .. } in &labs {
                let flood = Flood {
                    rate: Rate::Max,
                    duration: Duration::from_secs(seconds),
                    sources: Some(sources),
                    placement: *placement,
                };
                let run = one(lab, scenario, &flood, profiles).with_context(|| {
                    format!(
                        "{}, {sources} sources, {} queues",
                        scenario.name(),
                        placement.queues()
                    )
                })?;
                println!(
                    "queues {} {:<16} {sources:>9} sources: received {:>9.0}/s, {:>6.0} ns/SYN, XDP {:>5.0} ns/packet",
                    placement.queues(),
                    scenario.name(),
                    run.received_pps,
                    run.cpu_ns_per_syn,
                    run.xdp_ns_per_packet.unwrap_or(f64::NAN)
                );
                runs.push(run);
            }
        }
        Ok(runs)
    })
}

/// `e2e.queues.<Q>.<scenario>.<N>_sources.*`, and each figure's two-queue to one-queue ratio
/// (`e2e.queues.2_to_1.*`).
pub fn scaling_metrics(runs: &[Run]) -> Vec<Metric> {
    let figures = |r: &Run| {
        [
            ("cpu_ns_per_syn", Some(r.cpu_ns_per_syn), "ns"),
            ("received_pps", Some(r.received_pps), "packets/s"),
            ("xdp_ns_per_packet", r.xdp_ns_per_packet, "ns"),
        ]
    };
    let case = |r: &Run| format!("{}.{}_sources", r.scenario.name(), r.sources.unwrap_or(0));
    let mut metrics = Vec::new();
    for r in runs {
        for (what, value, unit) in figures(r) {
            if let Some(value) = value {
                metrics.push(Metric::new(
                    format!("e2e.queues.{}.{}.{what}", r.placement.queues(), case(r)),
                    value,
                    unit,
                ));
            }
        }
    }
    for two in runs.iter().filter(|r| r.placement.queues() == 2) {
        let Some(one) = runs.iter().find(|r| {
            r.placement.queues() == 1 && r.scenario == two.scenario && r.sources == two.sources
        }) else {
            continue;
        };
        for ((what, a, _), (_, b, _)) in figures(two).into_iter().zip(figures(one)) {
            if let (Some(a), Some(b)) = (a, b) {
                metrics.push(Metric::new(
                    format!("e2e.queues.2_to_1.{}.{what}", case(two)),
                    a / b,
                    "ratio",
                ));
            }
        }
    }
    metrics
}

/// The scaling runs as a markdown table.
pub fn scaling_table(runs: &[Run]) -> String {
    let mut md = String::from(
        "| queues | scenario | distinct sources | received/s | through XDP per queue /s | receive path CPU | CPU ns/SYN | XDP program ns/packet | legit ok | legit p99 |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in runs {
        let per_queue: Vec<String> = r.queue_pps.iter().map(|pps| format!("{pps:.0}")).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {:.1}% | {:.0} | {} | {} | {} |\n",
            r.placement.queues(),
            r.scenario.name(),
            r.sources.unwrap_or(0),
            r.received_pps,
            per_queue.join(" + "),
            r.server_cpu_percent,
            r.cpu_ns_per_syn,
            r.xdp_cell(),
            r.legit_ok_cell(),
            r.legit_p99_cell(),
        ));
    }
    md
}

/// The flood of one run.
struct Flood {
    rate: Rate,
    duration: Duration,
    /// Distinct sources; `None`: random ones from the whole spec's range.
    sources: Option<u32>,
    placement: Placement,
}

impl Flood {
    /// The run's name in file names: `<scenario>-<rate>` or `<scenario>-<N>-sources`, plus
    /// `-<Q>-queues` for the scaling runs.
    fn label(&self, scenario: Scenario) -> String {
        let run = match self.sources {
            Some(n) => format!("{}-{n}-sources", scenario.name()),
            None => format!("{}-{}", scenario.name(), self.rate),
        };
        if self.placement == Placement::SPLIT {
            run
        } else {
            format!("{run}-{}-queues", self.placement.queues())
        }
    }
}

fn one(lab: &Lab, scenario: Scenario, flood: &Flood, profiles: Option<&Path>) -> Result<Run> {
    let Flood {
        rate,
        duration,
        sources,
        placement,
    } = *flood;
    let defense = scenario.start(lab)?;
    std::thread::sleep(SETTLE);
    // An XDP attach or detach may recreate the NAPI instances and their kthreads.
    let server_cpu = ServerCpu {
        netns: lab.server(),
        napi_pids: cpu::dedicate_queues(lab.server_iface().name(), placement.server)?,
        cpus: placement.server,
    };
    let target = lab.server_addr(Family::V4, PORT);
    let legit = scenario
        .serves()
        .then(|| {
            LegitClient::spawn(
                lab.client(),
                ClientConfig::new(target, Protocol::RequestFirst, PAYLOAD, usize::MAX)
                    .interval(LEGIT_INTERVAL),
            )
        })
        .transpose()?;
    let profile = profiles
        .map(|dir| Profile::start(dir, &flood.label(scenario), placement.server))
        .transpose()?;
    let before = Reading::take(lab, &server_cpu)?;
    let mut spec = syn_spec(lab, Family::V4, rate.limit(), duration)?;
    if let Some(sources) = sources {
        // A prefix of exactly that many addresses (100.0.0.0/8 holds the largest).
        spec.src = "100.0.0.0".parse()?;
        spec.src_prefix = 32 - sources.ilog2() as u8;
    }
    let sent = generate(lab, &spec, placement.generators)?;
    let after = Reading::take(lab, &server_cpu)?;
    if let Some(profile) = profile {
        println!("profile: {}", profile.finish()?.display());
    }
    if std::env::var_os("SGL_DEBUG").is_some() {
        for (ns, i) in [
            (lab.server(), lab.server_iface()),
            (lab.client(), lab.client_iface()),
        ] {
            eprintln!(
                "{}",
                ns.exec("ethtool", &["-S", i.name()]).unwrap_or_default()
            );
        }
        if let Ok(c) = kernel::Counters::of(lab.server_iface()) {
            eprintln!("counters: {c}");
        }
    }
    let legit = legit
        .map(|legit| {
            legit.stop();
            legit.join()
        })
        .transpose()?;
    defense.end()?;

    let seconds = (after.at - before.at).as_secs_f64();
    let received = after.server_rx.saturating_sub(before.server_rx) as f64;
    let threads = (after.cpu.threads - before.cpu.threads).as_nanos() as f64;
    let busy = after.cpu.cpu.saturating_sub(before.cpu.cpu).as_nanos() as f64;
    Ok(Run {
        scenario,
        rate,
        sources,
        placement,
        offered_pps: sent.iter().map(FloodReport::rate).sum(),
        received_pps: received / seconds,
        cpu_ns_per_syn: threads / received.max(1.0),
        cpu_busy_ns_per_syn: busy / received.max(1.0),
        server_cpu_percent: 100.0 * threads / (seconds * 1e9),
        synack_pps: after.client_rx.saturating_sub(before.client_rx) as f64 / seconds,
        tcp_in_segs_ps: after.tcp_in_segs.saturating_sub(before.tcp_in_segs) as f64 / seconds,
        xdp_ns_per_packet: before.xdp_run.zip(after.xdp_run).map(
            |((time_before, count_before), (time, count))| {
                time.saturating_sub(time_before) as f64
                    / count.saturating_sub(count_before).max(1) as f64
            },
        ),
        queue_pps: after
            .queue_frames
            .iter()
            .zip(&before.queue_frames)
            .map(|(after, before)| after.saturating_sub(*before) as f64 / seconds)
            .collect(),
        legit,
    })
}

/// Floods the lab's server with `spec` from one generator thread on each of `cpus`, at nice
/// 19 (see [`run`]); returns what each sent.
fn generate(lab: &Lab, spec: &FloodSpec, cpus: &[usize]) -> Result<Vec<FloodReport>> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let generators: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                let spec = FloodSpec {
                    cpu: Some(cpu),
                    ..spec.clone()
                };
                let stop = &stop;
                s.spawn(move || {
                    cpu::in_background(|| {
                        floodgen::run(
                            lab.client(),
                            lab.client_iface().name(),
                            &spec,
                            Method::LiveFrames,
                            stop,
                        )
                    })
                })
            })
            .collect();
        generators
            .into_iter()
            .map(|g| {
                g.join()
                    .map_err(|_| anyhow::anyhow!("a generator thread panicked"))?
            })
            .collect()
    })
}

/// Every figure of every run, `e2e.<scenario>.<rate>.*`, and `e2e.<scenario>.cpu_ns_per_syn`
/// at the highest rate.
pub fn metrics(runs: &[Run]) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for r in runs {
        let name = |what: &str| format!("e2e.{}.{}.{what}", r.scenario.name(), r.rate);
        metrics.extend([
            Metric::new(name("offered_pps"), r.offered_pps, "packets/s"),
            Metric::new(name("received_pps"), r.received_pps, "packets/s"),
            Metric::new(name("cpu_ns_per_syn"), r.cpu_ns_per_syn, "ns"),
            Metric::new(name("cpu_busy_ns_per_syn"), r.cpu_busy_ns_per_syn, "ns"),
            Metric::new(name("server_cpu_percent"), r.server_cpu_percent, "percent"),
            Metric::new(name("synack_pps"), r.synack_pps, "packets/s"),
            Metric::new(name("tcp_in_segs_ps"), r.tcp_in_segs_ps, "segments/s"),
        ]);
        if let Some(ns) = r.xdp_ns_per_packet {
            metrics.push(Metric::new(name("xdp_ns_per_packet"), ns, "ns"));
        }
        if let Some(legit) = &r.legit {
            metrics.push(Metric::new(
                name("legit_success_percent"),
                legit.success_percent(),
                "percent",
            ));
        }
        for (what, ms) in [
            ("legit_p50_ms", r.legit_p50_ms()),
            ("legit_p99_ms", r.legit_p99_ms()),
        ] {
            if let Some(ms) = ms {
                metrics.push(Metric::new(name(what), ms, "ms"));
            }
        }
    }
    for r in highest(runs) {
        metrics.push(Metric::new(
            format!("e2e.{}.cpu_ns_per_syn", r.scenario.name()),
            r.cpu_ns_per_syn,
            "ns",
        ));
    }
    for scenario in [Scenario::SynguardNative, Scenario::ReflectFloor] {
        if let Some(ratio) = kernel_ratio(runs, scenario) {
            metrics.push(Metric::new(
                format!("e2e.{}.cpu_ratio_to_kernel_only", scenario.name()),
                ratio,
                "ratio",
            ));
        }
    }
    metrics
}

/// The runs at the highest rate, one per scenario.
fn highest(runs: &[Run]) -> impl Iterator<Item = &Run> {
    let top = runs.iter().map(|r| r.rate).max();
    runs.iter().filter(move |r| Some(r.rate) == top)
}

/// `scenario`'s CPU per SYN over kernel-only's, at the highest rate.
fn kernel_ratio(runs: &[Run], scenario: Scenario) -> Option<f64> {
    let at = |s: Scenario| {
        highest(runs)
            .find(|r| r.scenario == s)
            .map(|r| r.cpu_ns_per_syn)
    };
    Some(at(scenario)? / at(Scenario::KernelOnly)?)
}

/// The runs as a markdown table, then the targets' reading at the highest rate.
pub fn table(runs: &[Run]) -> String {
    let mut md = String::from(
        "| scenario | offered rate | sent/s | received/s | server CPU | CPU ns/SYN | CPU ns/SYN (/proc/stat) | XDP program ns/packet | SYN-ACKs/s at client | TcpInSegs/s | legit ok | legit p50 | legit p99 |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2} ms"));
    for r in runs {
        let legit_ok = r.legit.as_ref().map_or_else(
            || "– (none)".to_owned(),
            |l| format!("{:.1}% ({})", l.success_percent(), l.attempts()),
        );
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.1}% | {:.0} | {:.0} | {} | {:.0} | {:.0} | {legit_ok} | {} | {} |\n",
            r.scenario.name(),
            r.rate,
            r.offered_pps,
            r.received_pps,
            r.server_cpu_percent,
            r.cpu_ns_per_syn,
            r.cpu_busy_ns_per_syn,
            r.xdp_cell(),
            r.synack_pps,
            r.tcp_in_segs_ps,
            ms(r.legit_p50_ms()),
            ms(r.legit_p99_ms()),
        ));
    }
    if let Some(ratio) = kernel_ratio(runs, Scenario::SynguardNative) {
        md.push_str(&format!(
            "\nAt the highest rate synguard (native XDP) costs the server {ratio:.3} × kernel-only's CPU per SYN (target ≤ 0.25)"
        ));
        if let Some(p99) = highest(runs)
            .find(|r| r.scenario == Scenario::SynguardNative)
            .and_then(Run::legit_p99_ms)
        {
            md.push_str(&format!("; legit p99 {p99:.2} ms (target ≤ 2 ms)"));
        }
        md.push_str(".\n");
    }
    if let Some(floor) = kernel_ratio(runs, Scenario::ReflectFloor) {
        md.push_str(&format!(
            "The reflect floor (an XDP program that only swaps addresses and returns XDP_TX) costs {floor:.3} × kernel-only's: no XDP responder on this path can go below it.\n"
        ));
    }
    md
}
