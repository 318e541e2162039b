//! Substitution from binary caches: the [`Substitute`] implementation the
//! builder calls for a missing output, and `b3 copy --from` semantics with
//! Nix's settings.
//!
//! [`Substituters`] holds the configured caches (`substituters`), ordered
//! by their `Priority` (lower first; the URL's `?priority=` overrides
//! `nix-cache-info`; 50 when neither says) and then by configuration order.
//! Priorities come from `nix-cache-info`, read once, lazily, the first
//! time any cache is needed; a cache whose `nix-cache-info` cannot be read
//! is skipped, and its error is part of every failure message (so with an
//! unreachable cache configured, a path no other cache has is an error,
//! not [`Substituted::NotAvailable`]: the caller warns and builds).
//!
//! For a path, each cache is asked for its `.narinfo` in order (answers,
//! positive and negative, are remembered for the `narinfo-cache-*-ttl`
//! settings). The first cache whose narinfo is acceptable (signed by a key
//! in `trusted-public-keys`, or content-addressed, or `require-sigs` off) is
//! used: missing references are substituted first (concurrently, up to
//! `max-substitution-jobs`), then the NAR is streamed through
//! decompression and hash/size verification into the local store, which
//! verifies again and registers the path atomically. A failed transfer
//! (error, 5xx, truncated or tampered NAR, stall longer than
//! `stalled-download-timeout`) is retried up to `download-attempts` times,
//! then the next cache that has the path is tried. If every cache fails,
//! the error lists what each one said; if no cache has the path, the
//! answer is [`Substituted::NotAvailable`].
//!
//! The trait is synchronous; [`Substituters`] owns a small tokio runtime and
//! may be called from any number of threads (including threads that are
//! themselves inside a tokio runtime: the work then runs on a helper
//! thread).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use thiserror::Error;

use super::cache_info::CacheInfo;
use super::narinfo::NarInfo;
use super::net::NetOptions;
use super::signing::{parse_public_keys, PublicKey, Signature, SigningError};
use super::store::{to_path_info, BinaryCache, BinaryCacheError};
use super::url::CacheUrl;
use crate::local::LocalStore;
use crate::path::{StoreDir, StorePath};
use crate::settings::Settings;
use crate::substitute::{Substitute, SubstituteError, Substituted};
use crate::traits::StoreError;

/// The priority of a cache that states none (Nix's default).
pub const DEFAULT_PRIORITY: i64 = 50;

/// Errors in the substituter configuration.
#[derive(Debug, Error)]
pub enum SubstituterConfigError {
    #[error("substituter '{url}': {source}")]
    Cache {
        url: String,
        #[source]
        source: Box<BinaryCacheError>,
    },
    #[error("trusted-public-keys: {0}")]
    Keys(#[source] SigningError),
    #[error("cannot start the substitution runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// How substitution behaves (from [`Settings`], or set directly in tests).
#[derive(Debug, Clone)]
pub struct SubstituterOptions {
    pub trusted_keys: Vec<PublicKey>,
    /// Refuse paths that are neither signed by a trusted key nor
    /// content-addressed.
    pub require_sigs: bool,
    /// Tries per transfer from one cache (at least 1).
    pub attempts: u32,
    pub net: NetOptions,
    /// How long "this cache does not have it" is remembered.
    pub negative_ttl: Duration,
    /// How long a narinfo is remembered.
    pub positive_ttl: Duration,
    /// Paths fetched at the same time (references of one path).
    pub jobs: usize,
    /// Pause before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
}

impl Default for SubstituterOptions {
    fn default() -> Self {
        SubstituterOptions {
            trusted_keys: Vec::new(),
            require_sigs: true,
            attempts: 5,
            net: NetOptions::default(),
            negative_ttl: Duration::from_secs(3600),
            positive_ttl: Duration::from_secs(30 * 24 * 3600),
            jobs: 16,
            retry_backoff: Duration::from_millis(250),
        }
    }
}

impl SubstituterOptions {
    /// Options from Nix's settings: `trusted-public-keys`, `require-sigs`,
    /// `download-attempts`, `connect-timeout` (0: 10 s),
    /// `stalled-download-timeout` (0: no limit), `narinfo-cache-*-ttl`,
    /// `max-substitution-jobs`.
    pub fn from_settings(s: &Settings) -> Result<Self, SubstituterConfigError> {
        let keys = parse_public_keys(&s.trusted_public_keys.0.join(" "))
            .map_err(SubstituterConfigError::Keys)?;
        let defaults = NetOptions::default();
        let secs = Duration::from_secs;
        Ok(SubstituterOptions {
            trusted_keys: keys,
            require_sigs: s.require_sigs,
            attempts: u32::try_from(s.download_attempts.max(1)).unwrap_or(u32::MAX),
            net: NetOptions {
                connect_timeout: if s.connect_timeout == 0 {
                    defaults.connect_timeout
                } else {
                    secs(s.connect_timeout)
                },
                stall_timeout: if s.stalled_download_timeout == 0 {
                    // "No limit", within what a Duration/timer can hold.
                    secs(100 * 365 * 24 * 3600)
                } else {
                    secs(s.stalled_download_timeout)
                },
            },
            negative_ttl: secs(s.narinfo_cache_negative_ttl),
            positive_ttl: secs(s.narinfo_cache_positive_ttl),
            jobs: usize::try_from(s.max_substitution_jobs.max(1)).unwrap_or(16),
            retry_backoff: Duration::from_millis(250),
        })
    }
}

/// Remembered narinfo answers: when, and what (`None`: not in the cache).
type Answers = HashMap<StorePath, (Instant, Option<Arc<NarInfo>>)>;

/// One configured cache.
struct Cache {
    url: String,
    cache: BinaryCache,
    /// `?priority=` in the URL, which wins over `nix-cache-info`.
    url_priority: Option<i64>,
    /// Remembered narinfo answers: when, and what.
    answers: Mutex<Answers>,
}

/// The caches in the order they are tried, once known.
struct Order {
    /// Indices into `caches`, best first.
    usable: Vec<usize>,
    /// Caches that could not be opened: (url, message).
    broken: Vec<(String, String)>,
}

/// The configured substituters; see the module docs.
pub struct Substituters {
    caches: Vec<Cache>,
    opts: SubstituterOptions,
    store_dir: StoreDir,
    order: tokio::sync::OnceCell<Order>,
    /// One lock per path being substituted, so concurrent requests for a
    /// path (two referrers sharing a reference) download it once.
    in_flight: Mutex<HashMap<StorePath, Arc<tokio::sync::Mutex<()>>>>,
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Substituters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.caches.iter().map(|c| c.url.as_str()).collect();
        f.debug_struct("Substituters")
            .field("caches", &urls)
            .finish_non_exhaustive()
    }
}

impl Drop for Substituters {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's context panics;
        // shutting it down in the background never does.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What one cache said about one path.
enum Answer {
    Has(Arc<NarInfo>),
    Missing,
    Failed(String),
}

impl Substituters {
    /// The substituters Nix's settings ask for: `None` when `substitute` is
    /// off or `substituters` is empty. Cache URLs are parsed (and local
    /// cache directories created) here; nothing is fetched until the first
    /// [`Substitute::has`] or [`Substitute::substitute`] call.
    ///
    /// The builder calls this once per `b3 build` and hands the result to
    /// the scheduler as its `Arc<dyn Substitute>`.
    pub fn from_settings(
        settings: &Settings,
        store_dir: &StoreDir,
    ) -> Result<Option<Self>, SubstituterConfigError> {
        if !settings.substitute || settings.substituters.0.is_empty() {
            return Ok(None);
        }
        let opts = SubstituterOptions::from_settings(settings)?;
        Self::new(&settings.substituters.0, store_dir, opts).map(Some)
    }

    /// Substituters over `urls` (in configuration order) with `opts`.
    pub fn new(
        urls: &[String],
        store_dir: &StoreDir,
        opts: SubstituterOptions,
    ) -> Result<Self, SubstituterConfigError> {
        let mut caches = Vec::new();
        for url in urls {
            let cfg_err = |source| SubstituterConfigError::Cache {
                url: url.clone(),
                source: Box::new(source),
            };
            let parsed = CacheUrl::parse(url).map_err(|e| cfg_err(e.into()))?;
            let cache =
                BinaryCache::open_with(url, store_dir.clone(), &opts.net).map_err(cfg_err)?;
            caches.push(Cache {
                url: url.clone(),
                cache,
                url_priority: parsed.priority,
                answers: Mutex::new(HashMap::new()),
            });
        }
        Ok(Substituters {
            caches,
            opts,
            store_dir: store_dir.clone(),
            order: tokio::sync::OnceCell::new(),
            in_flight: Mutex::new(HashMap::new()),
            runtime: OnceLock::new(),
        })
    }

    /// The configured URLs in the order they are tried (reads every
    /// `nix-cache-info` on first use); caches that could not be opened are
    /// left out.
    pub fn ordered_urls(&self) -> Vec<String> {
        self.block_on(async {
            let order = self.order().await;
            order
                .usable
                .iter()
                .map(|&i| self.caches[i].url.clone())
                .collect()
        })
    }

    /// Makes every path of `paths` valid (references first), as
    /// [`Substitute::substitute`] does for one. Async, for callers that
    /// have a runtime (`b3 copy`).
    pub async fn substitute_async(
        &self,
        store: &LocalStore,
        path: &StorePath,
    ) -> Result<Substituted, SubstituteError> {
        self.substitute_path(store, path, Vec::new()).await
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("b3-substituter")
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot start the substitution runtime: {e}"))
        })
    }

    /// Runs `fut` to completion from synchronous code, on a helper thread
    /// if this thread is already inside a runtime.
    fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let rt = self.runtime();
        if tokio::runtime::Handle::try_current().is_err() {
            return rt.block_on(fut);
        }
        std::thread::scope(|s| match s.spawn(|| rt.block_on(fut)).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }

    async fn order(&self) -> &Order {
        self.order
            .get_or_init(|| async {
                let infos =
                    futures::future::join_all(self.caches.iter().map(|c| self.cache_info(c))).await;
                let mut usable = Vec::new();
                let mut broken = Vec::new();
                for (i, (c, info)) in self.caches.iter().zip(infos).enumerate() {
                    match info {
                        Ok(info) => {
                            let prio = c.url_priority.or(info.priority).unwrap_or(DEFAULT_PRIORITY);
                            usable.push((prio, i));
                        }
                        Err(e) => broken.push((c.url.clone(), e)),
                    }
                }
                // Stable: equal priorities keep configuration order.
                usable.sort_by_key(|&(prio, _)| prio);
                Order {
                    usable: usable.into_iter().map(|(_, i)| i).collect(),
                    broken,
                }
            })
            .await
    }

    async fn cache_info(&self, c: &Cache) -> Result<CacheInfo, String> {
        let mut last = String::new();
        for attempt in 0..self.opts.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            match c.cache.init().await {
                Ok(info) => return Ok(info),
                // Another store's cache stays wrong however often we ask.
                Err(e @ BinaryCacheError::WrongStoreDir { .. }) => return Err(e.to_string()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.opts
            .retry_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(5))
    }

    /// The narinfo of `path` in `c`, remembered for the configured TTLs.
    async fn lookup(&self, c: &Cache, path: &StorePath) -> Answer {
        if let Some(a) = self.remembered(c, path) {
            return a;
        }
        let mut last = String::new();
        for attempt in 0..self.opts.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            match c.cache.narinfo(path).await {
                Ok(found) => {
                    let found = found.map(Arc::new);
                    if let Ok(mut m) = c.answers.lock() {
                        m.insert(path.clone(), (Instant::now(), found.clone()));
                    }
                    return match found {
                        Some(ni) => Answer::Has(ni),
                        None => Answer::Missing,
                    };
                }
                // A malformed or mismatched narinfo does not improve.
                Err(
                    e @ (BinaryCacheError::NarInfo { .. } | BinaryCacheError::PathMismatch { .. }),
                ) => return Answer::Failed(e.to_string()),
                Err(e) => last = e.to_string(),
            }
        }
        Answer::Failed(last)
    }

    fn remembered(&self, c: &Cache, path: &StorePath) -> Option<Answer> {
        let m = c.answers.lock().ok()?;
        let (at, found) = m.get(path)?;
        let ttl = if found.is_some() {
            self.opts.positive_ttl
        } else {
            self.opts.negative_ttl
        };
        if at.elapsed() > ttl {
            return None;
        }
        Some(match found {
            Some(ni) => Answer::Has(ni.clone()),
            None => Answer::Missing,
        })
    }

    /// Whether `ni` may be substituted: `Err` says why not.
    fn check_trust(&self, url: &str, ni: &NarInfo) -> Result<(), String> {
        if !self.opts.require_sigs {
            return Ok(());
        }
        if ni.count_valid_sigs(&self.store_dir, &self.opts.trusted_keys) > 0 {
            return Ok(());
        }
        // A content address that yields the path proves it without a
        // signature; the local store checks the contents against it.
        if ni.ca.is_some() && to_path_info(ni).ca_matches_path(&self.store_dir) {
            return Ok(());
        }
        let p = self.store_dir.display(&ni.store_path);
        let why = if ni.sigs.is_empty() {
            "it is not signed".to_owned()
        } else {
            let mut trusted_but_bad = Vec::new();
            let mut unknown = Vec::new();
            for s in &ni.sigs {
                match s.parse::<Signature>() {
                    Ok(sig)
                        if self
                            .opts
                            .trusted_keys
                            .iter()
                            .any(|k| k.name() == sig.key_name) =>
                    {
                        trusted_but_bad.push(sig.key_name)
                    }
                    Ok(sig) => unknown.push(sig.key_name),
                    Err(_) => unknown.push(format!("malformed signature '{s}'")),
                }
            }
            let mut parts = Vec::new();
            if !trusted_but_bad.is_empty() {
                parts.push(format!(
                    "its signature by trusted key '{}' does not verify (tampered narinfo?)",
                    trusted_but_bad.join("', '")
                ));
            }
            if !unknown.is_empty() {
                parts.push(format!(
                    "it is signed only by keys not in trusted-public-keys ({})",
                    unknown.join(", ")
                ));
            }
            parts.join("; ")
        };
        Err(format!(
            "refusing '{p}' from '{url}': {why}, and require-sigs is on"
        ))
    }

    fn path_lock(&self, path: &StorePath) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = match self.in_flight.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(path.clone()).or_default().clone()
    }

    fn is_valid(store: &LocalStore, path: &StorePath) -> Result<bool, SubstituteError> {
        store.is_valid_sync(path).map_err(|e| {
            SubstituteError(format!(
                "checking '{}' in the local store: {e}",
                store.print_path(path)
            ))
        })
    }

    /// Boxed (and `Send`) because it recurses into references.
    fn substitute_path<'a>(
        &'a self,
        store: &'a LocalStore,
        path: &'a StorePath,
        chain: Vec<StorePath>,
    ) -> futures::future::BoxFuture<'a, Result<Substituted, SubstituteError>> {
        Box::pin(self.substitute_path_inner(store, path, chain))
    }

    async fn substitute_path_inner(
        &self,
        store: &LocalStore,
        path: &StorePath,
        chain: Vec<StorePath>,
    ) -> Result<Substituted, SubstituteError> {
        let shown = self.store_dir.display(path);
        if chain.contains(path) {
            return Err(SubstituteError(format!(
                "reference cycle through '{shown}' in the substituters' narinfos"
            )));
        }
        if Self::is_valid(store, path)? {
            return Ok(Substituted::Done);
        }
        let lock = self.path_lock(path);
        let _held = lock.lock().await;
        if Self::is_valid(store, path)? {
            return Ok(Substituted::Done);
        }

        let order = self.order().await;
        let mut said: Vec<String> = order
            .broken
            .iter()
            .map(|(u, e)| format!("{u}: {e}"))
            .collect();
        for &i in &order.usable {
            let c = &self.caches[i];
            let ni = match self.lookup(c, path).await {
                Answer::Has(ni) => ni,
                Answer::Missing => continue,
                Answer::Failed(e) => {
                    said.push(format!("{}: {e}", c.url));
                    continue;
                }
            };
            if let Err(e) = self.check_trust(&c.url, &ni) {
                said.push(format!("{}: {e}", c.url));
                continue;
            }

            // References first, from whichever cache has them.
            let mut chain = chain.clone();
            chain.push(path.clone());
            let refs: Vec<StorePath> = ni
                .references
                .iter()
                .filter(|r| *r != path)
                .cloned()
                .collect();
            let results: Vec<(StorePath, Result<Substituted, SubstituteError>)> =
                futures::stream::iter(refs)
                    .map(|r: StorePath| {
                        let chain = chain.clone();
                        async move {
                            let res = self.substitute_path(store, &r, chain).await;
                            (r, res)
                        }
                    })
                    .buffer_unordered(self.opts.jobs.max(1))
                    .collect()
                    .await;
            for (r, res) in results {
                let r = self.store_dir.display(&r);
                match res {
                    Ok(Substituted::Done) => {}
                    Ok(Substituted::NotAvailable) => {
                        return Err(SubstituteError(format!(
                            "cannot substitute '{shown}': its reference '{r}' is in no substituter"
                        )))
                    }
                    Err(e) => {
                        return Err(SubstituteError(format!(
                            "cannot substitute '{shown}': its reference '{r}' failed: {e}"
                        )))
                    }
                }
            }

            match self.fetch(c, store, &ni).await {
                Ok(()) => return Ok(Substituted::Done),
                Err(e) => said.push(format!("{}: {e}", c.url)),
            }
        }
        // A cache that could not be read may well have had the path, so
        // "nobody has it" needs every cache to have answered.
        if said.is_empty() {
            return Ok(Substituted::NotAvailable);
        }
        Err(SubstituteError(format!(
            "cannot substitute '{shown}':\n  {}",
            said.join("\n  ")
        )))
    }

    /// Streams the NAR of `ni` from `c` into `store`, with retries.
    async fn fetch(&self, c: &Cache, store: &LocalStore, ni: &NarInfo) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..self.opts.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            match c.cache.add_to_local(ni, store).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Backend(e))
                    if matches!(
                        e.downcast_ref::<BinaryCacheError>(),
                        Some(BinaryCacheError::BadNarUrl { .. })
                    ) =>
                {
                    return Err(e.to_string())
                }
                Err(e) => last = error_chain(&e),
            }
        }
        if self.opts.attempts > 1 {
            last = format!("{last} (after {} attempts)", self.opts.attempts);
        }
        Err(last)
    }

    /// Every valid path is left alone; see [`Substitute::has`].
    async fn has_async(&self, path: &StorePath) -> bool {
        let order = self.order().await;
        for &i in &order.usable {
            let c = &self.caches[i];
            if let Answer::Has(ni) = self.lookup(c, path).await {
                if self.check_trust(&c.url, &ni).is_ok() {
                    return true;
                }
            }
        }
        false
    }

    /// The sizes from the narinfo of the first usable cache that would
    /// serve `path` (the lookup `has` made is remembered, so this asks
    /// nothing new of the network in the usual has-then-sizes order).
    async fn fetch_sizes_async(&self, path: &StorePath) -> Option<(u64, u64)> {
        let order = self.order().await;
        for &i in &order.usable {
            let c = &self.caches[i];
            if let Answer::Has(ni) = self.lookup(c, path).await {
                if self.check_trust(&c.url, &ni).is_ok() {
                    return Some((ni.file_size.unwrap_or(ni.nar_size), ni.nar_size));
                }
            }
        }
        None
    }
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

impl Substitute for Substituters {
    fn substitute(
        &self,
        store: &LocalStore,
        path: &StorePath,
    ) -> Result<Substituted, SubstituteError> {
        self.block_on(self.substitute_path(store, path, Vec::new()))
    }

    fn has(&self, path: &StorePath) -> bool {
        self.block_on(self.has_async(path))
    }

    fn fetch_sizes(&self, path: &StorePath) -> Option<(u64, u64)> {
        self.block_on(self.fetch_sizes_async(path))
    }
}
