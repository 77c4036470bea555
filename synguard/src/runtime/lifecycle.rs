//! What makes a restart gapless and a crash harmless, around the daemon's start-up steps:
//! the per-interface locks, the pins ([`crate::datapath::pins`]) and the state file
//! ([`crate::runtime::state`]) an earlier synguard left, which this run adopts.
//!
//! Order in `main`: [`Lifecycle::begin`] (pins, locks, earlier state), load with
//! [`Lifecycle::map_pins`], [`Lifecycle::install_table`], [`Lifecycle::sysctls`] and set them,
//! attach with [`Lifecycle::pins`], [`Lifecycle::record`], run, [`Lifecycle::finish`].

use std::path::Path;

use anyhow::{Context as _, bail};
use synguard_common::DatapathConfig;
use tracing::{info, warn};

use crate::datapath::attach::{Attachments, Interface};
use crate::datapath::load;
use crate::datapath::pins::{MapPins, PinDir};
use crate::kernel::nft::table::SynproxyTable;
use crate::kernel::sysctl::SysctlGuard;
use crate::runtime::state::{AttachState, IfaceLock, lock_all};
use crate::settings::ports::PortSet;
use crate::settings::values::OnExit;
use synguard_common::XdpMode;

/// Why `--on-exit keep` is refused without pins, and how to get them.
const KEEP_NEEDS_PINS: &str = "--on-exit keep (config on_exit = \"keep\") needs restart-safe pins, but /sys/fs/bpf is not a BPF filesystem here (`ip netns exec` remounts /sys): mount one outside /sys (`mkdir -p /run/synguard-bpf && mount -t bpf bpf /run/synguard-bpf`) and pass --pin-dir /run/synguard-bpf, or use --on-exit remove";

pub struct Lifecycle {
    _locks: Vec<IfaceLock>,
    pins: Option<PinDir>,
    /// What an earlier synguard left on these interfaces (`--on-exit keep`, a crash).
    earlier: Option<AttachState>,
    state: AttachState,
    ifaces: Vec<String>,
    /// [`Self::map_pins`] prepared pins with nothing to adopt: every pin is this run's.
    made_pins: bool,
    /// The start-up got as far as [`Self::record`]; before that, a drop undoes the pins.
    recorded: bool,
}

impl Lifecycle {
    /// Finds the pin root (`--on-exit keep` without one is refused here, before anything is
    /// touched), locks every interface (a second synguard on one of them fails here) and reads
    /// what an earlier run left.
    pub fn begin(
        ifaces: &[Interface],
        xdp_mode: XdpMode,
        pin_dir: Option<&Path>,
        on_exit: OnExit,
    ) -> anyhow::Result<Self> {
        let pins = PinDir::for_daemon(pin_dir)?;
        if pins.is_none() {
            // What keep leaves for the next start lives in the pins: without them the exit
            // would have to remove everything after all.
            if on_exit == OnExit::Keep {
                bail!("{KEEP_NEEDS_PINS}");
            }
            warn!(
                "/sys/fs/bpf is not a BPF filesystem: running without restart-safe pins (a restart or crash detaches XDP); for pins mount a bpffs (outside /sys under `ip netns exec`) and pass --pin-dir"
            );
        }
        let names: Vec<String> = ifaces.iter().map(|i| i.name.clone()).collect();
        let locks = lock_all(names.iter().map(String::as_str))?;
        let mode = xdp_mode.to_string();
        let mut earlier: Option<AttachState> = None;
        for name in &names {
            let Some(found) = AttachState::read(name)? else {
                continue;
            };
            if found.xdp_mode != mode {
                bail!(
                    "synguard left XDP on `{name}` in {} mode, this start asks for {mode}: a pinned link keeps its mode; remove it first with `synguard detach --iface {name}`",
                    found.xdp_mode
                );
            }
            info!("adopting what an earlier synguard left on {name}");
            // The oldest originals win: they are from before any synguard.
            match &mut earlier {
                Some(e) => {
                    for saved in found.sysctls {
                        if !e.sysctls.iter().any(|(n, _)| *n == saved.0) {
                            e.sysctls.push(saved);
                        }
                    }
                    e.nft_table |= found.nft_table;
                }
                None => earlier = Some(found),
            }
        }
        let root = pins.as_ref().map_or(Path::new(""), PinDir::root);
        Ok(Self {
            _locks: locks,
            state: AttachState::new(&mode, root)?,
            pins,
            earlier,
            ifaces: names,
            made_pins: false,
            recorded: false,
        })
    }

    /// The pin root, `None` without pins.
    pub const fn pins(&self) -> Option<&PinDir> {
        self.pins.as_ref()
    }

    /// Which state maps to adopt or pin, for [`load::Datapath::load_pinned`].
    pub fn map_pins(&mut self) -> anyhow::Result<MapPins> {
        let Some(pins) = &self.pins else {
            return Ok(MapPins::default());
        };
        let names: Vec<&str> = self.ifaces.iter().map(String::as_str).collect();
        let pins = pins.prepare(&names, &load::object()?)?;
        self.made_pins = !pins.adopted();
        if pins.adopted() {
            info!(
                "adopting pinned maps: counters, per-source state and auto-mode cookie ports continue"
            );
        }
        Ok(pins)
    }

    /// Installs the nftables table, or replaces an earlier run's in one transaction.
    pub fn install_table(
        &self,
        ports: &PortSet,
        config: &DatapathConfig,
    ) -> anyhow::Result<SynproxyTable> {
        let table = if self.earlier.as_ref().is_some_and(|e| e.nft_table) {
            SynproxyTable::replace(ports, config)
        } else {
            SynproxyTable::install(ports, config)
        };
        table.context("installing the nftables table")
    }

    /// A sysctl guard that restores the values from before the earliest synguard.
    pub fn sysctls(&self) -> SysctlGuard {
        SysctlGuard::adopt(
            self.earlier
                .as_ref()
                .map(|e| e.sysctls.clone())
                .unwrap_or_default(),
        )
    }

    /// Writes every interface's state file: the table and the sysctls to undo later.
    pub fn record(&mut self, sysctls: &SysctlGuard) -> anyhow::Result<()> {
        self.recorded = true;
        self.state.nft_table = true;
        self.state.sysctls = sysctls.saved().to_vec();
        for iface in &self.ifaces {
            self.state.write(iface)?;
        }
        Ok(())
    }

    /// Ends the run. `keep` (with pins) leaves the program, pins, table, sysctls and state
    /// files for the next start or `synguard detach`; otherwise everything is removed.
    pub fn finish(
        self,
        keep: bool,
        attachments: Attachments,
        table: SynproxyTable,
        mut sysctls: SysctlGuard,
    ) -> anyhow::Result<()> {
        // [`Self::begin`] refused `keep` without pins.
        if keep && self.pins.is_some() {
            attachments.finish(true)?;
            table.keep();
            sysctls.keep();
            info!(
                "protection left in place (--on-exit keep); `synguard detach --iface IF` removes it"
            );
            return Ok(());
        }
        let pins_result = attachments.finish(false).context("removing the pins");
        let table_result = table.remove().context("deleting the nftables table");
        let sysctl_result = sysctls.restore().context("restoring sysctls");
        for iface in &self.ifaces {
            AttachState::remove(iface)?;
        }
        pins_result?;
        table_result?;
        sysctl_result?;
        Ok(())
    }
}

impl Drop for Lifecycle {
    /// A start-up that failed before [`Lifecycle::record`] removes the pins it made (the
    /// directories and the maps aya pinned at load). Pins of an earlier synguard, or of
    /// another version (refused by [`Self::map_pins`]), stay: a program may still run on them.
    fn drop(&mut self) {
        if self.recorded || !self.made_pins || self.earlier.is_some() {
            return;
        }
        let Some(pins) = &self.pins else { return };
        for iface in &self.ifaces {
            if let Err(e) = pins.remove(iface) {
                warn!("removing the pins of {iface} after a failed start: {e}");
            }
        }
    }
}
