//! The scratch files of a trace (TRACE.md version 2, `file F`): each runner
//! keeps them in a private directory of its own, removed with everything in
//! it when the runner goes.
//!
//! The directory is on a disk filesystem: the host's temporary directory,
//! or `/var/tmp` when that is tmpfs. On disk filesystems (ext4, xfs) a file
//! that grows reads zeros where the old last page held bytes past the old
//! end (they are zeroed on growth, as POSIX wants); tmpfs keeps those bytes,
//! and softmm, like the disk filesystems, zeroes them.

use std::path::{Path, PathBuf};

/// `TMPFS_MAGIC` (linux/magic.h).
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// A private directory, removed (with its files) on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new directory named after `what`, this process and a counter.
    pub fn new(what: &str) -> Result<ScratchDir, String> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = disk_temp_dir().join(format!("softmm-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let made = ScratchDir { path };
        // As /proc/PID/maps names the files: no symbolic links.
        let path = made.path.canonicalize().map_err(|e| format!("resolving {}: {e}", made.path.display()))?;
        std::mem::forget(made);
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The path of scratch file `name` in `dir` (the Linux worker finds a
/// file by it, and `maps` names the file back from it).
pub fn file_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("file-{name}"))
}

/// The name of the scratch file at `path` in `dir`, if it is one.
pub fn file_name<'a>(dir: &Path, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(dir.to_str()?)?.strip_prefix("/file-")?;
    Some(rest.strip_suffix(" (deleted)").unwrap_or(rest))
}

/// The host's temporary directory unless it is tmpfs, else `/var/tmp`.
fn disk_temp_dir() -> PathBuf {
    let tmp = std::env::temp_dir();
    match rustix::fs::statfs(&tmp) {
        Ok(st) if st.f_type as u64 == TMPFS_MAGIC => PathBuf::from("/var/tmp"),
        _ => tmp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_back_from_paths() {
        let d = Path::new("/tmp/softmm-x-1-0");
        let p = file_path(d, "F2");
        assert_eq!(file_name(d, p.to_str().unwrap()), Some("F2"));
        assert_eq!(file_name(d, "/tmp/softmm-x-1-0/file-G (deleted)"), Some("G"));
        assert_eq!(file_name(d, "/tmp/other/file-F"), None);
        assert_eq!(file_name(d, "/tmp/softmm-x-1-0/ctl.sock"), None);
    }

    #[test]
    fn the_directory_goes_with_its_files() {
        let d = ScratchDir::new("test").unwrap();
        let path = d.path().to_owned();
        std::fs::write(file_path(&path, "F"), b"x").unwrap();
        drop(d);
        assert!(!path.exists());
    }
}
