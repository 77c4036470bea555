//! RAII network namespaces and veth pairs, and running commands or Rust code inside a
//! namespace.
//!
//! A network namespace belongs to a thread, not to a process: a fresh thread that calls
//! `setns(CLONE_NEWNET)` uses that namespace's stack for every socket it creates (and threads
//! it spawns inherit it), while the rest of the test process stays where it was. Sockets keep
//! their namespace for life, so they may be handed back to other threads afterwards.

use std::fs::File;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};

use crate::process::run;

/// Prefix of every namespace and interface this crate creates.
pub const PREFIX: &str = "sgl";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// `sgl<pid>-<n>` in hex: unique on the machine while this process lives, and short enough to
/// leave room for a two-letter role suffix within the 15 characters of an interface name.
pub fn unique_id() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{:x}-{n:x}", std::process::id())
}

/// A named network namespace (`ip netns add`), deleted with everything in it on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn create(name: &str) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: add arguments and run or spawn it.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program args` in the namespace; fails unless it exits 0. Returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// Runs `ip -n NAME args`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    fn enter(&self) -> Result<()> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {}", self.name))
    }

    /// Runs `f` on a fresh thread inside the namespace and returns its result. `f` may borrow.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                f()
            })
            .join()
            .map_err(|_| anyhow!("a thread in network namespace {} panicked", self.name))?
        })
    }

    /// Starts `f` on a named thread inside the namespace; it must own what it uses. Fails
    /// (through the handle) if the namespace cannot be entered.
    pub fn spawn<T: Send + 'static>(
        &self,
        thread_name: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<JoinHandle<Result<T>>> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let ns_name = self.name.clone();
        thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering network namespace {ns_name}"))?;
                drop(file);
                f()
            })
            .with_context(|| format!("spawning thread {thread_name}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// Joins a thread started with [`Netns::spawn`], turning a panic into an error.
pub fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    let name = handle.thread().name().unwrap_or("?").to_owned();
    handle
        .join()
        .map_err(|_| anyhow!("thread {name} panicked"))?
}

/// An interface inside a namespace (a handle: it owns nothing).
#[derive(Clone, Debug)]
pub struct Iface {
    netns: String,
    name: String,
}

impl Iface {
    pub fn new(netns: &Netns, name: &str) -> Self {
        Self {
            netns: netns.name().to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.netns]).args(args))
    }

    /// Adds `addr/prefix`; IPv6 addresses skip duplicate address detection so they are usable
    /// at once.
    pub fn add_address(&self, addr: IpAddr, prefix: u8) -> Result<()> {
        let cidr = format!("{addr}/{prefix}");
        let mut args = vec!["addr", "add", &cidr, "dev", &self.name];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    /// A permanent neighbour entry: `addr` is at `mac` behind this interface, so nothing needs
    /// ARP or neighbour discovery to reach it (for a peer whose XDP program drops everything).
    pub fn add_permanent_neighbour(&self, addr: IpAddr, mac: [u8; 6]) -> Result<()> {
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let addr = addr.to_string();
        self.ip(&[
            "neigh",
            "replace",
            &addr,
            "lladdr",
            &mac,
            "dev",
            &self.name,
            "nud",
            "permanent",
        ])
        .map(drop)
    }

    pub fn set_up(&self) -> Result<()> {
        self.ip(&["link", "set", "dev", &self.name, "up"]).map(drop)
    }

    /// Runs `program args` in the interface's namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.netns, program])
            .args(args))
    }

    /// `ethtool -K IF tx off`: the stack then sums every checksum itself, and the peer gets
    /// `CHECKSUM_NONE` packets, as from a NIC without receive checksum offload.
    pub fn disable_tx_checksum(&self) -> Result<()> {
        self.exec("ethtool", &["-K", &self.name, "tx", "off"])
            .with_context(|| format!("turning tx checksum offload off on {}", self.name))
            .map(drop)
    }

    /// `ip -j -d -s link show`: the interface's JSON description, with statistics.
    pub fn details(&self) -> Result<serde_json::Value> {
        let text = self.ip(&["-j", "-d", "-s", "link", "show", "dev", &self.name])?;
        let mut list: Vec<serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("parsing `ip -j link show {}`", self.name))?;
        if list.len() != 1 {
            bail!(
                "`ip link show {}` listed {} interfaces",
                self.name,
                list.len()
            );
        }
        Ok(list.remove(0))
    }

    pub fn mac(&self) -> Result<[u8; 6]> {
        let details = self.details()?;
        let text = details["address"]
            .as_str()
            .ok_or_else(|| anyhow!("{} has no MAC address", self.name))?;
        parse_mac(text)
    }
}

fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing MAC address {text}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("MAC address {text} is not 6 bytes"))
}

/// A veth pair with one end in each of two namespaces; deleted (both ends) on drop.
pub struct VethPair {
    pub a: Iface,
    pub b: Iface,
}

impl VethPair {
    /// Creates `name_a` in `ns_a` and its peer `name_b` in `ns_b`, both down, one queue each.
    pub fn create(ns_a: &Netns, name_a: &str, ns_b: &Netns, name_b: &str) -> Result<Self> {
        Self::with_queues(ns_a, name_a, ns_b, name_b, 1)
    }

    /// [`Self::create`] with `queues` receive and transmit queues on both ends: veth hands a
    /// frame to the peer's receive queue of the sending CPU (modulo the count), so each CPU's
    /// traffic gets a NAPI instance of its own, as on a multi-queue NIC.
    pub fn with_queues(
        ns_a: &Netns,
        name_a: &str,
        ns_b: &Netns,
        name_b: &str,
        queues: u32,
    ) -> Result<Self> {
        for name in [name_a, name_b] {
            if name.len() > 15 {
                bail!("interface name {name} is longer than 15 characters");
            }
        }
        let queues = queues.to_string();
        let end = |name: &str, ns: &Netns| {
            [
                name,
                "netns",
                ns.name(),
                "numrxqueues",
                &queues,
                "numtxqueues",
                &queues,
            ]
            .map(str::to_owned)
        };
        run(Command::new("ip")
            .args(["link", "add"])
            .args(end(name_a, ns_a))
            .args(["type", "veth", "peer", "name"])
            .args(end(name_b, ns_b)))?;
        Ok(Self {
            a: Iface::new(ns_a, name_a),
            b: Iface::new(ns_b, name_b),
        })
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        if let Err(e) = self.a.ip(&["link", "del", "dev", &self.a.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_leave_room_for_a_suffix() {
        let (a, b) = (unique_id(), unique_id());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert!(a.len() + 2 <= 15, "{a}");
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("d2:d7:b5:8b:f2:9a").unwrap(),
            [0xd2, 0xd7, 0xb5, 0x8b, 0xf2, 0x9a]
        );
        assert!(parse_mac("d2:d7").is_err());
    }
}
