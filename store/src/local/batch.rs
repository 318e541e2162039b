//! Adding many NARs as one batch: each is unpacked and verified on its own,
//! but they are moved into place, flushed and registered together, with
//! one flush of the store directory and one database transaction per
//! commit instead of one per path. Used by bulk copies (`b3 copy --from`).
//! Files of at least 256 KiB are written with direct I/O where the
//! filesystem allows it (`B3_INGEST_DIRECT=0` turns that off), so their
//! bytes go from the restorer's buffer to the disk without a page-cache copy.
//!
//! [`AddBatch::stage_nar_sync`] restores a NAR into a temporary directory
//! of the store and checks its hash, size and content address, exactly as
//! [`LocalStore::add_nar_sync`] does. Its files and directories are flushed
//! as they are finished by a pool of waiting threads (as [`super::durable`]
//! does), and once a file is on disk its pages are dropped from the page
//! cache: a bulk copy then writes through a small, reused set of pages
//! instead of touching fresh memory for every byte it copies. (On this
//! project's VMs a never-used page costs the kernel ~2 µs to fault in from
//! the host; a 1 GiB copy spent more than 2 s of kernel time on that
//! alone.) A staged path may be referred to by later stages of the same
//! batch.
//!
//! [`AddBatch::commit_staged`] then, for everything staged so far: waits for
//! those flushes (or does one `syncfs` with `B3_FSYNC=syncfs`), takes the
//! paths' locks, renames each into place, flushes the store directory once
//! and registers all of them in one transaction. The database therefore
//! never points at data that is not on disk, and a crash before the
//! transaction leaves unregistered paths that the next open sweeps.
//!
//! Failure semantics (chosen for bulk copies): a path that fails to stage
//! is simply not in the batch; what was staged before it can still be
//! committed (every staged path's references are registered or staged, so
//! the committed set is closed). A commit registers all of its paths or,
//! if the flush, a rename or the transaction fails, none of them. Dropping
//! a batch without committing removes its staged directories.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::{crash_point, db_err, io_ctx, LocalStore, TmpDir};
use crate::hash::Hash;
use crate::path::StorePath;
use crate::traits::{StoreError, ValidPathInfo};

/// Paths locked at once by a commit (bounds the open lock files).
const COMMIT_CHUNK: usize = 256;

/// A set of NARs being added together (see the module docs).
pub struct AddBatch {
    store: LocalStore,
    state: Mutex<BatchState>,
    /// Serialises commits: a later commit may register paths whose
    /// references an earlier one is still registering.
    committing: Mutex<()>,
}

#[derive(Default)]
struct BatchState {
    staged: Vec<Staged>,
    /// Paths staged and not yet registered (including those of a commit in
    /// progress): later stages may refer to them.
    unregistered: HashSet<StorePath>,
    staged_bytes: u64,
}

struct Staged {
    tmp: TmpDir,
    info: ValidPathInfo,
    flushes: Option<Arc<FlushGroup>>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // The flush pool may still hold the staged files open, and Windows
        // cannot remove an open file: wait for it before the directory goes.
        if let Some(g) = &self.flushes {
            let _ = g.wait();
        }
    }
}

impl LocalStore {
    /// Start a batch of adds (see [`AddBatch`]).
    pub fn begin_batch(&self) -> AddBatch {
        AddBatch {
            store: self.clone(),
            state: Mutex::new(BatchState::default()),
            committing: Mutex::new(()),
        }
    }
}

impl AddBatch {
    fn state(&self) -> std::sync::MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// NAR bytes staged and not yet committed.
    pub fn staged_bytes(&self) -> u64 {
        self.state().staged_bytes
    }

    /// Paths staged and not yet committed.
    pub fn staged_len(&self) -> usize {
        self.state().staged.len()
    }

    /// Restore `info.path` from `nar` into the batch, verifying its size,
    /// hash and content address. A path valid already, or staged already,
    /// is accepted without reading `nar`. Every reference must be valid or
    /// staged in this batch.
    pub fn stage_nar_sync<R: Read>(&self, info: &ValidPathInfo, nar: R) -> Result<(), StoreError> {
        let st = &self.store;
        st.add_temp_roots(std::iter::once(&info.path).chain(info.references.iter()))?;
        if st.is_valid_sync(&info.path)? || self.state().unregistered.contains(&info.path) {
            return Ok(());
        }
        let path_s = st.print_path(&info.path);
        st.check_nar_info(info)?;
        for r in &info.references {
            if r != &info.path && !self.state().unregistered.contains(r) && !st.is_valid_sync(r)? {
                return Err(StoreError::MissingReference {
                    path: path_s,
                    reference: st.print_path(r),
                });
            }
        }
        let RestoredTree {
            tmp,
            hash,
            size,
            flushes,
        } = self.restore(nar, info.nar_size, &path_s)?;
        st.check_restored(info, tmp.path(), &hash, size, true, &path_s)?;
        let mut s = self.state();
        if s.unregistered.contains(&info.path) {
            // Staged by someone else meanwhile; ours is dropped.
            return Ok(());
        }
        s.unregistered.insert(info.path.clone());
        s.staged_bytes += info.nar_size;
        s.staged.push(Staged {
            tmp,
            info: info.clone(),
            flushes,
        });
        Ok(())
    }

    /// Restore into a fresh temporary node, hashing, reading at most one
    /// byte past `max`.
    fn restore<R: Read>(&self, nar: R, max: u64, path_s: &str) -> Result<RestoredTree, StoreError> {
        let st = &self.store;
        let flushes = (cfg!(unix) && st.inner.fsync && !st.inner.sync_whole_fs)
            .then(|| Arc::new(FlushGroup::default()));
        let on_finished = flushes.clone().map(|g| {
            Box::new(move |f: File| flush_pool().submit(f, Arc::clone(&g)))
                as Box<dyn FnMut(File) + Send>
        });
        let opts = b3_nar::RestoreOptions {
            canonical: true,
            in_place: true,
            on_finished,
            direct_io_min: super::ingest::direct_io_min(),
        };
        let (tmp, hash, size) = st.restore_nar_with(nar, Some(max), path_s, opts)?;
        #[cfg(not(unix))]
        {
            crate::canonicalise::canonicalise_tree(tmp.path())
                .map_err(|e| StoreError::Other(e.to_string()))?;
            st.sync_tree(tmp.path())?;
        }
        Ok(RestoredTree {
            tmp,
            hash,
            size,
            flushes,
        })
    }

    /// Make everything staged so far valid: wait for its flushes, move it
    /// into place, flush the store directory and register it in one
    /// transaction (per [`COMMIT_CHUNK`] paths). Stages may go on while a
    /// commit runs; they belong to the next one. Returns the paths
    /// registered by this call (not those someone else registered first).
    pub fn commit_staged(&self) -> Result<Vec<StorePath>, StoreError> {
        let _one = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        let staged = std::mem::take(&mut self.state().staged);
        self.state().staged_bytes = 0;
        let paths: Vec<StorePath> = staged.iter().map(|s| s.info.path.clone()).collect();
        let result = self.commit_list(staged);
        // Registered or dropped: either way no longer stageable references.
        let mut s = self.state();
        for p in &paths {
            s.unregistered.remove(p);
        }
        result
    }

    fn commit_list(&self, staged: Vec<Staged>) -> Result<Vec<StorePath>, StoreError> {
        let st = &self.store;
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        // The durability barrier: every file and directory of every staged
        // tree is on disk before anything is moved into place.
        for s in &staged {
            if let Some(g) = &s.flushes {
                g.wait()
                    .map_err(io_ctx(format!("flushing {}", st.print_path(&s.info.path))))?;
            }
        }
        if cfg!(unix) && st.inner.fsync && st.inner.sync_whole_fs {
            st.sync_filesystem(st.real_store_dir())?;
        }
        let mut done = Vec::new();
        let mut rest: VecDeque<Staged> = staged.into();
        while !rest.is_empty() {
            let chunk: Vec<Staged> = rest.drain(..rest.len().min(COMMIT_CHUNK)).collect();
            done.extend(self.commit_chunk(chunk)?);
        }
        Ok(done)
    }

    fn commit_chunk(&self, chunk: Vec<Staged>) -> Result<Vec<StorePath>, StoreError> {
        let st = &self.store;
        let names: Vec<String> = chunk.iter().map(|s| s.info.path.base_name()).collect();
        let _locks = st
            .locks()
            .lock_all(names.iter().map(String::as_str))
            .map_err(io_ctx("locking the paths"))?;
        let mut moved: Vec<(std::path::PathBuf, &ValidPathInfo)> = Vec::new();
        let undo = |moved: &[(std::path::PathBuf, &ValidPathInfo)]| {
            for (dest, _) in moved {
                let _ = st.delete_physical(dest);
            }
        };
        for s in &chunk {
            if st.is_valid_sync(&s.info.path)? {
                continue;
            }
            let dest = st.real_path(&s.info.path);
            let placed = (|| {
                if std::fs::symlink_metadata(&dest).is_ok() {
                    // Unregistered leftover of a crash after its rename.
                    st.delete_physical(&dest)?;
                }
                std::fs::rename(s.tmp.path(), &dest)
                    .map_err(io_ctx(format!("moving into place {}", dest.display())))
            })();
            if let Err(e) = placed {
                undo(&moved);
                return Err(e);
            }
            moved.push((dest, &s.info));
        }
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        if let Err(e) = st.sync_store_dir() {
            undo(&moved);
            return Err(e);
        }
        crash_point("batch-before-register");
        let rows: Vec<_> = moved
            .iter()
            .map(|(_, info)| {
                let refs = info.references.iter().map(|r| st.print_path(r)).collect();
                (st.row_of(info), refs)
            })
            .collect();
        if let Err(e) = st.db().register(&rows) {
            undo(&moved);
            return Err(db_err(e));
        }
        Ok(moved.iter().map(|(_, i)| i.path.clone()).collect())
    }
}

/// A NAR unpacked into a temporary node, not yet checked against its info.
struct RestoredTree {
    tmp: TmpDir,
    hash: Hash,
    size: u64,
    flushes: Option<Arc<FlushGroup>>,
}

/// The flushes of one staged tree.
#[derive(Default)]
struct FlushGroup {
    state: Mutex<(usize, Option<io::Error>)>,
    done: Condvar,
}

impl FlushGroup {
    fn add(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
    }

    fn finish(&self, r: io::Result<()>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 -= 1;
        if let Err(e) = r {
            s.1.get_or_insert(e);
        }
        if s.0 == 0 {
            self.done.notify_all();
        }
    }

    fn wait(&self) -> io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.0 > 0 {
            s = self.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        match s.1.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Threads that flush finished files and then drop their pages. They wait
/// in `fsync` most of the time; many in flight let the device merge
/// flushes.
const FLUSH_THREADS: usize = 16;
/// Files queued beyond those being flushed (bounds open descriptors and
/// the dirty pages not yet recycled).
const FLUSH_QUEUE: usize = 128;

type FlushJob = (File, Arc<FlushGroup>);

struct FlushPool {
    tx: Option<std::sync::mpsc::SyncSender<FlushJob>>,
}

fn flush_pool() -> &'static FlushPool {
    static POOL: OnceLock<FlushPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<FlushJob>(FLUSH_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..FLUSH_THREADS {
            let rx = Arc::clone(&rx);
            let made = std::thread::Builder::new()
                .name(format!("b3-batch-flush-{i}"))
                .stack_size(64 << 10)
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((file, group)) = job else { return };
                    group.finish(flush_and_drop(&file));
                });
            if made.is_ok() {
                started += 1;
            }
        }
        // With no thread at all, `submit` flushes on the caller's thread.
        FlushPool {
            tx: (started > 0).then_some(tx),
        }
    })
}

impl FlushPool {
    fn submit(&self, file: File, group: Arc<FlushGroup>) {
        group.add();
        match &self.tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError((file, group))) =
                    tx.send((file, Arc::clone(&group)))
                {
                    group.finish(flush_and_drop(&file));
                }
            }
            None => group.finish(flush_and_drop(&file)),
        }
    }
}

/// Flush `file` to disk, then (Linux) drop its now clean pages from the
/// page cache so that the next file written reuses them.
fn flush_and_drop(file: &File) -> io::Result<()> {
    crate::os::flush_node(file)?;
    #[cfg(target_os = "linux")]
    if file.metadata().is_ok_and(|m| m.is_file()) {
        let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::local::LocalStoreConfig;

    fn store(dir: &std::path::Path, fsync: bool) -> LocalStore {
        let mut c = LocalStoreConfig::new(dir);
        c.fsync = fsync;
        LocalStore::open(c).unwrap()
    }

    /// A path's info and NAR, made by adding it to a scratch store.
    fn nar_of(
        src: &LocalStore,
        name: &str,
        body: &[u8],
        refs: &[&StorePath],
    ) -> (ValidPathInfo, Vec<u8>) {
        let refs: BTreeSet<StorePath> = refs.iter().map(|r| (*r).clone()).collect();
        let p = src.add_text_sync(name, body, &refs).unwrap();
        let info = src.query_path_info_sync(&p).unwrap().unwrap();
        let mut nar = Vec::new();
        src.nar_from_path_sync(&p, &mut nar).unwrap();
        (info, nar)
    }

    #[test]
    fn staged_paths_are_invisible_until_committed_then_registered_together() {
        let tmp = tempfile::tempdir().unwrap();
        let src = store(&tmp.path().join("src"), false);
        let dst = store(&tmp.path().join("dst"), true);
        let (a, a_nar) = nar_of(&src, "a", b"aaa", &[]);
        let (b, b_nar) = nar_of(&src, "b", b"bbb", &[&a.path]);
        let batch = dst.begin_batch();
        batch.stage_nar_sync(&a, &a_nar[..]).unwrap();
        // b refers to a, which is only staged: allowed within the batch.
        batch.stage_nar_sync(&b, &b_nar[..]).unwrap();
        assert_eq!(batch.staged_len(), 2);
        assert!(!dst.is_valid_sync(&a.path).unwrap());
        assert!(!dst.real_path(&a.path).exists());
        let mut done = batch.commit_staged().unwrap();
        done.sort();
        let mut want = vec![a.path.clone(), b.path.clone()];
        want.sort();
        assert_eq!(done, want);
        let got = dst.query_path_info_sync(&b.path).unwrap().unwrap();
        assert_eq!(got.references, b.references);
        assert_eq!(got.nar_hash, b.nar_hash);
        assert_eq!(std::fs::read(dst.real_path(&b.path)).unwrap(), b"bbb");
        // Nothing left over in the store directory.
        let names: Vec<String> = std::fs::read_dir(dst.real_store_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_failed_stage_leaves_earlier_stages_committable() {
        let tmp = tempfile::tempdir().unwrap();
        let src = store(&tmp.path().join("src"), false);
        let dst = store(&tmp.path().join("dst"), true);
        let (a, a_nar) = nar_of(&src, "a", b"aaa", &[]);
        let (b, mut b_nar) = nar_of(&src, "b", b"bbb", &[&a.path]);
        let batch = dst.begin_batch();
        batch.stage_nar_sync(&a, &a_nar[..]).unwrap();
        // A tampered NAR (same size, other contents) fails its hash.
        let at = b_nar.windows(3).position(|w| w == b"bbb").unwrap();
        b_nar[at] = b'x';
        let err = batch.stage_nar_sync(&b, &b_nar[..]).unwrap_err();
        assert!(matches!(err, StoreError::NarHashMismatch { .. }), "{err}");
        assert_eq!(batch.commit_staged().unwrap(), vec![a.path.clone()]);
        assert!(dst.is_valid_sync(&a.path).unwrap());
        assert!(!dst.is_valid_sync(&b.path).unwrap());
        assert!(!dst.real_path(&b.path).exists());
    }

    #[test]
    fn a_reference_neither_valid_nor_staged_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = store(&tmp.path().join("src"), false);
        let dst = store(&tmp.path().join("dst"), false);
        let (a, _) = nar_of(&src, "a", b"aaa", &[]);
        let (b, b_nar) = nar_of(&src, "b", b"bbb", &[&a.path]);
        let batch = dst.begin_batch();
        let err = batch.stage_nar_sync(&b, &b_nar[..]).unwrap_err();
        assert!(matches!(err, StoreError::MissingReference { .. }), "{err}");
        assert!(batch.commit_staged().unwrap().is_empty());
    }

    #[test]
    fn a_dropped_batch_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let src = store(&tmp.path().join("src"), false);
        let dst = store(&tmp.path().join("dst"), true);
        let (a, a_nar) = nar_of(&src, "a", b"aaa", &[]);
        {
            let batch = dst.begin_batch();
            batch.stage_nar_sync(&a, &a_nar[..]).unwrap();
        }
        assert!(!dst.is_valid_sync(&a.path).unwrap());
        let left: Vec<_> = std::fs::read_dir(dst.real_store_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn large_files_are_staged_exactly_and_dump_to_the_same_nar() {
        let tmp = tempfile::tempdir().unwrap();
        let src = store(&tmp.path().join("src"), false);
        let dst = store(&tmp.path().join("dst"), true);
        // Above the direct I/O threshold, not a multiple of a block.
        let mut x = 0x9e37_79b9u32;
        let body: Vec<u8> = (0..(3 << 20) + 1234)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let (a, a_nar) = nar_of(&src, "big", &body, &[]);
        let batch = dst.begin_batch();
        batch.stage_nar_sync(&a, &a_nar[..]).unwrap();
        assert_eq!(batch.commit_staged().unwrap(), vec![a.path.clone()]);
        assert!(std::fs::read(dst.real_path(&a.path)).unwrap() == body);
        let mut again = Vec::new();
        dst.nar_from_path_sync(&a.path, &mut again).unwrap();
        assert!(again == a_nar);
    }

    #[test]
    fn a_truncated_nar_is_a_size_mismatch_and_stages_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = store(&tmp.path().join("src"), false);
        let dst = store(&tmp.path().join("dst"), true);
        let (a, a_nar) = nar_of(&src, "a", b"some contents", &[]);
        let batch = dst.begin_batch();
        let err = batch
            .stage_nar_sync(&a, &a_nar[..a_nar.len() - 9])
            .unwrap_err();
        assert!(!err.to_string().is_empty());
        assert_eq!(batch.staged_len(), 0);
        assert!(batch.commit_staged().unwrap().is_empty());
        assert!(!dst.is_valid_sync(&a.path).unwrap());
    }
}
