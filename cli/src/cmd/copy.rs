//! `b3 copy`: copy store paths to or from a binary cache (as `nix copy`).
//!
//! `b3 copy --to URL PATHS…` uploads from the local store;
//! `b3 copy --from URL PATHS…` substitutes into the local store, checking
//! signatures against `--trusted-public-keys` (unless `--no-check-sigs`).
//! Closures are copied unless `--no-recursive`. URLs are Nix's: `file://`,
//! `s3://bucket?region=…&endpoint=…&profile=…`, `http(s)://` (read-only), with
//! `secret-key=FILE` and `compression=xz|zstd|bzip2|none`.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use b3_store::binary_cache::signing::parse_public_keys;
use b3_store::binary_cache::{copy_paths, BinaryCache};
use b3_store::path::StorePath;
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
    /// Store paths (`/nix/store/…` or base names).
    #[arg(required = true)]
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

    let source: Arc<dyn StoreRead> = match &a.from {
        Some(url) => {
            let mut cache = BinaryCache::open(url, store_dir.clone())?;
            if !a.no_check_sigs {
                let keys = parse_public_keys(&a.trusted_public_keys.join(" "))?;
                if keys.is_empty() {
                    bail!("no --trusted-public-keys given for '{url}' (or pass --no-check-sigs)");
                }
                cache = cache.with_trusted_keys(keys);
            }
            cache.init().await?;
            Arc::new(cache)
        }
        None => local.clone(),
    };
    let dest: Arc<dyn StoreWrite> = match &a.to {
        Some(url) => {
            let cache = BinaryCache::open(url, store_dir.clone())?;
            cache.init().await?;
            Arc::new(cache)
        }
        None => local.clone(),
    };

    let mut paths: BTreeSet<StorePath> = BTreeSet::new();
    for p in &a.paths {
        let sp = match store_dir.parse(p) {
            Ok(sp) => sp,
            Err(_) => StorePath::from_base_name(p)
                .with_context(|| format!("'{p}' is not a store path"))?,
        };
        paths.insert(sp);
    }
    let copied = copy_paths(source.as_ref(), dest.as_ref(), &paths, !a.no_recursive).await?;
    for p in &copied {
        eprintln!("copied '{}'", store_dir.display(p));
    }
    Ok(ExitCode::SUCCESS)
}
