//! synguard daemon: loads the XDP SYN-cookie datapath, installs the nftables synproxy table
//! that completes cookie handshakes, and undoes both on exit.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tracing::info;
use tracing_subscriber::EnvFilter;

use synguard::cli::Cli;
use synguard::loader::{self, Datapath, LoaderError};
use synguard::nft::SynproxyTable;
use synguard::stats::Stats;
use synguard::sysctl::SysctlGuard;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version: clap prints to stdout and exits 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{} (see --help)", usage_error_line(&e));
            // 2 is clap's (and the shell's) code for a usage error.
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(log) = e
                .chain()
                .find_map(|cause| cause.downcast_ref::<LoaderError>())
                .and_then(LoaderError::verifier_log)
            {
                eprintln!("verifier log:\n{}", log.trim_end());
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Clap's first paragraph (up to the blank line before its tips and usage) on one line, so
/// every failure of the daemon is a single `error: ...` line.
fn usage_error_line(error: &clap::Error) -> String {
    error
        .to_string()
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Start-up in dependency order, the run, and an orderly shutdown. Each step's guard undoes
/// it on drop, so a failure half way (or a panic) leaves nothing behind.
async fn run(cli: Cli) -> anyhow::Result<()> {
    // Registered first so a signal during start-up leads to a clean shutdown, not a kill
    // that would leave the nftables table and sysctls behind.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let ports = cli.port_set();
    let config = cli.datapath_config();
    let ifaces = loader::resolve_interfaces(&cli.ifaces)?;

    let mut datapath = Datapath::load(&config, &ports)?;
    // The table's ct expressions load nf_conntrack, which the conntrack sysctl needs.
    let table = SynproxyTable::install(&ports, &config).context("installing the nftables table")?;
    let mut sysctls = SysctlGuard::new();
    // A cookie ACK must be `invalid` for synproxy to take it; with loose tracking conntrack
    // would pick it up mid-stream and the hand-off fails.
    sysctls.set("net.netfilter.nf_conntrack_tcp_loose", "0")?;
    // synproxy encodes the client's options in the timestamp; without timestamps on the
    // local stack the connection to the listener loses them.
    sysctls.set("net.ipv4.tcp_timestamps", "1")?;
    let attachments = datapath.attach(&ifaces, cli.xdp_mode)?;

    let names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
    info!(
        "synguard ready: XDP on {} ({} mode), protecting TCP ports {ports}",
        names.join(","),
        cli.xdp_mode
    );

    let mut stats = Stats::new(datapath.counters());
    let period = Duration::from_secs(cli.stats_interval);
    let mut ticks = interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let signal_name = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = ticks.tick() => stats.log_rates(),
        }
    };

    info!("{signal_name} received, shutting down");
    drop(attachments);
    // After the detach the counters are final.
    stats.log_rates();
    stats.log_totals();
    let table_result = table.remove().context("deleting the nftables table");
    let sysctl_result = sysctls.restore().context("restoring sysctls");
    table_result?;
    sysctl_result?;
    info!("synguard stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_fit_on_one_line() {
        let missing = Cli::try_parse_from(["synguard"]).unwrap_err();
        assert_eq!(
            usage_error_line(&missing),
            "error: the following required arguments were not provided: --iface <IF> --ports <PORTS>"
        );
        let bad = Cli::try_parse_from(["synguard", "--iface", "a", "--ports", "0"]).unwrap_err();
        assert_eq!(
            usage_error_line(&bad),
            "error: invalid value '0' for '--ports <PORTS>': port 0 cannot be protected (ports are 1-65535)"
        );
    }
}
