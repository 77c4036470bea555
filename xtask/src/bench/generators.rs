//! `cargo xtask flood`: the flood generators side by side, each for the same time from CPU 0
//! into the lab's veth, whose server end drops everything in native XDP (so the receiver is
//! never the limit). Counted on both sides: what the generator handed to the interface and
//! what the server's veth received.

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use synguard_lab::craft::OptionStyle;
use synguard_lab::flood::{FloodKind, parse_hping3_sent};
use synguard_lab::floodgen::bpf::{XdpProgram, drop_program};
use synguard_lab::floodgen::{self, FloodSpec, Method};
use synguard_lab::kernel::link_stats;
use synguard_lab::netns::Netns;
use synguard_lab::topology::{Family, Lab};

use super::Metric;

pub const PORT: u16 = 8080;
/// The CPU generators run on; the server's receive path gets the other one.
pub const GEN_CPU: usize = 0;

/// Attaches `insns`-style program `prog` to `iface` in `netns` (driver mode unless `generic`).
pub fn attach(netns: &Netns, iface: &str, prog: &XdpProgram, native: bool) -> Result<OwnedFd> {
    netns.run(|| prog.attach(ifindex(iface)?, native))
}

/// The interface's index in the calling thread's namespace.
pub fn ifindex(iface: &str) -> Result<u32> {
    let c = std::ffi::CString::new(iface)?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(anyhow!("no interface {iface}")),
        i => Ok(i),
    }
}

/// A random-source SYN flood spec of `family` at the lab's server.
pub fn syn_spec(
    lab: &Lab,
    family: Family,
    rate: Option<u64>,
    duration: Duration,
) -> Result<FloodSpec> {
    let (src, src_prefix): (IpAddr, u8) = match family {
        Family::V4 => ("100.64.0.0".parse()?, 10),
        Family::V6 => ("2001:db8::".parse()?, 64),
    };
    Ok(FloodSpec {
        kind: FloodKind::Syn,
        l2: lab.client_to_server(None)?,
        src,
        src_prefix,
        dst: lab.server_ip(family),
        dport: PORT,
        options: OptionStyle::MssOnly,
        count: u64::MAX,
        duration,
        rate,
        cpu: Some(GEN_CPU),
    })
}

/// One external generator (hping3, trafgen) under `timeout`, pinned to [`GEN_CPU`]; returns
/// its combined output.
fn external(lab: &Lab, seconds: u64, program: &[&str]) -> Result<String> {
    let mut cmd = lab.client().command("timeout");
    cmd.args(["-s", "INT", "-k", "5", &seconds.to_string()])
        .args(["taskset", "-c", &GEN_CPU.to_string()])
        .args(program);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", program[0]))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn trafgen_config(lab: &Lab) -> Result<String> {
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let l2 = lab.client_to_server(None)?;
    Ok(format!(
        "{{ eth(da={}, sa={}), ipv4(saddr=drnd(), daddr={}, ttl=64), tcp(sp=drnd(), dp={PORT}, seq=drnd(), syn) }}\n",
        mac(l2.dst_mac),
        mac(l2.src_mac),
        lab.server_ip(Family::V4)
    ))
}

/// A generator's line in the comparison.
pub struct GenResult {
    pub name: String,
    pub sent: Option<u64>,
    pub received: u64,
    pub seconds: f64,
}

/// Runs every generator for `seconds` and returns their results, fastest first.
pub fn compare(seconds: u64) -> Result<Vec<GenResult>> {
    let lab = Lab::new()?;
    let drop = XdpProgram::load("sgl_drop", &drop_program())?;
    let _link = attach(lab.server(), lab.server_iface().name(), &drop, true)?;
    // The drop program also drops ARP: hping3 (a raw IP socket) needs the neighbour.
    lab.first_client().static_neighbours()?;
    let mut results = Vec::new();
    let duration = Duration::from_secs(seconds);
    let rx = || -> Result<u64> { Ok(link_stats(lab.server_iface())?.get("rx_packets")) };
    for method in Method::ALL {
        let spec = syn_spec(&lab, Family::V4, None, duration)?;
        let before = rx()?;
        let report = floodgen::run(
            lab.client(),
            lab.client_iface().name(),
            &spec,
            method,
            &AtomicBool::new(false),
        )?;
        results.push(GenResult {
            name: format!("sgflood {}", method.name()),
            sent: Some(report.sent),
            received: rx()? - before,
            seconds: report.elapsed.as_secs_f64(),
        });
    }
    let target = lab.server_ip(Family::V4).to_string();
    let port = PORT.to_string();
    let before = rx()?;
    let started = Instant::now();
    let out = external(
        &lab,
        seconds,
        &[
            "hping3",
            "-S",
            "--flood",
            "--rand-source",
            "-p",
            &port,
            &target,
        ],
    )?;
    results.push(GenResult {
        name: "hping3 --flood --rand-source".into(),
        sent: parse_hping3_sent(&out),
        received: rx()? - before,
        seconds: started.elapsed().as_secs_f64(),
    });
    let config = std::env::temp_dir().join(format!("sgl-trafgen-{}.cfg", std::process::id()));
    std::fs::write(&config, trafgen_config(&lab)?)?;
    let before = rx()?;
    let started = Instant::now();
    let out = external(
        &lab,
        seconds,
        &[
            "trafgen",
            "--dev",
            lab.client_iface().name(),
            "--conf",
            &config.to_string_lossy(),
            "--cpus",
            "1",
        ],
    );
    let _ = std::fs::remove_file(&config);
    let out = out?;
    if std::env::var_os("SGL_DEBUG").is_some() {
        eprintln!("trafgen said:\n{out}");
    }
    results.push(GenResult {
        name: "trafgen (netsniff-ng)".into(),
        sent: out.lines().find_map(|l| {
            l.trim()
                .strip_suffix("packets outgoing")?
                .trim()
                .parse()
                .ok()
        }),
        received: rx()? - before,
        seconds: started.elapsed().as_secs_f64(),
    });
    results.sort_by_key(|r| std::cmp::Reverse(r.received));
    Ok(results)
}

impl GenResult {
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }

    pub fn key(&self) -> String {
        self.name
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join("_")
            .replace(['-', '('], "_")
            .replace(')', "")
    }
}

/// The comparison as a markdown table.
pub fn table(results: &[GenResult]) -> String {
    let mut md = String::from(
        "| generator (CPU 0 → veth, XDP_DROP behind it) | sent/s | received/s |\n| --- | ---: | ---: |\n",
    );
    for r in results {
        let sent = r
            .sent
            .map_or_else(|| "?".into(), |s| format!("{:.0}", s as f64 / r.seconds));
        md.push_str(&format!("| {} | {sent} | {:.0} |\n", r.name, r.rate()));
    }
    md
}

/// The comparison's metrics: received packets per second per generator.
pub fn report(results: &[GenResult]) -> Vec<Metric> {
    results
        .iter()
        .map(|r| Metric::new(format!("gen.{}.pps", r.key()), r.rate(), "packets/s"))
        .collect()
}
