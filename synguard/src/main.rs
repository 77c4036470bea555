//! synguard daemon: loads the XDP SYN-cookie datapath, installs the nftables synproxy table
//! that completes cookie handshakes, and undoes both on exit.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;

use synguard::datapath::attach;
use synguard::datapath::error::LoaderError;
use synguard::datapath::load::Datapath;
use synguard::datapath::maps::DatapathState;
use synguard::datapath::peers::{self, PeerSeeder};
use synguard::datapath::snapshot::MapReader;
use synguard::kernel::tuning::tune_kernel;
use synguard::observe::attack_events::{self, AttackBoard, AttackEvents};
use synguard::observe::metrics::exposition::Exporter;
use synguard::observe::metrics::server;
use synguard::observe::report;
use synguard::observe::stats::Stats;
use synguard::runtime::auto;
use synguard::runtime::control::Control;
use synguard::runtime::lifecycle::Lifecycle;
use synguard::runtime::notify;
use synguard::runtime::table_watch::TableWatch;
use synguard::runtime::watch::{self, Watch};
use synguard::settings::cli::{Cli, Command};
use synguard::settings::merge::Settings;
use synguard::settings::ports::PortSet;
use synguard::settings::values::{LogFormat, MetricsAddr, OnExit};

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
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match Settings::check_file(file) {
            Ok(settings) => {
                println!(
                    "{}: ok (ports {}, syncookies {})",
                    file.display(),
                    settings.ports,
                    settings.syncookies
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The daemon's settings come first: they say how to log.
    let settings = match &cli.command {
        Some(_) => None,
        None => match Settings::load(&cli) {
            Ok(settings) => Some(settings),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    init_logging(
        settings
            .as_ref()
            .map_or_else(LogFormat::default, |s| s.log_format),
    );

    let result = match settings {
        Some(settings) => run(cli, settings).await,
        None => subcommand(&cli).await,
    };
    match result {
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

/// Log lines on stderr, filtered with `RUST_LOG` (default `info`); colours only on a terminal.
fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // The event's fields as the object's keys, beside timestamp, level, target, message.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `detach`, `stats` and `top`.
async fn subcommand(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::Detach { iface, pin_dir }) => {
            synguard::runtime::detach::detach(iface, pin_dir.as_deref())
        }
        Some(Command::Stats { target, json }) => report::stats(target, *json).await,
        Some(Command::Top { target, count }) => report::top(target, *count).await,
        // `check-config` is answered before logging starts; no command is the daemon.
        Some(Command::CheckConfig { .. }) | None => Ok(()),
    }
}

/// Start-up in dependency order, the run, and an orderly shutdown. Each step's guard undoes
/// it on drop, so a failure half way (or a panic) leaves nothing behind.
async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    // Registered first so a signal during start-up leads to a clean shutdown, not a kill
    // that would leave the nftables table and sysctls behind.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    let ports = settings.ports.clone();
    let config = settings.datapath;
    let ifaces = attach::resolve_interfaces(&settings.ifaces)?;
    let xdp_mode = settings.xdp_mode;
    // Locks the interfaces and finds what an earlier synguard left to adopt.
    let mut lifecycle =
        Lifecycle::begin(&ifaces, xdp_mode, cli.pin_dir.as_deref(), settings.on_exit)?;
    // Before the datapath is touched (after the locks, so a second synguard on the interface
    // fails on its lock): a taken port fails the start-up cleanly.
    let metrics_listener = match settings.metrics_addr {
        MetricsAddr::Listen(addr) => Some(server::bind(addr).await.with_context(|| {
            format!("listening for metrics on {addr} (--metrics-addr ADDR, or none)")
        })?),
        MetricsAddr::None => None,
    };

    let mut datapath =
        Datapath::load_pinned(&DatapathState::of(&settings), &lifecycle.map_pins()?)?;
    // Subscribed before the table is installed: no change after that goes unseen.
    let mut table_watch = TableWatch::subscribe();
    // The table's ct expressions load nf_conntrack, which the conntrack sysctl needs.
    let mut table = lifecycle.install_table(&ports, &config)?;
    let mut sysctls = lifecycle.sysctls();
    // A cookie ACK must be `invalid` for synproxy to take it; with loose tracking conntrack
    // would pick it up mid-stream and the hand-off fails.
    sysctls.set("net.netfilter.nf_conntrack_tcp_loose", "0")?;
    // synproxy encodes the client's options in the timestamp; without timestamps on the
    // local stack the connection to the listener loses them.
    sysctls.set("net.ipv4.tcp_timestamps", "1")?;
    if let Some(tuning) = &settings.kernel {
        tune_kernel(&mut sysctls, tuning)?;
    }
    // Tuples of the kernel's sockets go into the peer filter before the program sees a SYN,
    // and once more after the attach for connections opened by the program it replaced.
    let mut peers = datapath.peer_seeder()?;
    seed_peers(&mut peers, &ports).context("marking the kernel's sockets in the peer filter")?;
    let mut attachments = datapath.attach(&ifaces, xdp_mode, lifecycle.pins())?;
    lifecycle.record(&sysctls)?;
    seed_peers(&mut peers, &ports).context("marking the kernel's sockets in the peer filter")?;

    let names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
    let program = datapath.program_id()?;
    let attack_board = AttackBoard::default();
    if let Some(listener) = metrics_listener {
        info!("metrics at http://{}/metrics", listener.local_addr()?);
        let reader = MapReader::of_maps(program, datapath.map_views()?)?;
        server::spawn(
            listener,
            Exporter::new(reader, &names, table_watch.restores(), attack_board.clone()),
        );
    }
    info!(
        "synguard ready: XDP on {} ({xdp_mode} mode), protecting TCP ports {ports}, syncookies {}",
        names.join(","),
        settings.syncookies
    );

    let period = Duration::from_secs(settings.stats_interval);
    let on_exit = settings.on_exit;
    let mut control = Control::new(cli, settings);
    let mut stats = Stats::new(MapReader::of_maps(program, datapath.map_views()?)?);
    let mut attacks = AttackEvents::new(
        MapReader::of_maps(program, datapath.map_views()?)?,
        attack_board,
    );
    let maps = datapath.maps_mut();
    notify::ready(&stats.status(control.settings().syncookies));
    let mut ticks = interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut auto_ticks = tokio::time::interval(auto::TICK);
    auto_ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Deleted interfaces (see `watch`).
    let mut watch = Watch::new(&ifaces);
    let mut watch_ticks = interval_at(Instant::now() + watch::TICK, watch::TICK);
    watch_ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first reading right away: SYNs after it count for an attack, those before are the
    // adopted counters of an earlier run.
    let mut attack_ticks = tokio::time::interval(attack_events::SAMPLE);
    attack_ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut peer_ticks = interval_at(Instant::now() + peers::SEED_PERIOD, peers::SEED_PERIOD);
    peer_ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stop: anyhow::Result<&str> = loop {
        tokio::select! {
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = sigint.recv() => break Ok("SIGINT"),
            _ = sighup.recv() => {
                notify::reloading();
                control.reload(maps, &mut table, &mut sysctls);
                notify::ready(&stats.status(control.settings().syncookies));
            }
            _ = auto_ticks.tick(), if control.auto_active() => control.tick(maps),
            _ = attack_ticks.tick() => {
                attacks.tick(control.settings(), &control.auto_cookie_ports());
            }
            _ = ticks.tick() => {
                stats.log_rates();
                notify::status(&stats.status(control.settings().syncookies));
            }
            _ = peer_ticks.tick() => {
                if let Err(e) = seed_peers(&mut peers, &control.settings().ports) {
                    warn!("marking the kernel's sockets in the peer filter: {e}");
                }
            }
            _ = watch_ticks.tick() => {
                // An error: no interface is left.
                if let Err(e) = watch.tick(&mut attachments) {
                    break Err(e);
                }
            }
            trigger = table_watch.next() => table_watch.check(trigger, &mut table, control.settings()),
        }
    };

    match &stop {
        Ok(signal_name) => info!("{signal_name} received, shutting down"),
        Err(e) => info!("{e}: shutting down"),
    }
    notify::stopping();
    // With no interface left there is nothing to keep for a next start.
    let keep = on_exit == OnExit::Keep && stop.is_ok();
    lifecycle.finish(keep, attachments, table, sysctls)?;
    // After the detach the counters are final.
    stats.log_rates();
    stats.log_totals();
    info!("synguard stopped");
    stop.map(drop)
}

fn seed_peers(peers: &mut PeerSeeder, ports: &PortSet) -> std::io::Result<()> {
    let marked = peers.seed(ports)?;
    debug!("peer filter: {marked} kernel sockets of protected ports marked");
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
