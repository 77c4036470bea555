//! The capabilities synguard needs, and which of them this process lacks, so that a refusal
//! by the kernel (EPERM, or a verifier rejection) names what to grant.

/// What the daemon needs (the systemd unit grants exactly these): `CAP_BPF` for maps, programs
/// and links, `CAP_NET_ADMIN` for an XDP program, nftables and network sysctls, `CAP_PERFMON`
/// for the program's stack reads at variable offsets (the verifier allows them only then).
pub const NEEDED: [(&str, u32); 3] = [("CAP_BPF", 39), ("CAP_NET_ADMIN", 12), ("CAP_PERFMON", 38)];
/// `CAP_SYS_ADMIN` still grants what `CAP_BPF` and `CAP_PERFMON` split off from it, and it
/// alone opens BPF programs and maps by id (`BPF_*_GET_NEXT_ID`, `BPF_*_GET_FD_BY_ID`).
const SYS_ADMIN: u32 = 21;
const COVERED_BY_SYS_ADMIN: [&str; 2] = ["CAP_BPF", "CAP_PERFMON"];

/// The needed capabilities missing from an effective set `effective` (a `CapEff` mask).
fn missing_from(effective: u64) -> Vec<&'static str> {
    let has = |bit: u32| effective & (1 << bit) != 0;
    NEEDED
        .iter()
        .filter(|(name, bit)| {
            let granted = has(*bit) || (has(SYS_ADMIN) && COVERED_BY_SYS_ADMIN.contains(name));
            !granted
        })
        .map(|(name, _)| *name)
        .collect()
}

/// This process's effective capabilities (`CapEff` of `/proc/self/status`), if readable.
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The needed capabilities this process lacks (none when its status cannot be read).
pub fn lacking() -> Vec<&'static str> {
    effective().map(missing_from).unwrap_or_default()
}

/// What to do about a permission error, given the needed capabilities the process lacks
/// ([`lacking`]).
pub fn hint(lacking: &[&str]) -> String {
    let all = "CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON";
    match lacking {
        [] => format!("run as root, or with {all}"),
        missing => format!(
            "this process lacks {}: synguard needs {all} (or root)",
            missing.join(" and ")
        ),
    }
}

/// Why the kernel refused to open a BPF object by id (EPERM): this process lacks
/// `CAP_SYS_ADMIN`, or something else (a user namespace, lockdown) denies it.
pub fn by_id_hint() -> &'static str {
    match effective() {
        Some(caps) if caps & (1 << SYS_ADMIN) == 0 => {
            "this process lacks CAP_SYS_ADMIN, which opening BPF programs and maps by id needs: run it as root"
        }
        _ => {
            "the kernel refused it although this process has CAP_SYS_ADMIN (a user namespace? kernel lockdown?)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named() {
        let all = (1 << 39) | (1 << 12) | (1 << 38);
        assert!(missing_from(all).is_empty());
        assert_eq!(missing_from(all & !(1 << 38)), ["CAP_PERFMON"]);
        assert_eq!(missing_from(1 << 12), ["CAP_BPF", "CAP_PERFMON"]);
        assert!(missing_from(u64::MAX).is_empty());
        assert_eq!(missing_from(1 << SYS_ADMIN), ["CAP_NET_ADMIN"]);
    }
}
