//! Advisory file locks (`flock`) for store paths, the GC and temporary roots.
//!
//! A lock is a file in a lock directory held with `flock`, so it is released
//! by the kernel when its holder dies (even by `kill -9`). Lock files may be
//! removed by the garbage collector while unlocked; a waiter that then gets
//! the lock on an unlinked file would hold a lock nobody else can see, so
//! after locking we check that the path still names the same inode and retry
//! otherwise.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Block until the lock at `path` is held in `mode`, creating the file if needed.
    pub fn lock(path: &Path, mode: LockMode) -> io::Result<FileLock> {
        loop {
            let file = open_lock_file(path)?;
            match mode {
                LockMode::Shared => file.lock_shared()?,
                LockMode::Exclusive => file.lock()?,
            }
            if still_linked(&file, path)? {
                return Ok(FileLock {
                    file,
                    path: path.to_path_buf(),
                });
            }
        }
    }

    /// Take the lock if it is free now; `Ok(None)` if someone else holds it.
    pub fn try_lock(path: &Path, mode: LockMode) -> io::Result<Option<FileLock>> {
        loop {
            let file = open_lock_file(path)?;
            let r = match mode {
                LockMode::Shared => file.try_lock_shared(),
                LockMode::Exclusive => file.try_lock(),
            };
            match r {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
            if still_linked(&file, path)? {
                return Ok(Some(FileLock {
                    file,
                    path: path.to_path_buf(),
                }));
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open lock file (e.g. to write temporary roots into it).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Remove the lock file while still holding the lock, so that waiters
    /// notice (by inode) and retry on a fresh file.
    pub fn unlink(self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A lock file kept open and locked in place, for a lock taken often and
/// briefly (`gc.lock` around each temporary root): no open, close or
/// inode check each time. Only for a file nobody unlinks. Taking it needs
/// `&mut`: threads sharing one would share one lock, and the first to
/// unlock would release it under the others. On Windows, whose locks are
/// byte ranges that an unlock of a handle can fail to release cleanly, it
/// opens and locks the file each time, as [`FileLock`] does.
#[derive(Debug)]
pub struct ReusableLock {
    #[cfg(unix)]
    file: File,
    #[cfg(not(unix))]
    path: PathBuf,
}

impl ReusableLock {
    pub fn open(path: &Path) -> io::Result<ReusableLock> {
        Ok(ReusableLock {
            #[cfg(unix)]
            file: open_lock_file(path)?,
            #[cfg(not(unix))]
            path: path.to_path_buf(),
        })
    }

    /// Runs `f` with the lock held in `mode` (waiting for it), then
    /// releases it.
    pub fn with<R>(&mut self, mode: LockMode, f: impl FnOnce() -> R) -> io::Result<R> {
        #[cfg(unix)]
        {
            match mode {
                LockMode::Shared => self.file.lock_shared()?,
                LockMode::Exclusive => self.file.lock()?,
            }
            let r = f();
            self.file.unlock()?;
            Ok(r)
        }
        #[cfg(not(unix))]
        {
            let _held = FileLock::lock(&self.path, mode)?;
            Ok(f())
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn still_linked(file: &File, path: &Path) -> io::Result<bool> {
    match crate::os::same_file(file, path) {
        Ok(same) => Ok(same),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Per-store-path locks: one lock file per path base name in a directory.
#[derive(Debug, Clone)]
pub struct PathLocks {
    dir: PathBuf,
}

impl PathLocks {
    /// Locks kept in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<PathLocks> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(PathLocks { dir })
    }

    fn file_for(&self, base_name: &str) -> PathBuf {
        self.dir.join(format!("{base_name}.lock"))
    }

    /// Block until the exclusive lock for the store path with this base name is held.
    pub fn lock(&self, base_name: &str) -> io::Result<FileLock> {
        FileLock::lock(&self.file_for(base_name), LockMode::Exclusive)
    }

    /// Makes the path's lock file without locking it, so that a later
    /// [`Self::lock`] finds it: creating a file can be slow (a new inode),
    /// and this may run on another thread ahead of time.
    pub fn make_file(&self, base_name: &str) -> io::Result<()> {
        open_lock_file(&self.file_for(base_name)).map(drop)
    }

    /// Take the path's lock if nobody holds it.
    pub fn try_lock(&self, base_name: &str) -> io::Result<Option<FileLock>> {
        FileLock::try_lock(&self.file_for(base_name), LockMode::Exclusive)
    }

    /// Lock several paths in sorted order (a global order prevents deadlock).
    pub fn lock_all<'a>(
        &self,
        base_names: impl IntoIterator<Item = &'a str>,
    ) -> io::Result<Vec<FileLock>> {
        let mut names: Vec<&str> = base_names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(|n| self.lock(n)).collect()
    }

    /// Remove lock files nobody holds (housekeeping after GC).
    pub fn remove_stale(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "lock") {
                if let Some(l) = FileLock::try_lock(&p, LockMode::Exclusive)? {
                    l.unlink()?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_made_lock_file_is_left_unlocked_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let locks = PathLocks::new(d.path()).unwrap();
        locks.make_file("abc-x").unwrap();
        let f = d.path().join("abc-x.lock");
        assert!(f.is_file());
        let held = locks.try_lock("abc-x").unwrap().expect("nobody holds it");
        // Making it again while held changes nothing.
        locks.make_file("abc-x").unwrap();
        assert!(locks.try_lock("abc-x").unwrap().is_none());
        drop(held);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_reusable_lock_is_held_exactly_while_its_closure_runs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("gc.lock");
        let mut l = ReusableLock::open(&p).unwrap();
        for _ in 0..3 {
            let inside = l
                .with(LockMode::Shared, || {
                    let ex = FileLock::try_lock(&p, LockMode::Exclusive).unwrap();
                    let sh = FileLock::try_lock(&p, LockMode::Shared).unwrap();
                    (ex.is_none(), sh.is_some())
                })
                .unwrap();
            assert_eq!(inside, (true, true));
            assert!(FileLock::try_lock(&p, LockMode::Exclusive)
                .unwrap()
                .is_some());
        }
        // Held elsewhere exclusively: `with` waits for it.
        let ex = FileLock::lock(&p, LockMode::Exclusive).unwrap();
        let waited = std::thread::scope(|s| {
            let h = s.spawn(|| l.with(LockMode::Shared, std::time::Instant::now).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(50));
            let released = std::time::Instant::now();
            drop(ex);
            h.join().unwrap() >= released
        });
        assert!(waited);
    }

    #[test]
    fn exclusive_lock_excludes_try_lock() {
        let d = tempfile::tempdir().unwrap();
        let locks = PathLocks::new(d.path()).unwrap();
        let held = locks.lock("abc-x").unwrap();
        assert!(locks.try_lock("abc-x").unwrap().is_none());
        assert!(locks.try_lock("def-y").unwrap().is_some());
        drop(held);
        assert!(locks.try_lock("abc-x").unwrap().is_some());
    }

    #[test]
    fn shared_locks_coexist_but_exclude_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("gc.lock");
        let a = FileLock::lock(&p, LockMode::Shared).unwrap();
        let b = FileLock::try_lock(&p, LockMode::Shared).unwrap();
        assert!(b.is_some());
        assert!(FileLock::try_lock(&p, LockMode::Exclusive)
            .unwrap()
            .is_none());
        drop((a, b));
        assert!(FileLock::try_lock(&p, LockMode::Exclusive)
            .unwrap()
            .is_some());
    }

    #[test]
    fn waiter_retries_after_lock_file_is_unlinked() {
        let d = tempfile::tempdir().unwrap();
        let locks = Arc::new(PathLocks::new(d.path()).unwrap());
        let held = locks.lock("p").unwrap();
        let l2 = Arc::clone(&locks);
        let t = std::thread::spawn(move || {
            let g = l2.lock("p").unwrap();
            // The lock we got must be on the file currently at the path.
            still_linked(g.file(), g.path()).unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        held.unlink().unwrap();
        assert!(t.join().unwrap());
    }

    #[test]
    fn lock_serialises_threads() {
        let d = tempfile::tempdir().unwrap();
        let locks = Arc::new(PathLocks::new(d.path()).unwrap());
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let ts: Vec<_> = (0..4)
            .map(|_| {
                let (locks, inside, max) = (locks.clone(), inside.clone(), max.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let _g = locks.lock("same").unwrap();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn remove_stale_keeps_held_locks() {
        let d = tempfile::tempdir().unwrap();
        let locks = PathLocks::new(d.path()).unwrap();
        let _held = locks.lock("a").unwrap();
        drop(locks.lock("b").unwrap());
        assert_eq!(locks.remove_stale().unwrap(), 1);
        assert!(d.path().join("a.lock").exists());
        assert!(!d.path().join("b.lock").exists());
    }
}
