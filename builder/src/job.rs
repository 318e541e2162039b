//! One build, from a derivation's parts to output paths on the host:
//! computes the Nix builder environment ([`crate::env`]), lays out a private
//! work directory (sandbox root mount point, `/build`, the writable store
//! directory), writes the passAsFile / structured-attrs files, runs the
//! sandbox and reports which outputs the builder produced and where they are.
//!
//! Independent of the store crate: store paths are plain strings. The work
//! directory is removed when the [`BuildResult`] (or the job, on error) is
//! dropped, so callers move the outputs out first (same file system: put the
//! work directory next to the store, see [`BuildJob::work_parent`]), or
//! handed back to a [`WorkDirStock`] for a later build (emptied first, see
//! [`crate::recycle`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::env::{apply_env_bytes, builder_env, EnvError, EnvOptions};
use crate::platform::{Cancel, OsError};
use crate::sandbox::{self, RunOutcome, SandboxError, SandboxPath, SandboxSpec};

/// Default name prefix of work directories.
pub const DEFAULT_WORK_PREFIX: &str = ".b3-build-";

/// What `B3_SANDBOX_OVERLAY` says: from how many inputs a build's store is
/// an overlay rather than a bind of its outputs' directory (`None`: never,
/// the default; unset or `0`). The bind layout makes one mount point per
/// input on the store's file system, which a recycled work directory keeps
/// for the next build (see `crate::recycle`), and binds each input onto
/// it: 6 µs a bind, against 15 µs onto an overlay, which also costs 0.25 ms
/// to mount and a fixed set of inodes (its `work` directory and feature
/// checks). Measured on chains of 50, the bind layout's set-up took 1.4 ms
/// a build where the overlay's took 1.6 to 2.2.
pub fn overlay_from_env() -> Option<usize> {
    std::env::var("B3_SANDBOX_OVERLAY")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
}

/// Everything needed to run one derivation's builder.
#[derive(Debug, Clone)]
pub struct BuildJob {
    /// A name for the work directory and messages (the derivation's name).
    pub name: String,
    pub builder: String,
    pub args: Vec<String>,
    /// The derivation's `env`.
    pub drv_env: BTreeMap<String, String>,
    /// The derivation's non-UTF-8 environment entries (`env_bytes`).
    pub drv_env_bytes: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Output name → store path (logical, e.g. `/nix/store/…-hello`).
    pub outputs: BTreeMap<String, String>,
    /// Store paths (logical) of the input closure.
    pub inputs: Vec<String>,
    pub logical_store_dir: String,
    pub physical_store_dir: PathBuf,
    /// Directory in which the work directory is created. For outputs to be
    /// renamed into the store it must be on the store's file system.
    pub work_parent: PathBuf,
    /// Name prefix of the work directory, normally [`DEFAULT_WORK_PREFIX`].
    pub work_prefix: String,
    pub fixed_output: bool,
    pub extra_paths: Vec<SandboxPath>,
    pub cores: u32,
    pub timeout: Option<Duration>,
    /// Nix's `max-silent-time`.
    pub max_silent: Option<Duration>,
    /// Bind `/dev/kvm` when the host has it.
    pub kvm: bool,
    /// Where fixed-output builds take their `impureEnvVars` from; `None`
    /// reads this process's environment.
    pub impure_env: Option<BTreeMap<String, String>>,
    /// Kill the build when this is cancelled (another build failed).
    pub cancel: Option<Cancel>,
    /// Show the store as an overlay (Linux), when the kernel allows it, to
    /// builds with at least this many inputs; `None` (normally, see
    /// [`overlay_from_env`]) always uses the bind-mount layout.
    pub overlay: Option<usize>,
    /// Pre-made sandboxes to take this build's from, when one fits.
    pub pool: Option<crate::sandbox::SandboxPool>,
    /// Work directories made ahead of time to take this build's from
    /// (made here when there is none).
    pub work_dirs: Option<WorkDirStock>,
}

/// A finished build.
#[derive(Debug)]
pub struct BuildResult {
    pub outcome: RunOutcome,
    /// Output name → host path of what the builder wrote, for the outputs
    /// that exist. Valid until this result is dropped.
    pub outputs: BTreeMap<String, PathBuf>,
    /// Output names the builder did not produce.
    pub missing_outputs: Vec<String>,
    pub work_dir: WorkDir,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Env(#[from] EnvError),
    #[error("{0}")]
    Sandbox(#[from] SandboxError),
    #[error("store path '{path}' is not in store directory '{store_dir}'")]
    NotInStore { path: String, store_dir: String },
    #[error("preparing the build directory: {0}")]
    WorkDir(#[source] OsError),
}

/// A private directory holding one build's scratch state; removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    kept: bool,
    /// An earlier build ran here (see [`WorkDirStock::recycle`]).
    reused: bool,
    /// The mount points `store/` holds, kept from the last build here (see
    /// [`SandboxSpec::made_points`]).
    points: BTreeMap<String, sandbox::MadePoint>,
    /// The inputs of the last build here whose points were made in
    /// `store/`: the only names the recycler may keep there.
    point_names: Vec<String>,
}

impl WorkDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Whether an earlier build of the realisation ran in this directory
    /// (emptied since, see [`WorkDirStock::recycle`]).
    pub fn reused(&self) -> bool {
        self.reused
    }
    /// The sandbox root's mount point (made by a sandbox that needs one:
    /// a pre-made sandbox has its own).
    pub fn root(&self) -> PathBuf {
        self.path.join("root")
    }
    /// Bound at `/build`.
    pub fn build(&self) -> PathBuf {
        self.path.join("build")
    }
    /// Shown at the logical store directory; outputs appear here.
    pub fn store(&self) -> PathBuf {
        self.path.join("store")
    }
    /// The sandbox's scratch directory (see [`SandboxSpec::scratch_dir`]),
    /// made for a build that uses it (or ahead of time, with the rest of
    /// the directory, by a [`WorkDirStock`]).
    pub fn scratch(&self) -> PathBuf {
        self.path.join("scratch")
    }

    /// Removes the mount points kept in `store/`.
    fn drop_points(&mut self) -> Result<(), OsError> {
        for (name, made) in std::mem::take(&mut self.points) {
            let p = self.store().join(&name);
            let r = match made {
                sandbox::MadePoint::Dir => std::fs::remove_dir(&p),
                sandbox::MadePoint::File => std::fs::remove_file(&p),
            };
            match r {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(OsError::from_io(format!("removing {}", p.display()), &e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(crate) fn create(parent: &Path, prefix: &str, name: &str) -> Result<WorkDir, OsError> {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+-._".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        loop {
            let path = parent.join(format!(
                "{prefix}{safe}-{}-{}",
                std::process::id(),
                next_n()
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    let wd = WorkDir {
                        path,
                        kept: false,
                        reused: false,
                        points: BTreeMap::new(),
                        point_names: Vec::new(),
                    };
                    for d in [wd.build(), wd.store()] {
                        std::fs::create_dir(&d).map_err(|e| {
                            OsError::from_io(format!("creating {}", d.display()), &e)
                        })?;
                    }
                    return Ok(wd);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(OsError::from_io(format!("creating {}", path.display()), &e)),
            }
        }
    }
}

/// A number no other work directory name of this process has.
fn next_n() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Where a realisation leaves emptied work directories for the next one,
/// under their parent (see [`WorkDirStock::keeping_spares`]).
pub const SPARE_DIR: &str = ".b3-spare-work";

/// How many emptied work directories a realisation leaves, and how many
/// [`SPARE_DIR`] holds at most.
const SPARES: usize = 2;

impl WorkDir {
    /// Moves this emptied directory (its points removed) into `spares`
    /// for a later realisation, unless that holds [`SPARES`] already.
    /// On failure it is still here (and removed on drop).
    fn park(&mut self, spares: &Path) -> std::io::Result<()> {
        self.drop_points()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        match std::fs::create_dir(spares) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        if std::fs::read_dir(spares)?.count() >= SPARES {
            return Err(std::io::ErrorKind::StorageFull.into());
        }
        let to = spares.join(format!("{}-{}", std::process::id(), next_n()));
        std::fs::rename(&self.path, &to)?;
        self.kept = true;
        Ok(())
    }
}

impl WorkDir {
    /// Keeps the directory (Nix's `--keep-failed`): moves it to `dest`
    /// (same file system) and no longer removes it. Returns where it is.
    pub fn keep(mut self, dest: &Path) -> std::io::Result<PathBuf> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&self.path, dest)?;
        self.kept = true;
        Ok(dest.to_path_buf())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.kept {
            let _ = remove_tree(&self.path);
        }
    }
}

/// Work directories made ahead of time, so that a build's start does not
/// wait for their three new inodes (on the store's file system, a good part
/// of a millisecond each, and more under load), and those of finished
/// builds, emptied for the next ones ([`WorkDirStock::recycle`]): making
/// and removing directories costs CPU the builds need. Cheap to clone;
/// whoever fills it (a chore thread) and the builds that take from it share
/// one stock. Directories left when the last clone goes are removed.
#[derive(Clone, Debug)]
pub struct WorkDirStock {
    inner: std::sync::Arc<StockInner>,
}

#[derive(Debug)]
struct StockInner {
    parent: PathBuf,
    prefix: String,
    /// Leave emptied directories for the next realisation (see
    /// [`WorkDirStock::keeping_spares`]).
    spares: bool,
    shelf: std::sync::Mutex<Shelf>,
}

#[derive(Debug, Default)]
struct Shelf {
    ready: Vec<WorkDir>,
    /// Finished builds' directories being emptied, to be ready soon.
    cleaning: usize,
    /// How many builds may still take a directory at once (see
    /// [`WorkDirStock::set_demand`]).
    demand: usize,
    /// Directories handed out again.
    reused: u64,
    /// Directories left (or being left) for the next realisation.
    parked: usize,
}

impl WorkDirStock {
    /// An empty stock of directories `parent/<prefix>…` (see
    /// [`BuildJob::work_parent`] and [`BuildJob::work_prefix`]).
    pub fn new(parent: &Path, prefix: &str) -> WorkDirStock {
        WorkDirStock::with(parent, prefix, false)
    }

    fn with(parent: &Path, prefix: &str, spares: bool) -> WorkDirStock {
        WorkDirStock {
            inner: std::sync::Arc::new(StockInner {
                parent: parent.to_path_buf(),
                prefix: prefix.to_string(),
                spares,
                shelf: std::sync::Mutex::new(Shelf::default()),
            }),
        }
    }

    /// A stock that starts with the emptied directories an earlier
    /// realisation left in `parent`'s [`SPARE_DIR`] (as many as `want`,
    /// each taken by renaming it, so that concurrent realisations never
    /// share one), and that leaves up to two there when it no longer needs
    /// them ([`Self::recycle`], [`Self::put_away`]): a realisation then
    /// makes no directory for its first builds and removes none at its end
    /// (new inodes and freed ones, which on some file systems cost a good
    /// part of a millisecond each, and a discard).
    pub fn keeping_spares(parent: &Path, prefix: &str, want: usize) -> WorkDirStock {
        let stock = WorkDirStock::with(parent, prefix, true);
        let Ok(entries) = std::fs::read_dir(parent.join(SPARE_DIR)) else {
            return stock;
        };
        let mut taken = Vec::new();
        for e in entries.flatten().take(want) {
            let to = parent.join(format!("{prefix}spare-{}-{}", std::process::id(), next_n()));
            // Another realisation may have taken it first.
            if std::fs::rename(e.path(), &to).is_ok() {
                taken.push(WorkDir {
                    path: to,
                    kept: false,
                    reused: true,
                    points: BTreeMap::new(),
                    point_names: Vec::new(),
                });
            }
        }
        stock.shelf().ready = taken;
        stock
    }

    /// Disposes of an emptied directory no build will take: leaves it for
    /// the next realisation if this stock keeps spares and has left fewer
    /// than two, else has `trash` remove it.
    pub fn put_away(&self, dir: WorkDir, trash: &Trash) {
        if !self.claim_spare() {
            trash.put(dir);
            return;
        }
        let spares = self.inner.parent.join(SPARE_DIR);
        trash.later(move || {
            let mut dir = dir;
            // Not left: removed (on drop).
            let _ = dir.park(&spares);
        });
    }

    /// Whether one more directory may be left for the next realisation
    /// (counted as left if so).
    fn claim_spare(&self) -> bool {
        let mut s = self.shelf();
        let ok = self.inner.spares && s.parked < SPARES;
        s.parked += usize::from(ok);
        ok
    }

    fn shelf(&self) -> std::sync::MutexGuard<'_, Shelf> {
        self.inner.shelf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether fewer than `want` directories are ready or being emptied:
    /// whether [`Self::top_up`] has anything to do.
    pub fn short_of(&self, want: usize) -> bool {
        let s = self.shelf();
        s.ready.len() + s.cleaning < want
    }

    /// Makes directories until `want` are ready or being emptied (none if
    /// that many are); a failure leaves the rest to the builds, which make
    /// their own. Each comes with its (empty) scratch directory, which
    /// builds whose store is an overlay use and the others leave alone.
    pub fn top_up(&self, want: usize) {
        loop {
            {
                let s = self.shelf();
                if s.ready.len() + s.cleaning >= want {
                    return;
                }
            }
            let made = WorkDir::create(&self.inner.parent, &self.inner.prefix, "build")
                .ok()
                .filter(|w| std::fs::create_dir(w.scratch()).is_ok());
            match made {
                Some(w) => self.shelf().ready.push(w),
                None => return,
            }
        }
    }

    /// Says how many builds may still want a directory at once: finished
    /// builds' directories are kept for them (up to two more than that
    /// ready or being emptied: the stock also holds those made ahead for
    /// the builds after the next, and a directory removed now may have to
    /// be made again a moment later), the others removed. Zero at the end
    /// of a realisation.
    pub fn set_demand(&self, builds: usize) {
        self.shelf().demand = builds;
    }

    /// A ready directory, if there is one; the last one handed back first.
    pub fn take(&self) -> Option<WorkDir> {
        let mut s = self.shelf();
        let w = s.ready.pop()?;
        s.reused += u64::from(w.reused);
        Some(w)
    }

    /// Hands a finished build's directory back (its outputs moved out):
    /// `trash` empties it for a later build, or removes it when the stock
    /// holds enough (see [`Self::set_demand`]) or it cannot be emptied.
    /// Never for a directory kept for the user (`--keep-failed`).
    pub fn recycle(&self, dir: WorkDir, trash: &Trash) {
        let keep = {
            let mut s = self.shelf();
            let here = dir.path.parent() == Some(self.inner.parent.as_path());
            let wanted = s.demand > 0 && s.ready.len() + s.cleaning <= s.demand + 1;
            // At a realisation's end, emptied to be left for the next.
            let spare = s.demand == 0 && self.inner.spares && s.parked + s.cleaning < SPARES;
            let keep = here && (wanted || spare);
            s.cleaning += usize::from(keep);
            keep
        };
        if !keep {
            trash.put(dir);
            return;
        }
        let stock = self.clone();
        trash.later(move || {
            let mut dir = dir;
            // The last build's mounts of it (an overlay using its store and
            // scratch directories as layers) must be gone first: they go
            // with its sandbox's namespaces, released after the build.
            crate::sandbox::wait_released();
            let clean = match crate::recycle::clean(dir.path(), &dir.point_names) {
                Ok(points) => {
                    dir.points = points;
                    dir.point_names.clear();
                    true
                }
                Err(_) => false,
            };
            let mut s = stock.shelf();
            s.cleaning -= 1;
            if clean && s.demand > 0 {
                dir.reused = true;
                s.ready.push(dir);
            } else {
                drop(s);
                if clean && stock.claim_spare() {
                    // Not left: removed (on drop), as any other.
                    let _ = dir.park(&stock.inner.parent.join(SPARE_DIR));
                }
            }
        });
    }

    /// How many directories were handed out again (see [`Self::recycle`]).
    pub fn reused(&self) -> u64 {
        self.shelf().reused
    }

    /// The directories nobody took (for removal elsewhere).
    pub fn drain(&self) -> Vec<WorkDir> {
        std::mem::take(&mut self.shelf().ready)
    }
}

/// Work that may follow a build's end rather than delay the builds that
/// wait for it.
type Chore = Box<dyn FnOnce() + Send>;

/// Removes work directories (and does other chores, such as writing build
/// logs) on a thread of its own, so that a finished build's clean-up is not
/// on the way of the builds waiting for it; [`Trash::finish`] (or dropping
/// it) waits for all of it. A crash before the removal leaves directories
/// the store's sweep of `.b3-tmp-<pid>-…` entries deletes later.
pub struct Trash {
    tx: std::sync::Mutex<Option<std::sync::mpsc::Sender<Chore>>>,
    workers: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Threads doing a [`Trash`]'s chores. Removing a directory mostly waits
/// (on a file system mounted with `discard`, for the freed block's discard:
/// 1 to 8 ms per directory measured here), so several threads keep up with
/// a realisation's builds where one fell behind and made the realisation
/// wait for its backlog at the end.
const TRASH_WORKERS: usize = 4;

impl std::fmt::Debug for Trash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trash")
    }
}

impl Default for Trash {
    fn default() -> Self {
        Trash::new()
    }
}

impl Trash {
    pub fn new() -> Trash {
        let (tx, rx) = std::sync::mpsc::channel::<Chore>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let workers: Vec<_> = (0..TRASH_WORKERS)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("b3-trash-{i}"))
                    .spawn(move || {
                        // A chore's results are wanted later, if at all:
                        // the builds waiting for the CPU come first. (The
                        // only lock a chore takes is the stock's, for a
                        // moment; a build that waits for it sleeps and so
                        // leaves the CPU to it.)
                        b3_store::os::yield_to_foreground(b3_store::os::Background::Idle);
                        loop {
                            // The lock is held only while taking a chore.
                            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match next {
                                Ok(chore) => chore(),
                                Err(_) => break,
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        Trash {
            tx: std::sync::Mutex::new((!workers.is_empty()).then_some(tx)),
            workers: std::sync::Mutex::new(workers),
        }
    }

    /// Removes `dir` in the background (at once if there is no worker).
    pub fn put(&self, dir: WorkDir) {
        self.later(move || drop(dir));
    }

    /// Runs `chore` in the background (at once if there is no worker).
    pub fn later(&self, chore: impl FnOnce() + Send + 'static) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(tx) => {
                if let Err(back) = tx.send(Box::new(chore)) {
                    (back.0)();
                }
            }
            None => chore(),
        }
    }

    /// Waits until everything put here is removed.
    pub fn finish(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for Trash {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `rm -rf` that also copes with directories the builder made read-only.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        make_owner_writable(path, &meta)?;
        for entry in std::fs::read_dir(path)? {
            remove_tree(&entry?.path())?;
        }
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    }
}

#[cfg(unix)]
pub(crate) fn make_owner_writable(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o700 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn make_owner_writable(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    let mut perms = meta.permissions();
    if perms.readonly() {
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(path, perms)?;
    }
    Ok(())
}

/// `/nix/store/abc-x` → `abc-x`.
fn base_name<'a>(store_dir: &str, path: &'a str) -> Result<&'a str, JobError> {
    path.strip_prefix(store_dir)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|b| !b.is_empty() && !b.contains('/'))
        .ok_or_else(|| JobError::NotInStore {
            path: path.to_string(),
            store_dir: store_dir.to_string(),
        })
}

impl BuildJob {
    /// Runs the build, streaming its log to `log`. A builder that fails is
    /// reported in [`BuildResult::outcome`], not as an error.
    pub fn run(&self, log: &mut dyn Write) -> Result<BuildResult, JobError> {
        let lookup = |k: &str| match &self.impure_env {
            Some(m) => m.get(k).cloned(),
            None => std::env::var(k).ok(),
        };
        let mut env = builder_env(
            &self.drv_env,
            &self.outputs,
            &EnvOptions {
                store_dir: &self.logical_store_dir,
                cores: self.cores,
                fixed_output: self.fixed_output,
                impure_lookup: &lookup,
            },
        )?;
        apply_env_bytes(&mut env, &self.drv_env, &self.drv_env_bytes);
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for p in &self.inputs {
            inputs.push(base_name(&self.logical_store_dir, p)?.to_string());
        }
        let mut output_names = BTreeMap::new();
        for (name, p) in &self.outputs {
            let base = base_name(&self.logical_store_dir, p)?;
            if inputs.iter().any(|i| i == base) {
                return Err(JobError::Sandbox(SandboxError::InvalidSpec(format!(
                    "output '{p}' is also an input"
                ))));
            }
            output_names.insert(name.clone(), base.to_string());
        }

        let mut work = match self.work_dirs.as_ref().and_then(WorkDirStock::take) {
            Some(w) => w,
            None => WorkDir::create(&self.work_parent, &self.work_prefix, &self.name)
                .map_err(JobError::WorkDir)?,
        };
        let overlay = self.overlay.is_some_and(|from| inputs.len() >= from);
        if overlay {
            // A directory from the stock has its (empty) scratch already.
            let d = work.scratch();
            match std::fs::create_dir(&d) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(JobError::WorkDir(OsError::from_io(
                        format!("creating {}", d.display()),
                        &e,
                    )))
                }
                _ => {}
            }
        }
        for (file, data) in &env.files {
            let p = work.build().join(file);
            std::fs::write(&p, data).map_err(|e| {
                JobError::WorkDir(OsError::from_io(format!("writing {}", p.display()), &e))
            })?;
        }

        // The points the last build here left serve this one in the bind
        // layout; an overlay's upper layer must hold none.
        let made_points = if overlay {
            work.drop_points()?;
            BTreeMap::new()
        } else {
            std::mem::take(&mut work.points)
        };
        let point_names = if overlay { Vec::new() } else { inputs.clone() };
        let spec = SandboxSpec {
            builder: self.builder.clone(),
            args: self.args.clone(),
            env: env.vars.into_iter().collect(),
            env_bytes: env.bytes_vars,
            logical_store_dir: self.logical_store_dir.clone(),
            physical_store_dir: self.physical_store_dir.clone(),
            inputs,
            store_dir_host: work.store(),
            build_dir: work.build(),
            root_dir: work.root(),
            scratch_dir: overlay.then(|| work.scratch()),
            made_points,
            network: self.fixed_output,
            extra_paths: self.extra_paths.clone(),
            kvm: self.kvm,
            timeout: self.timeout,
            max_silent: self.max_silent,
            cancel: self.cancel.clone(),
            pool: self.pool.clone(),
        };
        let outcome = sandbox::run(&spec, log)?;
        work.point_names = point_names;

        let mut outputs = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, base) in output_names {
            let host = work.store().join(&base);
            match std::fs::symlink_metadata(&host) {
                Ok(_) => {
                    outputs.insert(name, host);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(name),
                Err(e) => {
                    return Err(JobError::WorkDir(OsError::from_io(
                        format!("inspecting output {}", host.display()),
                        &e,
                    )))
                }
            }
        }
        Ok(BuildResult {
            outcome,
            outputs,
            missing_outputs: missing,
            work_dir: work,
        })
    }
}

impl From<OsError> for JobError {
    fn from(e: OsError) -> JobError {
        JobError::WorkDir(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[cfg(target_os = "linux")]
    #[test]
    fn chores_run_only_on_cpus_the_builds_leave_idle() {
        let trash = Trash::new();
        let (tx, rx) = std::sync::mpsc::channel();
        trash.later(move || {
            // SAFETY: sched_getscheduler only reads.
            let _ = tx.send(unsafe { libc::sched_getscheduler(0) });
        });
        let policy = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        trash.finish();
        assert_eq!(policy, libc::SCHED_IDLE);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }

    #[test]
    fn a_work_dir_stock_hands_out_fresh_dirs_and_removes_the_rest() {
        let parent = tempfile::tempdir().unwrap();
        let stock = WorkDirStock::new(parent.path(), ".b3-test-");
        assert!(stock.take().is_none());
        assert!(stock.short_of(1));
        stock.top_up(3);
        assert!(!stock.short_of(3) && stock.short_of(4));
        stock.top_up(2);
        let a = stock.take().unwrap();
        let b = stock.take().unwrap();
        assert_ne!(a.path(), b.path());
        for w in [&a, &b] {
            assert!(w.build().is_dir() && w.store().is_dir() && w.scratch().is_dir());
            for d in [w.build(), w.store(), w.scratch()] {
                assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
            }
        }
        let c = stock.take().unwrap();
        assert!(stock.take().is_none());
        stock.top_up(1);
        drop(stock);
        // The one left in the stock went with it; taken ones stay theirs.
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 3);
        drop((a, b, c));
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    // Work directories are recycled on Unix only (see `recycle::clean`).
    #[cfg(unix)]
    #[test]
    fn a_recycled_dir_comes_back_empty_while_builds_want_one_and_is_removed_after() {
        let parent = tempfile::tempdir().unwrap();
        let stock = WorkDirStock::new(parent.path(), ".b3-test-");
        let trash = Trash::new();
        stock.set_demand(1);
        stock.top_up(1);
        let a = stock.take().unwrap();
        assert!(!a.reused());
        let a_path = a.path().to_path_buf();
        std::fs::write(a.build().join("left"), "x").unwrap();
        std::fs::create_dir(a.store().join("out")).unwrap();
        stock.recycle(a, &trash);
        // Being emptied (on a chore thread) counts as ready.
        stock.top_up(1);
        trash.finish();
        let b = stock.take().expect("the emptied directory");
        assert!(stock.take().is_none());
        assert_eq!(b.path(), a_path);
        assert!(b.reused());
        assert_eq!(stock.reused(), 1);
        for d in [b.build(), b.store(), b.scratch()] {
            assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
        }
        // No build wants one: handed back, it is removed (at once, now
        // that the trash is finished).
        stock.set_demand(0);
        stock.recycle(b, &trash);
        assert!(stock.take().is_none());
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_stock_keeping_spares_leaves_two_emptied_dirs_and_the_next_stock_takes_them() {
        let parent = tempfile::tempdir().unwrap();
        let spares = parent.path().join(SPARE_DIR);
        let trash = Trash::new();
        let stock = WorkDirStock::keeping_spares(parent.path(), ".b3-test-", 2);
        assert!(stock.take().is_none(), "none left before");
        stock.set_demand(1);
        stock.top_up(3);
        let a = stock.take().unwrap();
        std::fs::write(a.build().join("left"), "x").unwrap();
        std::fs::write(a.store().join("out"), "x").unwrap();
        // The realisation ends: the finished build's directory is emptied
        // and left, so is one of those nobody took; the third is removed.
        stock.set_demand(0);
        stock.recycle(a, &trash);
        for w in stock.drain() {
            stock.put_away(w, &trash);
        }
        trash.finish();
        assert_eq!(std::fs::read_dir(&spares).unwrap().count(), 2);
        assert_eq!(
            std::fs::read_dir(parent.path()).unwrap().count(),
            1,
            "only the spares' directory is left"
        );
        let next = WorkDirStock::keeping_spares(parent.path(), ".b3-test-", 3);
        let b = next.take().unwrap();
        let c = next.take().unwrap();
        assert!(next.take().is_none());
        assert_ne!(b.path(), c.path());
        for w in [&b, &c] {
            assert!(w.reused());
            assert!(w.path().starts_with(parent.path()));
            for d in [w.build(), w.store()] {
                assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "{d:?}");
            }
        }
        assert_eq!(std::fs::read_dir(&spares).unwrap().count(), 0);
        // A stock that keeps none takes none and leaves none.
        drop((b, c));
        let plain = WorkDirStock::new(parent.path(), ".b3-test-");
        plain.top_up(1);
        let d = plain.take().unwrap();
        let trash = Trash::new();
        plain.put_away(d, &trash);
        trash.finish();
        assert_eq!(std::fs::read_dir(&spares).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_dir_that_cannot_be_emptied_is_removed_not_recycled() {
        let parent = tempfile::tempdir().unwrap();
        let stock = WorkDirStock::new(parent.path(), ".b3-test-");
        let trash = Trash::new();
        stock.set_demand(2);
        let w = WorkDir::create(parent.path(), ".b3-test-", "t").unwrap();
        std::fs::write(w.path().join("unexpected"), "").unwrap();
        stock.recycle(w, &trash);
        // One from another directory is not taken in either.
        let other = tempfile::tempdir().unwrap();
        let o = WorkDir::create(other.path(), ".b3-test-", "o").unwrap();
        stock.recycle(o, &trash);
        trash.finish();
        assert!(stock.take().is_none());
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
    }

    #[test]
    fn finishing_the_trash_waits_for_every_chore_and_removes_every_dir() {
        let parent = tempfile::tempdir().unwrap();
        let trash = Trash::new();
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..40 {
            let w = WorkDir::create(parent.path(), ".b3-test-", &format!("t{i}")).unwrap();
            std::fs::write(w.build().join("f"), "x").unwrap();
            trash.put(w);
            let done = done.clone();
            trash.later(move || {
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        trash.finish();
        assert_eq!(done.load(Ordering::SeqCst), 40);
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
        // After finishing, chores run at once.
        let d = done.clone();
        trash.later(move || {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 41);
    }
}
