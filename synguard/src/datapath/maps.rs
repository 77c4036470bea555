//! What the daemon writes into the datapath's maps, at start and on reload: the tunables
//! (`SG_CONFIG`), the protected ports (`SG_PORTS`), the ports answered with cookies
//! (`SG_COOKIE_PORTS`) and the policy tries (`SG_POLICY4/6`). Updates are diffs applied in
//! place, so the attached program never sees an empty map.

use std::collections::BTreeMap;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, IterableMap as _, MapData, PerCpuHashMap};
use ipnet::IpNet;
use synguard_common::{
    DatapathConfig, MAP_CONFIG, MAP_COOKIE_PORTS, MAP_POLICY4, MAP_POLICY6, MAP_PORT_LOAD,
    MAP_PORTS, POLICY_DEFAULT_ENTRIES, PORT_BITMAP_WORDS, PortLoad, SyncookieMode,
};

use crate::datapath::error::{LoaderError, check_len, map_error, typed_map};
use crate::datapath::snapshot::sum_port_load;
use crate::settings::merge::Settings;
use crate::settings::policy::PolicyList;
use crate::settings::ports::PortSet;

/// Running totals of one port's half-open connections, as the datapath counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortBacklog {
    /// SYNs passed to the kernel minus kernel handshakes completed.
    pub kernel: u64,
    /// Cookie SYN-ACKs sent minus cookie handshakes completed.
    pub cookies: u64,
}

/// The part of the settings that lives in maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathState {
    pub config: DatapathConfig,
    pub ports: PortSet,
    pub syncookies: SyncookieMode,
    pub policy: PolicyList,
}

impl DatapathState {
    /// `ports` with `config` (its `syncookies` mode) and no policy.
    pub fn new(config: DatapathConfig, ports: PortSet) -> Self {
        Self {
            syncookies: config.syncookie_mode(),
            config,
            ports,
            policy: PolicyList::default(),
        }
    }

    pub fn of(settings: &Settings) -> Self {
        Self {
            config: settings.datapath,
            ports: settings.ports.clone(),
            syncookies: settings.syncookies,
            policy: settings.policy.clone(),
        }
    }

    /// Capacity to create each policy trie with: room for the lists to double on reload.
    pub fn policy_capacity(&self, v6: bool) -> u32 {
        let needed = u32::try_from(self.policy.count(v6)).unwrap_or(u32::MAX);
        needed.saturating_mul(2).max(POLICY_DEFAULT_ENTRIES)
    }
}

/// The maps the daemon writes, taken out of the loaded object.
pub struct DatapathMaps {
    config: Array<MapData, DatapathConfig>,
    /// This program's seed of the sketch and peer-filter hashes, written with every config.
    hash_seed: u64,
    ports: Bitmap,
    cookie_ports: Bitmap,
    port_load: PerCpuHashMap<MapData, u16, PortLoad>,
    policy4: LpmTrie<MapData, [u8; 4], u8>,
    policy6: LpmTrie<MapData, [u8; 16], u8>,
}

impl DatapathMaps {
    /// Every map with its name (see `Datapath::map_views`).
    pub(super) fn named(&self) -> [(&'static str, &MapData); 6] {
        [
            (MAP_CONFIG, self.config.map()),
            (self.ports.name, self.ports.map.map()),
            (self.cookie_ports.name, self.cookie_ports.map.map()),
            (MAP_PORT_LOAD, self.port_load.map()),
            (MAP_POLICY4, self.policy4.map()),
            (MAP_POLICY6, self.policy6.map()),
        ]
    }

    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, LoaderError> {
        let config: Array<MapData, DatapathConfig> =
            typed_map(ebpf.take_map(MAP_CONFIG), MAP_CONFIG)?;
        check_len(MAP_CONFIG, config.len(), 1)?;
        Ok(Self {
            config,
            hash_seed: random_seed(),
            ports: Bitmap::take(ebpf, MAP_PORTS)?,
            cookie_ports: Bitmap::take(ebpf, MAP_COOKIE_PORTS)?,
            port_load: typed_map(ebpf.take_map(MAP_PORT_LOAD), MAP_PORT_LOAD)?,
            policy4: typed_map(ebpf.take_map(MAP_POLICY4), MAP_POLICY4)?,
            policy6: typed_map(ebpf.take_map(MAP_POLICY6), MAP_POLICY6)?,
        })
    }

    /// Writes `state`. `auto_cookies`: the ports the auto controller answers with cookies
    /// (used in mode auto only). Order: policy, tunables, cookie bits, then the protected
    /// ports, so a newly protected port is never answered by the wrong side in between.
    pub fn apply(
        &mut self,
        state: &DatapathState,
        auto_cookies: &[u16],
    ) -> Result<(), LoaderError> {
        self.sync_policy(&state.policy)?;
        let config = DatapathConfig {
            hash_seed: self.hash_seed,
            ..state.config
        };
        self.config
            .set(0, config, 0)
            .map_err(|e| map_error(MAP_CONFIG, e))?;
        let cookies: Vec<u16> = match state.syncookies {
            SyncookieMode::Off => Vec::new(),
            SyncookieMode::Always => state.ports.ports().collect(),
            SyncookieMode::Auto => auto_cookies.to_vec(),
        };
        self.cookie_ports.write(&cookies)?;
        self.ports.write(&state.ports.ports().collect::<Vec<_>>())
    }

    /// The seed the program hashes sources and tuples with.
    pub const fn hash_seed(&self) -> u64 {
        self.hash_seed
    }

    /// Sets or clears one port's cookie bit (the auto controller).
    pub fn set_cookies(&mut self, port: u16, on: bool) -> Result<(), LoaderError> {
        self.cookie_ports.set(port, on)
    }

    /// The ports of `protected` whose cookie bit is set. Right after the load these are the
    /// bits of an adopted (pinned) `SG_COOKIE_PORTS`: where an earlier run left its ports.
    pub fn cookie_ports(&self, protected: &PortSet) -> Vec<u16> {
        protected
            .ports()
            .filter(|&port| self.cookie_ports.get(port))
            .collect()
    }

    /// Per port with an entry, summed over CPUs (wrapping: only differences between two reads
    /// mean something).
    pub fn port_backlogs(&self) -> Result<BTreeMap<u16, PortBacklog>, LoaderError> {
        let mut loads = BTreeMap::new();
        for entry in self.port_load.iter() {
            let (port, per_cpu) = entry.map_err(|e| map_error(MAP_PORT_LOAD, e))?;
            let load = sum_port_load(per_cpu.iter());
            let backlog = PortBacklog {
                kernel: load.syns_to_kernel.wrapping_sub(load.handshakes_completed),
                cookies: load.cookies_sent.wrapping_sub(load.cookies_validated),
            };
            loads.insert(port, backlog);
        }
        Ok(loads)
    }

    /// Makes the tries hold exactly `policy`: new and changed entries first, then removals.
    fn sync_policy(&mut self, policy: &PolicyList) -> Result<(), LoaderError> {
        let mut v4 = BTreeMap::new();
        let mut v6 = BTreeMap::new();
        for (net, value) in policy.entries() {
            match net {
                IpNet::V4(n) => v4.insert(
                    (u32::from(n.prefix_len()), n.network().octets()),
                    value as u8,
                ),
                IpNet::V6(n) => v6.insert(
                    (u32::from(n.prefix_len()), n.network().octets()),
                    value as u8,
                ),
            };
        }
        sync_trie(&mut self.policy4, MAP_POLICY4, &v4)?;
        sync_trie(&mut self.policy6, MAP_POLICY6, &v6)
    }
}

/// A seed an attacker cannot guess: with it they cannot aim spoofed sources at the cells or
/// peer-filter slots of real clients. The standard library's hasher keys come from the OS.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    std::hash::RandomState::new().build_hasher().finish()
}

fn sync_trie<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], u8>,
    name: &'static str,
    wanted: &BTreeMap<(u32, [u8; N]), u8>,
) -> Result<(), LoaderError>
where
    [u8; N]: aya::Pod,
{
    let mut current = BTreeMap::new();
    for entry in trie.iter() {
        let (key, value) = entry.map_err(|e| map_error(name, e))?;
        current.insert((key.prefix_len(), key.data()), value);
    }
    for (&(len, data), &value) in wanted {
        if current.get(&(len, data)) != Some(&value) {
            trie.insert(&Key::new(len, data), value, 0)
                .map_err(|e| map_error(name, e))?;
        }
    }
    for &(len, data) in current.keys().filter(|k| !wanted.contains_key(k)) {
        trie.remove(&Key::new(len, data))
            .map_err(|e| map_error(name, e))?;
    }
    Ok(())
}

/// A port bitmap map (`SG_PORTS` layout) with a copy of what it holds.
struct Bitmap {
    name: &'static str,
    map: Array<MapData, u64>,
    words: Vec<u64>,
}

impl Bitmap {
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, LoaderError> {
        let map: Array<MapData, u64> = typed_map(ebpf.take_map(name), name)?;
        check_len(name, map.len(), PORT_BITMAP_WORDS)?;
        let words = (0..PORT_BITMAP_WORDS)
            .map(|i| map.get(&i, 0))
            .collect::<Result<_, _>>()
            .map_err(|e| map_error(name, e))?;
        Ok(Self { name, map, words })
    }

    /// Makes the map hold exactly `ports`, writing only the words that change.
    fn write(&mut self, ports: &[u16]) -> Result<(), LoaderError> {
        let wanted = port_bitmap(ports);
        for (i, (&new, old)) in wanted.iter().zip(self.words.iter_mut()).enumerate() {
            if new != *old {
                self.map
                    .set(i as u32, new, 0)
                    .map_err(|e| map_error(self.name, e))?;
                *old = new;
            }
        }
        Ok(())
    }

    fn get(&self, port: u16) -> bool {
        self.words[usize::from(port / 64)] & (1u64 << (port % 64)) != 0
    }

    fn set(&mut self, port: u16, on: bool) -> Result<(), LoaderError> {
        let i = usize::from(port / 64);
        let bit = 1u64 << (port % 64);
        let new = if on {
            self.words[i] | bit
        } else {
            self.words[i] & !bit
        };
        if new != self.words[i] {
            self.map
                .set(i as u32, new, 0)
                .map_err(|e| map_error(self.name, e))?;
            self.words[i] = new;
        }
        Ok(())
    }
}

/// The `SG_PORTS` layout: bit `p % 64` of word `p / 64` is set for each port `p`.
fn port_bitmap(ports: &[u16]) -> Vec<u64> {
    let mut words = vec![0u64; PORT_BITMAP_WORDS as usize];
    for &port in ports {
        words[usize::from(port / 64)] |= 1 << (port % 64);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_sets_one_bit_per_port() {
        let set = PortSet::new(&[80..=80, 443..=443, 65535..=65535, 128..=191]);
        let words = port_bitmap(&set.ports().collect::<Vec<_>>());
        assert_eq!(words.len(), 1024);
        assert_eq!(words[1], 1 << 16);
        assert_eq!(words[2], u64::MAX);
        assert_eq!(words[6], 1 << 59);
        assert_eq!(words[1023], 1 << 63);
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 67);
    }
}
