//! The Windows restorer: the same interface and all-or-nothing behaviour
//! as the Unix one in `restore.rs`, on paths instead of directory
//! descriptors.
//!
//! Why paths are safe here: everything is created inside a fresh temporary
//! directory this restorer made, each entry with create-new semantics, and
//! the reader has already rejected names with separators, `.` and `..`. A
//! symlink from the archive is never traversed because no later entry can
//! name a path through it (NAR entries nest only under directories).
//!
//! What Windows cannot hold, and what happens:
//! - names that Windows forbids (`<>:"\|?*`, control characters, a
//!   trailing dot or space, device names such as `CON` or `nul.txt`) are
//!   refused with an error naming the entry; `a:b` would otherwise write an
//!   NTFS alternate data stream;
//! - two names differing only in case collide on a case-insensitive
//!   directory: the second one fails as "already exists";
//! - the executable bit is dropped (Windows has none; see `os.rs`);
//! - symlinks are created as Windows symlinks, `/` in the target turned
//!   into `\` (and back when dumping). A target that names an existing
//!   directory when the link is made becomes a directory symlink, anything
//!   else a file symlink. Windows lets only Developer Mode or holders of
//!   SeCreateSymbolicLinkPrivilege create them; otherwise the restore fails
//!   with an error saying so. Each link is read back after it is made, and
//!   a link the system claims to have made but did not (wine) fails the
//!   restore too.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::windows::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{from_io, Error};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Win32 ERROR_PRIVILEGE_NOT_HELD.
const PRIVILEGE_NOT_HELD: i32 = 1314;

pub(crate) struct Restorer {
    dest: PathBuf,
    tmp_path: PathBuf,
    /// Open directories (paths), innermost last.
    dirs: Vec<PathBuf>,
    /// Name of the entry whose node comes next.
    pending: Vec<u8>,
    created_root: bool,
}

impl Restorer {
    pub(crate) fn begin(dest: &Path) -> Result<Restorer, Error> {
        if dest.symlink_metadata().is_ok() {
            return Err(Error::DestinationExists(dest.to_path_buf()));
        }
        let name = dest.file_name().ok_or_else(|| {
            Error::fs(
                "restoring to",
                dest,
                io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?;
        let parent_path = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent_path.is_dir() {
            return Err(Error::fs(
                "opening directory",
                &parent_path,
                io::Error::new(io::ErrorKind::NotFound, "not a directory"),
            ));
        }
        let tmp_name = format!(
            ".{}.b3-restore-{}-{}",
            name.to_string_lossy().chars().take(64).collect::<String>(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Restorer {
            dest: dest.to_path_buf(),
            tmp_path: parent_path.join(tmp_name),
            dirs: Vec::new(),
            pending: Vec::new(),
            created_root: false,
        })
    }

    /// Where the next node goes, its name checked for Windows.
    fn slot(&mut self) -> Result<PathBuf, Error> {
        match self.dirs.last() {
            Some(dir) => {
                let name = windows_name(&self.pending).map_err(|why| {
                    Error::fs(
                        "restoring entry",
                        dir.join(String::from_utf8_lossy(&self.pending).as_ref()),
                        io::Error::new(io::ErrorKind::InvalidInput, why),
                    )
                })?;
                Ok(dir.join(name))
            }
            None => {
                self.created_root = true;
                Ok(self.tmp_path.clone())
            }
        }
    }

    fn node_path(&self) -> PathBuf {
        if self.dirs.is_empty() {
            self.dest.clone()
        } else {
            self.dest
                .join(String::from_utf8_lossy(&self.pending).as_ref())
        }
    }

    pub(crate) fn entry(&mut self, name: &[u8]) {
        self.pending.clear();
        self.pending.extend_from_slice(name);
    }

    pub(crate) fn directory_start(&mut self) -> Result<(), Error> {
        let path = self.slot()?;
        match std::fs::create_dir(&path) {
            Ok(()) => {
                self.dirs.push(path);
                Ok(())
            }
            Err(e) => Err(Error::fs("creating directory", self.node_path(), e)),
        }
    }

    pub(crate) fn directory_end(&mut self) {
        self.dirs.pop();
    }

    pub(crate) fn symlink(&mut self, target: &[u8]) -> Result<(), Error> {
        let path = self.slot()?;
        let target = match std::str::from_utf8(target) {
            Ok(t) => t.replace('/', "\\"),
            Err(_) => {
                return Err(Error::fs(
                    "creating symlink",
                    self.node_path(),
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the target is not UTF-8, which Windows cannot store",
                    ),
                ))
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let made = if base.join(&target).is_dir() {
            std::os::windows::fs::symlink_dir(&target, &path)
        } else {
            std::os::windows::fs::symlink_file(&target, &path)
        };
        made.map_err(|e| {
            let e = if e.raw_os_error() == Some(PRIVILEGE_NOT_HELD) {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "Windows refused to create a symlink: enable Developer Mode or grant \
                     SeCreateSymbolicLinkPrivilege",
                )
            } else {
                e
            };
            Error::fs("creating symlink", self.node_path(), e)
        })?;
        // Read the link back: a system may report success and make nothing
        // (wine 8's CreateSymbolicLinkW is such a stub), which would leave
        // a tree silently missing its links.
        match (std::fs::symlink_metadata(&path), std::fs::read_link(&path)) {
            (Ok(m), Ok(_)) if m.file_type().is_symlink() => Ok(()),
            _ => Err(Error::fs(
                "creating symlink",
                self.node_path(),
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "the system reported the symlink to {target} as made but it cannot be \
                         read back (this system cannot create symlinks; wine's \
                         CreateSymbolicLinkW is a stub)"
                    ),
                ),
            )),
        }
    }

    /// Opens a new file for the contents; `executable` has no Windows form.
    pub(crate) fn file_start(&mut self, _executable: bool) -> Result<File, Error> {
        let path = self.slot()?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::fs("creating file", self.node_path(), e))
    }

    pub(crate) fn file_write(&self, f: &mut File, data: &[u8]) -> Result<(), Error> {
        f.write_all(data)
            .map_err(|e| from_io(e, |e| Error::fs("writing file", self.node_path(), e)))
    }

    /// Moves the finished tree into place; never replaces an existing path.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        self.dirs.clear();
        match move_no_replace(&self.tmp_path, &self.dest) {
            Ok(()) => {
                self.created_root = false;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let dest = self.dest.clone();
                self.abort();
                Err(Error::DestinationExists(dest))
            }
            Err(e) => {
                let dest = self.dest.clone();
                self.abort();
                Err(Error::fs("moving restored tree to", dest, e))
            }
        }
    }

    /// Removes whatever was created.
    pub(crate) fn abort(&mut self) {
        self.dirs.clear();
        if !self.created_root {
            return;
        }
        self.created_root = false;
        let tmp = &self.tmp_path;
        // remove_dir_all does not follow symlinks on Windows either.
        match tmp.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(tmp);
            }
            Ok(m) if m.is_symlink() => {
                // A directory symlink is removed as a directory.
                let _ = std::fs::remove_file(tmp).or_else(|_| std::fs::remove_dir(tmp));
            }
            Ok(_) => {
                let _ = std::fs::remove_file(tmp);
            }
            Err(_) => {}
        }
    }
}

impl Drop for Restorer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// `MoveFileExW` without `MOVEFILE_REPLACE_EXISTING`: fails when `to`
/// exists (std's rename would replace a file).
fn move_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let wide = |p: &Path| -> Vec<u16> { p.as_os_str().encode_wide().chain([0]).collect() };
    let (f, t) = (wide(from), wide(to));
    // SAFETY: both are NUL-terminated UTF-16 strings that outlive the call.
    let ok =
        unsafe { windows_sys::Win32::Storage::FileSystem::MoveFileExW(f.as_ptr(), t.as_ptr(), 0) };
    if ok != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The NAR entry name as a Windows path component, or why it cannot be one.
fn windows_name(name: &[u8]) -> Result<&OsStr, &'static str> {
    let s = std::str::from_utf8(name).map_err(|_| "the name is not UTF-8")?;
    check_windows_name(s)?;
    Ok(OsStr::new(s))
}

/// Windows' rules for a file name component (beyond what the NAR reader
/// already enforces: non-empty, no `/`, no NUL, not `.` or `..`).
pub(crate) fn check_windows_name(s: &str) -> Result<(), &'static str> {
    if s.chars()
        .any(|c| matches!(c, '<' | '>' | ':' | '"' | '\\' | '|' | '?' | '*') || (c as u32) < 0x20)
    {
        return Err("the name has a character Windows forbids in file names (<>:\"\\|?* or a control character)");
    }
    if s.ends_with('.') || s.ends_with(' ') {
        return Err("Windows drops a trailing dot or space from file names");
    }
    let stem = s.split('.').next().unwrap_or(s).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    let reserved = matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && upper.as_bytes()[3].is_ascii_digit()
            && upper.as_bytes()[3] != b'0');
    if reserved {
        return Err("the name is a Windows device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_windows_name;

    #[test]
    fn a_restored_symlink_reads_back_or_the_restore_says_why() {
        let mut nar = Vec::new();
        let mut enc = crate::NarEncoder::new(&mut nar);
        enc.directory_start().unwrap();
        enc.entry(b"file").unwrap();
        enc.file_bytes(false, b"target\n").unwrap();
        enc.entry(b"link").unwrap();
        enc.symlink(b"file").unwrap();
        enc.directory_end().unwrap();
        enc.finish().unwrap();
        let tmp = std::env::temp_dir().join(format!(
            "b3-nar-symlink-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&tmp).unwrap();
        let dest = tmp.join("out");
        match crate::restore(&nar[..], &dest) {
            // Real Windows with the privilege (or Developer Mode).
            Ok(_) => assert_eq!(
                std::fs::read_link(dest.join("link")).unwrap(),
                std::path::Path::new("file")
            ),
            // Without the privilege, or under wine: a clear refusal and
            // nothing left behind, never a tree missing its link.
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("cannot create symlinks") || msg.contains("Developer Mode"),
                    "{msg}"
                );
                assert!(dest.symlink_metadata().is_err(), "nothing left at {dest:?}");
            }
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn windows_refuses_names_it_cannot_hold() {
        for bad in [
            "a:b", "x?", "t\\u", "dot.", "space ", "CON", "nul.txt", "Com1", "lpt9.a",
        ] {
            assert!(check_windows_name(bad).is_err(), "{bad} accepted");
        }
        for good in [
            "bin",
            "libc.so.6",
            "COM0",
            "console",
            "a b",
            ".hidden",
            "conf.d",
        ] {
            assert!(check_windows_name(good).is_ok(), "{good} refused");
        }
    }
}
