//! `--syncookies auto`: decides, every [`TICK`], which protected ports XDP answers with
//! cookies (`SG_COOKIE_PORTS`).
//!
//! The rule, per port:
//! - **Kernel answering** (bit clear): the half-open estimate is the growth over the last
//!   [`WINDOW`] of `syns_to_kernel - handshakes_completed` (`SG_PORT_LOAD`, summed over CPUs):
//!   SYNs the kernel got that did not become connections. The kernel's own view cross-checks
//!   it: its SYN_RECV request sockets on the port (sock_diag), and its listen-queue drop
//!   counters (`ListenOverflows`, `ListenDrops`, `TCPReqQFullDoCookies`: namespace-wide, so
//!   they count for the ports whose kernel backlog grew in the same tick). The port switches
//!   to cookies when the estimate or the SYN_RECV count exceeds `max_syn_backlog`, or when the
//!   drop counters rise while its backlog grows.
//! - **Cookies on** (bit set): the port's SYNs no longer reach the kernel, so its kernel
//!   estimate says nothing about the offered load. The offered half-open load is then the
//!   growth over the window of the port's `cookies_sent - cookies_validated` (`SG_PORT_LOAD`):
//!   cookie SYN-ACKs that no handshake followed. The port returns to the kernel once that load
//!   and its kernel estimate stayed at or below the threshold for `cooldown`. The SYN_RECV count is a
//!   trigger only: request sockets made before the switch linger until their SYN-ACK
//!   retransmits give up (`tcp_synack_retries`, 63 s by default, for spoofed sources) and say
//!   nothing about the load offered now (measured: ~2,000 of them stayed after a flood).
//!
//! - **Restart**: `SG_COOKIE_PORTS` is pinned with the state maps, so a new synguard adopts the
//!   bits of the one before it. The first tick takes them over: a port left answered with
//!   cookies (mid-flood) stays so, and the cooldown rule above runs from then on, so the
//!   flood never reaches the kernel during or after the restart.
//!
//! In-flight handshakes survive a switch either way: the datapath passes ACKs that meet a
//! kernel request socket, and validates cookie ACKs whatever the port's bit says.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use netlink_packet_sock_diag::inet::StateFlags;
use tracing::{info, warn};

use crate::datapath::error::LoaderError;
use crate::datapath::maps::{DatapathMaps, PortBacklog};
use crate::kernel::kernel_view::{self, SockDiag};
use crate::settings::ports::PortSet;

/// How often the controller looks.
pub const TICK: Duration = Duration::from_millis(100);
/// The sliding window of the estimates.
pub const WINDOW: Duration = Duration::from_secs(1);
const SAMPLES: usize = (WINDOW.as_millis() / TICK.as_millis()) as usize + 1;

/// Samples of a growing counter over the last [`WINDOW`].
#[derive(Debug, Default)]
struct Window(VecDeque<u64>);

impl Window {
    /// Adds a sample; returns the growth over the window and over the last tick, zero where
    /// the value went down. The samples are running differences (SYNs minus completed
    /// handshakes) that shrink when handshakes of earlier SYNs complete; read as unsigned, a
    /// small drop would look like a huge growth and switch a port to cookies for nothing.
    fn push(&mut self, value: u64) -> (u64, u64) {
        let last = self.0.back().copied().unwrap_or(value);
        if self.0.len() == SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(value);
        let first = self.0.front().copied().unwrap_or(value);
        (growth(first, value), growth(last, value))
    }
}

/// `to - from` for wrapping counters, or 0 if the value went down.
fn growth(from: u64, to: u64) -> u64 {
    u64::try_from(to.wrapping_sub(from) as i64).unwrap_or(0)
}

#[derive(Debug, Default)]
struct PortState {
    kernel: Window,
    absorbed: Window,
    cookies: bool,
    /// Since when the load is at or below the threshold (cookies on).
    calm_since: Option<Instant>,
}

/// The auto-mode controller; call [`Self::tick`] every [`TICK`].
pub struct AutoController {
    threshold: u64,
    cooldown: Duration,
    ports: BTreeMap<u16, PortState>,
    pressure: Window,
    sock_diag: Option<SockDiag>,
    /// Whether the cookie bits the maps held at the first tick were taken over.
    adopted: bool,
}

impl AutoController {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        let sock_diag = SockDiag::open()
            .map_err(|e| {
                warn!(
                    "auto: no sock_diag socket ({e}); deciding without the kernel's SYN_RECV counts"
                )
            })
            .ok();
        Self {
            threshold: u64::from(threshold),
            cooldown,
            ports: BTreeMap::new(),
            pressure: Window::default(),
            sock_diag,
            adopted: false,
        }
    }

    /// New threshold and cooldown (reload); ports no longer protected are forgotten.
    pub fn reconfigure(&mut self, threshold: u32, cooldown: Duration, ports: &PortSet) {
        self.threshold = u64::from(threshold);
        self.cooldown = cooldown;
        self.ports.retain(|port, _| ports.contains(*port));
    }

    /// Ports currently answered with cookies.
    pub fn cookie_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .filter(|(_, s)| s.cookies)
            .map(|(port, _)| *port)
            .collect()
    }

    /// Takes over the cookie bits the maps hold (once, at the first tick): after a restart,
    /// those an earlier synguard left in the pinned `SG_COOKIE_PORTS`.
    fn adopt(&mut self, protected: &PortSet, maps: &DatapathMaps) {
        self.adopted = true;
        for port in maps.cookie_ports(protected) {
            let state = self.ports.entry(port).or_default();
            if !state.cookies {
                state.cookies = true;
                state.calm_since = None;
                info!(
                    "auto: port {port}: starts with SYNs answered by XDP with cookies, as the previous synguard left it (pinned cookie ports); back to the kernel once the load stays at or below max_syn_backlog {} for {:?}",
                    self.threshold, self.cooldown
                );
            }
        }
    }

    pub fn tick(
        &mut self,
        protected: &PortSet,
        maps: &mut DatapathMaps,
    ) -> Result<(), LoaderError> {
        if !self.adopted {
            self.adopt(protected, maps);
        }
        let now = Instant::now();
        let mut backlogs: BTreeMap<u16, Option<PortBacklog>> = maps
            .port_backlogs()?
            .into_iter()
            .map(|(port, backlog)| (port, Some(backlog)))
            .collect();
        // A port answered with cookies but without load entry (no SYN since the restart)
        // still cools down.
        for (&port, _) in self.ports.iter().filter(|(_, s)| s.cookies) {
            backlogs.entry(port).or_insert(None);
        }
        let syn_recv = match &mut self.sock_diag {
            Some(diag) => diag.per_port(StateFlags::SYN_RECV).unwrap_or_else(|e| {
                warn!("auto: sock_diag dump failed: {e}");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        let (_, pressure_rise) = self
            .pressure
            .push(kernel_view::listen_pressure().unwrap_or_default());
        for (&port, backlog) in backlogs.iter().filter(|(p, _)| protected.contains(**p)) {
            let state = self.ports.entry(port).or_default();
            let ((estimate, grew), (cookie_halfopen, _)) = match backlog {
                Some(backlog) => (
                    state.kernel.push(backlog.kernel),
                    state.absorbed.push(backlog.cookies),
                ),
                None => ((0, 0), (0, 0)),
            };
            let queued = syn_recv.get(&port).map_or(0, |s| s.syn_recv);
            if !state.cookies {
                let pressure = pressure_rise > 0 && grew > 0;
                if estimate > self.threshold || queued > self.threshold || pressure {
                    maps.set_cookies(port, true)?;
                    state.cookies = true;
                    state.calm_since = None;
                    info!(
                        "auto: port {port}: SYNs now answered by XDP with cookies (kernel half-open estimate {estimate} over {WINDOW:?}, kernel SYN_RECV {queued}, listen drops/overflows +{pressure_rise}; max_syn_backlog {})",
                        self.threshold
                    );
                }
                continue;
            }
            let load = estimate.max(cookie_halfopen);
            if load > self.threshold {
                state.calm_since = None;
                continue;
            }
            let calm_since = *state.calm_since.get_or_insert(now);
            if now.duration_since(calm_since) >= self.cooldown {
                maps.set_cookies(port, false)?;
                state.cookies = false;
                state.calm_since = None;
                info!(
                    "auto: port {port}: SYNs go to the kernel again (for {:?}: cookie SYN-ACKs without handshake {cookie_halfopen} over {WINDOW:?}, kernel half-open estimate {estimate}, kernel SYN_RECV {queued}; max_syn_backlog {})",
                    self.cooldown, self.threshold
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_reports_growth_over_the_last_second() {
        let mut w = Window::default();
        assert_eq!(w.push(100), (0, 0));
        for i in 1..=SAMPLES as u64 - 1 {
            assert_eq!(w.push(100 + 10 * i), (10 * i, 10));
        }
        // The oldest sample (100) drops out.
        assert_eq!(
            w.push(100 + 10 * SAMPLES as u64),
            (10 * (SAMPLES as u64 - 1), 10)
        );
        // Wrapping counters still give the growth.
        let mut w = Window::default();
        w.push(u64::MAX - 1);
        assert_eq!(w.push(3), (5, 5));
        // A running difference that shrinks is no growth.
        let mut w = Window::default();
        w.push(50);
        assert_eq!(w.push(40), (0, 0));
    }
}
