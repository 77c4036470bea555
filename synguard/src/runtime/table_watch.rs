//! synguard's nftables table kept in place while the host's firewall changes under it (`nft
//! flush ruleset`, `systemctl restart nftables`, a firewalld reload): until it is back, cookie
//! ACKs meet no synproxy and handshakes fail. nftables change events ([`NftEvents`]) trigger
//! the check as soon as the transaction that touched the table is committed; a table deleted
//! or changed is put back with the settings in force, logged and counted
//! (`synguard_nft_table_restores_total`).
//!
//! A slow poll ([`SAFETY_NET`]) checks too. The events miss nothing the kernel commits (a
//! full receive queue says so and triggers a check), so the poll is for what they cannot
//! cover: a socket that could not be opened or broke, and a restore that failed (nft busy or
//! killed), which no further event would retry.

use std::future::pending;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at};
use tracing::{debug, warn};

use crate::kernel::nft::events::NftEvents;
use crate::kernel::nft::table::{Found, SynproxyTable};
use crate::settings::merge::Settings;

/// How often the table is checked without an event.
pub const SAFETY_NET: Duration = Duration::from_secs(10);

/// Why the table is checked.
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    /// A committed change touched it; the first of its events arrived then.
    Event(std::time::Instant),
    /// The [`SAFETY_NET`] poll.
    Poll,
}

/// The events, the poll and the count of restores.
pub struct TableWatch {
    events: Option<NftEvents>,
    poll: Interval,
    restores: Arc<AtomicU64>,
}

impl TableWatch {
    /// Subscribes to the nftables events of this network namespace; without them (logged) the
    /// poll alone checks.
    pub fn subscribe() -> Self {
        let events = NftEvents::open()
            .map_err(|e| {
                warn!(
                    "no nftables change events ({e}): the table inet synguard is checked every {SAFETY_NET:?} only"
                );
            })
            .ok();
        let mut poll = interval_at(Instant::now() + SAFETY_NET, SAFETY_NET);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            events,
            poll,
            restores: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The number of restores so far, shared (the metrics read it).
    pub fn restores(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.restores)
    }

    /// Waits for the next reason to check the table. Cancel-safe.
    pub async fn next(&mut self) -> Trigger {
        loop {
            tokio::select! {
                changed = changed(self.events.as_mut()) => match changed {
                    Ok(at) => return Trigger::Event(at),
                    Err(e) => {
                        warn!(
                            "nftables change events: {e}: the table inet synguard is checked every {SAFETY_NET:?} only from now on"
                        );
                        self.events = None;
                    }
                },
                _ = self.poll.tick() => return Trigger::Poll,
            }
        }
    }

    /// Restores the table if it was deleted or changed; failures are logged (the poll retries).
    pub fn check(&self, trigger: Trigger, table: &mut SynproxyTable, settings: &Settings) {
        match table.restore_if_changed(&settings.ports, &settings.datapath) {
            Ok(Found::Intact) => debug!("nftables table inet synguard intact ({trigger:?})"),
            Ok(found) => {
                self.restores.fetch_add(1, Ordering::Relaxed);
                let when = match trigger {
                    Trigger::Event(at) => format!("{:.0?} after the change", at.elapsed()),
                    Trigger::Poll => format!("found by the {SAFETY_NET:?} check"),
                };
                warn!(
                    "nftables table inet synguard was {found} from outside synguard: restored it {when} (synproxy on ports {})",
                    settings.ports
                );
            }
            Err(e) => warn!("checking the nftables table inet synguard: {e}"),
        }
    }
}

async fn changed(events: Option<&mut NftEvents>) -> io::Result<std::time::Instant> {
    match events {
        Some(events) => events.changed().await,
        None => pending().await,
    }
}
