//! The shared store conformance suite, run against the local store.

mod conformance;

use b3_store::local::{LocalStore, LocalStoreConfig};

async fn make_local() -> (LocalStore, tempfile::TempDir) {
    let d = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(LocalStoreConfig::new(d.path())).expect("open local store");
    (store, d)
}

store_conformance!(make_local());
