//! A scratch directory for a test's files (config files, CIDR lists, a third-party server's
//! config, keys and documents), removed on drop.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::netns::unique_id;

/// `/run/<unique id>-files`, removed with its contents on drop.
pub struct ScratchDir {
    dir: PathBuf,
}

impl ScratchDir {
    pub fn create() -> Result<Self> {
        let dir = PathBuf::from(format!("/run/{}-files", unique_id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Writes (or replaces) `name` with `contents`; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let path = self.dir.join(name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The path `name` would have in the directory (for files a program writes there).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup: removing {}: {e}", self.dir.display());
        }
    }
}
