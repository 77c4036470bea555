//! Loads the embedded eBPF object, fills its configuration maps and has the kernel verify its
//! programs: the XDP program and the TC ingress program that marks verified IPv6 handshake ACKs
//! (see `synguard-ebpf/src/tc_csum.rs`).

use std::collections::BTreeMap;
use std::os::fd::AsFd as _;

use aya::maps::{HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, SchedClassifier, Xdp};
use aya::{Ebpf, EbpfError, EbpfLoader};
use synguard_common::{
    Counter, MAP_COUNTERS, MAP_PEERS, MAP_POLICY4, MAP_POLICY6, MAP_SKETCH, MAP_SOURCES,
    PROGRAM_NAME, SourceKey, SourceState, TC_PROGRAM_NAME, sketch_entries,
};
use tracing::debug;

use crate::datapath::error::{LoaderError, check_len, errno, map_error, permission, typed_map};
use crate::datapath::maps::{DatapathMaps, DatapathState};
use crate::datapath::peers::PeerSeeder;
use crate::datapath::pins::MapPins;
use crate::kernel::privileges;
use crate::settings::values::possible_cpus;

/// The XDP object built by build.rs (aya-build), embedded so the daemon is one file.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/synguard"));

/// The embedded object's definitions, to check pinned maps against ([`PinDir::prepare`]).
pub fn object() -> Result<aya_obj::Object, LoaderError> {
    aya_obj::Object::parse(OBJECT).map_err(|e| LoaderError::Object(EbpfError::ParseError(e)))
}

/// The loaded (verified, not yet attached) programs and their maps.
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    maps: DatapathMaps,
}

impl Datapath {
    /// Creates the maps, writes the configuration and port bitmap, and has the kernel verify
    /// the program.
    pub fn load(state: &DatapathState) -> Result<Self, LoaderError> {
        Self::load_pinned(state, &MapPins::default())
    }

    /// [`Self::load`], with the state maps adopted from or pinned at `pins` (see
    /// [`crate::datapath::pins`]). The policy tries and other configuration maps are never pinned, so
    /// their sizes may change between runs.
    pub fn load_pinned(state: &DatapathState, pins: &MapPins) -> Result<Self, LoaderError> {
        let mut loader = EbpfLoader::new();
        // The policy tries are sized for the lists (with room to grow on reload), the sketch
        // for the CPUs.
        loader
            .map_max_entries(MAP_POLICY4, state.policy_capacity(false))
            .map_max_entries(MAP_POLICY6, state.policy_capacity(true))
            .map_max_entries(MAP_SKETCH, sketch_entries(possible_cpus()));
        for (name, path) in &pins.sources {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| {
            if errno(&e) == Some(libc::EPERM) {
                permission("creating the eBPF maps")
            } else {
                LoaderError::Object(e)
            }
        })?;
        // Before the maps are taken out of `ebpf`.
        pins.pin_copies(&ebpf)?;

        let mut maps = DatapathMaps::take(&mut ebpf)?;
        // Cookie bits of a pinned SG_COOKIE_PORTS (an earlier run's auto decisions) stay set
        // for the protected ports: its program still reads them until ours replaces it.
        let adopted = maps.cookie_ports(&state.ports);
        maps.apply(state, &adopted)?;

        let counters: PerCpuArray<MapData, u64> =
            typed_map(ebpf.take_map(MAP_COUNTERS), MAP_COUNTERS)?;
        check_len(MAP_COUNTERS, counters.len(), Counter::COUNT)?;

        xdp_program(&mut ebpf)?
            .load()
            .map_err(|e| load_error(PROGRAM_NAME, "loading the XDP program", e))?;
        tc_program(&mut ebpf)?
            .load()
            .map_err(|e| load_error(TC_PROGRAM_NAME, "loading the TC program", e))?;
        debug!("programs `{PROGRAM_NAME}` and `{TC_PROGRAM_NAME}` loaded and verified");
        Ok(Self {
            ebpf,
            counters,
            maps,
        })
    }

    /// Per-CPU packet counters, indexed by [`Counter`] (summed by
    /// [`CounterTotals`](crate::datapath::counters::CounterTotals)).
    pub const fn counters(&self) -> &PerCpuArray<MapData, u64> {
        &self.counters
    }

    /// The maps the daemon writes.
    pub fn maps_mut(&mut self) -> &mut DatapathMaps {
        &mut self.maps
    }

    /// Read-only views of every map, by name, on duplicated descriptors of this process's own
    /// maps ([`MapReader::of_maps`](crate::datapath::snapshot::MapReader::of_maps)). Looking the program's
    /// maps up by id instead would need `CAP_SYS_ADMIN`, which the daemon does not have under
    /// its systemd unit.
    pub fn map_views(&self) -> Result<BTreeMap<String, MapData>, LoaderError> {
        let sources = self.ebpf.map(MAP_SOURCES).ok_or(LoaderError::Missing {
            kind: "map",
            name: MAP_SOURCES,
        })?;
        let sources: HashMap<&MapData, SourceKey, SourceState> =
            HashMap::try_from(sources).map_err(|e| map_error(MAP_SOURCES, e))?;
        let mut named = self.maps.named().to_vec();
        named.extend([
            (MAP_COUNTERS, self.counters.map()),
            (MAP_SOURCES, sources.map()),
        ]);
        named
            .into_iter()
            .map(|(name, data)| {
                let view = data
                    .fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(MapError::from)
                    .and_then(MapData::from_fd);
                Ok((name.to_owned(), view.map_err(|e| map_error(name, e))?))
            })
            .collect()
    }

    /// The peer filter's seeder, mapped onto this program's `SG_PEERS`.
    pub fn peer_seeder(&self) -> Result<PeerSeeder, LoaderError> {
        let missing = LoaderError::Missing {
            kind: "map",
            name: MAP_PEERS,
        };
        let Some(Map::Array(peers)) = self.ebpf.map(MAP_PEERS) else {
            return Err(missing);
        };
        PeerSeeder::new(peers, self.maps.hash_seed()).map_err(|e| LoaderError::Map {
            name: MAP_PEERS,
            source: MapError::from(e),
        })
    }

    /// The kernel's id of the loaded program, for read-only views of its maps
    /// ([`MapReader::of_program`](crate::datapath::snapshot::MapReader::of_program)).
    pub fn program_id(&self) -> Result<u32, LoaderError> {
        Ok(self
            .program()?
            .info()
            .map_err(|e| LoaderError::Load(PROGRAM_NAME, e))?
            .id())
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN` (`aya::programs::TestRun`) without
    /// attaching it anywhere.
    pub fn program(&self) -> Result<&Xdp, LoaderError> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or(MISSING_PROGRAM)?
            .try_into()
            .map_err(|e| LoaderError::Load(PROGRAM_NAME, e))
    }
}

const MISSING_PROGRAM: LoaderError = LoaderError::Missing {
    kind: "program",
    name: PROGRAM_NAME,
};

pub(super) fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoaderError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(MISSING_PROGRAM)?
        .try_into()
        .map_err(|e| LoaderError::Load(PROGRAM_NAME, e))
}

pub(super) fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoaderError> {
    ebpf.program_mut(TC_PROGRAM_NAME)
        .ok_or(LoaderError::Missing {
            kind: "program",
            name: TC_PROGRAM_NAME,
        })?
        .try_into()
        .map_err(|e| LoaderError::Load(TC_PROGRAM_NAME, e))
}

/// A failed `load()`: missing privileges, or the verifier's rejection with its log.
fn load_error(program: &'static str, action: &'static str, e: ProgramError) -> LoaderError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if io_error.raw_os_error() == Some(libc::EPERM) {
                permission(action)
            } else {
                let verifier_log = verifier_log.to_string();
                LoaderError::Verifier {
                    program,
                    io_error,
                    hint: verifier_hint(&verifier_log, &privileges::lacking()),
                    verifier_log,
                }
            }
        }
        other => LoaderError::Load(program, other),
    }
}

/// Names the usual cause when the log shows one: an old kernel lacks a helper; or the process
/// lacks a capability the verifier checks (`lacking`: without `CAP_PERFMON` it refuses the
/// program's stack reads at variable offsets).
fn verifier_hint(verifier_log: &str, lacking: &[&str]) -> String {
    if verifier_log.contains("unknown func") || verifier_log.contains("invalid func") {
        ": this kernel lacks a BPF helper synguard needs (bpf_tcp_raw_gen_syncookie_ipv4/6, \
         bpf_tcp_raw_check_syncookie_ipv4/6 or bpf_loop: Linux 6.0 or newer)"
            .to_owned()
    } else if !lacking.is_empty() {
        format!(": {}", privileges::hint(lacking))
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_helpers_are_named() {
        assert!(
            verifier_hint("0: (85) call unknown#204\ninvalid func unknown#204", &[])
                .contains("Linux 6.0")
        );
        assert_eq!(verifier_hint("R4 invalid zero-sized read", &[]), "");
    }

    #[test]
    fn a_missing_capability_is_named_with_a_verifier_rejection() {
        // Only this process's own capabilities can be named; the test just checks the hint
        // appears when some are lacking.
        let hint = verifier_hint("R2 variable stack access prohibited", &["CAP_PERFMON"]);
        assert!(hint.contains("CAP_PERFMON"), "{hint}");
    }
}
