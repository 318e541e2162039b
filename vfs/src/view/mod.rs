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

mod fs;
mod inodes;
pub mod trace;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption};

use crate::odb::{valid_root_name, Odb};
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
    session: Option<BackgroundSession>,
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

    /// Unmounts and waits for the serving thread to finish.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.do_unmount()
    }

    fn do_unmount(&mut self) -> Result<(), MountError> {
        match self.session.take() {
            Some(s) => s.umount_and_join().map_err(|source| MountError::Unmount {
                path: self.mountpoint.clone(),
                source,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = self.do_unmount();
    }
}

/// A set of store path base names, built once and shared by any number of
/// mounts (mounting with it costs the same whatever its size).
pub type Closure = Arc<HashSet<String>>;

/// Checks and collects store path base names into a [`Closure`].
pub fn closure<I, S>(names: I) -> Result<Closure, MountError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut set = HashSet::new();
    for n in names {
        let n = n.into();
        if !valid_root_name(&n) {
            return Err(MountError::BadName(n));
        }
        set.insert(n);
    }
    Ok(Arc::new(set))
}

/// Mounts a view of the store paths named in `closure` (base names such as
/// `<hash>-name`) at `mountpoint`, served by background threads. Names not
/// in the database simply do not appear. The mount is complete when this
/// returns. Building the name set is the only per-path cost; use
/// [`mount_closure`] to reuse one.
pub fn mount<I, S>(
    odb: &Odb,
    closure: I,
    mountpoint: impl AsRef<Path>,
    opts: ViewOptions,
) -> Result<MountGuard, MountError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
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
    let session =
        fuser::spawn_mount(fs, &mountpoint, &cfg).map_err(|source| MountError::Mount {
            path: mountpoint.clone(),
            source,
        })?;
    Ok(MountGuard {
        session: Some(session),
        mountpoint,
        tracer: opts.tracer,
        stats,
    })
}
