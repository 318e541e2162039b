//! The local store: an embedded, daemon-less, Nix-compatible store whose
//! physical root can be anywhere.
//!
//! Layout under the physical root `R` (logical store directory `/nix/store`
//! by default, so paths and hashes stay Nix's):
//! - `R/nix/store/<hash>-<name>`: the paths; `.b3-tmp-<pid>-<n>` entries
//!   are adds in progress (siblings of the final paths, so that moving them
//!   into place is a same-directory rename), `.b3-trash` holds paths being
//!   deleted.
//! - `R/nix/var/b3/db.sqlite`: metadata ([`db`]); `locks/`: per-path locks;
//!   `gc.lock`; `gcroots/` (and `gcroots/auto/` for indirect roots);
//!   `temproots/<pid>`.
//!
//! An add locks the path, unpacks into a temporary directory inside the
//! store (canonical as it is written), verifies, flushes exactly the files
//! and directories it wrote ([`durable`]), renames into place, flushes the
//! store directory and registers last. A process killed at any point leaves no valid partial path; its
//! temporary-roots file stays behind unlocked, and the next process to open
//! the store notices it and sweeps the leftovers.
//!
//! The core operations are synchronous (`*_sync`); the async traits run them
//! on blocking threads.

pub mod adopt;
pub mod batch;
pub mod db;
pub mod durable;
mod gc;
pub mod ingest;
pub mod roots;
mod runtime_roots;
mod traits_impl;
mod verify;

pub use gc::{GcOptions, GcReport};
pub use verify::{RepairSource, VerifyOptions, VerifyReport};

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(unix))]
use crate::canonicalise::canonicalise_tree;
use crate::canonicalise::remove_tree;
use crate::hash::{Hash, HashAlgo};
use crate::lock::{FileLock, LockMode, PathLocks, ReusableLock};
use crate::path::{ContentAddress, ContentAddressMethod, FileIngestionMethod, StoreDir, StorePath};
use crate::traits::{StoreError, ValidPathInfo};

use db::{Db, DbError, PathRow};
use durable::SyncGroup;
use roots::TempRoots;

const TMP_PREFIX: &str = ".b3-tmp-";
const TRASH: &str = ".b3-trash";

/// Where a local store lives.
#[derive(Debug, Clone)]
pub struct LocalStoreConfig {
    /// Physical root: the store is at `root/<store_dir>`, state at `root/nix/var/b3`.
    pub root: PathBuf,
    /// Logical store directory (what paths are computed against and printed as).
    pub store_dir: StoreDir,
    /// Flush each added path's files and directories to disk (`fsync`,
    /// see [`durable`]) before registering it.
    pub fsync: bool,
    /// With `fsync`: flush the whole filesystem (`syncfs`) per add instead
    /// of the add's own files. One device flush instead of one per file:
    /// cheaper for many tiny adds on a disk nothing else writes to, far
    /// dearer on a busy one. `B3_FSYNC=syncfs`.
    pub sync_whole_fs: bool,
}

impl LocalStoreConfig {
    /// A store rooted at `root` with the default logical directory `/nix/store`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStoreConfig {
            root: root.into(),
            store_dir: StoreDir::default(),
            fsync: true,
            sync_whole_fs: false,
        }
    }

    /// The default physical root: `$XDG_DATA_HOME/b3` (or the platform's data
    /// directory), falling back to `$HOME/.local/share/b3`.
    pub fn default_root() -> Option<PathBuf> {
        dirs::data_dir().map(|d| d.join("b3"))
    }

    /// `explicit` if given, else `$B3_STORE`, else [`Self::default_root`].
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Self, StoreError> {
        let root = explicit
            .or_else(|| std::env::var_os("B3_STORE").map(PathBuf::from))
            .or_else(Self::default_root)
            .ok_or_else(|| {
                StoreError::Other(
                    "no store root: set --store or B3_STORE (no data directory found)".into(),
                )
            })?;
        let mut cfg = Self::new(root);
        // `B3_FSYNC=0` skips flushing added paths (faster, not crash-durable
        // against power loss; a killed process is still safe).
        cfg.fsync = std::env::var_os("B3_FSYNC").is_none_or(|v| v != "0");
        cfg.sync_whole_fs = std::env::var_os("B3_FSYNC").is_some_and(|v| v == "syncfs");
        Ok(cfg)
    }
}

/// The local store. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store_dir: StoreDir,
    root: PathBuf,
    real_store: PathBuf,
    state: PathBuf,
    db: Mutex<Db>,
    /// Opened by the first [`LocalStore::checkpoint_wal`].
    checkpointer: Mutex<Option<db::Checkpointer>>,
    locks: PathLocks,
    temp_roots: Mutex<Option<TempRoots>>,
    /// `gc.lock`, kept open for [`LocalStore::add_temp_roots`], with the
    /// pid of the process that opened it.
    gc_shared: Mutex<Option<(u32, ReusableLock)>>,
    fsync: bool,
    sync_whole_fs: bool,
    /// Whether unregistered entries of the store directory may be deleted
    /// (not when the physical store is shared with a Nix installation).
    sweep_unregistered: bool,
    tmp_counter: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut t) = self.temp_roots.lock() {
            if let Some(t) = t.take() {
                let _ = t.remove();
            }
        }
    }
}

pub(crate) fn db_err(e: DbError) -> StoreError {
    match e {
        DbError::MissingReference { path, reference } => {
            StoreError::MissingReference { path, reference }
        }
        e => StoreError::Db(e.to_string()),
    }
}

fn io_ctx(ctx: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let ctx = ctx.into();
    move |e| StoreError::io(ctx, e)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A temporary directory inside the store, removed on drop.
pub(crate) struct TmpDir {
    path: PathBuf,
}

impl TmpDir {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

impl LocalStore {
    /// Open (creating if needed) the store described by `cfg`. Leftovers of
    /// crashed processes are swept before returning.
    pub fn open(cfg: LocalStoreConfig) -> Result<LocalStore, StoreError> {
        let rel = cfg.store_dir.as_str().trim_start_matches('/');
        let real_store = cfg.root.join(rel);
        let state = cfg.root.join("nix/var/b3");
        for d in [
            real_store.clone(),
            state.clone(),
            state.join("gcroots/auto"),
            state.join("temproots"),
        ] {
            std::fs::create_dir_all(&d).map_err(io_ctx(format!("creating {}", d.display())))?;
        }
        spread_new_paths(&real_store);
        let db = Db::open(&state.join("db.sqlite"), cfg.store_dir.as_str()).map_err(db_err)?;
        let locks =
            PathLocks::new(state.join("locks")).map_err(io_ctx("creating the lock directory"))?;
        let temp_roots = TempRoots::create(&state.join("temproots"))
            .map_err(io_ctx("creating the temporary-roots file"))?;
        let sweep_unregistered = !cfg.root.join("nix/var/nix/db").exists();
        let store = LocalStore {
            inner: Arc::new(Inner {
                store_dir: cfg.store_dir,
                root: cfg.root,
                real_store,
                state,
                db: Mutex::new(db),
                checkpointer: Mutex::new(None),
                locks,
                temp_roots: Mutex::new(Some(temp_roots)),
                gc_shared: Mutex::new(None),
                fsync: cfg.fsync,
                sync_whole_fs: cfg.sync_whole_fs,
                sweep_unregistered,
                tmp_counter: AtomicU64::new(0),
            }),
        };
        store.sweep_after_crashes(false)?;
        Ok(store)
    }

    /// The logical store directory.
    pub fn store_dir(&self) -> &StoreDir {
        &self.inner.store_dir
    }

    /// The physical root given at open.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The physical directory holding the store paths.
    pub fn real_store_dir(&self) -> &Path {
        &self.inner.real_store
    }

    /// The state directory (database, locks, roots).
    pub fn state_dir(&self) -> &Path {
        &self.inner.state
    }

    /// Where `path` lives on disk.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        self.inner.real_store.join(path.base_name())
    }

    /// `path` printed in the logical store directory.
    pub fn print_path(&self, path: &StorePath) -> String {
        self.inner.store_dir.display(path)
    }

    /// Parse a path given by a user: a logical store path (or a path inside
    /// one), a physical one, or a symlink (such as `result`) leading to one.
    pub fn resolve_user_path(&self, s: &str) -> Result<StorePath, StoreError> {
        if let Ok((p, _)) = self.inner.store_dir.parse_path_within(s) {
            return Ok(p);
        }
        let try_physical = |p: &Path| -> Option<StorePath> {
            let rest = p.strip_prefix(&self.inner.real_store).ok()?;
            let first = rest.components().next()?;
            StorePath::from_base_name(first.as_os_str().to_str()?).ok()
        };
        let p = Path::new(s);
        if let Some(sp) = try_physical(p) {
            return Ok(sp);
        }
        // Follow one link at a time: the last hop may name a logical path
        // that does not exist on this disk.
        let mut cur = p.to_path_buf();
        for _ in 0..40 {
            match std::fs::read_link(&cur) {
                Ok(t) => {
                    let t = if t.is_absolute() {
                        t
                    } else {
                        cur.parent().unwrap_or(Path::new("/")).join(t)
                    };
                    if let Some(ts) = t.to_str() {
                        if let Ok((sp, _)) = self.inner.store_dir.parse_path_within(ts) {
                            return Ok(sp);
                        }
                    }
                    if let Some(sp) = try_physical(&t) {
                        return Ok(sp);
                    }
                    cur = t;
                }
                Err(_) => break,
            }
        }
        if let Ok(c) = std::fs::canonicalize(p) {
            if let Some(sp) = try_physical(&c) {
                return Ok(sp);
            }
        }
        Err(StoreError::Other(format!("'{s}' is not in the store")))
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        // A panic while holding the lock leaves SQLite consistent (its own
        // transactions roll back), so a poisoned mutex is still usable.
        self.inner.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the database's write-ahead log into the database file on a
    /// connection of its own (see [`db::Checkpointer`]), for a thread that
    /// registers many paths while nothing waits for it: the WAL stays
    /// short, and so does the sync the store's last close does. Returns
    /// how many frames the WAL held and how many of them are copied.
    pub fn checkpoint_wal(&self) -> Result<(i32, i32), StoreError> {
        let mut c = self
            .inner
            .checkpointer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if c.is_none() {
            let file = self.inner.state.join("db.sqlite");
            *c = Some(db::Checkpointer::open(&file).map_err(db_err)?);
        }
        match c.as_mut() {
            Some(c) => c.run().map_err(db_err),
            None => Ok((0, 0)),
        }
    }

    pub(crate) fn gc_lock_path(&self) -> PathBuf {
        self.inner.state.join("gc.lock")
    }

    pub(crate) fn gcroots_dir(&self) -> PathBuf {
        self.inner.state.join("gcroots")
    }

    pub(crate) fn temproots_dir(&self) -> PathBuf {
        self.inner.state.join("temproots")
    }

    pub(crate) fn locks(&self) -> &PathLocks {
        &self.inner.locks
    }

    /// Keep `paths` alive against the garbage collector for as long as this
    /// process runs (whether or not they are valid yet).
    pub fn add_temp_roots<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a StorePath>,
    ) -> Result<(), StoreError> {
        let names: Vec<String> = paths.into_iter().map(|p| p.base_name()).collect();
        if names.is_empty() {
            return Ok(());
        }
        let temp_roots = || {
            self.inner
                .temp_roots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        // A root once written stays for the process's life.
        if temp_roots()
            .as_ref()
            .is_none_or(|tr| tr.has_all(names.iter().map(String::as_str)))
        {
            return Ok(());
        }
        // Shared gc.lock: not while a collector is marking. Kept open, and
        // taken by one thread at a time (see ReusableLock); a forked child
        // opens its own, since a shared description would share the lock.
        let mut gc = self
            .inner
            .gc_shared
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let gc = match &mut *gc {
            Some((owner, lock)) if *owner == pid => lock,
            slot => {
                let lock =
                    ReusableLock::open(&self.gc_lock_path()).map_err(io_ctx("opening gc.lock"))?;
                &mut slot.insert((pid, lock)).1
            }
        };
        gc.with(LockMode::Shared, || match temp_roots().as_mut() {
            Some(tr) => tr.append(names.iter().map(|s| s.as_str())),
            None => Ok(()),
        })
        .map_err(io_ctx("locking gc.lock"))?
        .map_err(io_ctx("writing temporary roots"))
    }

    /// A fresh name directly inside the store directory for a node being
    /// added (not created; removed on drop if still there).
    ///
    /// It must be a sibling of the final path: moving a directory to another
    /// parent needs write permission on the directory itself (its `..`
    /// changes), which a canonical 0555 tree no longer grants to a non-root
    /// owner. A rename within one directory needs no such permission.
    pub(crate) fn new_tmp_node(&self) -> Result<TmpDir, StoreError> {
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self
            .inner
            .real_store
            .join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        // A leftover of an earlier process with our pid.
        remove_tree(&path).map_err(io_ctx(format!("removing {}", path.display())))?;
        Ok(TmpDir { path })
    }

    /// Move `p` out of the way (into the trash) and delete it.
    pub(crate) fn delete_physical(&self, p: &Path) -> Result<(), StoreError> {
        let trash = self.inner.real_store.join(TRASH);
        std::fs::create_dir_all(&trash).map_err(io_ctx("creating the trash directory"))?;
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let name = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = trash.join(format!("{name}-{}-{n}", std::process::id()));
        open_for_move(p);
        match std::fs::rename(p, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(StoreError::io(
                    format!("moving {} to trash", p.display()),
                    e,
                ))
            }
        }
        remove_tree(&dest).map_err(io_ctx(format!("deleting {}", dest.display())))?;
        // Only succeeds when empty: another deleter may still be using it.
        let _ = std::fs::remove_dir(&trash);
        Ok(())
    }

    /// Flush every file and directory of the tree at `p` (one written
    /// without a [`SyncGroup`] at hand).
    fn sync_tree(&self, p: &Path) -> Result<(), StoreError> {
        if !self.inner.fsync {
            return Ok(());
        }
        if self.inner.sync_whole_fs {
            return self.sync_filesystem(p);
        }
        let g = SyncGroup::new();
        let submitted = g.submit_tree(p);
        let flushed = g.wait();
        submitted
            .and(flushed)
            .map_err(io_ctx(format!("flushing {}", p.display())))
    }

    /// A group for the files of one add, if the store flushes adds.
    fn sync_group(&self) -> Option<std::sync::Arc<SyncGroup>> {
        (self.inner.fsync && !self.inner.sync_whole_fs).then(SyncGroup::new)
    }

    /// `syncfs` on the filesystem holding `p` (see
    /// [`LocalStoreConfig::sync_whole_fs`]).
    fn sync_filesystem(&self, p: &Path) -> Result<(), StoreError> {
        let f = crate::os::open_node(p)
            .or_else(|_| crate::os::open_node(&self.inner.real_store))
            .map_err(io_ctx(format!("opening {}", p.display())))?;
        crate::os::sync_filesystem(&f).map_err(|e| StoreError::io("syncfs", e))
    }

    /// Make a restored tree canonical and durable: wait for the flushes
    /// started while it was written.
    fn finish_restored(&self, r: &Restored) -> Result<(), StoreError> {
        #[cfg(not(unix))]
        {
            canonicalise_tree(&r.node).map_err(|e| StoreError::Other(e.to_string()))?;
            self.sync_tree(&r.node)?;
        }
        if let Some(g) = &r.sync {
            g.wait()
                .map_err(io_ctx(format!("flushing {}", r.node.display())))?;
        } else if cfg!(unix) && self.inner.fsync && self.inner.sync_whole_fs {
            self.sync_filesystem(&r.node)?;
        }
        Ok(())
    }

    fn sync_store_dir(&self) -> Result<(), StoreError> {
        if !self.inner.fsync {
            return Ok(());
        }
        let f = crate::os::open_node(&self.inner.real_store)
            .map_err(io_ctx("opening the store dir"))?;
        crate::os::sync_dir(&f).map_err(io_ctx("syncing the store dir"))
    }

    /// Move a finished, canonical tree at `tmp_node` to `path` and register it.
    /// The caller holds the path lock and has checked it is not valid.
    fn commit(&self, tmp_node: &Path, info: &ValidPathInfo) -> Result<(), StoreError> {
        let dest = self.real_path(&info.path);
        if std::fs::symlink_metadata(&dest).is_ok() {
            // Unregistered leftover (a crash after rename, before registering).
            self.delete_physical(&dest)?;
        }
        crash_point("before-rename");
        std::fs::rename(tmp_node, &dest)
            .map_err(io_ctx(format!("moving into place {}", dest.display())))?;
        self.sync_store_dir()?;
        crash_point("before-register");
        let row = self.row_of(info);
        let refs = info.references.iter().map(|r| self.print_path(r)).collect();
        match self.db().register(&[(row, refs)]) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.delete_physical(&dest);
                Err(db_err(e))
            }
        }
    }

    fn row_of(&self, info: &ValidPathInfo) -> PathRow {
        PathRow {
            path: self.print_path(&info.path),
            nar_hash: info.nar_hash.to_string(),
            nar_size: info.nar_size,
            registration_time: info.registration_time.unwrap_or_else(now_secs),
            deriver: info.deriver.as_ref().map(|d| self.print_path(d)),
            ultimate: info.ultimate,
            sigs: info.signatures.clone(),
            ca: info.ca.map(|c| c.to_string()),
        }
    }

    fn info_of(&self, row: PathRow, refs: BTreeSet<String>) -> Result<ValidPathInfo, StoreError> {
        let sd = &self.inner.store_dir;
        let bad =
            |what: &str, v: &str| StoreError::Db(format!("corrupt {what} '{v}' for {}", row.path));
        Ok(ValidPathInfo {
            path: sd.parse(&row.path)?,
            nar_hash: Hash::parse_prefixed(&row.nar_hash)
                .map_err(|_| bad("narHash", &row.nar_hash))?,
            nar_size: row.nar_size,
            references: refs.iter().map(|r| sd.parse(r)).collect::<Result<_, _>>()?,
            deriver: row.deriver.as_deref().map(|d| sd.parse(d)).transpose()?,
            signatures: row.sigs.clone(),
            ca: row
                .ca
                .as_deref()
                .map(|c| ContentAddress::parse(c).map_err(|_| bad("ca", c)))
                .transpose()?,
            registration_time: Some(row.registration_time),
            ultimate: row.ultimate,
        })
    }

    fn check_references_valid(&self, info: &ValidPathInfo) -> Result<(), StoreError> {
        let db = self.db();
        for r in &info.references {
            if r != &info.path && !db.is_valid(&self.print_path(r)).map_err(db_err)? {
                return Err(StoreError::MissingReference {
                    path: self.print_path(&info.path),
                    reference: self.print_path(r),
                });
            }
        }
        Ok(())
    }

    // ---- reading -------------------------------------------------------

    /// Whether `path` is valid.
    pub fn is_valid_sync(&self, path: &StorePath) -> Result<bool, StoreError> {
        self.db().is_valid(&self.print_path(path)).map_err(db_err)
    }

    /// The metadata of `path`, if valid.
    pub fn query_path_info_sync(
        &self,
        path: &StorePath,
    ) -> Result<Option<ValidPathInfo>, StoreError> {
        let q = self.db().query(&self.print_path(path)).map_err(db_err)?;
        q.map(|(row, refs)| self.info_of(row, refs)).transpose()
    }

    /// Paths referring to `path` (not itself).
    pub fn query_referrers_sync(
        &self,
        path: &StorePath,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let rs = self
            .db()
            .referrers(&self.print_path(path))
            .map_err(db_err)?;
        rs.iter()
            .map(|r| Ok(self.inner.store_dir.parse(r)?))
            .collect()
    }

    /// Every valid path.
    pub fn all_valid_paths(&self) -> Result<BTreeSet<StorePath>, StoreError> {
        let all = self.db().all_paths().map_err(db_err)?;
        all.iter()
            .map(|r| Ok(self.inner.store_dir.parse(r)?))
            .collect()
    }

    /// The closure of `paths` (requisites, the paths included).
    pub fn query_closure_sync(
        &self,
        paths: &BTreeSet<StorePath>,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let roots: Vec<String> = paths.iter().map(|p| self.print_path(p)).collect();
        let found = self
            .db()
            .closure(&roots)
            .map_err(db_err)?
            .map_err(StoreError::InvalidPath)?;
        found
            .iter()
            .map(|p| Ok(self.inner.store_dir.parse(p)?))
            .collect()
    }

    /// The recorded outputs of a derivation (name → path).
    pub fn query_derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<Vec<(String, StorePath)>, StoreError> {
        let outs = self
            .db()
            .derivation_outputs(&self.print_path(drv))
            .map_err(db_err)?;
        outs.into_iter()
            .map(|(n, p)| Ok((n, self.inner.store_dir.parse(&p)?)))
            .collect()
    }

    /// Record a derivation's outputs (the builder calls this after a build).
    pub fn register_derivation_outputs(
        &self,
        drv: &StorePath,
        outputs: &[(String, StorePath)],
    ) -> Result<(), StoreError> {
        let outs: Vec<(String, String)> = outputs
            .iter()
            .map(|(n, p)| (n.clone(), self.print_path(p)))
            .collect();
        self.db()
            .add_derivation_outputs(&self.print_path(drv), &outs)
            .map_err(db_err)
    }

    /// Add signatures to a valid path.
    pub fn add_signatures(
        &self,
        path: &StorePath,
        sigs: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        self.db()
            .add_signatures(&self.print_path(path), sigs)
            .map_err(db_err)
    }

    /// Write the NAR of a valid `path` to `w`; returns its size.
    pub fn nar_from_path_sync<W: Write>(&self, path: &StorePath, w: W) -> Result<u64, StoreError> {
        if !self.is_valid_sync(path)? {
            return Err(StoreError::InvalidPath(self.print_path(path)));
        }
        let (_, n) = b3_nar::dump_path(&self.real_path(path), w)?;
        Ok(n)
    }

    // ---- writing -------------------------------------------------------

    /// Add `info.path` from a NAR stream, verifying hash and size while
    /// streaming. Already-valid paths are accepted without reading `nar`.
    pub fn add_nar_sync<R: Read>(&self, info: &ValidPathInfo, nar: R) -> Result<(), StoreError> {
        self.add_nar_inner(info.clone(), nar, true).map(|_| ())
    }

    /// Like [`Self::add_nar_sync`] when the NAR size is not known in advance:
    /// only the hash is checked, and `info.nar_size` is filled in.
    pub fn add_nar_unsized_sync<R: Read>(
        &self,
        info: &mut ValidPathInfo,
        nar: R,
    ) -> Result<(), StoreError> {
        *info = self.add_nar_inner(info.clone(), nar, false)?;
        Ok(())
    }

    fn add_nar_inner<R: Read>(
        &self,
        mut info: ValidPathInfo,
        nar: R,
        sized: bool,
    ) -> Result<ValidPathInfo, StoreError> {
        self.add_temp_roots(std::iter::once(&info.path).chain(info.references.iter()))?;
        if let Some(known) = self.query_path_info_sync(&info.path)? {
            return Ok(known);
        }
        self.check_nar_info(&info)?;
        self.check_references_valid(&info)?;
        let _lock = self
            .inner
            .locks
            .lock(&info.path.base_name())
            .map_err(io_ctx("locking the path"))?;
        if let Some(known) = self.query_path_info_sync(&info.path)? {
            return Ok(known);
        }
        let path_s = self.print_path(&info.path);
        let max = sized.then_some(info.nar_size);
        let r = self.restore_nar(nar, max, &path_s)?;
        self.check_restored(&info, &r.node, &r.hash, r.size, sized, &path_s)?;
        info.nar_size = r.size;
        self.finish_restored(&r)?;
        self.commit(&r.node, &info)?;
        Ok(info)
    }

    /// Restore a NAR into a fresh temporary directory, hashing it. With
    /// `max`, reading stops one byte past it, so an overlong stream is
    /// reported as a size mismatch without being read to its end.
    fn restore_nar<R: Read>(
        &self,
        nar: R,
        max: Option<u64>,
        path_s: &str,
    ) -> Result<Restored, StoreError> {
        let (opts, sync) = self.restore_options();
        let (tmp, hash, size) = self.restore_nar_with(nar, max, path_s, opts)?;
        Ok(Restored {
            node: tmp.path().to_path_buf(),
            _tmp: tmp,
            hash,
            size,
            sync,
        })
    }

    /// [`Self::restore_nar`] with the caller's restore options (how each
    /// finished file is flushed): the temporary node, the NAR hash and size.
    pub(crate) fn restore_nar_with<R: Read>(
        &self,
        nar: R,
        max: Option<u64>,
        path_s: &str,
        opts: b3_nar::RestoreOptions,
    ) -> Result<(TmpDir, Hash, u64), StoreError> {
        let tmp = self.new_tmp_node()?;
        let limited = nar.take(max.map_or(u64::MAX, |m| m.saturating_add(1)));
        let mut hr = b3_nar::HashingReader::new(PooledBufReader::new(limited));
        let restored = b3_nar::restore_with(&mut hr, tmp.path(), opts);
        // Without an announced size, the stream must end with the archive.
        let trailing = max.is_none() && restored.is_ok() && {
            let mut one = [0u8; 1];
            matches!(hr.read(&mut one), Ok(n) if n > 0)
        };
        let (_, got) = hr.finish_nar();
        if trailing {
            return Err(StoreError::Other(format!(
                "NAR for '{path_s}' is followed by trailing data"
            )));
        }
        if let Err(e) = restored {
            if let Some(m) = max {
                if got.size > m {
                    return Err(StoreError::NarSizeMismatch {
                        path: path_s.to_string(),
                        expected: m,
                        got: got.size,
                    });
                }
            }
            return Err(e.into());
        }
        let hash = Hash::from_bytes(HashAlgo::Sha256, &got.sha256)
            .map_err(|e| StoreError::Other(e.to_string()))?;
        Ok((tmp, hash, got.size))
    }

    /// What every NAR add checks before reading the NAR: a sha256 NAR hash,
    /// and a content address that gives the path.
    pub(crate) fn check_nar_info(&self, info: &ValidPathInfo) -> Result<(), StoreError> {
        if info.nar_hash.algo() != HashAlgo::Sha256 {
            return Err(StoreError::Other(format!(
                "NAR hash of '{}' must be sha256, not {}",
                self.print_path(&info.path),
                info.nar_hash.algo()
            )));
        }
        if let Some(ca) = &info.ca {
            if !info.ca_matches_path(&self.inner.store_dir) {
                return Err(StoreError::CaMismatch {
                    path: self.print_path(&info.path),
                    ca: ca.to_string(),
                });
            }
        }
        Ok(())
    }

    /// What every NAR add checks of the restored tree at `node`: the size
    /// (when `sized`), the NAR hash and the content address.
    pub(crate) fn check_restored(
        &self,
        info: &ValidPathInfo,
        node: &Path,
        hash: &Hash,
        size: u64,
        sized: bool,
        path_s: &str,
    ) -> Result<(), StoreError> {
        if sized && size != info.nar_size {
            return Err(StoreError::NarSizeMismatch {
                path: path_s.to_string(),
                expected: info.nar_size,
                got: size,
            });
        }
        if *hash != info.nar_hash {
            return Err(StoreError::NarHashMismatch {
                path: path_s.to_string(),
                expected: info.nar_hash.to_string(),
                got: hash.to_string(),
            });
        }
        if let Some(ca) = &info.ca {
            self.check_ca_contents(node, ca, hash, path_s)?;
        }
        Ok(())
    }

    /// How a NAR is restored into a temporary node: canonical as written,
    /// straight at the node's name (it is private already), each finished
    /// file and directory handed to the returned group to be flushed.
    fn restore_options(&self) -> (b3_nar::RestoreOptions, Option<std::sync::Arc<SyncGroup>>) {
        let sync = if cfg!(unix) { self.sync_group() } else { None };
        let on_finished = sync
            .clone()
            .map(|g| Box::new(move |f: File| g.submit(f)) as Box<dyn FnMut(File) + Send>);
        let opts = b3_nar::RestoreOptions {
            canonical: true,
            in_place: true,
            on_finished,
            direct_io_min: None,
        };
        (opts, sync)
    }

    /// Restore a NAR that is embedded in a larger stream (reading exactly
    /// its bytes, so what follows it stays in `nar`) into a temporary node,
    /// hashing it. The add completes with [`Self::commit_pending_sync`] once
    /// the caller knows the path's metadata (Nix's export format sends it
    /// after the NAR); dropping the result removes the node.
    pub fn restore_pending_sync<R: Read>(&self, nar: R) -> Result<PendingNar, StoreError> {
        let tmp = self.new_tmp_node()?;
        let node = tmp.path().to_path_buf();
        let mut hr = b3_nar::HashingReader::new(nar);
        let (opts, sync) = self.restore_options();
        b3_nar::restore_with(&mut hr, &node, opts)?;
        let (_, got) = hr.finish_nar();
        let hash = Hash::from_bytes(HashAlgo::Sha256, &got.sha256)
            .map_err(|e| StoreError::Other(e.to_string()))?;
        Ok(PendingNar(Restored {
            _tmp: tmp,
            node,
            hash,
            size: got.size,
            sync,
        }))
    }

    /// Register a restored NAR as `info.path`. The NAR's hash and size
    /// become `info`'s (a hash given in `info` must match), references
    /// must be valid, and a path that is valid already is left as it is.
    pub fn commit_pending_sync(
        &self,
        pending: PendingNar,
        mut info: ValidPathInfo,
    ) -> Result<(), StoreError> {
        let r = pending.0;
        self.add_temp_roots(std::iter::once(&info.path).chain(info.references.iter()))?;
        let path_s = self.print_path(&info.path);
        if info.nar_hash.algo() == HashAlgo::Sha256 && info.nar_hash != r.hash {
            return Err(StoreError::NarHashMismatch {
                path: path_s,
                expected: info.nar_hash.to_string(),
                got: r.hash.to_string(),
            });
        }
        info.nar_hash = r.hash;
        info.nar_size = r.size;
        if let Some(ca) = &info.ca {
            if !info.ca_matches_path(&self.inner.store_dir) {
                return Err(StoreError::CaMismatch {
                    path: path_s,
                    ca: ca.to_string(),
                });
            }
            self.check_ca_contents(&r.node, ca, &r.hash, &path_s)?;
        }
        if self.is_valid_sync(&info.path)? {
            return Ok(());
        }
        self.check_references_valid(&info)?;
        self.finish_restored(&r)?;
        let _lock = self
            .inner
            .locks
            .lock(&info.path.base_name())
            .map_err(io_ctx("locking the path"))?;
        if self.is_valid_sync(&info.path)? {
            return Ok(());
        }
        self.commit(&r.node, &info)
    }

    /// Import a NAR as a content-addressed path named `name` (the path
    /// `nix-store --add` would give its contents).
    pub fn import_nar_ca_sync<R: Read>(&self, name: &str, nar: R) -> Result<StorePath, StoreError> {
        crate::path::check_name(name)?;
        let r = self.restore_nar(nar, None, name)?;
        let path = self.inner.store_dir.make_fixed_output_path(
            FileIngestionMethod::Recursive,
            &r.hash,
            name,
            &BTreeSet::new(),
            false,
        )?;
        self.add_temp_roots([&path])?;
        if self.is_valid_sync(&path)? {
            return Ok(path);
        }
        self.finish_restored(&r)?;
        let _lock = self
            .inner
            .locks
            .lock(&path.base_name())
            .map_err(io_ctx("locking the path"))?;
        if self.is_valid_sync(&path)? {
            return Ok(path);
        }
        let mut info = ValidPathInfo::new(path.clone(), r.hash, r.size);
        info.ca = Some(ContentAddress {
            method: ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
            hash: r.hash,
        });
        self.commit(&r.node, &info)?;
        Ok(path)
    }

    /// Check that restored contents match their content address.
    fn check_ca_contents(
        &self,
        node: &Path,
        ca: &ContentAddress,
        nar_hash: &Hash,
        path_s: &str,
    ) -> Result<(), StoreError> {
        let got = match ca.method {
            ContentAddressMethod::Fixed(FileIngestionMethod::Recursive) => {
                if ca.hash.algo() == HashAlgo::Sha256 {
                    *nar_hash
                } else {
                    let mut h = crate::hash::Hasher::new(ca.hash.algo());
                    b3_nar::dump_path(node, &mut h)?;
                    h.finish()
                }
            }
            ContentAddressMethod::Fixed(FileIngestionMethod::Flat) | ContentAddressMethod::Text => {
                let mut f = File::open(node).map_err(io_ctx(format!("reading {path_s}")))?;
                let mut h = crate::hash::Hasher::new(ca.hash.algo());
                io::copy(&mut f, &mut h).map_err(io_ctx(format!("reading {path_s}")))?;
                h.finish()
            }
        };
        if got != ca.hash {
            return Err(StoreError::CaMismatch {
                path: path_s.to_string(),
                ca: ca.to_string(),
            });
        }
        Ok(())
    }

    /// Add a text file (`builtins.toFile`).
    pub fn add_text_sync(
        &self,
        name: &str,
        text: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError> {
        let hash = Hash::digest(HashAlgo::Sha256, text);
        let path = self
            .inner
            .store_dir
            .make_text_path(name, &hash, references)?;
        let (nar, nar_hash) = ingest::text_nar(text)?;
        let mut info = ValidPathInfo::new(path.clone(), nar_hash, nar.len() as u64);
        info.references = references.clone();
        info.ca = Some(ContentAddress {
            method: ContentAddressMethod::Text,
            hash,
        });
        self.add_nar_sync(&info, &nar[..])?;
        Ok(path)
    }

    /// Add a filesystem path as a source (`nix-store --add` / `--add-fixed`).
    pub fn add_path_sync(
        &self,
        name: &str,
        source: &Path,
        method: FileIngestionMethod,
        algo: HashAlgo,
    ) -> Result<StorePath, StoreError> {
        crate::path::check_name(name)?;
        let tmp = self.new_tmp_node()?;
        let node = tmp.path().to_path_buf();
        let sync = self.sync_group();
        let ing = ingest::ingest_durable(source, &node, method, algo, sync.clone())
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let path = self.inner.store_dir.make_fixed_output_path(
            method,
            &ing.ca_hash,
            name,
            &BTreeSet::new(),
            false,
        )?;
        self.add_temp_roots([&path])?;
        if self.is_valid_sync(&path)? {
            return Ok(path);
        }
        // `ingest` produced a canonical tree already, and submitted each
        // file and directory to `sync` as it finished them.
        match &sync {
            Some(g) => g
                .wait()
                .map_err(io_ctx(format!("flushing {}", node.display())))?,
            None => self.sync_tree(&node)?,
        }
        crash_point("after-flush");
        let _lock = self
            .inner
            .locks
            .lock(&path.base_name())
            .map_err(io_ctx("locking the path"))?;
        if self.is_valid_sync(&path)? {
            return Ok(path);
        }
        let mut info = ValidPathInfo::new(path.clone(), ing.nar_hash, ing.nar_size);
        info.ca = Some(ContentAddress {
            method: ContentAddressMethod::Fixed(method),
            hash: ing.ca_hash,
        });
        self.commit(&node, &info)?;
        Ok(path)
    }

    // ---- roots -----------------------------------------------------------

    /// Make `path` a permanent GC root named `name` (`gcroots/<name>`).
    pub fn add_root(&self, name: &str, path: &StorePath) -> Result<PathBuf, StoreError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') || name == "auto" {
            return Err(StoreError::Other(format!("invalid root name '{name}'")));
        }
        let link = self.gcroots_dir().join(name);
        replace_symlink(Path::new(&self.print_path(path)), &link)?;
        Ok(link)
    }

    /// Register `link` (a symlink the user owns, e.g. `./result`) as an
    /// indirect root: its target stays alive while the link exists.
    pub fn add_indirect_root(&self, link: &Path) -> Result<(), StoreError> {
        let abs = if link.is_absolute() {
            link.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(io_ctx("current directory"))?
                .join(link)
        };
        let auto = self
            .gcroots_dir()
            .join("auto")
            .join(roots::auto_root_name(&abs));
        replace_symlink(&abs, &auto)
    }

    /// Create (or replace) a `result`-style symlink at `link` pointing at the
    /// physical location of `path`, and make it an indirect root.
    pub fn create_result_link(&self, link: &Path, path: &StorePath) -> Result<(), StoreError> {
        self.add_temp_roots([path])?;
        if !self.is_valid_sync(path)? {
            return Err(StoreError::InvalidPath(self.print_path(path)));
        }
        replace_symlink(&self.real_path(path), link)?;
        self.add_indirect_root(link)
    }

    /// Sweep leftovers of processes that died: their temporary directories,
    /// unregistered paths nobody is adding, and the trash. With `always`,
    /// sweep even if no dead process was noticed (used by verify and GC).
    pub(crate) fn sweep_after_crashes(&self, always: bool) -> Result<SweepReport, StoreError> {
        let scan = roots::scan_temp_roots(&self.temproots_dir())
            .map_err(io_ctx("reading temporary roots"))?;
        let mut report = SweepReport::default();
        if scan.dead.is_empty() && !always {
            return Ok(report);
        }
        let dead_pids: BTreeSet<u32> = scan.dead.iter().map(|(p, _)| *p).collect();
        let own = std::process::id();
        let entries = std::fs::read_dir(&self.inner.real_store)
            .map_err(io_ctx("listing the store directory"))?;
        for e in entries {
            let e = e.map_err(io_ctx("listing the store directory"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            // `.b3-tmp-<pid>-<n>`, or the restorer's own temporary sibling
            // of one (`..b3-tmp-<pid>-<n>.b3-restore-…`).
            let tmp_rest = name
                .strip_prefix(TMP_PREFIX)
                .or_else(|| name.strip_prefix('.')?.strip_prefix(TMP_PREFIX));
            if let Some(rest) = tmp_rest {
                let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                // Only a process known to be gone: the scan above is a
                // snapshot, and a process that opened the store since has a
                // file it did not list, and may have temporary directories
                // by now. A process with a locked file is alive, whatever
                // other files of its pid say (one it is opening right now is
                // unlocked for a moment). One whose file this sweep holds
                // cannot finish opening before the sweep is done.
                let dead = match pid {
                    Some(p) => {
                        p != own
                            && !scan.live_pids.contains(&p)
                            && (dead_pids.contains(&p) || !crate::os::process_exists(p))
                    }
                    None => true,
                };
                if dead {
                    remove_tree(&e.path()).map_err(io_ctx(format!("removing {name}")))?;
                    report.temp_dirs += 1;
                }
            } else if name == TRASH {
                if let Some(_gc) = FileLock::try_lock(&self.gc_lock_path(), LockMode::Exclusive)
                    .map_err(io_ctx("locking gc.lock"))?
                {
                    let _ = remove_tree(&e.path());
                }
            } else if self.inner.sweep_unregistered && !name.starts_with('.') {
                let logical = format!("{}/{name}", self.inner.store_dir);
                if self.db().is_valid(&logical).map_err(db_err)? {
                    continue;
                }
                // Someone holding the path lock may be about to register it.
                if let Some(_l) = self
                    .inner
                    .locks
                    .try_lock(&name)
                    .map_err(io_ctx("locking a path"))?
                {
                    if !self.db().is_valid(&logical).map_err(db_err)? {
                        self.delete_physical(&e.path())?;
                        report.unregistered.push(name);
                    }
                }
            }
        }
        for (_, lock) in scan.dead {
            let _ = lock.unlink();
        }
        Ok(report)
    }
}

/// A NAR unpacked into a temporary directory (removed on drop).
/// A NAR restored into the store but not registered yet (see
/// [`LocalStore::restore_pending_sync`]).
pub struct PendingNar(Restored);

impl PendingNar {
    /// SHA-256 of the restored NAR.
    pub fn nar_hash(&self) -> Hash {
        self.0.hash
    }

    pub fn nar_size(&self) -> u64 {
        self.0.size
    }
}

struct Restored {
    _tmp: TmpDir,
    node: PathBuf,
    hash: Hash,
    size: u64,
    /// Flushes of the restored files still in flight.
    sync: Option<std::sync::Arc<SyncGroup>>,
}

/// A buffered reader whose buffer is kept per thread between uses: a store
/// adding thousands of small NARs would otherwise allocate and fault in a
/// fresh buffer for each.
struct PooledBufReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
}

const READ_BUF: usize = 64 << 10;

thread_local! {
    static SPARE_READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<R: Read> PooledBufReader<R> {
    fn new(inner: R) -> Self {
        let mut buf = SPARE_READ_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if buf.len() < READ_BUF {
            buf = vec![0u8; READ_BUF];
        }
        PooledBufReader {
            inner,
            buf,
            pos: 0,
            filled: 0,
        }
    }
}

impl<R> Drop for PooledBufReader<R> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        SPARE_READ_BUF.with(|b| *b.borrow_mut() = buf);
    }
}

impl<R: Read> Read for PooledBufReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Large reads with nothing buffered skip the copy.
        if self.pos == self.filled && out.len() >= self.buf.len() {
            return self.inner.read(out);
        }
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for PooledBufReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.filled {
            self.filled = self.inner.read(&mut self.buf)?;
            self.pos = 0;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.filled);
    }
}

/// What a sweep removed.
#[derive(Debug, Default, Clone)]
pub struct SweepReport {
    pub temp_dirs: usize,
    /// Base names of unregistered store entries that were deleted.
    pub unregistered: Vec<String>,
}

/// Marks the store directory as the top of a directory hierarchy
/// (`FS_TOPDIR_FL`, `chattr +T`), best effort. ext4 then places each new
/// directory made in it, that is each path being added, in a block group
/// chosen afresh (as it does for directories made at the root of the
/// filesystem) instead of the store directory's own group. The files of
/// an add follow their directory, so they are allocated from a little-used
/// group; in the store directory's group they would compete with every
/// path ever added and deleted there, and on ext4 without a journal each
/// new inode first skips every inode of its group freed in the last 30 s
/// (after a garbage collection or beside a busy build directory that scan
/// was a quarter of an add's time). Filesystems without these flags, and
/// stores owned by someone else, are left as they are.
/// `B3_STORE_TOPDIR=0` leaves the flag alone.
fn spread_new_paths(real_store: &Path) {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::IFlags;
        if std::env::var_os("B3_STORE_TOPDIR").is_some_and(|v| v == "0") {
            return;
        }
        let Ok(d) = File::open(real_store) else {
            return;
        };
        if let Ok(flags) = rustix::fs::ioctl_getflags(&d) {
            if !flags.contains(IFlags::TOPDIR) {
                let _ = rustix::fs::ioctl_setflags(&d, flags | IFlags::TOPDIR);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = real_store;
}

/// Fault injection for the crash tests: `B3_TEST_CRASH_AT=<point>` aborts
/// the process there, as a `kill -9` at the worst moment would.
fn crash_point(point: &str) {
    if std::env::var_os("B3_TEST_CRASH_AT").is_some_and(|v| v == point) {
        std::process::abort();
    }
}

/// Give a directory about to be moved to another parent (the trash) its
/// owner's write permission back, which the move needs (see
/// [`LocalStore::new_tmp_node`]). Best effort: root needs none of it, and a
/// failure shows up as the rename's error.
pub(crate) fn open_for_move(p: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(p) {
        if m.is_dir() && crate::os::mode(&m) & 0o200 == 0 {
            let _ = crate::os::set_mode(p, 0o755);
        }
    }
}

fn replace_symlink(target: &Path, link: &Path) -> Result<(), StoreError> {
    let parent = link.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        link.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    crate::os::symlink(target, &tmp).map_err(io_ctx(format!("creating {}", tmp.display())))?;
    std::fs::rename(&tmp, link).map_err(io_ctx(format!("creating {}", link.display())))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Whether this filesystem lets us set the top-directory flag at all.
    fn topdir_supported(dir: &Path) -> bool {
        let probe = dir.join("probe");
        std::fs::create_dir(&probe).unwrap();
        let d = File::open(&probe).unwrap();
        rustix::fs::ioctl_getflags(&d).is_ok_and(|f| {
            rustix::fs::ioctl_setflags(&d, f | rustix::fs::IFlags::TOPDIR).is_ok()
                && rustix::fs::ioctl_getflags(&d)
                    .is_ok_and(|g| g.contains(rustix::fs::IFlags::TOPDIR))
        })
    }

    #[test]
    fn opening_a_store_marks_its_directory_as_a_top_directory_where_supported() {
        let dir = tempfile::tempdir().unwrap();
        if !topdir_supported(dir.path()) {
            // tmpfs and others have no such flag; nothing to check there.
            return;
        }
        let store = LocalStore::open(LocalStoreConfig::new(dir.path().join("root"))).unwrap();
        let d = File::open(store.real_store_dir()).unwrap();
        let flags = rustix::fs::ioctl_getflags(&d).unwrap();
        assert!(flags.contains(rustix::fs::IFlags::TOPDIR), "{flags:?}");
    }
}
