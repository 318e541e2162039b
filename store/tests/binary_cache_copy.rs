//! Copies between binary caches and into the local store ask the source
//! for each narinfo and each NAR once, hash each NAR once (the upload or
//! the store checks it), and give back the NARs the source had, whether
//! the compressed bytes are passed through or recompressed.

mod binary_cache_common;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use b3_store::binary_cache::{
    copy_cache_to_cache, copy_cache_to_local, copy_paths_with, BinaryCache, Compression,
    CopyOptions, SecretKey,
};
use b3_store::local::{LocalStore, LocalStoreConfig};
use b3_store::path::{StoreDir, StorePath};
use b3_store::traits::{StoreRead, StoreWrite};
use binary_cache_common::tmpdir;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// An object store that counts the GETs (and HEADs) of every key.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    gets: Mutex<HashMap<String, usize>>,
    heads: Mutex<HashMap<String, usize>>,
}

impl Counting {
    fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Counting {
            inner,
            gets: Mutex::default(),
            heads: Mutex::default(),
        })
    }

    /// GET counts of the keys ending in `suffix`.
    fn gets_of(&self, suffix: &str) -> Vec<usize> {
        let g = self.gets.lock().unwrap();
        g.iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, n)| *n)
            .collect()
    }

    fn reset(&self) {
        self.gets.lock().unwrap().clear();
        self.heads.lock().unwrap().clear();
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let counts = if options.head {
            &self.heads
        } else {
            &self.gets
        };
        *counts
            .lock()
            .unwrap()
            .entry(location.to_string())
            .or_default() += 1;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjPath,
        to: &ObjPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &ObjPath,
        to: &ObjPath,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

fn counting_cache(dir: &std::path::Path) -> (Arc<Counting>, BinaryCache) {
    std::fs::create_dir_all(dir).unwrap();
    let fs: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
    let counting = Counting::new(fs);
    let cache = BinaryCache::new(
        counting.clone(),
        dir.display().to_string(),
        StoreDir::default(),
    );
    (counting, cache)
}

/// A signed xz cache holding a closure: a diamond of four paths with files
/// of a few sizes. Returns the cache directory, the top path, all paths.
async fn source(
    work: &std::path::Path,
    key: &SecretKey,
) -> (std::path::PathBuf, StorePath, BTreeSet<StorePath>) {
    let dir = work.join("src");
    let cache = BinaryCache::open(&format!("file://{}", dir.display()), StoreDir::default())
        .unwrap()
        .with_secret_key(key.clone())
        .with_compression(Compression::Xz);
    cache.init().await.unwrap();
    let body = |tag: &str, n: usize| format!("{tag} {}\n", "x".repeat(n % 97)).repeat(n);
    let a = cache
        .add_text("a", body("a", 3000).as_bytes(), &BTreeSet::new())
        .await
        .unwrap();
    let b = cache
        .add_text("b", body("b", 10).as_bytes(), &BTreeSet::from([a.clone()]))
        .await
        .unwrap();
    let c = cache
        .add_text(
            "c",
            body("c", 40000).as_bytes(),
            &BTreeSet::from([a.clone()]),
        )
        .await
        .unwrap();
    let top = cache
        .add_text("top", b"top", &BTreeSet::from([b.clone(), c.clone()]))
        .await
        .unwrap();
    (dir, top.clone(), BTreeSet::from([a, b, c, top]))
}

async fn nar_of(store: &dyn StoreRead, p: &StorePath) -> Vec<u8> {
    let mut v = Vec::new();
    store.nar_from_path(p, &mut v).await.unwrap();
    v
}

fn local(dir: std::path::PathBuf) -> LocalStore {
    let mut c = LocalStoreConfig::new(dir);
    c.fsync = false;
    LocalStore::open(c).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_to_cache_fetches_each_narinfo_and_nar_once_and_keeps_the_nars() {
    let work = tmpdir("copy-c2c");
    let key = SecretKey::generate("copy-test-1").unwrap();
    let (src_dir, top, all) = source(&work, &key).await;
    let original = BinaryCache::open(
        &format!("file://{}", src_dir.display()),
        StoreDir::default(),
    )
    .unwrap();
    let (counts, src) = counting_cache(&src_dir);
    let src = src.with_trusted_keys(vec![key.public()]);
    // Same compression (bytes passed through) and another (recompressed).
    for (name, c) in [("same", Compression::Xz), ("other", Compression::Zstd)] {
        counts.reset();
        let dst_dir = work.join(name);
        let (dst_counts, dst) = counting_cache(&dst_dir);
        let dst = dst.with_compression(c);
        let opts = CopyOptions {
            jobs: 3,
            ..CopyOptions::default()
        };
        let roots = BTreeSet::from([top.clone()]);
        let copied = copy_cache_to_cache(&src, &dst, &roots, &opts)
            .await
            .unwrap();
        assert_eq!(copied.len(), 4, "{name}");
        assert_eq!(copied.last(), Some(&top), "{name}: the top comes last");
        assert_eq!(counts.gets_of(".narinfo"), vec![1; 4], "{name}");
        let nars = counts.gets_of(&format!(".nar{}", Compression::Xz.extension()));
        assert_eq!(nars, vec![1; 4], "{name}");
        // The destination is only asked whether it has each path.
        assert!(dst_counts.gets_of(".narinfo").is_empty(), "{name}");
        for p in &all {
            assert_eq!(nar_of(&dst, p).await, nar_of(&original, p).await, "{name}");
            let ni = dst.narinfo(p).await.unwrap().unwrap();
            assert_eq!(ni.compression, c, "{name}");
            assert!(
                ni.url.ends_with(&format!(".nar{}", c.extension())),
                "{name}"
            );
        }
        // Everything is there now: nothing copied, the source not asked
        // for any NAR, and the walk stops at the top.
        counts.reset();
        let again = copy_cache_to_cache(&src, &dst, &roots, &opts)
            .await
            .unwrap();
        assert!(again.is_empty(), "{name}");
        assert!(counts.gets_of(".narinfo").is_empty(), "{name}");
        assert!(counts.gets_of(".xz").is_empty(), "{name}");
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_to_local_fetches_each_narinfo_once_and_skips_what_the_store_has() {
    let work = tmpdir("copy-c2l");
    let key = SecretKey::generate("copy-test-1").unwrap();
    let (src_dir, top, all) = source(&work, &key).await;
    let (counts, src) = counting_cache(&src_dir);
    let src = src.with_trusted_keys(vec![key.public()]);
    let store = local(work.join("store"));
    // First only one branch, then the whole closure: the second copy
    // fetches only what is missing.
    let b = all.iter().find(|p| p.name() == "b").unwrap().clone();
    let copied = copy_cache_to_local(&src, &store, &BTreeSet::from([b]), &CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(copied.len(), 2);
    assert_eq!(counts.gets_of(".narinfo"), vec![1; 2]);
    counts.reset();
    let copied = copy_cache_to_local(
        &src,
        &store,
        &BTreeSet::from([top.clone()]),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert_eq!(copied.last(), Some(&top));
    // top and c; b was there already, so the walk did not go below it.
    assert_eq!(counts.gets_of(".narinfo"), vec![1; 2]);
    assert_eq!(counts.gets_of(".xz"), vec![1; 2]);
    for p in &all {
        assert_eq!(nar_of(&store, p).await, nar_of(&src, p).await);
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_generic_route_fetches_each_narinfo_once_too() {
    let work = tmpdir("copy-generic");
    let key = SecretKey::generate("copy-test-1").unwrap();
    let (src_dir, top, all) = source(&work, &key).await;
    let (counts, src) = counting_cache(&src_dir);
    let src = src.with_trusted_keys(vec![key.public()]);
    let store = local(work.join("store"));
    let copied = copy_paths_with(
        &src,
        &store,
        &BTreeSet::from([top.clone()]),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(copied.len(), 4);
    // Once for the walk; the NAR transfer reuses it.
    assert_eq!(counts.gets_of(".narinfo"), vec![1; 4]);
    assert_eq!(counts.gets_of(".xz"), vec![1; 4]);
    for p in &all {
        assert_eq!(nar_of(&store, p).await, nar_of(&src, p).await);
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_missing_from_the_source_fails_the_copy() {
    let work = tmpdir("copy-missing");
    let key = SecretKey::generate("copy-test-1").unwrap();
    let (src_dir, top, all) = source(&work, &key).await;
    let a = all.iter().find(|p| p.name() == "a").unwrap();
    std::fs::remove_file(src_dir.join(format!("{}.narinfo", a.hash_part()))).unwrap();
    let (_, src) = counting_cache(&src_dir);
    let (_, dst) = counting_cache(&work.join("dst"));
    let err = copy_cache_to_cache(
        &src,
        &dst,
        &BTreeSet::from([top.clone()]),
        &CopyOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&a.to_string()), "{err}");
    // Nothing that refers to the missing path was written.
    for p in all.iter().filter(|p| p.name() != "a") {
        assert!(!dst.has_narinfo(p).await.unwrap(), "{p}");
    }
    let store = local(work.join("store"));
    let err = copy_cache_to_local(
        &src,
        &store,
        &BTreeSet::from([top]),
        &CopyOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&a.to_string()), "{err}");
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_nar_into_the_local_store_keeps_what_was_copied_before_it() {
    let work = tmpdir("copy-partial");
    let key = SecretKey::generate("copy-test-1").unwrap();
    let (src_dir, top, all) = source(&work, &key).await;
    let (_, src) = counting_cache(&src_dir);
    let by_name = |n: &str| all.iter().find(|p| p.name() == n).unwrap().clone();
    let (a, b, c) = (by_name("a"), by_name("b"), by_name("c"));
    // c's NAR is gone: a and b (which c's failure does not concern) are
    // copied and registered, c and top (which needs c) are not.
    let ni = src.narinfo(&c).await.unwrap().unwrap();
    std::fs::remove_file(src_dir.join(&ni.url)).unwrap();
    let mut cfg = LocalStoreConfig::new(work.join("store"));
    cfg.fsync = true;
    let store = LocalStore::open(cfg).unwrap();
    let err = copy_cache_to_local(
        &src,
        &store,
        &BTreeSet::from([top.clone()]),
        &CopyOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&ni.url), "{err}");
    for p in [&a, &b] {
        assert!(store.is_valid_sync(p).unwrap(), "{p}");
        assert_eq!(nar_of(&store, p).await, nar_of(&src, p).await);
    }
    for p in [&c, &top] {
        assert!(!store.is_valid_sync(p).unwrap(), "{p}");
        assert!(!store.real_path(p).exists(), "{p}");
    }
    // No staging directories left behind.
    let hidden: Vec<_> = std::fs::read_dir(store.real_store_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    let _ = std::fs::remove_dir_all(&work);
}
