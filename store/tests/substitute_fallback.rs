//! A failing substituter falls back to the next one. In front of a good
//! Nix-written file:// cache sits a broken HTTP server on 127.0.0.1 (500s,
//! a NAR that stalls, a truncated NAR, a tampered NAR, a bad signature).
//! Alone, the broken server makes substitution fail with a message saying
//! what went wrong, and nothing is registered; listed first, it is skipped
//! (after the configured retries) and the good cache supplies the closure.

mod substitute_common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use b3_store::binary_cache::Substituters;
use b3_store::substitute::{Substitute, Substituted};
use substitute_common::*;

fn fallback(fault: Fault, expect: &str) {
    let work = tmpdir(&format!("subst-{fault:?}"));
    let (sk, pk) = nix_keypair(&work, "nix-fallback-1");
    let (top, closure) = nix_closure(&work);
    // Uncompressed, so a flipped byte is a NAR hash mismatch, not an xz error.
    let cache = work.join("cache");
    nix_cache(&cache, &sk, "none", &top);
    let server = FaultyServer::start(cache.clone(), fault);

    // The broken server alone: a clear failure, nothing registered.
    let store = empty_store(&work.join("alone"));
    let subs = Substituters::new(&[server.url()], &Default::default(), quick_opts(&[&pk])).unwrap();
    let started = Instant::now();
    let err = subs.substitute(&store, &sp(&top)).unwrap_err().to_string();
    assert!(err.contains(&server.url()), "{err}");
    assert!(err.contains(expect), "{fault:?}: {err}");
    assert!(
        valid_paths(&store).is_empty(),
        "{fault:?}: nothing registered"
    );
    // Stalls are cut off by the stall timeout (2 s per attempt, 2 attempts).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    if matches!(
        fault,
        Fault::StallNar | Fault::TruncateNar | Fault::TamperNar
    ) {
        // Every fetch from the broken server was retried once.
        assert!(server.nar_requests.load(Ordering::SeqCst) >= 2);
    }

    // Broken first, good second: the closure comes from the good cache.
    let store = empty_store(&work.join("both"));
    let subs = Substituters::new(
        &[server.url(), format!("file://{}", cache.display())],
        &Default::default(),
        quick_opts(&[&pk]),
    )
    .unwrap();
    assert_eq!(
        subs.substitute(&store, &sp(&top)).unwrap(),
        Substituted::Done
    );
    assert_holds_exactly(&store, closure);
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn server_errors_fall_back_to_the_next_substituter() {
    fallback(Fault::Error500, "500");
}

#[test]
fn a_stalled_download_falls_back_to_the_next_substituter() {
    fallback(Fault::StallNar, "no data received for 2 s");
}

#[test]
fn a_truncated_nar_falls_back_to_the_next_substituter() {
    fallback(Fault::TruncateNar, "after 2 attempts");
}

#[test]
fn a_tampered_nar_falls_back_to_the_next_substituter() {
    fallback(Fault::TamperNar, "hash mismatch");
}

#[test]
fn a_bad_signature_falls_back_to_the_next_substituter() {
    fallback(
        Fault::BadSignature,
        "signature by trusted key 'nix-fallback-1' does not verify",
    );
}
