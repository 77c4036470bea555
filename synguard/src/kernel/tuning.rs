//! `--tune-kernel`: the kernel's own SYN-flood knobs, set for the daemon's run through the
//! [`SysctlGuard`] (restored at exit) and logged.
//!
//! `net.ipv4.tcp_syncookies` is set to 1 whatever `--syncookies` says: it is the kernel's
//! "auto" (cookies only once a listener's SYN queue overflows) and it is per namespace, so it
//! also governs the ports synguard does not protect. 0 would make the kernel *drop* SYNs on
//! overflow, which is not what synguard's `off` means (XDP steps aside, the kernel defends as
//! usual); 2 would force cookies, and their option loss, on every unprotected port even
//! without a flood. With 1, `auto` is also covered in the ≤ 100 ms before the controller
//! switches a port to XDP: the kernel's cookie SYN-ACKs then work too (XDP passes their
//! ACKs after checking the cookie with the same kernel secret).

use crate::kernel::sysctl::{self, SysctlError, SysctlGuard};
use crate::settings::values::KernelTuning;
use tracing::info;

const SYNCOOKIES: &str = "net.ipv4.tcp_syncookies";
const MAX_SYN_BACKLOG: &str = "net.ipv4.tcp_max_syn_backlog";
const SYNACK_RETRIES: &str = "net.ipv4.tcp_synack_retries";
const ABORT_ON_OVERFLOW: &str = "net.ipv4.tcp_abort_on_overflow";

/// Applies `tuning` (at start and on reload) and logs the values in force.
pub fn tune_kernel(guard: &mut SysctlGuard, tuning: &KernelTuning) -> Result<(), SysctlError> {
    guard.set(SYNCOOKIES, "1")?;
    guard.set(MAX_SYN_BACKLOG, &tuning.max_syn_backlog.to_string())?;
    if let Some(retries) = tuning.synack_retries {
        guard.set(SYNACK_RETRIES, &retries.to_string())?;
    }
    if let Some(abort) = tuning.abort_on_overflow {
        guard.set(ABORT_ON_OVERFLOW, if abort { "1" } else { "0" })?;
    }
    let in_force = [
        SYNCOOKIES,
        MAX_SYN_BACKLOG,
        SYNACK_RETRIES,
        ABORT_ON_OVERFLOW,
    ]
    .map(|name| {
        let value = sysctl::read(name).unwrap_or_else(|e| format!("? ({e})"));
        format!("{}={value}", name.trim_start_matches("net.ipv4."))
    });
    info!("kernel SYN settings in force: {}", in_force.join(" "));
    Ok(())
}
