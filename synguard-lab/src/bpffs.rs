//! A private BPF filesystem for a test's pins.
//!
//! `ip netns exec` remounts /sys for the namespace, so the daemon under test finds no bpffs at
//! /sys/fs/bpf (and each such mount would be a new, empty instance). A bpffs mounted by the
//! test outside /sys is inherited by every `ip netns exec` that starts afterwards, so
//! successive daemons see the same pins; unmounting it releases whatever is still pinned.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::netns::unique_id;
use crate::process::run;

/// A bpffs mounted at `/run/<unique id>-bpf`; unmounted and removed on drop.
pub struct Bpffs {
    dir: PathBuf,
}

impl Bpffs {
    pub fn mount() -> Result<Self> {
        let dir = PathBuf::from(format!("/run/{}-bpf", unique_id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let bpffs = Self { dir };
        run(Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpffs.dir))?;
        Ok(bpffs)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `path` as a `--pin-dir` argument.
    pub fn arg(&self) -> &str {
        self.dir.to_str().expect("the path is ASCII")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        // Not mounted if `mount` failed; the directory goes either way.
        let _ = run(Command::new("umount").arg(&self.dir));
        let _ = fs::remove_dir(&self.dir);
    }
}
