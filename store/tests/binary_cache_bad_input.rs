//! Hostile binary caches: every kind of bad input is rejected with a clear
//! error, and nothing is restored or registered in the destination store.

mod binary_cache_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use b3_store::binary_cache::copy::{copy_cache_to_cache, copy_cache_to_local};
use b3_store::binary_cache::{
    copy_paths, BinaryCache, Compression, CopyOptions, NarInfo, SecretKey,
};
use b3_store::hash::{Hash, HashAlgo};
use b3_store::local::{LocalStore, LocalStoreConfig};
use b3_store::path::{ContentAddress, StoreDir, StorePath};
use b3_store::traits::{StoreRead, StoreWrite, ValidPathInfo};
use binary_cache_common::tmpdir;

fn dir() -> StoreDir {
    StoreDir::default()
}

/// A signed cache with one path holding `contents`; returns the cache
/// directory, the path, and the signing key.
struct Fixture {
    work: PathBuf,
    cache_dir: PathBuf,
    path: StorePath,
    key: SecretKey,
}

fn nar_str(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
    out.resize(out.len() + (8 - b.len() % 8) % 8, 0);
}

fn nar_of_tokens(tokens: &[&[u8]]) -> Vec<u8> {
    let mut o = Vec::new();
    for t in tokens {
        nar_str(&mut o, t);
    }
    o
}

fn file_nar(contents: &[u8]) -> Vec<u8> {
    nar_of_tokens(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"regular",
        b"contents",
        contents,
        b")",
    ])
}

async fn fixture(tag: &str, compression: Compression) -> Fixture {
    let work = tmpdir(tag);
    let cache_dir = work.join("cache");
    let key = SecretKey::generate("bad-input-1").unwrap();
    let cache = writer(&cache_dir, &key, compression).await;
    let contents = "some contents that compress well\n".repeat(2000);
    let path = cache
        .add_text("victim", contents.as_bytes(), &BTreeSet::new())
        .await
        .unwrap();
    Fixture {
        work,
        cache_dir,
        path,
        key,
    }
}

async fn writer(cache_dir: &Path, key: &SecretKey, compression: Compression) -> BinaryCache {
    let cache = BinaryCache::open(&format!("file://{}", cache_dir.display()), dir())
        .unwrap()
        .with_secret_key(key.clone())
        .with_compression(compression);
    cache.init().await.unwrap();
    cache
}

impl Fixture {
    fn reader(&self) -> BinaryCache {
        BinaryCache::open(&format!("file://{}", self.cache_dir.display()), dir())
            .unwrap()
            .with_trusted_keys(vec![self.key.public()])
    }

    fn narinfo_file(&self) -> PathBuf {
        self.cache_dir
            .join(format!("{}.narinfo", self.path.hash_part()))
    }

    fn nar_file(&self) -> PathBuf {
        let text = std::fs::read_to_string(self.narinfo_file()).unwrap();
        let url = text
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .unwrap()
            .to_owned();
        self.cache_dir.join(url)
    }

    fn edit_narinfo(&self, f: impl Fn(&str) -> String) {
        let text = std::fs::read_to_string(self.narinfo_file()).unwrap();
        std::fs::write(self.narinfo_file(), f(&text)).unwrap();
    }

    /// Copies the path into a fresh local store, by the generic route and
    /// by the cache-to-local fast path; returns both error texts (joined)
    /// after checking the path did not become valid there.
    async fn copy_into_local_fails(&self) -> String {
        let local = LocalStore::open(LocalStoreConfig::new(self.work.join("local"))).unwrap();
        let wanted = BTreeSet::from([self.path.clone()]);
        let err = copy_paths(&self.reader(), &local, &wanted, true)
            .await
            .unwrap_err();
        assert!(!local.is_valid_path(&self.path).await.unwrap());
        assert!(!local.real_path(&self.path).exists(), "files left behind");
        let fast = copy_cache_to_local(&self.reader(), &local, &wanted, &CopyOptions::default())
            .await
            .unwrap_err();
        assert!(!local.is_valid_path(&self.path).await.unwrap());
        assert!(!local.real_path(&self.path).exists(), "files left behind");
        format!("{err}\n{fast}")
    }

    /// Copies the path into fresh caches, one with the source's
    /// compression (the compressed bytes passed through) and one with
    /// another (recompressed); returns both error texts (joined) after
    /// checking that neither cache got a narinfo.
    async fn copy_into_cache_fails(&self, source: Compression) -> String {
        let wanted = BTreeSet::from([self.path.clone()]);
        let other = if source == Compression::Zstd {
            Compression::None
        } else {
            Compression::Zstd
        };
        let mut errs = Vec::new();
        for (i, c) in [source, other].into_iter().enumerate() {
            let dst_dir = self.work.join(format!("dst-cache-{i}"));
            let dst = writer(&dst_dir, &self.key, c).await;
            let err = copy_cache_to_cache(&self.reader(), &dst, &wanted, &CopyOptions::default())
                .await
                .unwrap_err();
            assert!(!dst.has_narinfo(&self.path).await.unwrap(), "{err}");
            errs.push(err.to_string());
        }
        errs.join("\n")
    }

    /// Restoring the (verified) NAR stream fails and leaves no destination.
    async fn restore_fails(&self) -> String {
        let cache = self.reader();
        let info = cache.narinfo(&self.path).await.unwrap().unwrap();
        let dest = self.work.join("restored");
        let r = cache.nar_reader(&info).await.unwrap();
        let err = b3_nar::restore_async(r, &dest).await.unwrap_err();
        assert!(!dest.exists(), "restore left {}", dest.display());
        err.to_string()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn good_cache_copies_into_local_store() {
    let f = fixture("good", Compression::Xz).await;
    let local = LocalStore::open(LocalStoreConfig::new(f.work.join("local"))).unwrap();
    let copied = copy_paths(&f.reader(), &local, &BTreeSet::from([f.path.clone()]), true)
        .await
        .unwrap();
    assert_eq!(copied, vec![f.path.clone()]);
    assert!(local.is_valid_path(&f.path).await.unwrap());
    // The fast path, into a second store, gives the same NAR.
    let fast_store = LocalStore::open(LocalStoreConfig::new(f.work.join("fast"))).unwrap();
    let wanted = BTreeSet::from([f.path.clone()]);
    let copied = copy_cache_to_local(&f.reader(), &fast_store, &wanted, &CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(copied, vec![f.path.clone()]);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    local.nar_from_path(&f.path, &mut a).await.unwrap();
    fast_store.nar_from_path(&f.path, &mut b).await.unwrap();
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_nar_is_rejected_and_nothing_registered() {
    let f = fixture("tampered", Compression::None).await;
    let nar = f.nar_file();
    let mut bytes = std::fs::read(&nar).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x20; // inside the file contents: still a well-formed NAR
    std::fs::write(&nar, bytes).unwrap();

    let mut sink = Vec::new();
    let err = f
        .reader()
        .nar_from_path(&f.path, &mut sink)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NAR hash mismatch"), "{err}");
    let err = f.copy_into_local_fails().await;
    assert!(err.contains("NAR hash mismatch"), "{err}");
    assert!(err.contains("hash mismatch importing path"), "{err}");
    let err = f.copy_into_cache_fails(Compression::None).await;
    assert_eq!(
        err.matches("hash mismatch importing path").count(),
        2,
        "{err}"
    );
    let err = f.restore_fails().await;
    assert!(err.contains("NAR hash mismatch"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_download_is_rejected() {
    for compression in [Compression::None, Compression::Xz] {
        let f = fixture(&format!("trunc-{compression}"), compression).await;
        let nar = f.nar_file();
        let bytes = std::fs::read(&nar).unwrap();
        std::fs::write(&nar, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let mut sink = Vec::new();
        let err = f
            .reader()
            .nar_from_path(&f.path, &mut sink)
            .await
            .unwrap_err()
            .to_string();
        if compression == Compression::None {
            assert!(err.contains("is truncated"), "{err}");
        }
        assert!(err.contains(&f.path.to_string()), "{err}");
        let err = f.copy_into_local_fails().await;
        // Both routes name the path.
        for line in err.lines().filter(|l| !l.starts_with(' ')) {
            assert!(line.contains(&f.path.to_string()), "{err}");
        }
        f.copy_into_cache_fails(compression).await;
        f.restore_fails().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signature_or_unknown_key_is_rejected() {
    let f = fixture("badsig", Compression::Xz).await;
    // Strip the content address so only the signature could vouch for it.
    f.edit_narinfo(|t| {
        t.lines()
            .filter(|l| !l.starts_with("CA: "))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    assert!(f.reader().narinfo(&f.path).await.is_ok());

    // Flip one character of the signature.
    f.edit_narinfo(|t| {
        let i = t.find("Sig: bad-input-1:").unwrap() + "Sig: bad-input-1:".len() + 3;
        let mut b = t.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    });
    let err = f.reader().narinfo(&f.path).await.unwrap_err().to_string();
    assert!(
        err.contains("is not signed by any of the keys in 'trusted-public-keys'"),
        "{err}"
    );
    let err = f.copy_into_local_fails().await;
    assert_eq!(err.matches("not signed").count(), 2, "{err}");

    // Correctly signed, but by a key nobody trusts.
    let stranger = SecretKey::generate("stranger-1").unwrap();
    let mut info =
        NarInfo::parse(&std::fs::read_to_string(f.narinfo_file()).unwrap(), &dir()).unwrap();
    info.sigs.clear();
    info.sign(&dir(), &stranger);
    std::fs::write(f.narinfo_file(), info.to_text(&dir())).unwrap();
    let err = f.reader().narinfo(&f.path).await.unwrap_err().to_string();
    assert!(err.contains("not signed by any of the keys"), "{err}");
    // A stranger key with the trusted key's *name* is no better.
    let impostor = SecretKey::generate("bad-input-1").unwrap();
    info.sigs.clear();
    info.sign(&dir(), &impostor);
    std::fs::write(f.narinfo_file(), info.to_text(&dir())).unwrap();
    assert!(f.reader().narinfo(&f.path).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_narinfo_fields_are_rejected_with_line_and_field() {
    let f = fixture("malformed", Compression::Xz).await;
    for (from, to, want) in [
        ("NarSize: ", "NarSize: 12x", "line 7: field NarSize"),
        ("NarHash: ", "NarHash: sha256:zzz", "line 6: field NarHash"),
        (
            "Compression: ",
            "Compression: lzma9",
            "unknown compression method 'lzma9'",
        ),
        (
            "StorePath: ",
            "StorePath: /etc/passwd",
            "line 1: field StorePath",
        ),
    ] {
        let original = std::fs::read_to_string(f.narinfo_file()).unwrap();
        f.edit_narinfo(|t| {
            t.lines()
                .map(|l| {
                    if l.starts_with(from) {
                        format!("{to}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect()
        });
        let err = f.reader().narinfo(&f.path).await.unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
        assert!(err.contains(".narinfo"), "names the file: {err}");
        f.copy_into_local_fails().await;
        std::fs::write(f.narinfo_file(), original).unwrap();
    }
    // A narinfo for another path under this path's name.
    let hash = f.path.hash_part();
    f.edit_narinfo(|t| t.replace(&hash, "0000000000000000000000000000000b"));
    let err = f.reader().narinfo(&f.path).await.unwrap_err().to_string();
    assert!(err.contains("not the requested"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nar_url_outside_the_cache_is_rejected() {
    let f = fixture("url", Compression::None).await;
    std::fs::write(f.work.join("secret"), file_nar(b"x")).unwrap();
    for url in [
        "../secret",
        "/etc/passwd",
        "nar/../../secret",
        "file:///etc/passwd",
    ] {
        let mut info =
            NarInfo::parse(&std::fs::read_to_string(f.narinfo_file()).unwrap(), &dir()).unwrap();
        info.url = url.to_owned();
        info.sign(&dir(), &f.key);
        std::fs::write(f.narinfo_file(), info.to_text(&dir())).unwrap();
        let cache = f.reader();
        let info = cache.narinfo(&f.path).await.unwrap().unwrap();
        let err = match cache.nar_reader(&info).await {
            Ok(_) => panic!("{url}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("is not a relative path inside the cache"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn path_traversal_in_a_nar_is_rejected() {
    let f = fixture("traversal", Compression::None).await;
    for evil in [&b".."[..], b"../escaped", b"a/b", b"."] {
        let nar = nar_of_tokens(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            evil,
            b"node",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"pwned",
            b")",
            b")",
            b")",
        ]);
        let nar_hash = Hash::digest(HashAlgo::Sha256, &nar);
        let path = StorePath::from_base_name("0000000000000000000000000000000a-evil").unwrap();

        // b3 refuses to upload it in the first place.
        let cache = writer(&f.cache_dir, &f.key, Compression::None).await;
        let info = ValidPathInfo::new(path.clone(), nar_hash, nar.len() as u64);
        let err = cache.add_nar(&info, &mut &nar[..]).await.unwrap_err();
        assert!(err.to_string().contains("invalid NAR"), "{err}");
        assert!(!cache.has_narinfo(&path).await.unwrap());

        // A hostile cache serves it anyway, correctly signed.
        let url = format!("nar/{}.nar", nar_hash.to_nix32());
        std::fs::write(f.cache_dir.join(&url), &nar).unwrap();
        let mut ni = NarInfo {
            store_path: path.clone(),
            url,
            compression: Compression::None,
            file_hash: Some(nar_hash),
            file_size: Some(nar.len() as u64),
            nar_hash,
            nar_size: nar.len() as u64,
            references: BTreeSet::new(),
            deriver: None,
            system: None,
            sigs: BTreeSet::new(),
            ca: None::<ContentAddress>,
        };
        ni.sign(&dir(), &f.key);
        std::fs::write(
            f.cache_dir.join(format!("{}.narinfo", path.hash_part())),
            ni.to_text(&dir()),
        )
        .unwrap();

        let reader = f.reader();
        let dest = f.work.join("evil-dest");
        let r = reader.nar_reader(&ni).await.unwrap();
        let err = b3_nar::restore_async(r, &dest).await.unwrap_err();
        assert!(err.to_string().contains("invalid NAR"), "{err}");
        assert!(!dest.exists());
        assert!(!f.work.join("escaped").exists());

        let local = LocalStore::open(LocalStoreConfig::new(f.work.join("local"))).unwrap();
        let err = copy_paths(&reader, &local, &BTreeSet::from([path.clone()]), false)
            .await
            .unwrap_err();
        assert!(!local.is_valid_path(&path).await.unwrap(), "{err}");
        assert!(!local.real_path(&path).exists());
        let fast = copy_cache_to_local(
            &reader,
            &local,
            &BTreeSet::from([path.clone()]),
            &CopyOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(fast.to_string().contains("invalid NAR"), "{fast}");
        assert!(!local.is_valid_path(&path).await.unwrap());
        assert!(!local.real_path(&path).exists());
        assert!(!f.work.join("escaped").exists());
        // Nor does a cache-to-cache copy pass it on, with the compressed
        // bytes passed through (none to none) or recompressed.
        for (i, c) in [Compression::None, Compression::Zstd]
            .into_iter()
            .enumerate()
        {
            let dst = writer(&f.work.join(format!("evil-dst-{i}")), &f.key, c).await;
            let err = copy_cache_to_cache(
                &reader,
                &dst,
                &BTreeSet::from([path.clone()]),
                &CopyOptions::default(),
            )
            .await
            .unwrap_err();
            assert!(err.to_string().contains("invalid NAR"), "{err}");
            assert!(!dst.has_narinfo(&path).await.unwrap());
        }
        std::fs::remove_file(f.cache_dir.join(format!("{}.narinfo", path.hash_part()))).unwrap();
    }
}
