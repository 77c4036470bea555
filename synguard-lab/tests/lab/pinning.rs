//! Pins and locks: after `kill -9` the pinned links keep XDP answering (counters move) and the
//! TC program attached, the next start adopts both, and `synguard detach` removes everything
//! (programs, pins, table,
//! state) and restores the sysctls; a second synguard on a busy interface is refused while the
//! first keeps working. The lock and state files are per network namespace: two synguards on
//! same-named interfaces of two namespaces both run.

use anyhow::{Result, bail, ensure};
use nix::sys::signal::Signal;
use synguard_common::{Counter, TC_PROGRAM_NAME};
use synguard_lab::bpffs::Bpffs;
use synguard_lab::client::{self, ClientConfig};
use synguard_lab::daemon::{Daemon, XdpMode, remove_run_files, run_files, run_once};
use synguard_lab::harness::{self, Need, run_cases};
use synguard_lab::kernel::{self, Counters, set_sysctl, sysctl, tc_ingress_programs, xdp_prog_id};
use synguard_lab::netns::{Iface, Netns};
use synguard_lab::server::{PayloadServer, Protocol};
use synguard_lab::topology::{Family, Lab};

const PORT: u16 = 8080;
const PAYLOAD: usize = 1024;
const LOOSE: &str = "net.netfilter.nf_conntrack_tcp_loose";

fn connections_work(lab: &Lab, count: usize) -> Result<()> {
    let target = lab.server_addr(Family::V4, PORT);
    let report = client::run(
        lab.client(),
        ClientConfig::new(target, Protocol::RequestFirst, PAYLOAD, count),
    )?;
    if !report.failures.is_empty() {
        bail!("connections failed: {:?}", report.failures);
    }
    Ok(())
}

#[test]
fn kill_9_keeps_protection_and_detach_removes_it() {
    let Some(_serial) = harness::start("pinning", &[Need::Daemon, Need::Tool("mount")]) else {
        return;
    };
    run_cases("kill -9", [XdpMode::Native.as_str()], |_| {
        let bpffs = Bpffs::mount()?;
        let lab = Lab::new()?;
        let (server, iface) = (lab.server(), lab.server_iface());
        let _http = PayloadServer::start(server, PORT, PAYLOAD, Protocol::RequestFirst)?;
        set_sysctl(server, LOOSE, "1")?;
        let args = ["--pin-dir", bpffs.arg()];
        let ports = PORT.to_string();

        let a = Daemon::start(server, iface.name(), &ports, XdpMode::Native, &args)?;
        connections_work(&lab, 5)?;
        let exit = a.stop_with(Signal::SIGKILL)?;
        ensure!(!exit.status.success(), "kill -9: {}", exit.status);
        let before = Counters::of(iface)?;
        connections_work(&lab, 5)?;
        let moved = Counters::of(iface)?.since(&before);
        ensure!(
            moved.get(Counter::SynCookieSent) >= 5 && moved.get(Counter::AckCookieValid) >= 5,
            "XDP did not answer after kill -9: {moved}"
        );
        ensure_tc_attached(server, iface, "after kill -9")?;

        let b = Daemon::start(
            server,
            iface.name(),
            &ports,
            XdpMode::Native,
            &[args[0], args[1], "--on-exit", "keep"],
        )?;
        for program in ["XDP program replaced", "TC program replaced"] {
            ensure!(
                b.log().contains(&format!(
                    "{program} on {} (pinned link adopted",
                    iface.name()
                )),
                "the next start did not adopt the pinned link ({program}):\n{}",
                b.log()
            );
        }
        connections_work(&lab, 5)?;
        b.stop()?.ensure_success()?;
        ensure!(xdp_prog_id(iface)?.is_some(), "--on-exit keep detached XDP");
        ensure_tc_attached(server, iface, "after --on-exit keep")?;

        let (ok, out) = run_once(server, &["detach", "--iface", iface.name()])?;
        ensure!(ok, "detach failed: {out}");
        ensure!(
            xdp_prog_id(iface)?.is_none(),
            "XDP still attached after detach"
        );
        let tc = tc_ingress_programs(server, iface)?;
        ensure!(tc.is_empty(), "TC programs left after detach: {tc:?}");
        let tables = kernel::nft_tables(server)?;
        ensure!(
            !tables.iter().any(|t| t == "inet synguard"),
            "table left after detach: {tables:?}"
        );
        let pins = bpffs.path().join(iface.name());
        ensure!(!pins.exists(), "pins left: {}", pins.display());
        let states: Vec<_> = run_files(iface.name())
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        ensure!(states.is_empty(), "state file left: {states:?}");
        let loose = sysctl(server, LOOSE)?;
        ensure!(loose == "1", "{LOOSE} is {loose} after detach, was 1");

        let (ok, out) = run_once(server, &["detach", "--iface", iface.name()])?;
        ensure!(
            !ok && out.contains("synguard is not attached"),
            "detach of a clean interface: success {ok}, output {out}"
        );
        Ok(())
    });
}

/// Exactly synguard's TC program at the interface's ingress.
fn ensure_tc_attached(netns: &Netns, iface: &Iface, when: &str) -> Result<()> {
    let tc = tc_ingress_programs(netns, iface)?;
    ensure!(
        tc == [TC_PROGRAM_NAME],
        "TC ingress of {} {when}: {tc:?}",
        iface.name()
    );
    Ok(())
}

#[test]
fn second_instance_is_refused() {
    let Some(_serial) = harness::start("lock", &[Need::Daemon]) else {
        return;
    };
    run_cases("lock", [XdpMode::Skb.as_str()], |_| {
        let lab = Lab::new()?;
        let (server, iface) = (lab.server(), lab.server_iface());
        let _http = PayloadServer::start(server, PORT, PAYLOAD, Protocol::RequestFirst)?;
        let ports = PORT.to_string();
        let first = Daemon::start(server, iface.name(), &ports, XdpMode::Skb, &[])?;
        let (ok, out) = run_once(
            server,
            &[
                "--iface",
                iface.name(),
                "--ports",
                &ports,
                "--xdp-mode",
                "skb",
            ],
        )?;
        ensure!(
            !ok && out.contains("already runs on interface"),
            "the second instance: success {ok}, output {out}"
        );
        let (ok, out) = run_once(server, &["detach", "--iface", iface.name()])?;
        ensure!(
            !ok && out.contains("already runs on interface"),
            "detach under a running daemon: success {ok}, output {out}"
        );
        connections_work(&lab, 5)?;
        first.stop()?.ensure_success()
    });
}

/// The name both namespaces give their server interface.
const SAME_NAME: &str = "sgsame0";

/// The server interface of a lab renamed to [`SAME_NAME`]; renamed back on drop, so the lab's
/// own cleanup finds it.
struct Renamed<'a> {
    netns: &'a Netns,
    original: String,
}

impl<'a> Renamed<'a> {
    fn new(lab: &'a Lab) -> Result<Self> {
        let original = lab.server_iface().name().to_owned();
        rename(lab.server(), &original, SAME_NAME)?;
        Ok(Self {
            netns: lab.server(),
            original,
        })
    }
}

impl Drop for Renamed<'_> {
    fn drop(&mut self) {
        let _ = rename(self.netns, SAME_NAME, &self.original);
        remove_run_files(SAME_NAME);
    }
}

/// Renames a link (down, rename, up: its IPv4 addresses stay).
fn rename(netns: &Netns, from: &str, to: &str) -> Result<()> {
    netns.ip(&["link", "set", "dev", from, "down"])?;
    netns.ip(&["link", "set", "dev", from, "name", to])?;
    netns.ip(&["link", "set", "dev", to, "up"])?;
    Ok(())
}

#[test]
fn same_interface_name_in_two_namespaces() {
    let Some(_serial) = harness::start("netns lock", &[Need::Daemon]) else {
        return;
    };
    run_cases("netns lock", [XdpMode::Skb.as_str()], |_| {
        remove_run_files(SAME_NAME);
        let (lab_a, lab_b) = (Lab::new()?, Lab::new()?);
        let _http_a = PayloadServer::start(lab_a.server(), PORT, PAYLOAD, Protocol::RequestFirst)?;
        let _http_b = PayloadServer::start(lab_b.server(), PORT, PAYLOAD, Protocol::RequestFirst)?;
        let (_renamed_a, _renamed_b) = (Renamed::new(&lab_a)?, Renamed::new(&lab_b)?);
        let ports = PORT.to_string();
        let a = Daemon::start(lab_a.server(), SAME_NAME, &ports, XdpMode::Skb, &[])?;
        let b = Daemon::start(lab_b.server(), SAME_NAME, &ports, XdpMode::Skb, &[])?;
        for lab in [&lab_a, &lab_b] {
            let before = Counters::of(&Iface::new(lab.server(), SAME_NAME))?;
            connections_work(lab, 5)?;
            let moved = Counters::of(&Iface::new(lab.server(), SAME_NAME))?.since(&before);
            ensure!(
                moved.get(Counter::SynCookieSent) >= 5,
                "XDP did not answer in {}: {moved}",
                lab.server().name()
            );
        }
        let files = run_files(SAME_NAME);
        println!("run files: {files:?}");
        for ext in ["lock", "json"] {
            let count = files
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .count();
            ensure!(
                count == 2,
                "expected one {ext} file per namespace: {files:?}"
            );
        }

        // Still one synguard per interface inside one namespace.
        let (ok, out) = run_once(
            lab_a.server(),
            &["--iface", SAME_NAME, "--ports", &ports, "--xdp-mode", "skb"],
        )?;
        ensure!(
            !ok && out.contains("already runs on interface") && out.contains("network namespace"),
            "the second instance in one namespace: success {ok}, output {out}"
        );
        println!("refused: {}", out.trim());
        connections_work(&lab_a, 5)?;

        // Stopping one leaves the other's state alone.
        a.stop()?.ensure_success()?;
        connections_work(&lab_b, 5)?;
        let states = run_files(SAME_NAME)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .count();
        ensure!(states == 1, "B's state file went with A's");
        b.stop()?.ensure_success()
    });
}
