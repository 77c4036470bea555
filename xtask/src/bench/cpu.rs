//! Where the server's CPU time goes, measured two ways:
//!
//! - **Threads**: the scheduler's own runtime (`/proc/PID/task/TID/schedstat`, first field,
//!   nanoseconds) of the server veth's threaded-NAPI kthreads (one per queue), which run the whole receive
//!   path (XDP, the IP/TCP stack, the SYN-ACK's transmit), plus every thread of the processes
//!   in the server namespace (the daemon). Precise, and blind to other work on the machine.
//! - **The CPU**: busy time of the server's CPUs from `/proc/stat` (user, nice, system, irq,
//!   softirq, steal), which also catches softirq work outside the kthread (timers) but also
//!   anything else that ran there.
//!
//! Threaded NAPI moves a veth's receive processing out of softirq context into a kthread
//! (`napi/<iface>-<id>`) that can be pinned, so the generator and the server's receive path
//! get one CPU each. The kthreads also get a real-time priority (`SCHED_FIFO`), as on a
//! tuned host: without it they share their CPU with whatever else runs there (the
//! generator's own thread, a compiler), their 256-frame veth rings overflow while they wait,
//! and the scenarios measure the scheduler instead of the defense.

use std::mem::size_of;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use synguard_lab::netns::Netns;

/// Turns on threaded NAPI for `iface` in `netns` (GRO on first: a veth has NAPI only with an
/// XDP program or GRO) and gives the kthread of its queue `i` the CPU `cpus[i]` ([`dedicate`]).
/// The setting goes with the interface.
pub fn threaded_napi(netns: &Netns, iface: &str, cpus: &[usize]) -> Result<()> {
    netns.exec("ethtool", &["-K", iface, "gro", "on"])?;
    // `ip netns exec` mounts the namespace's own /sys.
    netns.exec(
        "sh",
        &["-c", &format!("echo 1 > /sys/class/net/{iface}/threaded")],
    )?;
    dedicate_queues(iface, cpus).map(drop)
}

/// Gives the NAPI kthread of `iface`'s queue `i` the CPU `cpus[i]`; returns their pids, queue
/// by queue. (An XDP attach or detach may recreate the kthreads: call it again after one.)
pub fn dedicate_queues(iface: &str, cpus: &[usize]) -> Result<Vec<u32>> {
    let pids = napi_threads(iface)?;
    if pids.len() != cpus.len() {
        bail!(
            "{iface} has {} NAPI kthreads ({pids:?}), not one per CPU of {cpus:?}",
            pids.len()
        );
    }
    for (&pid, &cpu) in pids.iter().zip(cpus) {
        dedicate(pid, cpu)?;
    }
    Ok(pids)
}

/// The pids of `iface`'s NAPI kthreads, queue by queue: a kthread's name is
/// `napi/<iface>-<napi id>` (cut to the 15 characters of a task name), and veth adds its
/// queues' NAPI instances, so their ids, in queue order.
fn napi_threads(iface: &str) -> Result<Vec<u32>> {
    let wanted: String = format!("napi/{iface}-").chars().take(15).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if let Some(id) = comm.trim_end().strip_prefix(&wanted) {
            found.push((id.parse::<u64>().unwrap_or(u64::MAX), pid));
        }
    }
    if found.is_empty() {
        bail!("no threaded NAPI kthread for {iface} (looked for `{wanted}*`)");
    }
    found.sort_unstable();
    Ok(found.into_iter().map(|(_, pid)| pid).collect())
}

/// Pins task `pid` to `cpu` and makes it `SCHED_FIFO` (`taskset`, `chrt`; both work on
/// kthreads). A NAPI kthread goes with its interface, so nothing needs undoing.
pub fn dedicate(pid: u32, cpu: usize) -> Result<()> {
    let pid = pid.to_string();
    synguard_lab::process::run(std::process::Command::new("taskset").args([
        "-p",
        "-c",
        &cpu.to_string(),
        &pid,
    ]))?;
    synguard_lab::process::run(std::process::Command::new("chrt").args(["-f", "-p", "50", &pid]))
        .map(drop)
}

/// Scheduler runtime of every thread of process `pid` (for a kthread: itself).
fn runtime(pid: u32) -> Result<Duration> {
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let mut ns = 0u64;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {}", tasks.display()))? {
        // A thread may exit between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(Duration::from_nanos(ns))
}

/// Runs `f` on a new thread pinned to `cpu` (`sched_setaffinity`); threads and processes it
/// starts inherit the affinity.
pub fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: cpu_set_t is plain data; CPU_SET indexes inside it.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("pinning to CPU {cpu}"));
                }
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread pinned to CPU {cpu} panicked"))?
    })
}

/// Runs `f` on a new thread at nice 19, so that everything else on its CPU goes first; threads
/// it starts inherit the nice value.
pub fn in_background<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            synguard_lab::process::nice_this_thread(19)?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a background thread panicked"))?
    })
}

/// The pids of the processes in `netns` (`ip netns pids`).
fn netns_pids(netns: &Netns) -> Result<Vec<u32>> {
    let out = synguard_lab::process::run(std::process::Command::new("ip").args([
        "netns",
        "pids",
        netns.name(),
    ]))?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Busy time of `cpu` so far, from its `/proc/stat` line.
fn cpu_busy(cpu: usize) -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let label = format!("cpu{cpu}");
    let Some(line) = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&label))
    else {
        bail!("no {label} line in /proc/stat");
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let ticks: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)))
}

/// One reading of the server's CPU time.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// The receive path's kthreads plus the server namespace's processes.
    pub threads: Duration,
    /// The server CPUs' busy time.
    pub cpu: Duration,
}

/// What a server's CPU time is read from.
pub struct ServerCpu<'a> {
    pub netns: &'a Netns,
    /// The server veth's NAPI kthreads.
    pub napi_pids: Vec<u32>,
    /// The CPUs they run on.
    pub cpus: &'a [usize],
}

impl ServerCpu<'_> {
    pub fn sample(&self) -> Result<Sample> {
        let mut threads = Duration::ZERO;
        for &pid in &self.napi_pids {
            threads += runtime(pid)?;
        }
        for pid in netns_pids(self.netns)? {
            // A process may exit between the listing and the read.
            threads += runtime(pid).unwrap_or_default();
        }
        let mut cpu = Duration::ZERO;
        for &c in self.cpus {
            cpu += cpu_busy(c)?;
        }
        Ok(Sample { threads, cpu })
    }
}
