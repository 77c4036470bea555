//! `cargo xtask bench --profile`: where the server's receive path spends its time on live
//! traffic. `perf record` samples the server CPU for the length of each flood; the report,
//! one line per symbol (the JIT-ed program and its subprograms appear as `bpf_prog_<tag>_<fn>`,
//! helpers under their kernel names), is written next to results.json with the data file.
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Symbols below this share of the samples are left out of the report.
const PERCENT_LIMIT: &str = "0.5";

/// A `perf record` of one CPU, running until [`Profile::finish`].
pub struct Profile {
    perf: Child,
    data: PathBuf,
}

impl Profile {
    /// Starts sampling `cpus` into `<dir>/<label>.data`.
    pub fn start(dir: &Path, label: &str, cpus: &[usize]) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let data = dir.join(format!("{label}.data"));
        let cpus: Vec<String> = cpus.iter().map(usize::to_string).collect();
        let perf = Command::new("perf")
            .args(["record", "-q", "-C", &cpus.join(","), "-o"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting `perf record` (is perf installed?)")?;
        Ok(Self { perf, data })
    }

    /// Stops sampling and writes `<label>.txt`, the samples by symbol, beside `<label>.data`;
    /// returns its path.
    pub fn finish(mut self) -> Result<PathBuf> {
        // perf writes its data file on SIGINT.
        kill(Pid::from_raw(self.perf.id() as i32), Signal::SIGINT)?;
        let status = self.perf.wait()?;
        // perf re-raises the signal once it has written the file.
        if !status.success() && status.signal() != Some(Signal::SIGINT as i32) {
            bail!("`perf record` failed ({status})");
        }
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "sym",
                "--percent-limit",
                PERCENT_LIMIT,
                "-i",
            ])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .context("running `perf report`")?;
        if !report.status.success() {
            bail!("`perf report -i {}` failed", self.data.display());
        }
        let text = self.data.with_extension("txt");
        std::fs::write(&text, &report.stdout)?;
        // The data file stays for `perf annotate -i`, which shows the hot instructions of the
        // JIT-ed program as well.
        Ok(text)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        // Unfinished (a run failed): perf must not outlive the bench.
        let _ = self.perf.kill();
        let _ = self.perf.wait();
    }
}
