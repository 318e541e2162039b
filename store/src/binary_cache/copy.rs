//! Copying paths between any two stores (`nix copy`): references first,
//! NARs streamed from the source straight into the destination, several
//! at a time.
//!
//! Lives with the binary cache because that is where copies mostly go or
//! come from. One engine ([`run_copy`]) drives every route; the routes
//! differ in how a path is looked up and how its NAR moves:
//!
//! - [`copy_paths_with`]: any two stores, through the store traits;
//! - [`copy_cache_to_local`]: a cache into the local store, on the fast path
//!   of [`BinaryCache::add_to_local`];
//! - [`copy_cache_to_cache`]: between caches, through
//!   [`BinaryCache::upload_from_cache`] (compressed bytes passed through
//!   when both caches use the same compression).
//!
//! The engine pipelines the closure walk with the transfers: a path is
//! first checked in the destination (a path already there has its closure
//! there too, so the walk stops), then looked up in the source once; it
//! starts copying as soon as every reference it has in the copy set is
//! done, while the lookups of the rest of the closure are still running.
//! At most `jobs` lookups and `jobs` transfers are in flight.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::narinfo::NarInfo;
use super::BinaryCache;
use crate::local::batch::AddBatch;
use crate::local::LocalStore;
use crate::path::StorePath;
use crate::traits::{StoreError, StoreRead, StoreWrite, ValidPathInfo};

/// Where a copy stands, reported when it starts and after every path. The
/// totals grow while the closure is still being walked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyProgress {
    pub paths_done: usize,
    pub paths_total: usize,
    /// NAR bytes (uncompressed sizes from the path infos).
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Called with the progress after each path is copied.
pub type ProgressFn = Arc<dyn Fn(&CopyProgress) + Send + Sync>;

/// How [`copy_paths_with`] copies.
#[derive(Clone)]
pub struct CopyOptions {
    /// Copy closures, not just the given paths.
    pub recursive: bool,
    /// Transfers (and, separately, path-info lookups) in flight at once.
    pub jobs: usize,
    pub progress: Option<ProgressFn>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            recursive: true,
            jobs: 16,
            progress: None,
        }
    }
}

/// Copies `paths` (and, if `recursive`, their closures) from `src` to `dst`
/// in dependency order. Paths already valid in `dst` are skipped. Returns
/// the paths actually copied, in the order they were added.
pub async fn copy_paths(
    src: &dyn StoreRead,
    dst: &dyn StoreWrite,
    paths: &BTreeSet<StorePath>,
    recursive: bool,
) -> Result<Vec<StorePath>, StoreError> {
    let opts = CopyOptions {
        recursive,
        ..CopyOptions::default()
    };
    copy_paths_with(src, dst, paths, &opts).await
}

/// [`copy_paths`] with explicit concurrency and progress reporting, through
/// the store traits only. (A binary-cache source remembers the narinfo the
/// walk fetched until `nar_from_path` uses it, but its NAR is verified by
/// both stores and each path is added on its own: the cache routes below
/// avoid that.)
pub async fn copy_paths_with(
    src: &dyn StoreRead,
    dst: &dyn StoreWrite,
    paths: &BTreeSet<StorePath>,
    opts: &CopyOptions,
) -> Result<Vec<StorePath>, StoreError> {
    run_copy(
        paths,
        opts,
        |p| async move {
            if dst.is_valid_path(&p).await? {
                return Ok(None);
            }
            match src.query_path_info(&p).await? {
                Some(info) => Ok(Some(info)),
                None => Err(StoreError::InvalidPath(src.store_dir().display(&p))),
            }
        },
        |info: Arc<ValidPathInfo>| async move { copy_one(src, dst, &info).await },
    )
    .await
}

/// [`copy_paths_with`] from a binary cache into the local store, on the
/// fast path of [`BinaryCache::stage_to_local`]: each narinfo is fetched
/// (and its signature checked, if the cache has trusted keys) once, each
/// NAR is hashed once, by the store, and the paths are added as one
/// [`AddBatch`]: staged as they arrive (a path may start as soon as its
/// references are staged), then moved into place and registered together,
/// every [`COMMIT_BYTES`] of NARs and at the end.
///
/// If a path fails, no new transfer starts, those in flight finish, and
/// everything staged (a set closed under references) is still committed
/// before the error is returned: what was copied stays copied, as with a
/// path-by-path copy.
pub async fn copy_cache_to_local(
    src: &BinaryCache,
    dst: &LocalStore,
    paths: &BTreeSet<StorePath>,
    opts: &CopyOptions,
) -> Result<Vec<StorePath>, StoreError> {
    let batch = Arc::new(dst.begin_batch());
    let copied = run_copy(
        paths,
        opts,
        |p| async move {
            if dst.is_valid_path(&p).await? {
                return Ok(None);
            }
            narinfo_of(src, &p).await.map(Some)
        },
        |ni: Arc<NarInfo>| {
            let batch = Arc::clone(&batch);
            async move {
                src.stage_to_local(&ni, &batch).await?;
                if batch.staged_bytes() >= COMMIT_BYTES || batch.staged_len() >= COMMIT_PATHS {
                    commit(&batch).await?;
                }
                Ok(())
            }
        },
    )
    .await;
    let committed = commit(&batch).await;
    let copied = copied?;
    committed?;
    Ok(copied)
}

/// Staged NAR bytes (or paths) after which a bulk copy into the local
/// store commits what it has, so that a long copy makes steady progress
/// (and a crash loses at most this much).
pub const COMMIT_BYTES: u64 = 1 << 30;
pub const COMMIT_PATHS: usize = 2048;

async fn commit(batch: &Arc<AddBatch>) -> Result<(), StoreError> {
    let b = Arc::clone(batch);
    tokio::task::spawn_blocking(move || b.commit_staged())
        .await
        .map_err(|e| StoreError::Other(format!("store worker failed: {e}")))?
        .map(|_| ())
}

/// [`copy_paths_with`] from one binary cache to another: each narinfo is
/// fetched from the source once (signature checked, if it has trusted
/// keys), the destination is asked with a `HEAD` per path, and each NAR is
/// hashed once, by the upload, which checks `NarHash` and `NarSize` before
/// its narinfo is written.
pub async fn copy_cache_to_cache(
    src: &BinaryCache,
    dst: &BinaryCache,
    paths: &BTreeSet<StorePath>,
    opts: &CopyOptions,
) -> Result<Vec<StorePath>, StoreError> {
    run_copy(
        paths,
        opts,
        |p| async move {
            if dst.has_narinfo(&p).await? {
                return Ok(None);
            }
            narinfo_of(src, &p).await.map(Some)
        },
        |ni: Arc<NarInfo>| async move { dst.upload_from_cache(src, &ni).await.map(|_| ()) },
    )
    .await
}

async fn narinfo_of(src: &BinaryCache, p: &StorePath) -> Result<NarInfo, StoreError> {
    src.narinfo(p)
        .await?
        .ok_or_else(|| StoreError::InvalidPath(src.store_dir().display(p)))
}

/// What the copy engine needs to know of a path it copies.
trait Node {
    fn references(&self) -> &BTreeSet<StorePath>;
    fn nar_size(&self) -> u64;
}

impl Node for ValidPathInfo {
    fn references(&self) -> &BTreeSet<StorePath> {
        &self.references
    }
    fn nar_size(&self) -> u64 {
        self.nar_size
    }
}

impl Node for NarInfo {
    fn references(&self) -> &BTreeSet<StorePath> {
        &self.references
    }
    fn nar_size(&self) -> u64 {
        self.nar_size
    }
}

/// Where a path of the copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Queued for lookup, or being looked up.
    Looking,
    /// Already in the destination (so is its closure).
    Present,
    /// To copy: waiting for references, or being copied.
    Missing,
    /// Copied.
    Done,
}

/// A finished lookup or transfer.
enum Event<T> {
    /// `None`: the destination has the path.
    Looked(StorePath, Result<Option<T>, StoreError>),
    Copied(StorePath, Result<(), StoreError>),
}

type EventFuture<'a, T> = Pin<Box<dyn Future<Output = Event<T>> + Send + 'a>>;

/// The copy engine. `lookup(p)` says whether the destination already has
/// `p` (`None`) or else what the source knows of it (failing if the source
/// does not have it); `transfer(node)` copies one path whose references
/// are all in the destination. Walks the closures of `roots` (if
/// `opts.recursive`) while copying. Returns the paths copied, in the order
/// they completed.
async fn run_copy<'a, T, L, LF, X, XF>(
    roots: &BTreeSet<StorePath>,
    opts: &CopyOptions,
    lookup: L,
    transfer: X,
) -> Result<Vec<StorePath>, StoreError>
where
    T: Node + Send + Sync + 'a,
    L: Fn(StorePath) -> LF,
    LF: Future<Output = Result<Option<T>, StoreError>> + Send + 'a,
    X: Fn(Arc<T>) -> XF,
    XF: Future<Output = Result<(), StoreError>> + Send + 'a,
{
    let jobs = opts.jobs.max(1);
    let mut state: HashMap<StorePath, State> = HashMap::new();
    let mut nodes: HashMap<StorePath, Arc<T>> = HashMap::new();
    // For each path waiting to be copied, how many of its references are
    // not in the destination yet; for each such reference, who waits on it.
    let mut blockers: HashMap<StorePath, usize> = HashMap::new();
    let mut referrers: HashMap<StorePath, Vec<StorePath>> = HashMap::new();
    let mut to_look: VecDeque<StorePath> = VecDeque::new();
    let mut ready: VecDeque<StorePath> = VecDeque::new();
    for p in roots {
        state.insert(p.clone(), State::Looking);
        to_look.push_back(p.clone());
    }
    let mut progress = CopyProgress::default();
    let report = |p: &CopyProgress| {
        if let Some(f) = &opts.progress {
            f(p);
        }
    };
    report(&progress);
    let mut running: FuturesUnordered<EventFuture<'a, T>> = FuturesUnordered::new();
    let (mut looking, mut copying) = (0usize, 0usize);
    let mut copied = Vec::new();
    // The first failure: nothing new starts after it, but what is in
    // flight is waited for (a transfer may be writing into the
    // destination), then it is returned.
    let mut failed: Option<StoreError> = None;
    loop {
        while failed.is_none() && looking < jobs {
            let Some(p) = to_look.pop_front() else { break };
            let fut = lookup(p.clone());
            running.push(Box::pin(async move { Event::Looked(p, fut.await) }));
            looking += 1;
        }
        while failed.is_none() && copying < jobs {
            let Some(p) = ready.pop_front() else { break };
            let Some(node) = nodes.get(&p).cloned() else {
                continue;
            };
            let fut = transfer(node);
            running.push(Box::pin(async move { Event::Copied(p, fut.await) }));
            copying += 1;
        }
        let Some(event) = running.next().await else {
            break;
        };
        // The path whose arrival in the destination may unblock others.
        let arrived = match event {
            Event::Looked(p, found) => {
                looking -= 1;
                let found = match found {
                    Ok(f) => f,
                    Err(e) => {
                        failed.get_or_insert(e);
                        continue;
                    }
                };
                match found {
                    None => {
                        state.insert(p.clone(), State::Present);
                        p
                    }
                    Some(node) => {
                        progress.paths_total += 1;
                        progress.bytes_total += node.nar_size();
                        let mut waits = 0;
                        for r in node.references() {
                            if r == &p || !(opts.recursive || roots.contains(r)) {
                                // Not part of this copy: the destination
                                // must have it already (it checks).
                                continue;
                            }
                            match state.get(r) {
                                Some(State::Present | State::Done) => continue,
                                Some(State::Looking | State::Missing) => {}
                                None => {
                                    state.insert(r.clone(), State::Looking);
                                    to_look.push_back(r.clone());
                                }
                            }
                            waits += 1;
                            referrers.entry(r.clone()).or_default().push(p.clone());
                        }
                        state.insert(p.clone(), State::Missing);
                        nodes.insert(p.clone(), Arc::new(node));
                        if waits == 0 {
                            ready.push_back(p);
                        } else {
                            blockers.insert(p, waits);
                        }
                        report(&progress);
                        continue;
                    }
                }
            }
            Event::Copied(p, done) => {
                copying -= 1;
                if let Err(e) = done {
                    failed.get_or_insert(e);
                    continue;
                }
                state.insert(p.clone(), State::Done);
                if let Some(node) = nodes.remove(&p) {
                    progress.paths_done += 1;
                    progress.bytes_done += node.nar_size();
                }
                report(&progress);
                copied.push(p.clone());
                p
            }
        };
        for q in referrers.remove(&arrived).unwrap_or_default() {
            if let Some(n) = blockers.get_mut(&q) {
                *n -= 1;
                if *n == 0 {
                    blockers.remove(&q);
                    ready.push_back(q);
                }
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if !blockers.is_empty() {
        return Err(StoreError::Other(format!(
            "copy stopped after {} of {} paths: the remaining ones refer to each other in a cycle",
            copied.len(),
            copied.len() + blockers.len()
        )));
    }
    Ok(copied)
}

/// Streams one NAR from `src` into `dst.add_nar`.
async fn copy_one(
    src: &dyn StoreRead,
    dst: &dyn StoreWrite,
    info: &ValidPathInfo,
) -> Result<(), StoreError> {
    let (mut rd, mut wr) = tokio::io::duplex(256 << 10);
    let produce = async {
        let r = src.nar_from_path(&info.path, &mut wr).await;
        // EOF for the consumer, so it can check for trailing data.
        let _ = wr.shutdown().await;
        drop(wr);
        r
    };
    let consume = async {
        let r = dst.add_nar(info, &mut rd).await;
        drop(rd);
        r
    };
    let (produced, consumed) = tokio::join!(produce, consume);
    // The source's error (e.g. a hash mismatch found while downloading)
    // explains a consumer failure better than "unexpected end of NAR".
    match (produced, consumed) {
        (Err(e), _) => Err(e),
        (Ok(_), r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{LocalStore, LocalStoreConfig};
    use crate::path::StoreDir;

    #[tokio::test(flavor = "multi_thread")]
    async fn closures_are_copied_references_first_with_progress() {
        let tmp = tempfile::tempdir().unwrap();
        let open = |d: &str| {
            let mut c = LocalStoreConfig::new(tmp.path().join(d));
            c.fsync = false;
            LocalStore::open(c).unwrap()
        };
        let (src, dst) = (open("src"), open("dst"));
        // A chain c -> b -> a plus a diamond top -> {b, c}.
        let a = src.add_text("a", b"a", &BTreeSet::new()).await.unwrap();
        let b = src
            .add_text("b", b"b", &BTreeSet::from([a.clone()]))
            .await
            .unwrap();
        let c = src
            .add_text("c", b"c", &BTreeSet::from([b.clone()]))
            .await
            .unwrap();
        let top = src
            .add_text("top", b"t", &BTreeSet::from([b.clone(), c.clone()]))
            .await
            .unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let opts = CopyOptions {
            recursive: true,
            jobs: 4,
            progress: Some(Arc::new(move |p: &CopyProgress| {
                seen2.lock().unwrap().push(p.clone())
            })),
        };
        let copied = copy_paths_with(&src, &dst, &BTreeSet::from([top.clone()]), &opts)
            .await
            .unwrap();
        assert_eq!(copied.len(), 4);
        let pos = |p: &StorePath| copied.iter().position(|x| x == p).unwrap();
        assert!(pos(&a) < pos(&b) && pos(&b) < pos(&c) && pos(&c) < pos(&top));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.first().unwrap().paths_done, 0);
        let last = seen.last().unwrap();
        assert_eq!((last.paths_done, last.paths_total), (4, 4));
        assert_eq!(last.bytes_done, last.bytes_total);
        // Nothing left to do the second time.
        let again = copy_paths(&src, &dst, &BTreeSet::from([top]), true)
            .await
            .unwrap();
        assert!(again.is_empty());
    }

    #[tokio::test]
    async fn a_missing_source_path_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = LocalStoreConfig::new(tmp.path().join("s"));
        c.fsync = false;
        let s = LocalStore::open(c).unwrap();
        let p = StoreDir::default()
            .parse("/nix/store/00000000000000000000000000000000-x")
            .unwrap();
        let err = copy_paths(&s, &s, &BTreeSet::from([p]), true)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is not valid"), "{err}");
    }
}
