//! Restoring a NAR stream into a directory, as `nix-store --restore` does,
//! but atomically and defensively:
//! - everything is created under a fresh temporary sibling of the
//!   destination and renamed into place (no-replace) only once the whole
//!   archive has been read and validated; on any error the temporary tree
//!   is removed, so nothing is left behind;
//! - every file is created relative to a directory descriptor the restorer
//!   opened itself, with `O_NOFOLLOW`/`O_EXCL`, so a symlink from the
//!   archive is never followed and nothing is written outside the target.
//!
//! Modes follow Nix's restore: files are created 0666 and directories 0777
//! (both minus the umask), and executable files then get `+x` for all
//! (0755 under the usual umask 022).

#[cfg(unix)]
use std::ffi::OsStr;
#[cfg(unix)]
use std::fs::File;
use std::io::Read;
#[cfg(unix)]
use std::io::Write;
#[cfg(unix)]
use std::os::fd::OwnedFd;
#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
#[cfg(unix)]
use std::path::PathBuf;
#[cfg(unix)]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(unix)]
use rustix::fs::{Mode, OFlags, CWD};

use crate::encoder::COPY_BUF;
#[cfg(unix)]
use crate::error::from_io;
use crate::error::Error;
use crate::reader::{Event, NarReader};
// Windows has no directory descriptors to create files relative to: its
// restorer (same interface) works on paths and checks names for Windows.
#[cfg(windows)]
pub(crate) use crate::restore_windows::Restorer;

#[cfg(unix)]
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Restores the NAR read from `r` at `dest`, which must not exist yet.
/// Returns the NAR size. To hash while restoring, pass a
/// [`crate::HashingReader`].
pub fn restore<R: Read>(r: R, dest: &Path) -> Result<u64, Error> {
    let mut rs = Restorer::begin(dest)?;
    let result = restore_events(&mut NarReader::new(r), &mut rs);
    match result {
        Ok(n) => {
            rs.commit()?;
            Ok(n)
        }
        Err(e) => {
            rs.abort();
            Err(e)
        }
    }
}

fn restore_events<R: Read>(nar: &mut NarReader<R>, rs: &mut Restorer) -> Result<u64, Error> {
    let mut buf = vec![0u8; COPY_BUF];
    while let Some(ev) = nar.next()? {
        match ev {
            Event::DirectoryStart => rs.directory_start()?,
            Event::Entry { name } => rs.entry(name),
            Event::Symlink { target } => rs.symlink(target)?,
            Event::DirectoryEnd => rs.directory_end(),
            Event::File {
                executable,
                size,
                mut contents,
            } => {
                let mut f = rs.file_start(executable)?;
                // Reserve the blocks at once, as Nix's restore does: cheaper
                // for the filesystem than delayed allocation per write (b3
                // store add: half the kernel time). Best effort.
                #[cfg(target_os = "linux")]
                if size > 0 {
                    let _ = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, size);
                }
                #[cfg(not(target_os = "linux"))]
                let _ = size;
                loop {
                    let n = contents.read_nar(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    rs.file_write(&mut f, &buf[..n])?;
                }
            }
        }
    }
    Ok(nar.offset())
}

#[cfg(unix)]
/// The filesystem side of a restore, driven event by event. Used by the
/// sync [`restore`] and by the async restore's worker thread.
pub(crate) struct Restorer {
    dest: PathBuf,
    parent: OwnedFd,
    parent_path: PathBuf,
    name: PathBuf,
    tmp_name: String,
    /// Open directories, innermost last.
    dirs: Vec<OwnedFd>,
    /// Name of the entry whose node comes next.
    pending: Vec<u8>,
    created_root: bool,
}

#[cfg(unix)]
impl Restorer {
    pub(crate) fn begin(dest: &Path) -> Result<Restorer, Error> {
        if dest.symlink_metadata().is_ok() {
            return Err(Error::DestinationExists(dest.to_path_buf()));
        }
        let name = dest
            .file_name()
            .ok_or_else(|| {
                Error::fs(
                    "restoring to",
                    dest,
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
                )
            })?
            .to_owned();
        let parent_path = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let parent = rustix::fs::openat(
            CWD,
            &parent_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::fs("opening directory", &parent_path, e.into()))?;
        let tmp_name = format!(
            ".{}.b3-restore-{}-{}",
            name.to_string_lossy().chars().take(64).collect::<String>(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Restorer {
            dest: dest.to_path_buf(),
            parent,
            parent_path,
            name: PathBuf::from(name),
            tmp_name,
            dirs: Vec::new(),
            pending: Vec::new(),
            created_root: false,
        })
    }

    /// Where the next node goes: (directory fd, name within it).
    fn slot(&mut self) -> (&OwnedFd, &OsStr) {
        match self.dirs.last() {
            Some(fd) => (fd, OsStr::from_bytes(&self.pending)),
            None => {
                self.created_root = true;
                (&self.parent, OsStr::new(&self.tmp_name))
            }
        }
    }

    fn node_path(&self) -> PathBuf {
        // For error messages only: the destination-relative path is not
        // tracked in full, the entry name is what helps.
        if self.dirs.is_empty() {
            self.dest.clone()
        } else {
            self.dest.join(OsStr::from_bytes(&self.pending))
        }
    }

    pub(crate) fn entry(&mut self, name: &[u8]) {
        self.pending.clear();
        self.pending.extend_from_slice(name);
    }

    pub(crate) fn directory_start(&mut self) -> Result<(), Error> {
        let (dir, name) = self.slot();
        let made = rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777)).and_then(|()| {
            rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        });
        match made {
            Ok(fd) => {
                self.dirs.push(fd);
                Ok(())
            }
            Err(e) => Err(Error::fs("creating directory", self.node_path(), e.into())),
        }
    }

    pub(crate) fn directory_end(&mut self) {
        self.dirs.pop();
    }

    pub(crate) fn symlink(&mut self, target: &[u8]) -> Result<(), Error> {
        let (dir, name) = self.slot();
        rustix::fs::symlinkat(target, dir, name)
            .map_err(|e| Error::fs("creating symlink", self.node_path(), e.into()))
    }

    pub(crate) fn file_start(&mut self, executable: bool) -> Result<File, Error> {
        let (dir, name) = self.slot();
        let made = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .and_then(|fd| {
            if executable {
                let st = rustix::fs::fstat(&fd)?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode((st.st_mode | 0o111) & 0o7777))?;
            }
            Ok(fd)
        });
        match made {
            Ok(fd) => Ok(File::from(fd)),
            Err(e) => Err(Error::fs("creating file", self.node_path(), e.into())),
        }
    }

    pub(crate) fn file_write(&self, f: &mut File, data: &[u8]) -> Result<(), Error> {
        f.write_all(data)
            .map_err(|e| from_io(e, |e| Error::fs("writing file", self.node_path(), e)))
    }

    /// Moves the finished tree into place; never replaces an existing path.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        self.dirs.clear();
        let r = rustix::fs::renameat_with(
            &self.parent,
            self.tmp_name.as_str(),
            &self.parent,
            &self.name,
            rustix::fs::RenameFlags::NOREPLACE,
        );
        match r {
            Ok(()) => {
                self.created_root = false;
                Ok(())
            }
            Err(rustix::io::Errno::EXIST) => {
                let dest = self.dest.clone();
                self.abort();
                Err(Error::DestinationExists(dest))
            }
            Err(e) => {
                let dest = self.dest.clone();
                self.abort();
                Err(Error::fs("moving restored tree to", dest, e.into()))
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
        let tmp = self.parent_path.join(&self.tmp_name);
        // The root may be a file, a symlink or a directory; remove_dir_all
        // does not follow symlinks.
        match tmp.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                let _ = make_writable(&tmp);
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&tmp);
            }
            Err(_) => {}
        }
    }
}

#[cfg(unix)]
impl Drop for Restorer {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(unix)]
/// Directories restored from a NAR are writable by their owner (0777 minus
/// umask), but a restrictive umask could leave one unremovable; add u+w.
fn make_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = d.symlink_metadata()?;
        if m.is_dir() {
            let mode = m.permissions().mode();
            if mode & 0o700 != 0o700 {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o700))?;
            }
            for e in std::fs::read_dir(&d)? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    Ok(())
}
