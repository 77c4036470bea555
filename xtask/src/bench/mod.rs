//! `cargo xtask flood` (the generators side by side) and `cargo xtask bench` (datapath
//! microbench + end-to-end scenarios), with their outputs: a markdown table,
//! `target/bench/results.json` (a flat list of `{"name", "value", "unit"}`) and an SVG plot.

mod cpu;
pub mod e2e;
pub mod generators;
mod plot;
mod profile;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use synguard_lab::harness::{self, Need};

/// One figure of the results.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

impl Metric {
    pub fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
        }
    }
}

/// The lab's turn on the machine, or why there is none.
fn lab_turn(what: &str, needs: &[Need]) -> Result<harness::LabTurn> {
    match harness::start(what, needs) {
        Some(turn) => Ok(turn),
        None => bail!("{what} cannot run here (see the SKIP line above)"),
    }
}

/// `cargo xtask flood`.
pub fn flood(seconds: u64) -> Result<()> {
    let _turn = lab_turn(
        "xtask flood",
        &[
            Need::Tool("hping3"),
            Need::Tool("trafgen"),
            Need::Tool("taskset"),
        ],
    )?;
    let results = generators::compare(seconds.clamp(1, 60))?;
    generators::report(&results);
    println!("\n{}", generators::table(&results));
    Ok(())
}

/// The release build of the microbench example (`synguard/examples/microbench.rs`).
fn microbench() -> Result<Vec<Metric>> {
    crate::run(crate::cargo("build").args([
        "--release",
        "-p",
        "synguard",
        "--example",
        "microbench",
    ]))?;
    let binary = crate::release_binary()
        .with_file_name("examples")
        .join("microbench");
    let out = Command::new(&binary)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", binary.display(), out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("microbench printed `{line}`"))?;
            let unit = match v["unit"].as_str() {
                Some("ns") => "ns",
                Some("ratio") => "ratio",
                Some("bytes") => "bytes",
                _ => "instructions",
            };
            Ok(Metric::new(
                v["name"].as_str().unwrap_or("?"),
                v["value"].as_f64().unwrap_or(f64::NAN),
                unit,
            ))
        })
        .collect()
}

fn value(metrics: &[Metric], name: &str) -> Option<f64> {
    metrics.iter().find(|m| m.name == name).map(|m| m.value)
}

/// The microbench as a markdown table: ns per packet and the ratios to both floors.
fn micro_table(metrics: &[Metric]) -> String {
    let mut md = String::from(
        "| case (BPF_PROG_TEST_RUN, separate calls) | ns/packet (median) | × drop floor | × reflect floor |\n| --- | ---: | ---: | ---: |\n",
    );
    let drop = value(metrics, "micro.floor_drop.ns_per_packet").unwrap_or(f64::NAN);
    let reflect = value(metrics, "micro.floor_reflect.ns_per_packet").unwrap_or(f64::NAN);
    for case in [
        "floor_drop",
        "floor_reflect",
        "syn_synack",
        "syn_synack_cold",
        "syn_synack_one_source",
        "vlan_syn_synack",
        "ipv6_syn_synack",
        "valid_ack",
        "invalid_ack",
        "established_pass",
        "non_tcp_pass",
    ] {
        if let Some(ns) = value(metrics, &format!("micro.{case}.ns_per_packet")) {
            md.push_str(&format!(
                "| {case} | {ns:.0} | {:.2} | {:.2} |\n",
                ns / drop,
                ns / reflect
            ));
        }
    }
    if let Some(n) = value(metrics, "micro.synguard.verified_insns") {
        md.push_str(&format!(
            "\nsynguard's program: {n:.0} instructions processed by the verifier"
        ));
        if let Some(b) = value(metrics, "micro.synguard.xlated_bytes") {
            md.push_str(&format!(", {b:.0} bytes translated"));
        }
        md.push_str(".\n");
    }
    md
}

/// `target/bench`, where the results go.
fn results_dir() -> PathBuf {
    crate::release_binary()
        .parent()
        .and_then(|p| p.parent())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("bench")
}

/// Writes `target/bench/results.{json,md}`.
fn write_results(metrics: &[Metric], markdown: &str) -> Result<PathBuf> {
    let dir = results_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json: Vec<serde_json::Value> = metrics
        .iter()
        .map(|m| serde_json::json!({"name": m.name, "value": m.value, "unit": m.unit}))
        .collect();
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    std::fs::write(dir.join("results.md"), markdown)?;
    Ok(dir)
}

/// What `cargo xtask bench` runs.
pub struct BenchConfig {
    /// Seconds each flood generator runs.
    pub gen_seconds: u64,
    /// Only the microbench.
    pub micro_only: bool,
    /// Only the end-to-end scenarios.
    pub e2e_only: bool,
    /// Only the multi-queue scaling runs.
    pub scaling_only: bool,
    /// Seconds of flood per scenario and rate.
    pub e2e_seconds: u64,
    /// The offered flood rates.
    pub rates: Vec<e2e::Rate>,
    /// `perf record` the server CPU during each end-to-end flood.
    pub profile: bool,
}

/// `cargo xtask bench`: the datapath microbench, the flood generators side by side, then the
/// end-to-end scenarios; one lab turn for all of it.
pub fn bench(config: &BenchConfig) -> Result<()> {
    let needs: &[Need] = if config.micro_only {
        &[]
    } else {
        &[
            Need::Daemon,
            Need::Tool("hping3"),
            Need::Tool("trafgen"),
            Need::Tool("taskset"),
            Need::Tool("ethtool"),
            Need::Tool("chrt"),
        ]
    };
    if !config.micro_only {
        // The scenarios run the release daemon.
        crate::build()?;
        // SAFETY: single-threaded still (no lab, no client yet).
        unsafe { std::env::set_var("SYNGUARD_BIN", crate::release_binary()) };
    }
    let _turn = lab_turn("xtask bench", needs)?;
    let mut metrics = Vec::new();
    let mut markdown = String::new();
    // Which parts run: the microbench, the generators, the scenarios and the source sweep,
    // the multi-queue scaling.
    let micro = !config.e2e_only && !config.scaling_only;
    let e2e = !config.micro_only && !config.scaling_only;
    let scaling = !config.micro_only && !config.e2e_only;
    if micro {
        metrics = microbench()?;
        markdown = format!("## Datapath microbench\n\n{}", micro_table(&metrics));
    }
    if micro && e2e {
        let results = generators::compare(config.gen_seconds.clamp(1, 60))?;
        markdown.push_str("\n## Flood generators (one core into a veth)\n\n");
        markdown.push_str(&generators::table(&results));
        metrics.extend(generators::report(&results));
    }
    let mut runs = Vec::new();
    let mut sweep_runs = Vec::new();
    let profiles = config.profile.then(|| results_dir().join("perf"));
    let profiles = profiles.as_deref();
    let seconds = config.e2e_seconds.clamp(1, 60);
    if e2e {
        runs = e2e::run(&config.rates, seconds, profiles)?;
        markdown.push_str(&format!(
            "\n## End to end: {seconds}-second SYN floods, generator on CPU {}, server receive path on CPU {}\n\n",
            generators::GEN_CPU,
            e2e::SERVER_CPU
        ));
        markdown.push_str(&e2e::table(&runs));
        metrics.extend(e2e::metrics(&runs));
        let sweep = e2e::source_sweep(seconds, profiles)?;
        markdown.push_str(
            "\n## synguard native at the highest rate, by the number of distinct flood sources\n\n",
        );
        markdown.push_str(&e2e::sweep_table(&sweep));
        metrics.extend(e2e::sweep_metrics(&sweep));
        sweep_runs = sweep;
    }
    if scaling {
        let runs = e2e::queue_scaling(seconds, profiles)?;
        markdown.push_str(
            "\n## One receive queue and two: both CPUs run the program on the same flood\n\n",
        );
        markdown.push_str(&e2e::scaling_table(&runs));
        metrics.extend(e2e::scaling_metrics(&runs));
    }
    println!("\n{markdown}");
    let dir = write_results(&metrics, &markdown)?;
    println!("written: {0}/results.md, {0}/results.json", dir.display());
    if !runs.is_empty() {
        let svg = dir.join("e2e.svg");
        plot::write(&runs, &svg)?;
        println!("written: {}", svg.display());
    }
    if !sweep_runs.is_empty() {
        let svg = dir.join("sources.svg");
        plot::write_sweep(&sweep_runs, &svg)?;
        println!("written: {}", svg.display());
    }
    Ok(())
}
