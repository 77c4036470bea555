//! systemd `Type=notify` messages (`sd_notify`). Without `NOTIFY_SOCKET` (not started by
//! systemd) every call does nothing; a failure to send is logged, never fatal.

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify: {e}");
    }
}

/// Start-up is complete: XDP attached, table installed. `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new `systemctl status` line (mode and counters).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A reload (SIGHUP) begins; call [`ready`] when it is done, failed or not. systemd ≥ 253
/// requires the MONOTONIC_USEC of the start of the reload with RELOADING=1.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => debug!("sd_notify: reading CLOCK_MONOTONIC: {e}"),
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
