//! Reading an http:// binary cache (read-only, like cache.nixos.org). The
//! cache is written by real Nix (`nix copy --to file://ROOT/bucket`) and
//! served over plain HTTP by an anonymous s3s-fs on 127.0.0.1; b3 reads
//! it with signature checks and refuses to upload to it.

mod binary_cache_common;

use std::collections::BTreeSet;

use b3_store::binary_cache::{BinaryCache, PublicKey};
use b3_store::path::StoreDir;
use b3_store::traits::{StoreRead, StoreWrite};
use binary_cache_common::{make_tree, nix, nix_keypair, nix_str, start_s3, tmpdir, unique_token};

#[tokio::test(flavor = "multi_thread")]
async fn http_cache_written_by_nix_is_read_by_b3() {
    let work = tmpdir("http");
    let (sk, pk) = nix_keypair(&work, "nix-http-1");
    let tree = work.join("tree");
    make_tree(&tree, &unique_token());
    let p = nix_str(&["nix-store", "--add", tree.to_str().unwrap()]);
    let root = work.join("root");
    let bucket = root.join("cache");
    nix(&[
        "nix",
        "copy",
        "--to",
        &format!("file://{}?secret-key={}", bucket.display(), sk.display()),
        &p,
    ]);
    let server = start_s3(root, None);

    let dir = StoreDir::default();
    let url = format!("http://127.0.0.1:{}/cache", server.port);
    let trusted: PublicKey = pk.parse().unwrap();
    let cache = BinaryCache::open(&url, dir.clone())
        .unwrap()
        .with_trusted_keys(vec![trusted]);
    assert_eq!(cache.init().await.unwrap().store_dir, "/nix/store");
    let sp = dir.parse(&p).unwrap();
    let info = cache
        .query_path_info(&sp)
        .await
        .unwrap()
        .expect("narinfo over http");
    assert_eq!(info.signatures.len(), 1);
    let mut nar = Vec::new();
    cache.nar_from_path(&sp, &mut nar).await.unwrap();
    assert!(nar == nix(&["nix-store", "--dump", &p]));
    let missing = dir
        .parse("/nix/store/00000000000000000000000000000000-missing")
        .unwrap();
    assert!(!cache.is_valid_path(&missing).await.unwrap());

    let err = cache
        .add_text("x", b"y", &BTreeSet::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}
