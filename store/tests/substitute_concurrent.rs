//! Concurrent substitution calls sharing references fetch each NAR once
//! and all end with their paths valid; a call whose own NAR is bad still
//! leaves the references it fetched first registered, and nothing
//! half-done behind.

mod substitute_common;

#[cfg(feature = "http")]
use std::sync::atomic::Ordering;
#[cfg(feature = "http")]
use std::sync::Arc;

use b3_store::binary_cache::Substituters;
use b3_store::local::LocalStore;
use b3_store::substitute::Substitute;
use substitute_common::*;

/// Entries of the store directory that are not store paths (temporary
/// staging nodes left behind).
fn leftovers(store: &LocalStore) -> Vec<String> {
    std::fs::read_dir(store.real_store_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

// Over HTTP, which counts the NAR requests (the workspace build, as CI
// runs it, has the feature).
#[cfg(feature = "http")]
#[test]
fn concurrent_substitutions_sharing_references_fetch_each_nar_once_and_all_end_valid() {
    let work = tmpdir("subst-batch-concurrent");
    let (sk, pk) = nix_keypair(&work, "nix-batch-1");
    let (top, closure) = nix_closure(&work);
    let cache = work.join("cache");
    nix_cache(&cache, &sk, "zstd", &top);
    let server = FaultyServer::start(cache.clone(), Fault::Nothing);

    let store = empty_store(&work.join("b3"));
    let subs = Arc::new(
        Substituters::new(&[server.url()], &Default::default(), quick_opts(&[&pk])).unwrap(),
    );
    // Every path of the closure, several times, from as many threads.
    let wanted: Vec<String> = closure.iter().cycle().take(12).cloned().collect();
    let threads: Vec<_> = wanted
        .iter()
        .map(|p| {
            let (subs, store, p) = (Arc::clone(&subs), store.clone(), p.clone());
            std::thread::spawn(move || {
                let got = subs.substitute(&store, &sp(&p));
                // Done means registered.
                let valid = store.is_valid_sync(&sp(&p)).unwrap();
                (p, got.map_err(|e| e.to_string()), valid)
            })
        })
        .collect();
    for t in threads {
        let (p, got, valid) = t.join().unwrap();
        assert_eq!(got, Ok(b3_store::substitute::Substituted::Done), "{p}");
        assert!(valid, "{p} reported done but is not valid");
    }
    assert_holds_exactly(&store, closure.clone());
    assert_eq!(
        server.nar_requests.load(Ordering::SeqCst),
        closure.len(),
        "each NAR fetched once"
    );
    assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_bad_nar_of_the_top_path_keeps_its_substituted_references_and_registers_nothing_else() {
    let work = tmpdir("subst-batch-bad-top");
    let (sk, pk) = nix_keypair(&work, "nix-batch-2");
    let (top, closure) = nix_closure(&work);
    // Uncompressed, so a flipped byte is a NAR hash mismatch.
    let cache = work.join("cache");
    nix_cache(&cache, &sk, "none", &top);
    let hash_part = &sp(&top).base_name()[..32];
    let info = std::fs::read_to_string(cache.join(format!("{hash_part}.narinfo"))).unwrap();
    let url = info
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_owned();
    let nar_file = cache.join(url);
    // Same size, one byte of a symlink target changed: a well-formed NAR
    // with another hash.
    let mut nar = std::fs::read(&nar_file).unwrap();
    let at = nar.windows(7).rposition(|w| w == b"busybox").unwrap();
    nar[at + 6] = b'y';
    std::fs::write(&nar_file, nar).unwrap();

    let store = empty_store(&work.join("b3"));
    let subs = Substituters::new(
        &[format!("file://{}", cache.display())],
        &Default::default(),
        quick_opts(&[&pk]),
    )
    .unwrap();
    let err = subs.substitute(&store, &sp(&top)).unwrap_err().to_string();
    assert!(err.contains("hash"), "{err}");
    assert!(!store.is_valid_sync(&sp(&top)).unwrap());
    assert!(!store.real_path(&sp(&top)).exists());
    let refs: Vec<String> = closure.iter().filter(|p| **p != top).cloned().collect();
    assert_holds_exactly(&store, refs);
    assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
    let _ = std::fs::remove_dir_all(&work);
}
