//! `b3 copy`: copy store paths to or from a binary cache (as `nix copy`).
//!
//! `b3 copy --to URL PATHS…` uploads from the local store;
//! `b3 copy --from URL PATHS…` substitutes into the local store, checking
//! signatures against `--trusted-public-keys` (unless `--no-check-sigs`).
//! Closures are copied unless `--no-recursive`; `--all` copies every valid
//! path of the source (the local store, or every path in the source
//! cache's narinfos). URLs are Nix's: `file://`,
//! `s3://bucket?region=…&endpoint=…&profile=…`, `http(s)://` (read-only), with
//! `secret-key=FILE`, `compression=xz|zstd|bzip2|none` and
//! `write-nar-listing=1`. Up to `--jobs` transfers run at once; on a
//! terminal, a progress line shows paths and bytes done and the speed.
//! Cache to local store and cache to cache take the routes that fetch each
//! narinfo once and hash each NAR once (see `b3_store::binary_cache::copy`).

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use b3_builder::buildlog::read_log;
use b3_store::binary_cache::copy::{copy_cache_to_cache, copy_cache_to_local};
use b3_store::binary_cache::net::NetOptions;
use b3_store::binary_cache::signing::parse_public_keys;
use b3_store::binary_cache::Substituters;
use b3_store::binary_cache::{copy_paths_with, BinaryCache, CopyOptions, CopyProgress};
use b3_store::local::LocalStore;
use b3_store::path::StorePath;
use b3_store::substitute::Substituted;
use b3_store::traits::{StoreRead, StoreWrite};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Destination cache URL (source: the local store, or --from).
    #[arg(long)]
    pub to: Option<String>,
    /// Source cache URL (destination: the local store, or --to).
    #[arg(long)]
    pub from: Option<String>,
    /// Copy only the given paths, not their closures.
    #[arg(long)]
    pub no_recursive: bool,
    /// Do not require signatures on paths read from --from.
    #[arg(long)]
    pub no_check_sigs: bool,
    /// Keys trusted to sign paths read from --from (`name:base64`, space
    /// separated; repeatable).
    #[arg(long, env = "B3_TRUSTED_PUBLIC_KEYS")]
    pub trusted_public_keys: Vec<String>,
    /// Copy every valid path of the source.
    #[arg(long, conflicts_with = "paths")]
    pub all: bool,
    /// Transfers in flight at once.
    #[arg(long, short = 'j', default_value_t = 16)]
    pub jobs: usize,
    /// With --from into the local store: first substitute what the local
    /// store's own substituters (nix.conf `substituters`) have, and copy
    /// only the rest from the source (as `nix copy -s`). Caches as
    /// destinations cannot substitute, so with --to it changes nothing.
    #[arg(long, short = 's')]
    pub substitute_on_destination: bool,
    /// With --to: also upload the build logs of the copied paths'
    /// derivations, as `log/<drv base name>` (what `nix store copy-log` does).
    #[arg(long)]
    pub with_logs: bool,
    /// Set a nix.conf setting for this command (repeatable).
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub option: Vec<String>,
    /// Store paths (`/nix/store/…` or base names).
    #[arg(required_unless_present = "all")]
    pub paths: Vec<String>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    if a.to.is_none() && a.from.is_none() {
        bail!("give --to URL and/or --from URL");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(copy(g, a))
}

async fn copy(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let local = Arc::new(super::store::open_store(g)?);
    let store_dir = local.store_dir().clone();
    let config = super::config::load(&a.option)?;
    let settings = &config.settings;

    let mut from_cache: Option<Arc<BinaryCache>> = None;
    let source: Arc<dyn StoreRead> = match &a.from {
        Some(url) => {
            let mut cache = BinaryCache::open_with(url, store_dir.clone(), &NetOptions::default())?;
            // As Nix: signatures are required unless `require-sigs = false`
            // or --no-check-sigs; trusted keys are nix.conf's
            // `trusted-public-keys` plus --trusted-public-keys.
            if !a.no_check_sigs && settings.require_sigs {
                let mut keys = parse_public_keys(&settings.trusted_public_keys.0.join(" "))
                    .context("nix.conf trusted-public-keys")?;
                keys.extend(parse_public_keys(&a.trusted_public_keys.join(" "))?);
                if keys.is_empty() {
                    bail!(
                        "refusing to copy from '{url}': no trusted public keys to check its \
                         signatures with (set trusted-public-keys in nix.conf, pass \
                         --trusted-public-keys, or --no-check-sigs / require-sigs = false)"
                    );
                }
                cache = cache.with_trusted_keys(keys);
            }
            cache.init().await?;
            let cache = Arc::new(cache);
            from_cache = Some(cache.clone());
            cache
        }
        None => local.clone(),
    };
    let mut to_cache: Option<Arc<BinaryCache>> = None;
    let dest: Arc<dyn StoreWrite> = match &a.to {
        Some(url) => {
            let cache = BinaryCache::open_with(url, store_dir.clone(), &NetOptions::default())?;
            cache.init().await?;
            let cache = Arc::new(cache);
            to_cache = Some(cache.clone());
            cache
        }
        None => local.clone(),
    };

    let mut paths: BTreeSet<StorePath> = BTreeSet::new();
    if a.all {
        paths = match &a.from {
            Some(url) => {
                let cache = BinaryCache::open(url, store_dir.clone())?;
                cache.all_paths().await?
            }
            None => local.all_valid_paths()?,
        };
    }
    for p in &a.paths {
        let sp = match store_dir.parse(p) {
            Ok(sp) => sp,
            Err(_) => StorePath::from_base_name(p)
                .with_context(|| format!("'{p}' is not a store path"))?,
        };
        paths.insert(sp);
    }
    let bar = std::io::stderr().is_terminal().then(ProgressLine::new);
    let opts = CopyOptions {
        recursive: !a.no_recursive,
        jobs: a.jobs.max(1),
        progress: bar.clone().map(|b| {
            Arc::new(move |p: &CopyProgress| b.show(p)) as b3_store::binary_cache::copy::ProgressFn
        }),
    };
    let started = Instant::now();
    let mut substituted = Vec::new();
    if a.substitute_on_destination && a.to.is_none() {
        substituted = substitute_first(settings, &local, &paths).await?;
    }
    let copied = match (&from_cache, &to_cache) {
        // Cache to local store: the fast path (one narinfo fetch and one
        // NAR hash per path, decompression off the network threads).
        (Some(cache), None) => copy_cache_to_local(cache, &local, &paths, &opts).await,
        // Cache to cache: one narinfo fetch and one NAR hash per path, the
        // compressed NAR passed through when the compressions agree.
        (Some(from), Some(to)) => copy_cache_to_cache(from, to, &paths, &opts).await,
        _ => copy_paths_with(source.as_ref(), dest.as_ref(), &paths, &opts).await,
    };
    if let Some(b) = &bar {
        b.finish();
    }
    let copied = copied?;
    let secs = started.elapsed().as_secs_f64();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if a.substitute_on_destination && a.to.is_none() {
        eprintln!(
            "substituted {} path{} from the destination's substituters",
            substituted.len(),
            plural(substituted.len())
        );
    }
    eprintln!(
        "copied {} path{} in {secs:.2} s",
        copied.len(),
        plural(copied.len())
    );
    if a.with_logs {
        let Some(url) = &a.to else {
            bail!("--with-logs uploads logs to a cache: give --to URL");
        };
        let cache = BinaryCache::open_with(url, store_dir.clone(), &NetOptions::default())?;
        let closure = if a.no_recursive {
            paths.clone()
        } else {
            local.query_closure(&paths).await?
        };
        let n = upload_logs(&local, &cache, &closure).await?;
        eprintln!("uploaded {n} build log{}", plural(n));
    }
    if g.verbose > 0 {
        for p in &copied {
            eprintln!("copied '{}'", store_dir.display(p));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Substitutes `paths` (with their closures: substitution always brings
/// references along) into `local` from nix.conf's `substituters`, as far
/// as they have them. Returns the
/// paths that became valid; the copy then skips them.
async fn substitute_first(
    settings: &b3_store::settings::Settings,
    local: &LocalStore,
    paths: &BTreeSet<StorePath>,
) -> anyhow::Result<Vec<StorePath>> {
    let Some(subst) = Substituters::from_settings(settings, local.store_dir())? else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    for p in paths {
        if local.is_valid_path(p).await? {
            continue;
        }
        // The substituters bring each path's references along with it.
        match subst.substitute_async(local, p).await {
            Ok(Substituted::Done) => done.push(p.clone()),
            Ok(Substituted::NotAvailable) => {}
            // The source may still have it: report, then copy from there.
            Err(e) => eprintln!(
                "warning: substituting '{}': {e}",
                local.store_dir().display(p)
            ),
        }
    }
    Ok(done)
}

/// Uploads the local build logs of the derivations behind `paths` (their
/// derivers, or the paths themselves for `.drv`s) that `cache` lacks.
/// Returns how many were uploaded.
async fn upload_logs(
    local: &LocalStore,
    cache: &BinaryCache,
    paths: &BTreeSet<StorePath>,
) -> anyhow::Result<usize> {
    let mut drvs = BTreeSet::new();
    for p in paths {
        if p.name().ends_with(".drv") {
            drvs.insert(p.clone());
        } else if let Some(info) = local.query_path_info(p).await? {
            drvs.extend(info.deriver);
        }
    }
    let mut n = 0;
    for drv in &drvs {
        let mut log = Vec::new();
        if !read_log(local.root(), &drv.base_name(), &mut log)
            .with_context(|| format!("reading the build log of '{}'", drv.base_name()))?
        {
            continue;
        }
        if cache.has_build_log(drv).await? {
            continue;
        }
        cache.upload_log(drv, log).await?;
        n += 1;
    }
    Ok(n)
}

/// One self-overwriting status line on stderr (terminals only).
#[derive(Clone)]
struct ProgressLine {
    started: Instant,
    last: Arc<Mutex<Option<Instant>>>,
}

impl ProgressLine {
    fn new() -> Self {
        ProgressLine {
            started: Instant::now(),
            last: Arc::new(Mutex::new(None)),
        }
    }

    fn show(&self, p: &CopyProgress) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = Instant::now();
        // At most ten redraws a second, but always the final state.
        let done = p.paths_done == p.paths_total;
        if !done && last.is_some_and(|t| now.duration_since(t).as_millis() < 100) {
            return;
        }
        *last = Some(now);
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-3);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[Kcopying: {}/{} paths, {:.1}/{:.1} MiB, {:.1} MiB/s",
            p.paths_done,
            p.paths_total,
            mib(p.bytes_done),
            mib(p.bytes_total),
            mib(p.bytes_done) / secs
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}
