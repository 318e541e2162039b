//! The shared store conformance suite, run against a file:// binary cache
//! (xz, Nix's default). No signing key: the suite checks that signatures
//! are stored exactly as given, and a signing cache adds its own
//! (signing is covered by binary_cache_nix.rs against real Nix).

mod conformance;

use b3_store::binary_cache::BinaryCache;
use b3_store::path::StoreDir;

async fn make_cache() -> (BinaryCache, tempfile::TempDir) {
    let d = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", d.path().join("cache").display());
    let cache = BinaryCache::open(&url, StoreDir::default()).expect("open cache");
    cache.init().await.expect("init cache");
    (cache, d)
}

store_conformance!(make_cache());
