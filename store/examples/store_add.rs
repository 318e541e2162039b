//! `store_add STORE_ROOT PATH`: adds PATH to the local store at STORE_ROOT
//! as `b3 store add` does (recursive, sha256) and prints the store path.
//! Builds in a fraction of the CLI's time, for measuring the ingest path
//! alone (bench/store/run.sh with B3_STORE_ADD=<this binary>).

use std::path::Path;

use b3_store::hash::HashAlgo;
use b3_store::local::{LocalStore, LocalStoreConfig};
use b3_store::path::FileIngestionMethod;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, path] = &args[..] else {
        eprintln!("usage: store_add STORE_ROOT PATH");
        std::process::exit(2);
    };
    let run = || -> Result<String, b3_store::traits::StoreError> {
        let store = LocalStore::open(LocalStoreConfig::resolve(Some(root.into()))?)?;
        let src = Path::new(path);
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let p =
            store.add_path_sync(&name, src, FileIngestionMethod::Recursive, HashAlgo::Sha256)?;
        Ok(store.print_path(&p))
    };
    match run() {
        Ok(p) => println!("{p}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
