//! Copying paths between any two stores (`nix copy`): references first,
//! NARs streamed from the source straight into the destination, several
//! at a time.
//!
//! Lives with the binary cache because that is where copies mostly go or
//! come from, but it only uses the store traits. The closure is walked
//! with concurrent path-info queries (one round trip per path would
//! dominate over HTTP); a path starts copying as soon as every reference
//! it has in the copy set is done, with at most `jobs` transfers in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::narinfo::NarInfo;
use super::store::{to_path_info, BinaryCache};
use crate::local::LocalStore;
use crate::path::StorePath;
use crate::traits::{StoreError, StoreRead, StoreWrite, ValidPathInfo};

/// Where a copy stands, reported after every path.
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
    /// Transfers (and path-info queries) in flight at once.
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

/// [`copy_paths`] with explicit concurrency and progress reporting.
pub async fn copy_paths_with(
    src: &dyn StoreRead,
    dst: &dyn StoreWrite,
    paths: &BTreeSet<StorePath>,
    opts: &CopyOptions,
) -> Result<Vec<StorePath>, StoreError> {
    let jobs = opts.jobs.max(1);
    let infos = collect_infos(paths, opts.recursive, jobs, |p| async move {
        src.query_path_info(&p)
            .await?
            .ok_or_else(|| StoreError::InvalidPath(src.store_dir().display(&p)))
    })
    .await?;
    let todo = missing_in(dst, &infos, jobs).await?;
    copy_in_order(&infos, todo, opts, |info| copy_one(src, dst, info)).await
}

/// [`copy_paths_with`] from a binary cache into the local store, on the
/// fast path of [`BinaryCache::add_to_local`]: each narinfo is fetched (and
/// its signature checked, if the cache has trusted keys) once, and each NAR
/// is hashed once, by the store.
pub async fn copy_cache_to_local(
    src: &BinaryCache,
    dst: &LocalStore,
    paths: &BTreeSet<StorePath>,
    opts: &CopyOptions,
) -> Result<Vec<StorePath>, StoreError> {
    let jobs = opts.jobs.max(1);
    let narinfos = collect_infos(paths, opts.recursive, jobs, |p| async move {
        src.narinfo(&p)
            .await?
            .ok_or_else(|| StoreError::InvalidPath(src.store_dir().display(&p)))
    })
    .await?;
    let infos: BTreeMap<StorePath, ValidPathInfo> = narinfos
        .iter()
        .map(|(p, ni)| (p.clone(), to_path_info(ni)))
        .collect();
    let todo = missing_in(dst, &infos, jobs).await?;
    copy_in_order(&infos, todo, opts, |info| {
        src.add_to_local(&narinfos[&info.path], dst)
    })
    .await
}

/// What a store knows about a path, for walking closures.
trait HasReferences {
    fn path(&self) -> &StorePath;
    fn references(&self) -> &BTreeSet<StorePath>;
}

impl HasReferences for ValidPathInfo {
    fn path(&self) -> &StorePath {
        &self.path
    }
    fn references(&self) -> &BTreeSet<StorePath> {
        &self.references
    }
}

impl HasReferences for NarInfo {
    fn path(&self) -> &StorePath {
        &self.store_path
    }
    fn references(&self) -> &BTreeSet<StorePath> {
        &self.references
    }
}

/// The paths of `infos` that `dst` does not have yet.
async fn missing_in(
    dst: &dyn StoreWrite,
    infos: &BTreeMap<StorePath, ValidPathInfo>,
    jobs: usize,
) -> Result<BTreeSet<StorePath>, StoreError> {
    let valid: Vec<(StorePath, bool)> = futures::stream::iter(infos.keys().cloned())
        .map(|p| async move {
            let v = dst.is_valid_path(&p).await;
            v.map(|v| (p, v))
        })
        .buffer_unordered(jobs)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(valid
        .into_iter()
        .filter(|(_, v)| !v)
        .map(|(p, _)| p)
        .collect())
}

/// Runs `transfer` on every path of `todo`, each once all of its
/// references in `todo` are done, at most `opts.jobs` at once. Returns the
/// paths in the order they completed.
async fn copy_in_order<'a, F, Fut>(
    infos: &'a BTreeMap<StorePath, ValidPathInfo>,
    todo: BTreeSet<StorePath>,
    opts: &CopyOptions,
    transfer: F,
) -> Result<Vec<StorePath>, StoreError>
where
    F: Fn(&'a ValidPathInfo) -> Fut,
    Fut: Future<Output = Result<(), StoreError>> + 'a,
{
    let jobs = opts.jobs.max(1);
    // Dependency counts within the set to copy.
    let mut waiting_on: BTreeMap<&StorePath, usize> = BTreeMap::new();
    let mut referrers: BTreeMap<&StorePath, Vec<&StorePath>> = BTreeMap::new();
    for (p, info) in infos.iter().filter(|(p, _)| todo.contains(*p)) {
        let refs = info
            .references
            .iter()
            .filter(|r| *r != p && todo.contains(*r));
        let mut n = 0;
        for r in refs {
            referrers.entry(r).or_default().push(p);
            n += 1;
        }
        waiting_on.insert(p, n);
    }
    let mut progress = CopyProgress {
        paths_total: todo.len(),
        bytes_total: todo.iter().map(|p| infos[p].nar_size).sum(),
        ..CopyProgress::default()
    };
    if let Some(f) = &opts.progress {
        f(&progress);
    }
    // Ready paths in topological-ish order (path order among equals).
    let mut ready: Vec<&StorePath> = waiting_on
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(p, _)| *p)
        .rev()
        .collect();
    let mut running = FuturesUnordered::new();
    let mut copied = Vec::with_capacity(todo.len());
    loop {
        while running.len() < jobs {
            let Some(p) = ready.pop() else { break };
            let info = &infos[p];
            let fut = transfer(info);
            running.push(async move { fut.await.map(|_| p) });
        }
        let Some(done) = running.next().await else {
            break;
        };
        let p = done?;
        progress.paths_done += 1;
        progress.bytes_done += infos[p].nar_size;
        if let Some(f) = &opts.progress {
            f(&progress);
        }
        copied.push(p.clone());
        for r in referrers.get(p).map(Vec::as_slice).unwrap_or_default() {
            if let Some(n) = waiting_on.get_mut(r) {
                *n -= 1;
                if *n == 0 {
                    ready.push(r);
                }
            }
        }
    }
    if copied.len() != todo.len() {
        return Err(StoreError::Other(format!(
            "copy stopped after {} of {} paths: the remaining ones refer to each other in a cycle",
            copied.len(),
            todo.len()
        )));
    }
    Ok(copied)
}

/// The infos of `paths` (and their closure if `recursive`), looked up with
/// `query`, `jobs` at a time. Fails on a path `query` fails on.
async fn collect_infos<T, F, Fut>(
    paths: &BTreeSet<StorePath>,
    recursive: bool,
    jobs: usize,
    query: F,
) -> Result<BTreeMap<StorePath, T>, StoreError>
where
    T: HasReferences,
    F: Fn(StorePath) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut infos: BTreeMap<StorePath, T> = BTreeMap::new();
    let mut frontier: BTreeSet<StorePath> = paths.clone();
    while !frontier.is_empty() {
        let got: Vec<Result<T, StoreError>> = futures::stream::iter(std::mem::take(&mut frontier))
            .map(&query)
            .buffer_unordered(jobs)
            .collect()
            .await;
        for info in got {
            let info = info?;
            if recursive {
                for r in info.references() {
                    if !infos.contains_key(r) && r != info.path() {
                        frontier.insert(r.clone());
                    }
                }
            }
            infos.insert(info.path().clone(), info);
        }
        frontier.retain(|p| !infos.contains_key(p));
    }
    Ok(infos)
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
