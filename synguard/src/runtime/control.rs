//! The running daemon's controls: the auto-mode controller's ticks and SIGHUP reloads.

use tracing::{error, info, warn};

use crate::runtime::auto::AutoController;
use crate::settings::cli::Cli;
use synguard_common::SyncookieMode;

use crate::datapath::maps::{DatapathMaps, DatapathState};
use crate::kernel::nft::table::SynproxyTable;
use crate::kernel::sysctl::SysctlGuard;
use crate::kernel::tuning::tune_kernel;
use crate::settings::merge::Settings;

/// The settings in force and what acts on them while the daemon runs.
pub struct Control {
    cli: Cli,
    settings: Settings,
    /// Policy trie capacities chosen at load (IPv4, IPv6).
    policy_capacity: (u32, u32),
    auto: Option<AutoController>,
}

impl Control {
    /// `settings` were loaded from `cli` and written into the datapath at load.
    pub fn new(cli: Cli, settings: Settings) -> Self {
        let state = DatapathState::of(&settings);
        let auto = (settings.syncookies == SyncookieMode::Auto)
            .then(|| AutoController::new(settings.max_syn_backlog, settings.cooldown));
        Self {
            cli,
            policy_capacity: (state.policy_capacity(false), state.policy_capacity(true)),
            settings,
            auto,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether the auto controller runs (mode auto).
    pub fn auto_active(&self) -> bool {
        self.auto.is_some()
    }

    /// The ports the auto controller answers with cookies now (none outside mode auto).
    pub fn auto_cookie_ports(&self) -> Vec<u16> {
        self.auto
            .as_ref()
            .map(AutoController::cookie_ports)
            .unwrap_or_default()
    }

    /// One auto-mode step; errors are logged (the next tick tries again).
    pub fn tick(&mut self, maps: &mut DatapathMaps) {
        if let Some(auto) = &mut self.auto
            && let Err(e) = auto.tick(&self.settings.ports, maps)
        {
            warn!("auto: {e}");
        }
    }

    /// SIGHUP: re-reads the config file, applies the flags again and updates the maps, the
    /// nftables table and the kernel settings in place. A bad config is logged and the old
    /// one stays in force.
    pub fn reload(
        &mut self,
        maps: &mut DatapathMaps,
        table: &mut SynproxyTable,
        sysctls: &mut SysctlGuard,
    ) {
        info!("SIGHUP: reloading the configuration");
        match self.try_reload(maps, table, sysctls) {
            Ok(()) => info!(
                "reload done: protecting TCP ports {}, syncookies {}, max_syn_backlog {}, mss4 {}, mss6 {}, {} policy entries",
                self.settings.ports,
                self.settings.syncookies,
                self.settings.max_syn_backlog,
                self.settings.datapath.mss4,
                self.settings.datapath.mss6,
                self.settings.policy.count(false) + self.settings.policy.count(true),
            ),
            Err(e) => error!("reload failed, keeping the previous configuration: {e:#}"),
        }
    }

    fn try_reload(
        &mut self,
        maps: &mut DatapathMaps,
        table: &mut SynproxyTable,
        sysctls: &mut SysctlGuard,
    ) -> anyhow::Result<()> {
        let mut new = Settings::load(&self.cli)?;
        let old = &self.settings;
        for (key, changed) in [
            ("iface", new.ifaces != old.ifaces),
            ("xdp_mode", new.xdp_mode != old.xdp_mode),
            ("stats_interval", new.stats_interval != old.stats_interval),
            ("metrics_addr", new.metrics_addr != old.metrics_addr),
            ("on_exit", new.on_exit != old.on_exit),
            ("log_format", new.log_format != old.log_format),
        ] {
            if changed {
                warn!("reload: a change of `{key}` needs a restart; keeping the current value");
            }
        }
        new.ifaces.clone_from(&old.ifaces);
        new.xdp_mode = old.xdp_mode;
        new.stats_interval = old.stats_interval;
        new.metrics_addr = old.metrics_addr;
        new.on_exit = old.on_exit;
        new.log_format = old.log_format;
        for (v6, capacity) in [
            (false, self.policy_capacity.0),
            (true, self.policy_capacity.1),
        ] {
            let wanted = new.policy.count(v6);
            anyhow::ensure!(
                wanted <= capacity as usize,
                "{wanted} IPv{} policy entries do not fit the {capacity} the trie was sized for at start: restart to grow it",
                if v6 { 6 } else { 4 }
            );
        }
        if old.kernel.is_some() && new.kernel.is_none() {
            warn!("reload: tune_kernel was turned off: the kernel settings are restored at exit");
        }
        if let Some(tuning) = &new.kernel {
            tune_kernel(sysctls, tuning)?;
        }

        let (d_old, d_new) = (&old.datapath, &new.datapath);
        if new.ports != old.ports
            || (d_new.mss4, d_new.mss6, d_new.wscale) != (d_old.mss4, d_old.mss6, d_old.wscale)
        {
            // Before the maps: a port XDP starts answering must already be synproxied.
            table.update(&new.ports, &new.datapath)?;
        }
        match (&mut self.auto, new.syncookies) {
            (Some(auto), SyncookieMode::Auto) => {
                auto.reconfigure(new.max_syn_backlog, new.cooldown, &new.ports);
            }
            (None, SyncookieMode::Auto) => {
                self.auto = Some(AutoController::new(new.max_syn_backlog, new.cooldown));
            }
            (_, SyncookieMode::Off | SyncookieMode::Always) => self.auto = None,
        }
        maps.apply(&DatapathState::of(&new), &self.auto_cookie_ports())?;
        self.settings = new;
        Ok(())
    }
}
