//! The binary cache over S3, against a real S3 server (s3s-fs 0.14.1) on
//! 127.0.0.1: `s3://bucket?endpoint=…&region=…&profile=…` as Nix spells it.
//! Round-trips paths (one large enough for a multipart upload), reads them
//! back with signature checks, and lets Nix 2.8 substitute from the bucket's
//! directory (Debian's Nix has no S3 support, so it reads the files s3s-fs
//! stored). Needs `s3s-fs` on PATH or in ~/.cargo/bin:
//! `cargo install s3s-fs --version 0.14.1 --features binary --locked`.

mod binary_cache_common;

use std::collections::BTreeSet;

use b3_store::binary_cache::{BinaryCache, SecretKey};
use b3_store::hash::HashAlgo;
use b3_store::path::{FileIngestionMethod, StoreDir};
use b3_store::traits::{StoreRead, StoreWrite};
use binary_cache_common::{make_tree, nix, start_s3, tmpdir, unique_token};

#[tokio::test(flavor = "multi_thread")]
async fn s3_cache_round_trips_and_nix_reads_the_bucket() {
    let work = tmpdir("s3");
    let root = work.join("s3root");
    std::fs::create_dir_all(root.join("b3-bucket")).unwrap();
    let server = start_s3(root, Some(("B3TESTKEY", "b3testsecret")));

    // Credentials through Nix's `profile=` parameter.
    let creds = work.join("credentials");
    std::fs::write(
        &creds,
        "[other]\naws_access_key_id = X\naws_secret_access_key = Y\n\
         [b3ci]\naws_access_key_id = B3TESTKEY\naws_secret_access_key = b3testsecret\n",
    )
    .unwrap();
    // Only this test in this binary reads the variable.
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &creds);

    let sk = SecretKey::generate("b3-s3-1").unwrap();
    let url = format!(
        "s3://b3-bucket?region=eu-west-1&endpoint=http://127.0.0.1:{}&profile=b3ci&compression=none",
        server.port
    );
    let dir = StoreDir::default();
    let cache = BinaryCache::open(&url, dir.clone())
        .unwrap()
        .with_secret_key(sk.clone());
    cache.init().await.unwrap();

    let tree = work.join("tree");
    make_tree(&tree, &unique_token());
    // 12 MiB of incompressible-ish data: more than one 8 MiB upload part.
    let mut big = Vec::with_capacity(12 << 20);
    let mut x: u32 = 0x1234_5678;
    while big.len() < 12 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(tree.join("large.bin"), &big).unwrap();

    let dep = cache
        .add_path(
            "tree",
            &tree,
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
        )
        .await
        .unwrap();
    let top = cache
        .add_text("b3-s3-top", b"hi", &BTreeSet::from([dep.clone()]))
        .await
        .unwrap();

    let reader = BinaryCache::open(&url, dir.clone())
        .unwrap()
        .with_trusted_keys(vec![sk.public()]);
    let closure = reader
        .query_closure(&BTreeSet::from([top.clone()]))
        .await
        .unwrap();
    assert_eq!(closure, BTreeSet::from([top.clone(), dep.clone()]));
    let mut nar = Vec::new();
    reader.nar_from_path(&dep, &mut nar).await.unwrap();
    let (want, _) = b3_nar::dump_path(&tree, Vec::new()).unwrap();
    assert!(nar == want, "S3 round trip changed the NAR");

    // The bucket is a directory on disk: Nix substitutes from it.
    let (nix_sk, nix_pk) = binary_cache_common::nix_keypair(&work, "unused-1");
    let _ = nix_sk;
    let chroot = work.join("chroot");
    nix(&[
        "nix-store",
        "--store",
        chroot.to_str().unwrap(),
        "-r",
        &dir.display(&top),
        "--option",
        "substituters",
        &format!("file://{}/b3-bucket", server.root.display()),
        "--option",
        "trusted-public-keys",
        &format!("{} {nix_pk}", sk.public()),
    ]);
    // Nix 2.8's `--dump` reads the logical path: dump the physical one.
    let physical = chroot.join("nix/store").join(dep.to_string());
    let dumped = nix(&["nix-store", "--dump", physical.to_str().unwrap()]);
    assert!(dumped == want);
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}
