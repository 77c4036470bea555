//! Source CIDR policy: the allow and deny prefixes, and the files that list them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use synguard_common::{POLICY_V4, POLICY_V6, Policy};

use crate::private;
use crate::settings::error::{ConfigError, error};

/// Source CIDR policy: one entry per prefix (host bits cleared), longest prefix wins in the
/// datapath's tries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyList {
    entries: BTreeMap<IpNet, Policy>,
}

impl PolicyList {
    pub fn entries(&self) -> impl Iterator<Item = (IpNet, Policy)> + '_ {
        self.entries.iter().map(|(net, policy)| (*net, *policy))
    }

    /// Entries of one family: `v6` false for IPv4.
    pub fn count(&self, v6: bool) -> usize {
        self.entries
            .keys()
            .filter(|net| matches!(net, IpNet::V6(_)) == v6)
            .count()
    }

    /// The `DatapathConfig::policy` bits: which tries have entries.
    pub fn bits(&self) -> u8 {
        let mut bits = 0;
        if self.count(false) > 0 {
            bits |= POLICY_V4;
        }
        if self.count(true) > 0 {
            bits |= POLICY_V6;
        }
        bits
    }

    pub(super) fn add(
        &mut self,
        net: IpNet,
        policy: Policy,
        origin: &str,
        origins: &mut BTreeMap<IpNet, String>,
    ) -> Result<(), ConfigError> {
        match self.entries.insert(net, policy) {
            Some(old) if old != policy => Err(error(format!(
                "{net} is both allowed and denied ({} and {origin}); use a more specific prefix for the exception",
                origins[&net]
            ))),
            _ => {
                origins.entry(net).or_insert_with(|| origin.to_owned());
                Ok(())
            }
        }
    }
}

/// `a.b.c.d/n`, `x::/n` or a bare address (a /32 or /128); host bits are cleared.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => text
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("`{text}` is not a CIDR prefix or an IP address"))?,
    };
    Ok(net.trunc())
}

/// One CIDR per line; `#` starts a comment; blank lines are skipped.
pub(super) fn read_cidr_file(path: &Path, key: &str) -> Result<Vec<(IpNet, String)>, ConfigError> {
    let text = private::read_trusted(path).map_err(|e| error(format!("{key} {e}")))?;
    let mut nets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let origin = format!("{}:{}", path.display(), i + 1);
        let net = parse_cidr(content).map_err(|e| error(format!("{key} {origin}: {e}")))?;
        nets.push((net, origin));
    }
    Ok(nets)
}
