//! Servers the project did not write, from Debian's packages, run in the server namespace in
//! the foreground from files a test writes into its scratch directory (no system-wide config,
//! no service): nginx serving one file, and OpenSSH's sshd, which speaks first. Each stops
//! (its whole process group) on drop.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::netns::Netns;
use crate::process::{Process, find_on_path, run};
use crate::scratch::ScratchDir;

/// How long a server may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The listen backlog, as the lab's own server has it.
const BACKLOG: u32 = 4096;

/// The path of the document [`Nginx`] serves.
pub const DOCUMENT: &str = "/body.bin";

/// nginx (one worker) serving [`DOCUMENT`] on a port, IPv4 and IPv6.
pub struct Nginx {
    _process: Process,
}

impl Nginx {
    /// Writes `body` and a config under `files` and starts nginx in `netns` on `port`. Access
    /// logging is off; errors go to the process's captured output.
    pub fn start(netns: &Netns, port: u16, body: &[u8], files: &ScratchDir) -> Result<Self> {
        let root = files.path("www");
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        files.write(&format!("www{DOCUMENT}"), body)?;
        let dir = |name: &str| files.path(name).display().to_string();
        // Every path nginx would write under /var or /run by default is set here.
        let config = format!(
            "daemon off;\n\
             worker_processes 1;\n\
             pid {pid};\n\
             error_log stderr warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             access_log off;\n\
             client_body_temp_path {body_temp};\n\
             proxy_temp_path {proxy_temp};\n\
             fastcgi_temp_path {fastcgi_temp};\n\
             uwsgi_temp_path {uwsgi_temp};\n\
             scgi_temp_path {scgi_temp};\n\
             server {{\n\
             listen {port} backlog={BACKLOG};\n\
             listen [::]:{port} ipv6only=on backlog={BACKLOG};\n\
             root {root};\n\
             }}\n\
             }}\n",
            pid = dir("nginx.pid"),
            body_temp = dir("nginx-body"),
            proxy_temp = dir("nginx-proxy"),
            fastcgi_temp = dir("nginx-fastcgi"),
            uwsgi_temp = dir("nginx-uwsgi"),
            scgi_temp = dir("nginx-scgi"),
            root = root.display(),
        );
        let config = files.write("nginx.conf", config)?;
        let mut cmd = netns.command("nginx");
        // -e: the error log before the config is read (the default is under /var/log).
        cmd.arg("-c")
            .arg(&config)
            .arg("-p")
            .arg(files.path(""))
            .args(["-e", "stderr"]);
        let mut process = Process::spawn("nginx", cmd)?;
        wait_listening(netns, port, &mut process)?;
        Ok(Self { _process: process })
    }
}

/// OpenSSH's sshd on a port, IPv4 and IPv6, with a host key of its own; no login is possible
/// (no PAM, no passwords, no authorized keys). It sends its `SSH-2.0-` banner first.
pub struct Sshd {
    // Drop order: the daemon, then the directory it needs.
    _process: Process,
    _privsep_dir: Option<CreatedDir>,
}

/// The directory sshd's unprivileged child chroots into; the package's service creates it.
const PRIVSEP_DIR: &str = "/run/sshd";

impl Sshd {
    /// What an sshd test needs on `PATH`.
    pub const TOOLS: [&str; 2] = ["sshd", "ssh-keygen"];

    /// Makes a host key and a config under `files` and starts sshd in `netns` on `port`.
    pub fn start(netns: &Netns, port: u16, files: &ScratchDir) -> Result<Self> {
        // sshd re-executes itself for every connection, which needs an absolute path.
        let sshd = find_on_path("sshd").ok_or_else(|| anyhow!("sshd is not installed"))?;
        let key = files.path("ssh_host_ed25519_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key))?;
        let config = files.write(
            "sshd_config",
            format!(
                "Port {port}\n\
                 ListenAddress 0.0.0.0\n\
                 ListenAddress ::\n\
                 HostKey {key}\n\
                 PidFile {pid}\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 AuthorizedKeysFile none\n\
                 LogLevel ERROR\n",
                key = key.display(),
                pid = files.path("sshd.pid").display(),
            ),
        )?;
        let privsep_dir = CreatedDir::ensure(Path::new(PRIVSEP_DIR))?;
        let mut cmd = netns.command(&sshd.to_string_lossy());
        // -D: foreground, -e: log to stderr.
        cmd.args(["-D", "-e", "-f"]).arg(&config);
        let mut process = Process::spawn("sshd", cmd)?;
        wait_listening(netns, port, &mut process)?;
        Ok(Self {
            _process: process,
            _privsep_dir: privsep_dir,
        })
    }
}

/// A directory this process created because it was missing; removed on drop if still empty.
struct CreatedDir(PathBuf);

impl CreatedDir {
    fn ensure(path: &Path) -> Result<Option<Self>> {
        if path.is_dir() {
            return Ok(None);
        }
        std::fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Some(Self(path.to_owned())))
    }
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        // Fails (and keeps it) if something else put files there meanwhile.
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Waits until `port` accepts connections on both loopback addresses of `netns`; fails if
/// `process` exits first or [`READY_TIMEOUT`] passes, with what it printed.
fn wait_listening(netns: &Netns, port: u16, process: &mut Process) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addrs = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ];
    loop {
        let listening = netns.run(|| {
            Ok(addrs
                .iter()
                .all(|addr| TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()))
        })?;
        if listening {
            return Ok(());
        }
        if let Some(status) = process.wait_timeout(Duration::from_millis(50))? {
            bail!(
                "exited ({status}) before listening; output:\n{}",
                process.output()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "not listening on port {port} within {READY_TIMEOUT:?}; output:\n{}",
                process.output()
            );
        }
    }
}
