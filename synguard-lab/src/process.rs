//! Child processes: one-shot commands with checked output, and a guard for long-running ones
//! (the daemon, hping3) that captures their output line by line and stops them on drop.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long [`Process`]'s drop waits after SIGTERM before it sends SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// Sets the calling thread's nice value (on Linux `setpriority(PRIO_PROCESS, 0, ..)` is the
/// thread's own); threads and processes it starts afterwards inherit it.
pub fn nice_this_thread(nice: i32) -> Result<()> {
    // SAFETY: a plain syscall with no pointers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting nice {nice}"));
    }
    Ok(())
}

/// The path of executable `tool` in a directory on `PATH`.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.is_file()))
}

/// `program arg arg ...`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion; fails with its stderr unless it exits 0. Returns its stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{}`", describe(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `cmd` to completion; fails unless it exits 0 and prints nothing: checkers such as
/// `systemd-analyze verify` report problems on stdout or stderr and may still exit 0.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{}`", describe(cmd)))?;
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !said.trim().is_empty() {
        bail!("`{}` ({}): {}", describe(cmd), output.status, said.trim());
    }
    Ok(())
}

/// Output lines of a child (stdout and stderr interleaved in arrival order).
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Log {
    fn lines(&self) -> MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running child in its own process group. Dropping it stops the whole group (SIGTERM, then
/// SIGKILL after [`DROP_GRACE`]), so helpers it forked (e.g. `timeout` → `hping3`) go too.
pub struct Process {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    log: Arc<Log>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Starts `cmd` with stdin closed and stdout/stderr captured; `name` labels messages.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}: `{}`", describe(&cmd)))?;
        let log = Arc::new(Log::default());
        let mut readers = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            readers.push(Self::reader(name, out, &log)?);
        }
        if let Some(err) = child.stderr.take() {
            readers.push(Self::reader(name, err, &log)?);
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            status: None,
            log,
            readers,
        })
    }

    fn reader(
        name: &str,
        pipe: impl Read + Send + 'static,
        log: &Arc<Log>,
    ) -> Result<JoinHandle<()>> {
        let log = Arc::clone(log);
        thread::Builder::new()
            .name(format!("{name}-output"))
            .spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    log.lines().push(line);
                    log.grew.notify_all();
                }
            })
            .context("spawning an output reader thread")
    }

    /// The child's pid: the program itself, as `ip netns exec` and wrappers like `setpriv`
    /// exec it rather than fork.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The captured output as one text, for messages.
    pub fn output(&self) -> String {
        self.log.lines().join("\n")
    }

    /// The exit status if the child has exited (reaping it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?;
        }
        Ok(self.status)
    }

    /// Waits until a captured line contains `needle` and returns it. Fails if the child exits
    /// first or `timeout` passes, quoting everything it printed.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let lines = self.log.lines();
                if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                    return Ok(line.clone());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(lines);
                    bail!(
                        "{} printed no line containing `{needle}` within {timeout:?}; output:\n{}",
                        self.name,
                        self.output()
                    );
                }
                // Short waits so that an exit is noticed even if it prints nothing.
                let _unused = self
                    .log
                    .grew
                    .wait_timeout(lines, left.min(Duration::from_millis(100)))
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if let Some(status) = self.try_wait()? {
                self.join_readers();
                if let Some(line) = self.log.lines().iter().find(|l| l.contains(needle)) {
                    return Ok(line.clone());
                }
                bail!(
                    "{} exited ({status}) before printing `{needle}`; output:\n{}",
                    self.name,
                    self.output()
                );
            }
        }
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                self.join_readers();
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the child's process group.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pgid = Pid::from_raw(i32::try_from(self.child.id()).context("pid out of range")?);
        killpg(pgid, signal).with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// Sends `signal`, waits up to `grace` for the exit, then SIGKILLs the group. Returns the
    /// exit status; all output is captured once this returns.
    pub fn stop(&mut self, signal: Signal, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            self.join_readers();
            return Ok(status);
        }
        self.signal(signal)?;
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        eprintln!(
            "{} ignored {signal} for {grace:?}: sending SIGKILL",
            self.name
        );
        // The group may already be gone between the check and the kill.
        let _ = self.signal(Signal::SIGKILL);
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        self.status = Some(status);
        self.join_readers();
        Ok(status)
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            // A reader thread only panics if the log mutex does, which it cannot.
            let _ = reader.join();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = self.stop(Signal::SIGTERM, DROP_GRACE) {
            eprintln!("stopping {}: {e:#}", self.name);
        }
    }
}
