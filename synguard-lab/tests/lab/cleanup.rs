//! After SIGTERM or SIGINT the daemon exits 0 and leaves nothing behind: no nftables table
//! `synguard`, no XDP or TC program on the interface, every sysctl back to its value from before the
//! start. To make restoring visible, `tcp_timestamps` starts at 0 (synguard needs 1).

use std::fmt;

use anyhow::{Context as _, Result, ensure};
use nix::sys::signal::Signal;
use synguard_common::TC_PROGRAM_NAME;
use synguard_lab::daemon::{Daemon, XdpMode};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::kernel::{self, set_sysctl, sysctl, tc_ingress_programs, xdp_prog_id};
use synguard_lab::netns::Netns;
use synguard_lab::topology::Lab;

const TABLE: &str = "inet synguard";
/// Sysctls synguard may touch (and ones it must not).
const SYSCTLS: [&str; 6] = [
    "net.netfilter.nf_conntrack_tcp_loose",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_sack",
    "net.ipv4.tcp_window_scaling",
    "net.ipv4.tcp_ecn",
];

struct Case {
    mode: XdpMode,
    signal: Signal,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.mode.as_str(), self.signal)
    }
}

fn sysctls(netns: &Netns) -> Result<Vec<(&'static str, String)>> {
    SYSCTLS
        .iter()
        .map(|name| Ok((*name, sysctl(netns, name)?)))
        .collect()
}

#[test]
fn daemon_cleans_up_on_signal() {
    let Some(_serial) = harness::start("cleanup", &[Need::Daemon]) else {
        return;
    };
    let cases = XdpMode::ALL
        .iter()
        .flat_map(|&mode| [Signal::SIGTERM, Signal::SIGINT].map(|signal| Case { mode, signal }));
    run_cases("cleanup", cases, |case| {
        let lab = Lab::new()?;
        let (server, iface) = (lab.server(), lab.server_iface());
        set_sysctl(server, "net.netfilter.nf_conntrack_tcp_loose", "1")?;
        set_sysctl(server, "net.ipv4.tcp_timestamps", "0")?;
        let before = sysctls(server)?;
        ensure!(
            xdp_prog_id(iface)?.is_none(),
            "an XDP program is attached before the start"
        );

        let daemon = Daemon::start(server, iface.name(), "8080,8443", case.mode, &[])?;
        let tables = kernel::nft_tables(server)?;
        ensure!(
            tables.iter().any(|t| t == TABLE),
            "no table {TABLE} while running: {tables:?}"
        );
        ensure!(
            xdp_prog_id(iface)?.is_some(),
            "no XDP program on {} while running",
            iface.name()
        );
        let tc = tc_ingress_programs(server, iface)?;
        ensure!(
            tc == [TC_PROGRAM_NAME],
            "TC ingress of {} while running: {tc:?}",
            iface.name()
        );
        let loose = sysctl(server, "net.netfilter.nf_conntrack_tcp_loose")?;
        ensure!(
            loose == "0",
            "nf_conntrack_tcp_loose is {loose} while running; the hand-off needs 0"
        );

        let exit = daemon.stop_with(case.signal)?;
        exit.ensure_success()
            .with_context(|| format!("stopping with {}", case.signal))?;
        let tables = kernel::nft_tables(server)?;
        ensure!(
            !tables.iter().any(|t| t == TABLE),
            "table {TABLE} left behind: {tables:?}"
        );
        let prog = xdp_prog_id(iface)?;
        ensure!(
            prog.is_none(),
            "XDP program {prog:?} left on {}",
            iface.name()
        );
        let tc = tc_ingress_programs(server, iface)?;
        ensure!(tc.is_empty(), "TC programs {tc:?} left on {}", iface.name());
        let after = sysctls(server)?;
        let changed: Vec<String> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b.1 != a.1)
            .map(|((name, b), (_, a))| format!("{name}: {b} before, {a} after"))
            .collect();
        ensure!(
            changed.is_empty(),
            "sysctls not restored: {changed:?}\n{}",
            exit.log
        );
        Ok(())
    });
}
