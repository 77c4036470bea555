//! Read-only views of the datapath's maps, the one reading path of every observability output:
//! the daemon's stats log lines and `/metrics`, and `synguard stats` / `synguard top`, which
//! run beside the daemon and read the same maps through its pinned XDP link, or without pins
//! through the program attached to its interface (`attached`).
//!
//! A [`MapReader`] holds its own file descriptors for the maps of one loaded XDP program
//! (found by the program's id), so readers never borrow from, or lock against, the daemon's
//! writers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{ProgramError, ProgramInfo, loaded_programs};
use aya::sys::SyscallError;
use nix::time::{ClockId, clock_gettime};
use synguard_common::{
    Counter, DatapathConfig, MAP_CONFIG, MAP_COOKIE_PORTS, MAP_COUNTERS, MAP_POLICY4, MAP_POLICY6,
    MAP_PORT_LOAD, MAP_PORTS, MAP_SOURCES, PORT_BITMAP_WORDS, PerSourceAction, PortLoad, SourceKey,
    SourceState,
};
use thiserror::Error;

use crate::datapath::counters::CounterTotals;
use crate::datapath::pins::PinDir;
use crate::kernel::privileges;
use crate::settings::ports::PortSet;

#[derive(Debug, Error)]
pub enum ReadError {
    #[error(
        "no synguard pins for `{iface}` under {} (is synguard running on it with pins there? without --pin-dir, a daemon without pins is found through its interface)",
        dir.display()
    )]
    NotPinned { iface: String, dir: PathBuf },
    #[error("no synguard pins under {}: give --pin-dir", .0.display())]
    NoPins(PathBuf),
    #[error(
        "several interfaces have synguard pins under {}: {}; choose one with --iface",
        dir.display(),
        ifaces.join(", ")
    )]
    SeveralIfaces { dir: PathBuf, ifaces: Vec<String> },
    #[error("opening the pinned XDP link {}", path.display())]
    Link {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("XDP program {0} is not loaded any more")]
    NoProgram(u32),
    #[error(
        "opening XDP program {program} and its maps by id was refused: {}",
        privileges::by_id_hint()
    )]
    ById { program: u32 },
    #[error("XDP program {id} has no map `{name}`: not a synguard program")]
    MissingMap { id: u32, name: &'static str },
    #[error("map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading the program list")]
    Programs(#[source] aya::programs::ProgramError),
}

fn map_error(name: &'static str) -> impl FnOnce(MapError) -> ReadError {
    move |source| ReadError::Map { name, source }
}

/// The current `bpf_ktime_get_ns()`: CLOCK_MONOTONIC in nanoseconds, the clock of
/// [`SourceState`]'s times.
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64)
    })
}

/// One port's [`PortLoad`] summed over CPUs (wrapping: only differences mean something).
pub fn sum_port_load<'a>(per_cpu: impl IntoIterator<Item = &'a PortLoad>) -> PortLoad {
    per_cpu
        .into_iter()
        .fold(PortLoad::default(), |sum, load| PortLoad {
            syns_to_kernel: sum.syns_to_kernel.wrapping_add(load.syns_to_kernel),
            handshakes_completed: sum
                .handshakes_completed
                .wrapping_add(load.handshakes_completed),
            cookies_sent: sum.cookies_sent.wrapping_add(load.cookies_sent),
            cookies_validated: sum.cookies_validated.wrapping_add(load.cookies_validated),
        })
}

/// One `SG_SOURCES` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// The accounting prefix's address (IPv4 for IPv4-mapped keys).
    pub addr: IpAddr,
    pub state: SourceState,
}

impl Source {
    pub(crate) fn new(key: SourceKey, state: SourceState) -> Self {
        let v6 = Ipv6Addr::from(key.addr);
        let addr = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
        Self { addr, state }
    }

    /// How long it stays over budget from `now_ns` ([`monotonic_ns`]), if it is: blocked, or
    /// under `--per-source-action log` monitored.
    pub fn over_budget_for(&self, now_ns: u64) -> Option<Duration> {
        (self.state.blocked_until_ns > now_ns)
            .then(|| Duration::from_nanos(self.state.blocked_until_ns - now_ns))
    }

    /// How long ago its current accounting window started.
    pub fn window_age(&self, now_ns: u64) -> Duration {
        Duration::from_nanos(now_ns.saturating_sub(self.state.window_start_ns))
    }

    /// `addr/len` with the configured accounting prefix.
    pub fn prefix(&self, config: &DatapathConfig) -> String {
        let len = match self.addr {
            IpAddr::V4(_) => config.source_prefix4,
            IpAddr::V6(_) => config.source_prefix6,
        };
        format!("{}/{len}", self.addr)
    }
}

/// Entries and capacity of a hash map or trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapUse {
    pub name: &'static str,
    pub entries: u64,
    pub capacity: u32,
}

/// Everything the outputs show, read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken: Instant,
    pub counters: CounterTotals,
    /// Ports with an `SG_PORT_LOAD` entry (they saw SYNs), summed over CPUs.
    pub ports: BTreeMap<u16, PortLoad>,
    pub config: DatapathConfig,
    pub protected: PortSet,
    /// Protected ports whose SYNs XDP answers with cookies right now.
    pub cookie_ports: PortSet,
    pub sources_tracked: u64,
    /// Sources over a budget now under action drop (blocked) ...
    pub sources_blocked: u64,
    /// ... and under action log (reported, not blocked).
    pub sources_monitored: u64,
    /// `SG_SOURCES`, `SG_PORT_LOAD`, `SG_POLICY4`, `SG_POLICY6`.
    pub maps: Vec<MapUse>,
}

impl Snapshot {
    /// `cookies` or `kernel`: who answers the port's SYNs now.
    pub fn port_mode(&self, port: u16) -> &'static str {
        if self.cookie_ports.contains(port) {
            "cookies"
        } else {
            "kernel"
        }
    }
}

/// What happened between two snapshots.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a> {
    pub earlier: &'a Snapshot,
    pub later: &'a Snapshot,
}

impl Interval<'_> {
    pub fn seconds(&self) -> f64 {
        self.later
            .taken
            .duration_since(self.earlier.taken)
            .as_secs_f64()
            .max(1e-9)
    }

    /// Per-second rate of a counter.
    pub fn rate(&self, counter: Counter) -> f64 {
        self.later.counters.since(&self.earlier.counters)[counter] as f64 / self.seconds()
    }

    /// Half-open handshakes per second on `port` over the interval: see [`half_open`].
    pub fn half_open(&self, port: u16) -> (f64, f64) {
        half_open(&self.earlier.ports, &self.later.ports, port, self.seconds())
    }
}

/// Half-open handshakes per second on `port` between two readings of the port loads
/// `seconds` apart: (kernel, cookies) = SYNs passed to the kernel minus kernel handshakes
/// completed, and cookie SYN-ACKs minus cookie handshakes (the auto controller's estimates,
/// as rates; never negative).
pub fn half_open(
    earlier: &BTreeMap<u16, PortLoad>,
    later: &BTreeMap<u16, PortLoad>,
    port: u16,
    seconds: f64,
) -> (f64, f64) {
    let now = later.get(&port).copied().unwrap_or_default();
    let then = earlier.get(&port).copied().unwrap_or_default();
    let growth = |sent: fn(&PortLoad) -> u64, done: fn(&PortLoad) -> u64| {
        let sent = sent(&now).wrapping_sub(sent(&then));
        let done = done(&now).wrapping_sub(done(&then));
        sent.saturating_sub(done) as f64 / seconds.max(1e-9)
    };
    (
        growth(|l| l.syns_to_kernel, |l| l.handshakes_completed),
        growth(|l| l.cookies_sent, |l| l.cookies_validated),
    )
}

/// Handles on the maps of one loaded synguard XDP program.
pub struct MapReader {
    counters: PerCpuArray<MapData, u64>,
    port_load: PerCpuHashMap<MapData, u16, PortLoad>,
    sources: HashMap<MapData, SourceKey, SourceState>,
    config: Array<MapData, DatapathConfig>,
    ports: Array<MapData, u64>,
    cookie_ports: Array<MapData, u64>,
    policy4: LpmTrie<MapData, [u8; 4], u8>,
    policy6: LpmTrie<MapData, [u8; 16], u8>,
    /// Capacities of the [`MAP_USE_NAMES`] maps (`SG_SOURCES` first).
    capacities: [u32; 4],
}

/// The maps whose occupancy [`Snapshot::maps`] reports, in that order.
const MAP_USE_NAMES: [&str; 4] = [MAP_SOURCES, MAP_PORT_LOAD, MAP_POLICY4, MAP_POLICY6];

impl MapReader {
    /// The maps of the program behind the XDP link pinned for `iface` under `pins`; `iface`
    /// may be omitted when only one interface has pins. Returns the interface's name too.
    pub fn from_pins(pins: &PinDir, iface: Option<&str>) -> Result<(Self, String), ReadError> {
        let iface = match iface {
            Some(iface) => iface.to_owned(),
            None => only_iface(pins)?,
        };
        let path = pins.link(&iface);
        if !path.exists() {
            return Err(ReadError::NotPinned {
                iface,
                dir: pins.root().to_owned(),
            });
        }
        let link_error = |source: Box<dyn std::error::Error + Send + Sync>| ReadError::Link {
            path: path.clone(),
            source,
        };
        let link = FdLink::from(PinnedLink::from_pin(&path).map_err(|e| link_error(e.into()))?);
        let program = link.info().map_err(|e| link_error(e.into()))?.program_id();
        Ok((Self::of_program(program)?, iface))
    }

    /// The maps of the loaded program with id `program`, looked up by id: needs `CAP_SYS_ADMIN`
    /// (`synguard stats`, `synguard top`).
    pub fn of_program(program: u32) -> Result<Self, ReadError> {
        let info = program_info(program)?;
        let mut found: BTreeMap<String, MapData> = BTreeMap::new();
        for id in info
            .map_ids()
            .map_err(ReadError::Programs)?
            .unwrap_or_default()
        {
            let Ok(data) = MapData::from_id(id) else {
                continue;
            };
            if let Some(name) = data
                .info()
                .ok()
                .and_then(|i| i.name_as_str().map(str::to_owned))
            {
                found.insert(name, data);
            }
        }
        Self::of_maps(program, found)
    }

    /// The maps of the loaded program with id `program`, given by name (the daemon's own
    /// descriptors: `Datapath::map_views`).
    pub fn of_maps(program: u32, mut found: BTreeMap<String, MapData>) -> Result<Self, ReadError> {
        let mut take = |name: &'static str| -> Result<(Map, u32), ReadError> {
            let data = found
                .remove(name)
                .ok_or(ReadError::MissingMap { id: program, name })?;
            let capacity = data.info().map_err(map_error(name))?.max_entries();
            Ok((Map::from_map_data(data).map_err(map_error(name))?, capacity))
        };
        fn typed<T: TryFrom<Map, Error = MapError>>(
            map: Map,
            name: &'static str,
        ) -> Result<T, ReadError> {
            T::try_from(map).map_err(map_error(name))
        }
        let (sources, sources_capacity) = take(MAP_SOURCES)?;
        let (port_load, port_load_capacity) = take(MAP_PORT_LOAD)?;
        let (policy4, policy4_capacity) = take(MAP_POLICY4)?;
        let (policy6, policy6_capacity) = take(MAP_POLICY6)?;
        Ok(Self {
            counters: typed(take(MAP_COUNTERS)?.0, MAP_COUNTERS)?,
            port_load: typed(port_load, MAP_PORT_LOAD)?,
            sources: typed(sources, MAP_SOURCES)?,
            config: typed(take(MAP_CONFIG)?.0, MAP_CONFIG)?,
            ports: typed(take(MAP_PORTS)?.0, MAP_PORTS)?,
            cookie_ports: typed(take(MAP_COOKIE_PORTS)?.0, MAP_COOKIE_PORTS)?,
            policy4: typed(policy4, MAP_POLICY4)?,
            policy6: typed(policy6, MAP_POLICY6)?,
            capacities: [
                sources_capacity,
                port_load_capacity,
                policy4_capacity,
                policy6_capacity,
            ],
        })
    }

    /// Every counter, summed over CPUs.
    pub fn counters(&self) -> Result<CounterTotals, ReadError> {
        CounterTotals::read(&self.counters).map_err(map_error(MAP_COUNTERS))
    }

    /// Per port with an entry, summed over CPUs.
    pub fn port_loads(&self) -> Result<BTreeMap<u16, PortLoad>, ReadError> {
        self.port_load
            .iter()
            .map(|entry| {
                let (port, per_cpu) = entry.map_err(map_error(MAP_PORT_LOAD))?;
                Ok((port, sum_port_load(per_cpu.iter())))
            })
            .collect()
    }

    /// Every tracked source. While a flood from random sources churns the LRU map, a walk
    /// restarts from the first key whenever its current key was evicted and meets sources that
    /// arrived after others it saw left: entries are deduplicated and the walk stops after
    /// twice the capacity, so under churn this is a sample (the counts in [`Snapshot`] are
    /// capped at the capacity), never an endless loop.
    pub fn sources(&self) -> Result<Vec<Source>, ReadError> {
        let limit = 2 * self.capacities[0] as usize;
        let mut seen: BTreeMap<[u8; 16], SourceState> = BTreeMap::new();
        for entry in self.sources.iter().take(limit) {
            let (key, state) = entry.map_err(map_error(MAP_SOURCES))?;
            seen.insert(key.addr, state);
        }
        Ok(seen
            .into_iter()
            .map(|(addr, state)| Source::new(SourceKey { addr }, state))
            .collect())
    }

    pub fn config(&self) -> Result<DatapathConfig, ReadError> {
        self.config.get(&0, 0).map_err(map_error(MAP_CONFIG))
    }

    /// Reads everything at once.
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        // Counters and port loads first, with their time: rates divide by the time between two
        // of these; the sources may take a while (up to 65,536 entries).
        let taken = Instant::now();
        let counters = self.counters()?;
        let ports = self.port_loads()?;
        let now_ns = monotonic_ns();
        let sources = self.sources()?;
        let tracked = (sources.len() as u64).min(u64::from(self.capacities[0]));
        let entries = [
            tracked,
            ports.len() as u64,
            self.policy4.keys().count() as u64,
            self.policy6.keys().count() as u64,
        ];
        let maps = MAP_USE_NAMES
            .into_iter()
            .zip(entries.into_iter().zip(self.capacities))
            .map(|(name, (entries, capacity))| MapUse {
                name,
                entries,
                capacity,
            })
            .collect();
        let config = self.config()?;
        let over_budget = sources
            .iter()
            .filter(|s| s.over_budget_for(now_ns).is_some())
            .count() as u64;
        let (sources_blocked, sources_monitored) = match config.per_source_action() {
            PerSourceAction::Drop => (over_budget, 0),
            PerSourceAction::Log => (0, over_budget),
        };
        Ok(Snapshot {
            taken,
            counters,
            ports,
            config,
            protected: read_bitmap(&self.ports, MAP_PORTS)?,
            cookie_ports: read_bitmap(&self.cookie_ports, MAP_COOKIE_PORTS)?,
            sources_tracked: tracked,
            sources_blocked,
            sources_monitored,
            maps,
        })
    }
}

/// The loaded program with id `program`. Programs are found by id, which needs
/// `CAP_SYS_ADMIN`: a refusal is [`ReadError::ById`], naming it.
pub fn program_info(program: u32) -> Result<ProgramInfo, ReadError> {
    for info in loaded_programs() {
        match info {
            Ok(info) if info.id() == program => return Ok(info),
            Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::EPERM) =>
            {
                return Err(ReadError::ById { program });
            }
            // Another program, or one unloaded during the walk.
            _ => {}
        }
    }
    Err(ReadError::NoProgram(program))
}

/// A port bitmap (`SG_PORTS` layout) as a [`PortSet`].
fn read_bitmap(map: &Array<MapData, u64>, name: &'static str) -> Result<PortSet, ReadError> {
    let mut words = Vec::with_capacity(PORT_BITMAP_WORDS as usize);
    for i in 0..PORT_BITMAP_WORDS {
        words.push(map.get(&i, 0).map_err(map_error(name))?);
    }
    Ok(bitmap_ports(&words))
}

fn bitmap_ports(words: &[u64]) -> PortSet {
    let ranges: Vec<_> = words
        .iter()
        .enumerate()
        .flat_map(|(i, &word)| {
            (0..64)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| (i * 64 + bit) as u16)
        })
        .map(|port| port..=port)
        .collect();
    PortSet::new(&ranges)
}

/// The one interface with pins under `pins`.
fn only_iface(pins: &PinDir) -> Result<String, ReadError> {
    let root = pins.root();
    let mut ifaces: Vec<String> = std::fs::read_dir(root)
        .map_err(|_| ReadError::NoPins(root.to_owned()))?
        .filter_map(Result::ok)
        .filter(|e| Path::new(&e.path()).join("link").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ifaces.sort();
    match ifaces.len() {
        0 => Err(ReadError::NoPins(root.to_owned())),
        1 => Ok(ifaces.remove(0)),
        _ => Err(ReadError::SeveralIfaces {
            dir: root.to_owned(),
            ifaces,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_become_port_ranges() {
        let mut words = vec![0u64; PORT_BITMAP_WORDS as usize];
        words[1] = 1 << 16; // 80
        words[2] = u64::MAX; // 128-191
        words[1023] = 1 << 63; // 65535
        assert_eq!(bitmap_ports(&words).to_string(), "80,128-191,65535");
        assert_eq!(bitmap_ports(&[0; 4]).to_string(), "");
    }

    #[test]
    fn sources_show_ipv4_and_block_time() {
        let mut key = SourceKey::default();
        key.addr[10..12].copy_from_slice(&[0xff, 0xff]);
        key.addr[12..].copy_from_slice(&[10, 0, 0, 2]);
        let state = SourceState {
            blocked_until_ns: 5_000_000_000,
            window_start_ns: 1_000_000_000,
            ..SourceState::default()
        };
        let source = Source::new(key, state);
        assert_eq!(source.prefix(&DatapathConfig::DEFAULT), "10.0.0.2/32");
        assert_eq!(
            source.over_budget_for(3_500_000_000),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(source.over_budget_for(5_000_000_000), None);
        assert_eq!(source.window_age(1_250_000_000), Duration::from_millis(250));
        let v6 = Source::new(
            SourceKey {
                addr: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0).octets(),
            },
            state,
        );
        assert_eq!(v6.prefix(&DatapathConfig::DEFAULT), "2001:db8::/64");
    }

    #[test]
    fn half_open_rates_never_go_negative() {
        let at = Instant::now();
        let snapshot = |taken, load: PortLoad| Snapshot {
            taken,
            counters: CounterTotals::zero(),
            ports: [(8080, load)].into_iter().collect(),
            config: DatapathConfig::DEFAULT,
            protected: PortSet::new(&[8080..=8080]),
            cookie_ports: PortSet::new(&[]),
            sources_tracked: 0,
            sources_blocked: 0,
            sources_monitored: 0,
            maps: Vec::new(),
        };
        let earlier = snapshot(
            at,
            PortLoad {
                syns_to_kernel: 100,
                handshakes_completed: 10,
                cookies_sent: 5,
                cookies_validated: 0,
            },
        );
        let later = snapshot(
            at + Duration::from_secs(2),
            PortLoad {
                syns_to_kernel: 300,
                handshakes_completed: 30,
                cookies_sent: 5,
                cookies_validated: 4,
            },
        );
        let interval = Interval {
            earlier: &earlier,
            later: &later,
        };
        assert_eq!(interval.half_open(8080), (90.0, 0.0));
        assert_eq!(interval.half_open(9), (0.0, 0.0));
    }
}
