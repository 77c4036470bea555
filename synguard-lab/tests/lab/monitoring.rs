//! The Grafana dashboard and the Prometheus alerts in `packaging/`:
//!
//! - `promtool check rules` accepts the rules and `promtool test rules` passes their unit
//!   tests (every alert fires on its series and not on the look-alikes);
//! - every metric name in the dashboard's PromQL (panel targets and variable queries) and in
//!   the alerts' expressions is one that a running daemon exports: the names come from a real
//!   `/metrics` scrape of a daemon in a lab namespace after legitimate connections through a
//!   protected port (so the per-port families exist), not from a list that could drift.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::daemon::XdpMode;
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::server::Protocol;
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 1024;
const METRICS: &str = synguard_lab::metrics::DEFAULT_ADDR;
/// Prometheus' own series about each scrape target, which the alerts may use.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

fn packaging(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(path)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Runs `promtool ARGS`; fails with what it said unless it exits 0.
fn promtool(args: &[&str], file: &Path) -> Result<String> {
    let output = Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .context("starting promtool")?;
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "promtool {} {} ({}):\n{said}",
        args.join(" "),
        file.display(),
        output.status
    );
    Ok(said)
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let Some(_serial) = harness::start("promtool rules", &[Need::Tool("promtool")]) else {
        return;
    };
    run_cases(
        "promtool",
        [
            "check rules synguard.rules.yml",
            "test rules synguard.rules.test.yml",
        ],
        |case| {
            let (args, file) = case.rsplit_once(' ').expect("`ARGS FILE`");
            let args: Vec<&str> = args.split(' ').collect();
            let said = promtool(&args, &packaging(&format!("prometheus/{file}")))?;
            println!("{}", said.trim());
            Ok(())
        },
    );
}

/// Metric names of the vector and matrix selectors of a PromQL expression.
#[derive(Default)]
struct MetricNames(BTreeSet<String>);

impl ExprVisitor for MetricNames {
    type Error = anyhow::Error;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool> {
        let selector = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(vs) = selector {
            let name = vs
                .name
                .clone()
                .ok_or_else(|| anyhow!("a selector without a metric name: {vs}"))?;
            self.0.insert(name);
        }
        Ok(true)
    }
}

/// Grafana's variables as PromQL accepts them: `$iface` etc. stand inside label matchers'
/// strings already; the interval variables stand where a duration goes.
fn promql(grafana: &str) -> String {
    grafana
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
}

fn metric_names(expr: &str, names: &mut MetricNames) -> Result<()> {
    let parsed = parser::parse(&promql(expr))
        .map_err(|e| anyhow!("`{expr}` does not parse as PromQL: {e}"))?;
    walk_expr(names, &parsed)?;
    Ok(())
}

/// Every PromQL expression of the dashboard: the panels' targets (each panel but a row must
/// have one) and the variables' `label_values(EXPR, label)` queries.
fn dashboard_exprs(dashboard: &Value) -> Result<Vec<String>> {
    let mut exprs = Vec::new();
    let panels = dashboard["panels"]
        .as_array()
        .ok_or_else(|| anyhow!("the dashboard has no panels"))?;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets: Vec<&str> = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .collect();
        ensure!(
            !targets.is_empty(),
            "panel {} has no PromQL target",
            panel["title"]
        );
        exprs.extend(targets.into_iter().map(str::to_owned));
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .ok_or_else(|| anyhow!("the dashboard has no variables"))?;
    let mut names = BTreeSet::new();
    for variable in variables {
        names.insert(variable["name"].as_str().unwrap_or_default());
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .ok_or_else(|| anyhow!("variable {} has no query", variable["name"]))?;
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(expr, _label)| expr.trim())
            .ok_or_else(|| anyhow!("variable query `{query}` is not label_values(EXPR, label)"))?;
        exprs.push(inner.to_owned());
    }
    for wanted in ["instance", "iface"] {
        ensure!(
            names.contains(wanted),
            "the dashboard has no `{wanted}` variable"
        );
    }
    Ok(exprs)
}

/// The alerts' expressions.
fn rule_exprs(rules: &str) -> Result<Vec<String>> {
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(rules).context("rules YAML")?;
    let exprs: Vec<String> = rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_sequence().into_iter().flatten())
        .filter_map(|rule| rule["expr"].as_str().map(str::to_owned))
        .collect();
    ensure!(!exprs.is_empty(), "no rule expressions found");
    Ok(exprs)
}

/// The sample names of every family in a classic-text exposition (`# TYPE` lines; counters
/// are already named `x_total` there).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let Some(_serial) = harness::start(
        "dashboard metric names",
        &[Need::Daemon, Need::Tool("curl")],
    ) else {
        return;
    };
    run_cases(
        "dashboard and alert metric names",
        ["IPv4 skb, syncookies always"],
        |_| {
            let bench = Bench::start(
                Lab::new()?,
                PORT,
                PAYLOAD,
                &PORT.to_string(),
                XdpMode::Skb,
                &["--syncookies", "always", "--metrics-addr", METRICS],
            )?;
            let lab = &bench.lab;
            let report = client::run(
                lab.client(),
                ClientConfig::new(
                    lab.server_addr(Family::V4, PORT),
                    Protocol::RequestFirst,
                    PAYLOAD,
                    3,
                ),
            )?;
            ensure!(
                report.successes() == 3,
                "legitimate connections: {}",
                report.summary()
            );
            // The half-open estimates come from a sampler that reads the per-port load once
            // a second: their family appears after its first reading that saw the SYNs.
            sleep(Duration::from_secs(2));
            let exposition = lab
                .server()
                .exec("curl", &["-sSf", &format!("http://{METRICS}/metrics")])?;
            let exported = exported_names(&exposition);
            println!(
                "the daemon exports {} families: {}",
                exported.len(),
                exported.iter().cloned().collect::<Vec<_>>().join(" ")
            );

            let dashboard: Value =
                serde_json::from_str(&read(&packaging("grafana/synguard.json"))?)
                    .context("the dashboard is not JSON")?;
            let mut in_dashboard = MetricNames::default();
            for expr in dashboard_exprs(&dashboard)? {
                metric_names(&expr, &mut in_dashboard)?;
            }
            let mut in_rules = MetricNames::default();
            for expr in rule_exprs(&read(&packaging("prometheus/synguard.rules.yml"))?)? {
                metric_names(&expr, &mut in_rules)?;
            }
            println!(
                "the dashboard uses {}; the alerts use {}",
                in_dashboard.0.iter().cloned().collect::<Vec<_>>().join(" "),
                in_rules.0.iter().cloned().collect::<Vec<_>>().join(" ")
            );
            let unknown_in_dashboard: Vec<&String> = in_dashboard.0.difference(&exported).collect();
            let unknown_in_rules: Vec<&String> = in_rules
                .0
                .iter()
                .filter(|n| !exported.contains(*n) && !PROMETHEUS_SERIES.contains(&n.as_str()))
                .collect();
            ensure!(
                unknown_in_dashboard.is_empty() && unknown_in_rules.is_empty(),
                "metric names the daemon does not export: dashboard {unknown_in_dashboard:?}, alerts {unknown_in_rules:?}\nexposition:\n{exposition}"
            );
            bench.daemon.stop()?.ensure_success()
        },
    );
}
