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
    restore_with(r, dest, RestoreOptions::default())
}

/// How [`restore_with`] lays the tree down, beyond what [`restore`] does.
#[derive(Default)]
pub struct RestoreOptions {
    /// Give every node its canonical store form while restoring: files
    /// 0444 (0555 when executable), directories 0555, modification time 1
    /// on everything (symlinks too). Saves a second walk over the tree. On
    /// Windows, which has neither, this is ignored.
    pub canonical: bool,
    /// Create `dest` itself rather than a temporary sibling renamed into
    /// place at the end (for a caller whose `dest` is already a private
    /// staging name). On failure whatever was created is removed as usual.
    pub in_place: bool,
    /// Handed every finished regular file and directory, still open (for
    /// instance to `fsync` them), in the order they are finished: a
    /// directory after everything in it. Unix only.
    pub on_finished: Option<Box<dyn FnMut(std::fs::File) + Send>>,
    /// Write regular files of at least this many bytes with direct I/O
    /// (`O_DIRECT`), where the filesystem allows it: the whole-block part
    /// of each goes from the restorer's buffer to the disk, not through the
    /// page cache (the tail, and everything on a filesystem that refuses,
    /// is written buffered). Linux only; elsewhere ignored. The files still
    /// need an `fsync` to be durable (their metadata).
    pub direct_io_min: Option<u64>,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("canonical", &self.canonical)
            .field("in_place", &self.in_place)
            .field("on_finished", &self.on_finished.is_some())
            .field("direct_io_min", &self.direct_io_min)
            .finish()
    }
}

/// [`restore`] with [`RestoreOptions`].
pub fn restore_with<R: Read>(r: R, dest: &Path, opts: RestoreOptions) -> Result<u64, Error> {
    let direct_min = opts.direct_io_min;
    let mut rs = Restorer::begin_with(dest, opts)?;
    let result = restore_events(&mut NarReader::new(r), &mut rs, direct_min);
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

thread_local! {
    /// The copy buffer, kept per thread: a store restoring thousands of
    /// small NARs would otherwise allocate (and fault in) a fresh one each.
    static COPY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn restore_events<R: Read>(
    nar: &mut NarReader<R>,
    rs: &mut Restorer,
    direct_min: Option<u64>,
) -> Result<u64, Error> {
    let mut buf = COPY.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let r = restore_events_with(nar, rs, &mut buf, direct_min);
    COPY.with(|c| *c.borrow_mut() = buf);
    r
}

fn restore_events_with<R: Read>(
    nar: &mut NarReader<R>,
    rs: &mut Restorer,
    buf: &mut Vec<u8>,
    direct_min: Option<u64>,
) -> Result<u64, Error> {
    let _ = direct_min;
    while let Some(ev) = nar.next()? {
        match ev {
            Event::DirectoryStart => rs.directory_start()?,
            Event::Entry { name } => rs.entry(name),
            Event::Symlink { target } => rs.symlink(target)?,
            Event::DirectoryEnd => rs.dir_end()?,
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
                #[cfg(target_os = "linux")]
                if direct_min.is_some_and(|m| size >= m) && direct::set(&f, true) {
                    direct::write_file(&mut contents, &mut f, rs)?;
                    rs.file_end(f)?;
                    continue;
                }
                if size > 0 && buf.is_empty() {
                    buf.resize(COPY_BUF, 0);
                }
                loop {
                    let n = contents.read_nar(buf)?;
                    if n == 0 {
                        break;
                    }
                    rs.file_write(&mut f, &buf[..n])?;
                }
                rs.file_end(f)?;
            }
        }
    }
    Ok(nar.offset())
}

/// Direct I/O writes of large files (see [`RestoreOptions::direct_io_min`]
/// and [`crate::direct_io`]).
#[cfg(target_os = "linux")]
mod direct {
    use std::fs::File;
    use std::io::Read;

    use super::Restorer;
    use crate::direct_io::{self, AlignedChunk, CHUNK};
    use crate::error::{from_io, Error};
    use crate::reader::FileReader;

    pub(super) use direct_io::set_direct as set;

    thread_local! {
        /// The aligned buffer, kept per thread like the copy buffer.
        static BUF: std::cell::RefCell<Option<AlignedChunk>> = const { std::cell::RefCell::new(None) };
    }

    /// Copies the file's contents into `f` (opened, `O_DIRECT` set) in
    /// aligned chunks.
    pub(super) fn write_file<R: Read>(
        contents: &mut FileReader<'_, R>,
        f: &mut File,
        rs: &Restorer,
    ) -> Result<(), Error> {
        let mut chunk = BUF.with(|b| b.borrow_mut().take()).unwrap_or_default();
        let r = copy(contents, f, rs, &mut chunk);
        BUF.with(|b| *b.borrow_mut() = Some(chunk));
        r
    }

    fn copy<R: Read>(
        contents: &mut FileReader<'_, R>,
        f: &mut File,
        rs: &Restorer,
        chunk: &mut AlignedChunk,
    ) -> Result<(), Error> {
        let mut direct = true;
        loop {
            let buf = chunk.space();
            let mut filled = 0;
            while filled < CHUNK {
                let n = contents.read_nar(&mut buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            direct_io::write(f, chunk.data(filled), &mut direct)
                .map_err(|e| from_io(e, |e| Error::fs("writing file", rs.node_path(), e)))?;
            if filled < CHUNK {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(windows)]
impl Restorer {
    pub(crate) fn begin_with(dest: &Path, _opts: RestoreOptions) -> Result<Restorer, Error> {
        Restorer::begin(dest)
    }

    pub(crate) fn dir_end(&mut self) -> Result<(), Error> {
        self.directory_end();
        Ok(())
    }

    pub(crate) fn file_end(&mut self, _f: std::fs::File) -> Result<(), Error> {
        Ok(())
    }
}

/// The process umask, read once (Linux reports it without changing it).
#[cfg(unix)]
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

#[cfg(unix)]
fn canonical_times() -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
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
    canonical: bool,
    /// `tmp_name` is the destination's own name: nothing to move at commit.
    in_place: bool,
    on_finished: Option<Box<dyn FnMut(File) + Send>>,
}

#[cfg(unix)]
impl Restorer {
    pub(crate) fn begin(dest: &Path) -> Result<Restorer, Error> {
        Restorer::begin_with(dest, RestoreOptions::default())
    }

    pub(crate) fn begin_with(dest: &Path, opts: RestoreOptions) -> Result<Restorer, Error> {
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
        let tmp_name = if opts.in_place {
            name.to_str()
                .ok_or_else(|| {
                    Error::fs(
                        "restoring to",
                        dest,
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "an in-place destination needs a UTF-8 name",
                        ),
                    )
                })?
                .to_owned()
        } else {
            format!(
                ".{}.b3-restore-{}-{}",
                name.to_string_lossy().chars().take(64).collect::<String>(),
                std::process::id(),
                TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        };
        Ok(Restorer {
            dest: dest.to_path_buf(),
            parent,
            parent_path,
            name: PathBuf::from(name),
            tmp_name,
            dirs: Vec::new(),
            pending: Vec::new(),
            created_root: false,
            canonical: opts.canonical,
            in_place: opts.in_place,
            on_finished: opts.on_finished,
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
        // Only the async restore (never canonical) calls this directly.
        self.dirs.pop();
    }

    /// The current directory is complete: make it canonical and hand it on.
    pub(crate) fn dir_end(&mut self) -> Result<(), Error> {
        let Some(fd) = self.dirs.pop() else {
            return Ok(());
        };
        if self.canonical {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o555))
                .and_then(|()| rustix::fs::futimens(&fd, &canonical_times()))
                .map_err(|e| Error::fs("finishing directory", self.dest.clone(), e.into()))?;
        }
        if let Some(f) = self.on_finished.as_mut() {
            f(File::from(fd));
        }
        Ok(())
    }

    pub(crate) fn symlink(&mut self, target: &[u8]) -> Result<(), Error> {
        let canonical = self.canonical;
        let (dir, name) = self.slot();
        let made = rustix::fs::symlinkat(target, dir, name).and_then(|()| {
            if canonical {
                rustix::fs::utimensat(
                    dir,
                    name,
                    &canonical_times(),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
            } else {
                Ok(())
            }
        });
        made.map_err(|e| Error::fs("creating symlink", self.node_path(), e.into()))
    }

    pub(crate) fn file_start(&mut self, executable: bool) -> Result<File, Error> {
        let canonical = self.canonical;
        let mode = match (canonical, executable) {
            (true, true) => 0o555,
            (true, false) => 0o444,
            (false, _) => 0o666,
        };
        let (dir, name) = self.slot();
        let made = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .and_then(|fd| {
            if canonical {
                // The umask may have taken bits the canonical mode needs.
                if umask().is_none_or(|m| m & mode != 0) {
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
                }
            } else if executable {
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

    /// A file's contents are all written.
    pub(crate) fn file_end(&mut self, f: File) -> Result<(), Error> {
        if self.canonical {
            rustix::fs::futimens(&f, &canonical_times())
                .map_err(|e| Error::fs("finishing file", self.node_path(), e.into()))?;
        }
        if let Some(cb) = self.on_finished.as_mut() {
            cb(f);
        }
        Ok(())
    }

    /// Moves the finished tree into place; never replaces an existing path.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        self.dirs.clear();
        if self.in_place {
            self.created_root = false;
            return Ok(());
        }
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
