//! Read-only FUSE views: a chosen set of store paths (a closure) presented
//! at a mount point, straight from the object database. Nothing is unpacked:
//! mounting costs the same whatever the closure's size, names resolve on
//! first lookup and file data is read from blob files on demand.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use b3_vfs::{odb::Odb, view::{mount, ViewOptions}};
//! let odb = Odb::open("/var/lib/b3/odb")?;
//! let guard = mount(&odb, ["b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb"], "/mnt/view", ViewOptions::default())?;
//! // ... /mnt/view/b8zz...-bb/bin/busybox is runnable ...
//! guard.unmount()?;
//! # Ok(()) }
//! ```

mod closure;
mod fs;
mod inodes;
pub mod trace;

pub use closure::ClosureSet;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption};

use crate::odb::Odb;
use trace::Tracer;

/// How a view is mounted.
#[derive(Clone)]
pub struct ViewOptions {
    /// How long the kernel may cache names and attributes (they never change).
    pub ttl: Duration,
    /// FUSE worker threads.
    pub threads: usize,
    /// Let users other than the mounting one see the view (needs root or
    /// `user_allow_other` in /etc/fuse.conf).
    pub allow_other: bool,
    /// Record every open to this tracer.
    pub tracer: Option<Arc<Tracer>>,
    /// Owner reported for every file (default: the mounting process's ids).
    pub owner: Option<(u32, u32)>,
    /// Let the kernel read blob files directly (FUSE passthrough, Linux >=
    /// 6.9, needs CAP_SYS_ADMIN); falls back to served reads when refused.
    pub passthrough: bool,
    /// Let the kernel open files itself (the default): the view declines
    /// the first open (and opendir), so no request is made per open or
    /// close and file pages stay cached for the mount's life; pages not yet
    /// cached are read through the view, never by passthrough. Reopening a
    /// file then costs what it costs on a local filesystem (`vfs_bench`:
    /// warm full reads at about 1.1x the CPU of an unpacked tree, against
    /// 2.4x with passthrough, which asks the view at every open and close),
    /// while a first read is slower than with passthrough. Ignored with a
    /// tracer, which must see every open.
    pub kernel_opens: bool,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            ttl: Duration::from_secs(24 * 3600),
            threads: 4,
            allow_other: false,
            tracer: None,
            owner: None,
            passthrough: true,
            kernel_opens: true,
        }
    }
}

/// Errors of mounting a view.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("not a valid store path base name: {0:?}")]
    BadName(String),
    #[error("mounting a view at {}: {source}", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unmounting the view at {}: {source}", path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something still used the view after the retries: it was detached
    /// (gone from the directory tree) and is served until its last user
    /// closes it.
    #[error(
        "the view at {} was still in use after {:.1} s of retries; detached it lazily \
         (it stays served until its last open file or working directory goes away)",
        path.display(),
        waited.as_secs_f64()
    )]
    Busy { path: PathBuf, waited: Duration },
}

/// Requests the view has served so far (what the kernel did not cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewStats {
    pub lookups: u64,
    pub opens: u64,
    /// `read` requests (none for files opened with kernel passthrough).
    pub reads: u64,
    pub readdirs: u64,
}

/// A mounted view; dropping it unmounts (errors are then ignored, use
/// [`MountGuard::unmount`] to see them).
pub struct MountGuard {
    session: Option<Held>,
    mountpoint: PathBuf,
    tracer: Option<Arc<Tracer>>,
    stats: Arc<fs::Counters>,
}

impl MountGuard {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The tracer given in the options, if any.
    pub fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.tracer.as_ref()
    }

    /// Requests served so far.
    pub fn stats(&self) -> ViewStats {
        use std::sync::atomic::Ordering::Relaxed;
        ViewStats {
            lookups: self.stats.lookups.load(Relaxed),
            opens: self.stats.opens.load(Relaxed),
            reads: self.stats.reads.load(Relaxed),
            readdirs: self.stats.readdirs.load(Relaxed),
        }
    }

    /// Unmounts and waits for the serving threads to finish. While the
    /// mount is busy (a file or directory of it still open, for instance
    /// by a child forked from another thread between its fork and exec),
    /// retries for up to [`UNMOUNT_PATIENCE`], then detaches it lazily and
    /// returns [`MountError::Busy`].
    pub fn unmount(self) -> Result<(), MountError> {
        self.unmount_within(UNMOUNT_PATIENCE)
    }

    /// [`unmount`](Self::unmount) with another time limit for the retries.
    pub fn unmount_within(mut self, patience: Duration) -> Result<(), MountError> {
        self.do_unmount(patience)
    }

    fn do_unmount(&mut self, patience: Duration) -> Result<(), MountError> {
        let path = self.mountpoint.clone();
        match self.session.take() {
            Some(Held::Own(s)) => own::unmount(&path, s, patience),
            Some(Held::Fuser(s)) => s
                .umount_and_join()
                .map_err(|source| MountError::Unmount { path, source }),
            None => Ok(()),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = self.do_unmount(UNMOUNT_PATIENCE);
    }
}

/// Readahead asked of the kernel for pages not yet cached, in bytes.
pub(crate) const READAHEAD: u32 = 1024 * 1024;

/// How long [`MountGuard::unmount`] retries a busy mount before detaching it.
pub const UNMOUNT_PATIENCE: Duration = Duration::from_secs(5);

/// Who mounted the view, and so who unmounts it.
enum Held {
    /// Mounted by [`own::mount`] with mount(2): unmounted by [`own::unmount`].
    Own(BackgroundSession),
    /// Mounted by fuser (its fusermount route, when mount(2) is not
    /// permitted here) and unmounted by it.
    Fuser(BackgroundSession),
}

/// Mounting and unmounting with the system calls directly, so that a busy
/// mount can be retried (fuser unmounts once and gives up its handle when
/// that fails) and nothing else is ever unmounted at the same path.
mod own {
    use super::*;
    use rustix::io::Errno;
    use rustix::mount::{MountFlags, UnmountFlags};
    use std::os::fd::{AsRawFd, OwnedFd};

    /// Mounts a FUSE filesystem at `mountpoint` whose requests arrive on
    /// the returned /dev/fuse descriptor, or `Ok(None)` where mount(2) is
    /// not permitted (the caller then goes through fuser's fusermount).
    pub(super) fn mount(
        mountpoint: &Path,
        allow_other: bool,
    ) -> Result<Option<OwnedFd>, io::Error> {
        use rustix::fs::{Mode, OFlags};
        let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
        let root = rustix::fs::stat(mountpoint)?;
        let mut data = format!(
            "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
            dev.as_raw_fd(),
            root.st_mode & libc::S_IFMT,
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        if allow_other {
            data.push_str(",allow_other");
        }
        let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
        match rustix::mount::mount(
            "b3-vfs",
            mountpoint,
            "fuse.b3-vfs",
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOATIME,
            Some(data.as_c_str()),
        ) {
            Ok(()) => Ok(Some(dev)),
            Err(Errno::PERM) | Err(Errno::ACCESS) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The kernel caps a FUSE mount's readahead at 128 KiB whatever the
    /// server asks at init (it can only lower the default), so pages not yet
    /// cached arrive in 128 KiB reads, each a round trip to the server. As
    /// root, the mount's own readahead setting in sysfs can be raised to
    /// what the view asked: first reads then take fewer, larger requests.
    /// Best effort: where sysfs is not writable (a user namespace), the
    /// default stays.
    pub(super) fn raise_readahead(mountpoint: &Path) {
        use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
        // DONT_SYNC: the device number needs no request to the server.
        let Ok(st) = statx(
            CWD,
            mountpoint,
            AtFlags::STATX_DONT_SYNC,
            StatxFlags::BASIC_STATS,
        ) else {
            return;
        };
        let knob = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            st.stx_dev_major, st.stx_dev_minor
        );
        let _ = std::fs::write(knob, format!("{}", super::READAHEAD / 1024));
    }

    /// Unmounts, retrying while busy; past `patience`, detaches lazily
    /// and lets a thread wait for the server to end.
    pub(super) fn unmount(
        path: &Path,
        session: BackgroundSession,
        patience: Duration,
    ) -> Result<(), MountError> {
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match rustix::mount::unmount(path, UnmountFlags::empty()) {
                // The kernel ended the connection: the server threads see
                // ENODEV and return.
                Ok(()) | Err(Errno::INVAL) => {
                    return session.join().map_err(|source| MountError::Unmount {
                        path: path.to_path_buf(),
                        source,
                    })
                }
                Err(Errno::BUSY) if start.elapsed() < patience => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(Errno::BUSY) => {
                    let detached = rustix::mount::unmount(path, UnmountFlags::DETACH);
                    std::thread::spawn(move || {
                        let _ = session.join();
                    });
                    return match detached {
                        Ok(()) => Err(MountError::Busy {
                            path: path.to_path_buf(),
                            waited: start.elapsed(),
                        }),
                        Err(e) => Err(MountError::Unmount {
                            path: path.to_path_buf(),
                            source: e.into(),
                        }),
                    };
                }
                Err(e) => {
                    return Err(MountError::Unmount {
                        path: path.to_path_buf(),
                        source: e.into(),
                    })
                }
            }
        }
    }
}

/// A set of store path base names, built once and shared by any number of
/// mounts (mounting with it costs the same whatever its size).
pub type Closure = Arc<ClosureSet>;

/// Checks and collects store path base names into a [`Closure`].
pub fn closure<I, S>(names: I) -> Result<Closure, MountError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    ClosureSet::from_names(names).map(Arc::new)
}

/// Mounts a view of the store paths named in `closure` (base names such as
/// `<hash>-name`) at `mountpoint`, served by background threads. Names not
/// in the database simply do not appear. The mount is complete when this
/// returns. Checking and copying the names is the only per-path cost (the
/// index over them is built at the first lookup); use [`mount_closure`] to
/// reuse a [`Closure`].
pub fn mount<I, S>(
    odb: &Odb,
    closure: I,
    mountpoint: impl AsRef<Path>,
    opts: ViewOptions,
) -> Result<MountGuard, MountError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    mount_closure(odb, self::closure(closure)?, mountpoint, opts)
}

/// [`mount`] with a prepared [`Closure`]: constant cost (nothing is read,
/// unpacked or resolved until the first lookup).
pub fn mount_closure(
    odb: &Odb,
    closure: Closure,
    mountpoint: impl AsRef<Path>,
    opts: ViewOptions,
) -> Result<MountGuard, MountError> {
    let mountpoint = mountpoint.as_ref().to_path_buf();
    closure.index_in_background();
    let (uid, gid) = opts.owner.unwrap_or_else(|| {
        (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        )
    });
    let stats = Arc::new(fs::Counters::default());
    let fs = fs::ViewFs {
        odb: odb.clone(),
        closure,
        inodes: inodes::Inodes::new(),
        handles: Mutex::new(HashMap::new()),
        backing: Mutex::new(HashMap::new()),
        passthrough: std::sync::atomic::AtomicBool::new(opts.passthrough),
        next_fh: AtomicU64::new(1),
        kernel_opens: opts.kernel_opens && opts.tracer.is_none(),
        by_inode: Mutex::new(HashMap::new()),
        ttl: opts.ttl,
        uid,
        gid,
        tracer: opts.tracer.clone(),
        stats: stats.clone(),
    };
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("b3-vfs".into()),
        MountOption::Subtype("b3-vfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::Exec,
    ];
    if opts.allow_other {
        cfg.acl = fuser::SessionACL::All;
    }
    cfg.n_threads = Some(opts.threads.max(1));
    cfg.clone_fd = opts.threads > 1;
    let mount_err = |source| MountError::Mount {
        path: mountpoint.clone(),
        source,
    };
    let session = match own::mount(&mountpoint, opts.allow_other).map_err(mount_err)? {
        Some(dev) => {
            // The kernel queued FUSE_INIT at mount; from_fd answers it.
            let started = fuser::Session::from_fd(fs, dev, cfg.acl, cfg.clone())
                .and_then(fuser::Session::spawn);
            match started {
                Ok(s) => {
                    own::raise_readahead(&mountpoint);
                    Held::Own(s)
                }
                Err(e) => {
                    let _ =
                        rustix::mount::unmount(&mountpoint, rustix::mount::UnmountFlags::DETACH);
                    return Err(mount_err(e));
                }
            }
        }
        None => Held::Fuser(fuser::spawn_mount(fs, &mountpoint, &cfg).map_err(mount_err)?),
    };
    Ok(MountGuard {
        session: Some(session),
        mountpoint,
        tracer: opts.tracer,
        stats,
    })
}
