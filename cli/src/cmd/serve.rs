//! `b3 serve`: serve the local store as a Nix HTTP binary cache (like
//! nix-serve / harmonia), so `nix-store -r --option substituters
//! http://HOST:PORT` and `b3 copy --from http://…` can fetch from it.
//!
//! Routes: `/nix-cache-info`, `/<hashpart>.narinfo`, `/<hashpart>.ls` (Nix's
//! JSON NAR listing) and `/nar/<hashpart>.nar[.xz|.zst|.bz2]`, streamed
//! from the store and compressed on the fly as the suffix asks. Narinfos
//! point at the `--compression` the server was started with (default
//! none); compressed NARs have no `FileHash`/`FileSize`, which Nix accepts.
//! Narinfos are signed with `--secret-key-file`. axum 0.8 panics on a
//! route with a parameter plus a suffix in one segment (`/{hash}.narinfo`),
//! so the routes are `/{file}` and `/nar/{file}` and the handlers split the
//! suffix off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use b3_store::binary_cache::compression::compress_writer;
use b3_store::binary_cache::listing::listing_of;
use b3_store::binary_cache::{CacheInfo, Compression, NarInfo, SecretKey};
use b3_store::local::LocalStore;
use b3_store::path::StorePath;
use b3_store::traits::StoreRead;
use tokio::io::AsyncWriteExt;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Sign narinfos with this Nix secret-key file.
    #[arg(long)]
    pub secret_key_file: Option<PathBuf>,
    /// Priority advertised in nix-cache-info (lower wins).
    #[arg(long, default_value_t = 30)]
    pub priority: i64,
    /// Compression of the NARs narinfos point at: none, xz, zstd or bzip2
    /// (any of them can also be fetched by its file suffix).
    #[arg(long, default_value = "none")]
    pub compression: Compression,
}

struct Served {
    store: LocalStore,
    key: Option<SecretKey>,
    cache_info: String,
    compression: Compression,
    /// Hash part → base name of paths seen valid.
    names: RwLock<HashMap<String, String>>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open_store(g)?;
    let key = match &a.secret_key_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading '{}'", f.display()))?
                .parse::<SecretKey>()
                .with_context(|| format!("secret key file '{}'", f.display()))?,
        ),
        None => None,
    };
    let mut info = CacheInfo::new(store.store_dir().as_str());
    info.want_mass_query = Some(true);
    info.priority = Some(a.priority);
    let state = Arc::new(Served {
        store,
        key,
        cache_info: info.to_text(),
        compression: a.compression,
        names: RwLock::new(HashMap::new()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let app = router(state);
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        eprintln!("serving the b3 store on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await.context("serving")?;
        Ok(ExitCode::SUCCESS)
    })
}

fn router(state: Arc<Served>) -> Router {
    Router::new()
        .route("/{file}", get(top_level))
        .route("/nar/{file}", get(nar))
        .with_state(state)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

/// The valid path whose hash part is `hash`, if any.
async fn lookup(s: &Served, hash: &str) -> Result<Option<StorePath>, Response> {
    if hash.len() != 32 {
        return Ok(None);
    }
    let known = s.names.read().ok().and_then(|m| m.get(hash).cloned());
    if let Some(name) = known {
        if let Ok(p) = StorePath::from_base_name(&name) {
            if let Ok(true) = s.store.is_valid_path(&p).await {
                return Ok(Some(p));
            }
        }
    }
    // The local store has no index by hash part; the store directory's
    // entries start with it, so scan those names and check validity.
    let dir = s.store.real_store_dir().to_path_buf();
    let prefix = format!("{hash}-");
    let found = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                return Ok(Some(name));
            }
        }
        Ok(None)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let Some(name) = found else { return Ok(None) };
    let Ok(p) = StorePath::from_base_name(&name) else {
        return Ok(None);
    };
    match s.store.is_valid_path(&p).await {
        Ok(true) => {
            if let Ok(mut m) = s.names.write() {
                m.insert(hash.to_owned(), name);
            }
            Ok(Some(p))
        }
        Ok(false) => Ok(None),
        Err(e) => Err(internal(e)),
    }
}

async fn top_level(State(s): State<Arc<Served>>, Path(file): Path<String>) -> Response {
    if file == "nix-cache-info" {
        return (
            [(header::CONTENT_TYPE, "text/x-nix-cache-info")],
            s.cache_info.clone(),
        )
            .into_response();
    }
    if let Some(hash) = file.strip_suffix(".ls") {
        return listing(&s, hash).await;
    }
    let Some(hash) = file.strip_suffix(".narinfo") else {
        return not_found();
    };
    let p = match lookup(&s, hash).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let info = match s.store.query_path_info(&p).await {
        Ok(Some(i)) => i,
        Ok(None) => return not_found(),
        Err(e) => return internal(e),
    };
    let dir = s.store.store_dir();
    let plain = s.compression == Compression::None;
    let mut ni = NarInfo {
        store_path: p.clone(),
        url: format!("nar/{}.nar{}", p.hash_part(), s.compression.extension()),
        compression: s.compression,
        file_hash: plain.then_some(info.nar_hash),
        file_size: plain.then_some(info.nar_size),
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: info.references,
        deriver: info.deriver,
        system: None,
        sigs: info.signatures,
        ca: info.ca,
    };
    if let Some(k) = &s.key {
        ni.sign(dir, k);
    }
    (
        [(header::CONTENT_TYPE, "text/x-nix-narinfo")],
        ni.to_text(dir),
    )
        .into_response()
}

/// The `.ls` listing of the path with hash part `hash`, made from its NAR.
async fn listing(s: &Arc<Served>, hash: &str) -> Response {
    let p = match lookup(s, hash).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let (rd, mut wr) = tokio::io::duplex(256 << 10);
    let state = s.clone();
    let producer = tokio::spawn(async move {
        let r = state.store.nar_from_path(&p, &mut wr).await;
        let _ = wr.shutdown().await;
        r
    });
    let listed = listing_of(rd).await;
    match (producer.await, listed) {
        (Ok(Ok(_)), Ok(json)) => {
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        (Ok(Err(e)), _) => internal(e),
        (Err(e), _) => internal(e),
        (_, Err(e)) => internal(e),
    }
}

async fn nar(State(s): State<Arc<Served>>, Path(file): Path<String>) -> Response {
    let (stem, compression) = if let Some(h) = file.strip_suffix(".xz") {
        (h, Compression::Xz)
    } else if let Some(h) = file.strip_suffix(".zst") {
        (h, Compression::Zstd)
    } else if let Some(h) = file.strip_suffix(".bz2") {
        (h, Compression::Bzip2)
    } else {
        (file.as_str(), Compression::None)
    };
    let Some(hash) = stem.strip_suffix(".nar") else {
        return not_found();
    };
    let p = match lookup(&s, hash).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    // Stream: the store writes the NAR into a pipe the response body reads.
    let (rd, wr) = tokio::io::duplex(256 << 10);
    let state = s.clone();
    tokio::spawn(async move {
        let mut enc = compress_writer(compression, wr);
        if let Err(e) = state.store.nar_from_path(&p, &mut enc).await {
            tracing::warn!("serving NAR of {p}: {e}");
        }
        // Flushes the compressor's trailer, then EOF for the body.
        let _ = enc.shutdown().await;
    });
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(rd));
    ([(header::CONTENT_TYPE, "application/x-nix-nar")], body).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_do_not_panic() {
        // axum validates routes when they are added.
        let _ = super::Router::<()>::new()
            .route("/{file}", axum::routing::get(|| async { "" }))
            .route("/nar/{file}", axum::routing::get(|| async { "" }));
    }
}
