//! What only synguard's own user may touch. The pins hold the live datapath (a process that
//! can open them can rewrite counters, per-source state or the program itself), and the config
//! and CIDR list files say what synguard does: its directories are created 0700, and a file it
//! takes orders from must not be writable by anyone but root or the user it runs as.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Read as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of the directories synguard creates: owner only.
pub const DIR_MODE: u32 = 0o700;

/// Creates `path` and its missing parents with mode 0700; an existing directory keeps its mode
/// (it may be shared, like a `--pin-dir` the operator chose).
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// [`create_dir`], and mode 0700 also when it existed: for a directory only synguard uses
/// (its run directory, an interface's pin directory), perhaps made by an older version.
pub fn own_dir(path: &Path) -> io::Result<()> {
    create_dir(path)?;
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// Reads a file synguard takes orders from, refusing it (a message with the fix) when someone
/// other than root or this process's user owns it or could write it. The checked metadata is
/// the opened file's, so the file read is the file checked.
pub fn read_trusted(path: &Path) -> Result<String, String> {
    let shown = path.display().to_string();
    let mut file = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if let Some(problem) = untrusted(&shown, meta.uid(), meta.mode(), euid) {
        return Err(problem);
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(text)
}

/// Why file `path`, owned by `owner` with `mode`, must not steer a process running as
/// `euid`, with the command that fixes it.
fn untrusted(path: &str, owner: u32, mode: u32, euid: u32) -> Option<String> {
    if owner != 0 && owner != euid {
        return Some(format!(
            "{path} is owned by uid {owner}, not by root or the user synguard runs as (uid {euid}): \
             that user could change what synguard does; fix: chown root: {path} && chmod 600 {path}"
        ));
    }
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and others",
        (true, false) => "its group",
        (false, true) => "others",
        (false, false) => return None,
    };
    Some(format!(
        "{path} is writable by {writers} (mode {:04o}): they could change what synguard does; \
         fix: chmod 600 {path}",
        mode & 0o7777
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("synguard-private-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn new_directories_are_owner_only() {
        let root = scratch("create");
        let nested = root.join("a/b");
        create_dir(&nested).unwrap();
        assert_eq!(mode(&root), DIR_MODE);
        assert_eq!(mode(&nested), DIR_MODE);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_existing_shared_directory_keeps_its_mode_unless_it_is_ours() {
        let dir = scratch("existing");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755);
        own_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_others_can_write_are_refused_with_the_fix() {
        assert_eq!(untrusted("f", 0, 0o100600, 0), None);
        assert_eq!(untrusted("f", 0, 0o100644, 0), None);
        assert_eq!(untrusted("f", 1000, 0o100600, 1000), None);
        let group = untrusted("f", 0, 0o100664, 0).unwrap();
        assert!(
            group.contains("writable by its group (mode 0664)"),
            "{group}"
        );
        assert!(group.ends_with("fix: chmod 600 f"), "{group}");
        let world = untrusted("f", 0, 0o100666, 0).unwrap();
        assert!(world.contains("its group and others"), "{world}");
        assert!(
            untrusted("f", 0, 0o100602, 0)
                .unwrap()
                .contains("by others")
        );
        let owner = untrusted("f", 1000, 0o100600, 0).unwrap();
        assert!(owner.contains("owned by uid 1000"), "{owner}");
        assert!(owner.contains("chown root: f && chmod 600 f"), "{owner}");
    }

    #[test]
    fn read_trusted_checks_the_file_it_reads() {
        let dir = scratch("read");
        create_dir(&dir).unwrap();
        let path = dir.join("synguard.toml");
        fs::write(&path, "ports = [80]\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_trusted(&path).unwrap(), "ports = [80]\n");
        fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        let refused = read_trusted(&path).unwrap_err();
        assert!(
            refused.starts_with(&path.display().to_string()),
            "{refused}"
        );
        assert!(refused.contains("chmod 600"), "{refused}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
