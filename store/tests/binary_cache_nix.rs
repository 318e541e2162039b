//! Binary-cache interop with real Nix 2.8, both directions, over file://.
//!
//! - A cache written by `nix copy --to file://…?secret-key=…` is read by b3:
//!   signatures checked against the Nix-made key, NAR hash verified, NARs
//!   byte-identical to `nix-store --dump`, restored trees identical.
//! - A cache written (and signed) by b3 is substituted by Nix into an empty
//!   chroot store (`nix-store --store DIR -r`), then `nix store verify`
//!   accepts b3's signatures; this for every compression b3 writes.

mod binary_cache_common;

use std::collections::BTreeSet;
use std::path::Path;

use b3_store::binary_cache::{BinaryCache, Compression, PublicKey, SecretKey};
use b3_store::hash::HashAlgo;
use b3_store::path::{FileIngestionMethod, StoreDir, StorePath};
use b3_store::traits::{StoreRead, StoreWrite};
use binary_cache_common::{make_tree, nix, nix_keypair, nix_str, tmpdir, unique_token};

fn store_dir() -> StoreDir {
    StoreDir::default()
}

fn parse(full: &str) -> StorePath {
    store_dir().parse(full).expect("store path")
}

/// Makes `<dep>` (a source tree) and `<top>` (a text file referring to
/// it) in the main Nix store; returns their full paths.
fn nix_paths_with_reference(work: &Path) -> (String, String) {
    let token = unique_token();
    let tree = work.join("tree");
    make_tree(&tree, &token);
    let expr = format!(
        "let d = builtins.path {{ path = {}; name = \"b3bc-dep\"; }}; in builtins.toFile \"b3bc-top\" \"ref: ${{d}} {token}\"",
        tree.display()
    );
    let top = nix_str(&[
        "nix-instantiate",
        "--eval",
        "--read-write-mode",
        "-E",
        &expr,
    ]);
    let top = top.trim_matches('"').to_owned();
    let refs = nix_str(&["nix-store", "-q", "--references", &top]);
    assert_eq!(refs.lines().count(), 1, "{refs}");
    (refs.trim().to_owned(), top)
}

#[tokio::test(flavor = "multi_thread")]
async fn nix_written_cache_is_read_and_verified_by_b3() {
    let work = tmpdir("nix2b3");
    let (sk_file, pk) = nix_keypair(&work, "nix-made-1");
    let (dep, top) = nix_paths_with_reference(&work);
    let cache_dir = work.join("cache");
    let url = format!(
        "file://{}?secret-key={}",
        cache_dir.display(),
        sk_file.display()
    );
    nix(&["nix", "copy", "--to", &url, &top]);

    let trusted: PublicKey = pk.parse().unwrap();
    let cache = BinaryCache::open(&format!("file://{}", cache_dir.display()), store_dir())
        .unwrap()
        .with_trusted_keys(vec![trusted]);
    let info = cache.init().await.unwrap();
    assert_eq!(info.store_dir, "/nix/store");

    let top_p = parse(&top);
    let dep_p = parse(&dep);
    let ni = cache
        .narinfo(&top_p)
        .await
        .unwrap()
        .expect("narinfo of top");
    assert_eq!(ni.compression, Compression::Xz);
    assert_eq!(ni.references, BTreeSet::from([dep_p.clone()]));
    // b3 prints Nix's narinfo byte for byte.
    let on_disk =
        std::fs::read_to_string(cache_dir.join(format!("{}.narinfo", top_p.hash_part()))).unwrap();
    assert_eq!(ni.to_text(&store_dir()), on_disk);

    let closure = cache
        .query_closure(&BTreeSet::from([top_p.clone()]))
        .await
        .unwrap();
    assert_eq!(closure, BTreeSet::from([top_p.clone(), dep_p.clone()]));

    for (p, full) in [(&top_p, &top), (&dep_p, &dep)] {
        let mut nar = Vec::new();
        let n = cache.nar_from_path(p, &mut nar).await.unwrap();
        let want = nix(&["nix-store", "--dump", full]);
        assert_eq!(n, want.len() as u64);
        assert!(nar == want, "NAR of {full} differs from nix-store --dump");

        // Restore from the verified stream; the tree dumps to the same NAR.
        let dest = work.join(format!("restored-{}", p.hash_part()));
        let reader = cache
            .nar_reader(&cache.narinfo(p).await.unwrap().unwrap())
            .await
            .unwrap();
        b3_nar::restore_async(reader, &dest).await.unwrap();
        let (again, _) = b3_nar::dump_path(&dest, Vec::new()).unwrap();
        assert!(again == want, "restored {full} differs");
    }

    // The same cache under a key b3 does not trust is refused.
    let stranger = SecretKey::generate("nix-made-1").unwrap().public();
    let untrusting = BinaryCache::open(&format!("file://{}", cache_dir.display()), store_dir())
        .unwrap()
        .with_trusted_keys(vec![stranger]);
    // `dep` is `fixed:r:sha256`: its content address proves it.
    assert!(untrusting.narinfo(&dep_p).await.unwrap().is_some());
    // `top` is a text path: without a trusted signature it is refused.
    let err = untrusting.narinfo(&top_p).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("is not signed by any of the keys in 'trusted-public-keys'"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// b3 writes the cache (signed, with `compression`), Nix substitutes from it.
async fn b3_written_cache_is_substituted_by_nix(compression: Compression) {
    let work = tmpdir(&format!("b32nix-{compression}"));
    let (sk_file, pk) = nix_keypair(&work, "b3-made-1");
    let token = unique_token();
    let tree = work.join("tree");
    make_tree(&tree, &token);
    let cache_dir = work.join("cache");
    let url = format!(
        "file://{}?secret-key={}&compression={}",
        cache_dir.display(),
        sk_file.display(),
        compression
    );
    let cache = BinaryCache::open(&url, store_dir()).unwrap();
    cache.init().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(cache_dir.join("nix-cache-info")).unwrap(),
        "StoreDir: /nix/store\n"
    );

    // Named like the directory, as `nix-store --add` names it.
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
        .add_text(
            "b3bc-text",
            format!("uses {}\n", store_dir().display(&dep)).as_bytes(),
            &BTreeSet::from([dep.clone()]),
        )
        .await
        .unwrap();

    // b3 computed the same path Nix would for the source.
    let other = work.join("nix-add-store");
    let nix_dep = nix_str(&[
        "nix-store",
        "--store",
        other.to_str().unwrap(),
        "--add",
        tree.to_str().unwrap(),
    ]);
    assert_eq!(
        nix_dep,
        store_dir().display(&dep),
        "path computation differs"
    );

    let chroot = work.join("chroot");
    let top_full = store_dir().display(&top);
    let subst = format!("file://{}", cache_dir.display());
    nix(&[
        "nix-store",
        "--store",
        chroot.to_str().unwrap(),
        "-r",
        &top_full,
        "--option",
        "substituters",
        &subst,
        "--option",
        "trusted-public-keys",
        &pk,
    ]);
    nix(&[
        "nix",
        "store",
        "verify",
        "--store",
        chroot.to_str().unwrap(),
        "--sigs-needed",
        "1",
        "--trusted-public-keys",
        &pk,
        "-r",
        &top_full,
    ]);
    // Nix restored exactly what b3 uploaded.
    // (Nix 2.8's `--dump` reads the logical path, so dump the physical one.)
    let physical = |p: &StorePath| chroot.join("nix/store").join(p.to_string());
    let dumped = nix(&["nix-store", "--dump", physical(&top).to_str().unwrap()]);
    let mut ours = Vec::new();
    cache.nar_from_path(&top, &mut ours).await.unwrap();
    assert!(dumped == ours);
    let dep_dump = nix(&["nix-store", "--dump", physical(&dep).to_str().unwrap()]);
    let (tree_nar, _) = b3_nar::dump_path(&tree, Vec::new()).unwrap();
    assert!(dep_dump == tree_nar);
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread")]
async fn b3_written_xz_cache_is_substituted_by_nix() {
    b3_written_cache_is_substituted_by_nix(Compression::Xz).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b3_written_zstd_cache_is_substituted_by_nix() {
    b3_written_cache_is_substituted_by_nix(Compression::Zstd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b3_written_bzip2_cache_is_substituted_by_nix() {
    b3_written_cache_is_substituted_by_nix(Compression::Bzip2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b3_written_uncompressed_cache_is_substituted_by_nix() {
    b3_written_cache_is_substituted_by_nix(Compression::None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nix_refuses_b3_cache_signed_with_another_key() {
    let work = tmpdir("b32nix-wrongkey");
    let (_, pk) = nix_keypair(&work, "b3-made-1");
    let signer = SecretKey::generate("b3-made-1").unwrap();
    let tree = work.join("tree");
    make_tree(&tree, &unique_token());
    let cache_dir = work.join("cache");
    let cache = BinaryCache::open(&format!("file://{}", cache_dir.display()), store_dir())
        .unwrap()
        .with_secret_key(signer);
    cache.init().await.unwrap();
    let p = cache
        .add_path(
            "b3bc-src",
            &tree,
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
        )
        .await
        .unwrap();
    // Content-addressed paths prove themselves to Nix, so strip the CA to
    // make the signature the only evidence (as for input-addressed paths).
    let ni_file = cache_dir.join(format!("{}.narinfo", p.hash_part()));
    let text = std::fs::read_to_string(&ni_file).unwrap();
    let no_ca: String = text
        .lines()
        .filter(|l| !l.starts_with("CA: "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&ni_file, no_ca).unwrap();

    let chroot = work.join("chroot");
    let out = std::process::Command::new("nix-store")
        .args([
            "--store",
            chroot.to_str().unwrap(),
            "-r",
            &store_dir().display(&p),
            "--option",
            "substituters",
            &format!("file://{}", cache_dir.display()),
            "--option",
            "trusted-public-keys",
            &pk,
        ])
        .output()
        .expect("run nix-store (run scripts/setup-test-deps.sh)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not signed by any of the keys"), "{err}");
    let _ = std::fs::remove_dir_all(&work);
}
