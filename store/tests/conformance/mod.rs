//! The store conformance suite: behaviour every writable b3 store must show,
//! written once and run against each store.
//!
//! Use it from an integration test with
//! ```ignore
//! mod conformance;
//! store_conformance!(async { /* -> (impl StoreWrite, guard) */ });
//! ```
//! The expression is evaluated afresh for every test (each gets an empty
//! store); the guard (e.g. a `TempDir`) lives until the test ends. Expected
//! paths and hashes are real Nix 2.8 outputs (see
//! `shared/reference/nix-oracle-facts.md`).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use b3_store::hash::{Hash, HashAlgo};
use b3_store::path::{FileIngestionMethod, StorePath};
use b3_store::traits::{StoreError, StoreWrite, ValidPathInfo};

/// Generates one `#[tokio::test]` per conformance check for the store made by
/// `$make` (an expression yielding a future of `(store, guard)`).
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@tests $make;
            fresh_store_is_empty,
            add_text_gives_nix_path_and_info,
            add_nar_round_trips_bytes_and_info,
            add_nar_with_wrong_hash_is_rejected,
            add_nar_with_wrong_size_is_rejected,
            add_nar_with_malformed_nar_is_rejected,
            add_nar_with_missing_reference_is_rejected,
            references_and_closure,
            adding_twice_is_idempotent,
            nar_of_invalid_path_is_an_error,
            concurrent_adds_of_one_path_all_succeed,
        );
        // The oracle's tree has an executable and a symlink: Unix only.
        #[cfg(unix)]
        mod unix_tree {
            use super::*;
            $crate::store_conformance!(@tests $make;
                add_path_matches_nix_store_add,
                add_fixed_matches_nix_store_add_fixed,
            );
        }
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, _guard) = $make.await;
                conformance::$name(std::sync::Arc::new(store)).await;
            }
        )*
    };
}

/// A store path with this base name.
pub fn sp(base: &str) -> StorePath {
    StorePath::from_base_name(base).expect("test store path")
}

/// NAR bytes of a single regular file (built by hand: the format is fixed).
pub fn file_nar(contents: &[u8], executable: bool) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
        out.resize(out.len() + (8 - b.len() % 8) % 8, 0);
    }
    let mut o = Vec::new();
    s(&mut o, b"nix-archive-1");
    s(&mut o, b"(");
    s(&mut o, b"type");
    s(&mut o, b"regular");
    if executable {
        s(&mut o, b"executable");
        s(&mut o, b"");
    }
    s(&mut o, b"contents");
    s(&mut o, contents);
    s(&mut o, b")");
    o
}

pub fn sha256(data: &[u8]) -> Hash {
    Hash::digest(HashAlgo::Sha256, data)
}

/// Info for an input-addressed path carrying `nar`.
pub fn info_for(path: &StorePath, nar: &[u8]) -> ValidPathInfo {
    ValidPathInfo::new(path.clone(), sha256(nar), nar.len() as u64)
}

async fn nar_of<S: StoreWrite + ?Sized>(store: &S, p: &StorePath) -> Result<Vec<u8>, StoreError> {
    let mut out: Vec<u8> = Vec::new();
    store.nar_from_path(p, &mut out).await?;
    Ok(out)
}

const P1: &str = "ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-t2";
const P2: &str = "z6nl0rwcz4lzvjlyhm1hx9m7697mhnnw-dep";
const P3: &str = "b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";

pub async fn fresh_store_is_empty<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let p = sp(P1);
    assert!(!store.is_valid_path(&p).await.unwrap());
    assert!(store.query_path_info(&p).await.unwrap().is_none());
}

pub async fn add_text_gives_nix_path_and_info<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let p = store
        .add_text("foo", b"bar", &BTreeSet::new())
        .await
        .unwrap();
    // nix-instantiate --eval -E 'builtins.toFile "foo" "bar"'
    assert_eq!(
        store.store_dir().display(&p),
        "/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo"
    );
    let info = store.query_path_info(&p).await.unwrap().expect("valid");
    let nar = file_nar(b"bar", false);
    assert_eq!(info.nar_hash, sha256(&nar));
    assert_eq!(info.nar_size, nar.len() as u64);
    assert_eq!(
        info.ca.map(|c| c.to_string()),
        Some(format!("text:{}", sha256(b"bar")))
    );
    assert_eq!(nar_of(&*store, &p).await.unwrap(), nar);
}

pub async fn add_nar_round_trips_bytes_and_info<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let p = sp(P2);
    let nar = file_nar(b"dep-content\n", false);
    let mut info = info_for(&p, &nar);
    info.signatures.insert("test-1:c2lnbmF0dXJl".to_string());
    info.deriver = Some(sp("ljg7vc04lbh30fyzqx4d9izayglql9fh-dep.drv"));
    store.add_nar(&info, &mut &nar[..]).await.unwrap();
    assert!(store.is_valid_path(&p).await.unwrap());
    let got = store.query_path_info(&p).await.unwrap().expect("valid");
    assert_eq!(got.nar_hash, info.nar_hash);
    assert_eq!(got.nar_size, info.nar_size);
    assert_eq!(got.references, info.references);
    assert_eq!(got.deriver, info.deriver);
    assert_eq!(got.signatures, info.signatures);
    assert_eq!(nar_of(&*store, &p).await.unwrap(), nar);
    // Nix's known NAR hash for this content (the `dep` output).
    assert_eq!(
        got.nar_hash.to_nix32(),
        "1vagcg4r6l6x6w0lj246c0cg1mvd3h5rsaizhfw68mw4sxpdh6cp"
    );
}

pub async fn add_nar_with_wrong_hash_is_rejected<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let p = sp(P2);
    let nar = file_nar(b"dep-content\n", false);
    let mut info = info_for(&p, &nar);
    info.nar_hash = sha256(b"something else");
    let e = store.add_nar(&info, &mut &nar[..]).await.unwrap_err();
    assert!(matches!(e, StoreError::NarHashMismatch { .. }), "{e}");
    assert!(!store.is_valid_path(&p).await.unwrap());
}

pub async fn add_nar_with_wrong_size_is_rejected<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let p = sp(P2);
    let nar = file_nar(b"dep-content\n", false);
    for claimed in [nar.len() as u64 - 8, nar.len() as u64 + 8] {
        let mut info = info_for(&p, &nar);
        info.nar_size = claimed;
        let e = store.add_nar(&info, &mut &nar[..]).await.unwrap_err();
        assert!(
            matches!(e, StoreError::NarSizeMismatch { .. } | StoreError::Nar(_)),
            "claimed {claimed}: {e}"
        );
        assert!(!store.is_valid_path(&p).await.unwrap());
    }
}

pub async fn add_nar_with_malformed_nar_is_rejected<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let p = sp(P2);
    let good = file_nar(b"dep-content\n", false);
    let mut bad_magic = good.clone();
    bad_magic[8] = b'X';
    let truncated = good[..good.len() - 16].to_vec();
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0u8; 8]);
    for (what, nar) in [
        ("bad magic", bad_magic),
        ("truncated", truncated),
        ("trailing bytes", trailing),
        ("empty", Vec::new()),
    ] {
        // Claim the bytes' own hash and size: only the format is wrong.
        let info = info_for(&p, &nar);
        let r = store.add_nar(&info, &mut &nar[..]).await;
        assert!(r.is_err(), "{what}: accepted");
        assert!(!store.is_valid_path(&p).await.unwrap(), "{what}");
    }
}

pub async fn add_nar_with_missing_reference_is_rejected<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let p = sp(P1);
    let nar = file_nar(b"refers to dep", false);
    let mut info = info_for(&p, &nar);
    info.references.insert(sp(P2));
    let e = store.add_nar(&info, &mut &nar[..]).await.unwrap_err();
    assert!(matches!(e, StoreError::MissingReference { .. }), "{e}");
    assert!(!store.is_valid_path(&p).await.unwrap());
}

pub async fn references_and_closure<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let (a, b, c) = (sp(P3), sp(P2), sp(P1));
    let na = file_nar(b"a", false);
    store
        .add_nar(&info_for(&a, &na), &mut &na[..])
        .await
        .unwrap();
    let nb = file_nar(b"b", false);
    let mut ib = info_for(&b, &nb);
    ib.references = BTreeSet::from([a.clone(), b.clone()]);
    store.add_nar(&ib, &mut &nb[..]).await.unwrap();
    let nc = file_nar(b"c", true);
    let mut ic = info_for(&c, &nc);
    ic.references = BTreeSet::from([b.clone()]);
    store.add_nar(&ic, &mut &nc[..]).await.unwrap();

    let got = store.query_path_info(&b).await.unwrap().unwrap();
    assert_eq!(got.references, BTreeSet::from([a.clone(), b.clone()]));
    let closure = store
        .query_closure(&BTreeSet::from([c.clone()]))
        .await
        .unwrap();
    assert_eq!(closure, BTreeSet::from([a.clone(), b.clone(), c.clone()]));
    let closure_a = store
        .query_closure(&BTreeSet::from([a.clone()]))
        .await
        .unwrap();
    assert_eq!(closure_a, BTreeSet::from([a.clone()]));
    match store.query_referrers(&a).await {
        Ok(r) => assert_eq!(r, BTreeSet::from([b.clone()])),
        Err(StoreError::Unsupported(_)) => {}
        Err(e) => panic!("query_referrers: {e}"),
    }
}

#[cfg(unix)]
/// The tree from the oracle facts: a.txt, sub/run.sh (executable), link -> a.txt, empty.
pub fn make_test_tree(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let t = dir.join("tree");
    std::fs::create_dir_all(t.join("sub")).unwrap();
    std::fs::write(t.join("a.txt"), b"hello\n").unwrap();
    std::fs::write(t.join("sub/run.sh"), b"#!/bin/sh\necho x\n").unwrap();
    std::fs::set_permissions(t.join("sub/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", t.join("link")).unwrap();
    std::fs::write(t.join("empty"), b"").unwrap();
    t
}

#[cfg(unix)]
pub async fn add_path_matches_nix_store_add<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let d = tempfile::tempdir().unwrap();
    let t = make_test_tree(d.path());
    let p = store
        .add_path("tree", &t, FileIngestionMethod::Recursive, HashAlgo::Sha256)
        .await
        .unwrap();
    assert_eq!(
        store.store_dir().display(&p),
        "/nix/store/cz2bdp1hl06n3fh04zlykgqxcc24bpzb-tree"
    );
    let info = store.query_path_info(&p).await.unwrap().unwrap();
    assert_eq!(
        info.nar_hash.to_nix32(),
        "04mmzy4hc0bc3dbfc434nmapigqqxq0nj4hz23gnsiv1gf1l3dsh"
    );
    assert_eq!(
        info.ca.map(|c| c.to_string()),
        Some("fixed:r:sha256:04mmzy4hc0bc3dbfc434nmapigqqxq0nj4hz23gnsiv1gf1l3dsh".to_string())
    );
    let nar = nar_of(&*store, &p).await.unwrap();
    assert_eq!(sha256(&nar), info.nar_hash);
    assert_eq!(nar.len() as u64, info.nar_size);
}

#[cfg(unix)]
pub async fn add_fixed_matches_nix_store_add_fixed<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("hello.txt");
    std::fs::write(&f, b"hello\n").unwrap();
    let t = make_test_tree(d.path());
    let cases: [(&Path, &str, FileIngestionMethod, HashAlgo, &str); 4] = [
        (
            &f,
            "hello.txt",
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
            "i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt",
        ),
        (
            &f,
            "hello.txt",
            FileIngestionMethod::Flat,
            HashAlgo::Sha256,
            "gy454w1cxaq731grqwylhzf4pp9r5izh-hello.txt",
        ),
        (
            &f,
            "hello.txt",
            FileIngestionMethod::Flat,
            HashAlgo::Md5,
            "dra1cz5vbrhclpv4y1q0psnbkxz581bk-hello.txt",
        ),
        (
            &t,
            "tree",
            FileIngestionMethod::Recursive,
            HashAlgo::Sha1,
            "jr0fywcy4i3ncy4aqwmx31h2204s2pbm-tree",
        ),
    ];
    for (src, name, method, algo, want) in cases {
        let p = store.add_path(name, src, method, algo).await.unwrap();
        assert_eq!(p.base_name(), want, "{method:?} {algo:?}");
        assert!(store.is_valid_path(&p).await.unwrap());
    }
    // hello.txt's NAR hash (nix-store --dump hello.txt | sha256sum).
    let info = store
        .query_path_info(&sp("gy454w1cxaq731grqwylhzf4pp9r5izh-hello.txt"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.nar_hash.to_base16(),
        "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13"
    );
    assert_eq!(info.nar_size, 120);
}

pub async fn adding_twice_is_idempotent<S: StoreWrite + ?Sized>(store: Arc<S>) {
    let p = sp(P2);
    let nar = file_nar(b"twice", false);
    let info = info_for(&p, &nar);
    store.add_nar(&info, &mut &nar[..]).await.unwrap();
    let first = store.query_path_info(&p).await.unwrap().unwrap();
    store.add_nar(&info, &mut &nar[..]).await.unwrap();
    let second = store.query_path_info(&p).await.unwrap().unwrap();
    assert_eq!(first, second);
    let t1 = store.add_text("x", b"y", &BTreeSet::new()).await.unwrap();
    let t2 = store.add_text("x", b"y", &BTreeSet::new()).await.unwrap();
    assert_eq!(t1, t2);
}

pub async fn nar_of_invalid_path_is_an_error<S: StoreWrite + ?Sized>(store: Arc<S>) {
    assert!(nar_of(&*store, &sp(P1)).await.is_err());
}

pub async fn concurrent_adds_of_one_path_all_succeed<S: StoreWrite + ?Sized + 'static>(
    store: Arc<S>,
) {
    let p = sp(P2);
    let nar = Arc::new(file_nar(&vec![7u8; 300_000], false));
    let info = Arc::new(info_for(&p, &nar));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, n, i) = (store.clone(), nar.clone(), info.clone());
        tasks.push(tokio::spawn(
            async move { s.add_nar(&i, &mut &n[..]).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(store.is_valid_path(&p).await.unwrap());
    assert_eq!(nar_of(&*store, &p).await.unwrap(), *nar);
}
