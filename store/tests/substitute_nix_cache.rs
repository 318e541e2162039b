//! Substituting from file:// caches written by Nix 2.8 into empty b3
//! stores: signatures checked against the Nix-made key, refusals with
//! clear messages and nothing registered, cache priorities, and a path
//! no cache has.

mod substitute_common;

use b3_store::binary_cache::Substituters;
use b3_store::substitute::{Substitute, Substituted};
use substitute_common::*;

#[test]
fn nix_written_cache_is_substituted_into_an_empty_b3_store() {
    let work = tmpdir("subst-nix");
    let (sk, pk) = nix_keypair(&work, "nix-subst-1");
    let (top, closure) = nix_closure(&work);
    let cache = work.join("cache");
    nix_cache(&cache, &sk, "xz", &top);

    let store = empty_store(&work.join("b3"));
    let subs = Substituters::new(
        &[format!("file://{}", cache.display())],
        &Default::default(),
        quick_opts(&[&pk]),
    )
    .unwrap();
    assert!(subs.has(&sp(&top)));
    assert_eq!(
        subs.substitute(&store, &sp(&top)).unwrap(),
        Substituted::Done
    );

    let mut got = valid_paths(&store);
    got.sort();
    let mut want = closure.clone();
    want.sort();
    assert_eq!(got, want, "the whole closure is valid");
    for p in &closure {
        let info = store.query_path_info_sync(&sp(p)).unwrap().unwrap();
        let mut nar = Vec::new();
        store.nar_from_path_sync(&sp(p), &mut nar).unwrap();
        assert!(
            nar == nix(&["nix-store", "--dump", p]),
            "NAR of {p} differs from Nix's"
        );
        // Nix's signature travels with the path; busybox is content-addressed.
        if !p.ends_with("-bb") {
            assert!(
                info.signatures
                    .iter()
                    .any(|s| s.starts_with("nix-subst-1:")),
                "{p}: {:?}",
                info.signatures
            );
        }
        let refs = nix_str(&["nix-store", "-q", "--references", p]);
        let mut want_refs: Vec<&str> = refs.lines().collect();
        want_refs.sort();
        let got_refs: Vec<String> = info
            .references
            .iter()
            .map(|r| store.print_path(r))
            .collect();
        assert_eq!(got_refs, want_refs, "references of {p}");
    }
    // Already valid: nothing to do, still Done.
    assert_eq!(
        subs.substitute(&store, &sp(&top)).unwrap(),
        Substituted::Done
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn untrusted_paths_are_refused_with_a_clear_message_and_nothing_is_registered() {
    let work = tmpdir("subst-untrusted");
    let (sk, _pk) = nix_keypair(&work, "nix-subst-signer");
    let (_, other_pk) = nix_keypair(&work, "nix-subst-other");
    let (top, _) = nix_closure(&work);
    let cache = work.join("cache");
    nix_cache(&cache, &sk, "zstd", &top);
    let url = format!("file://{}", cache.display());

    // Signed by a key that is not trusted.
    let store = empty_store(&work.join("b3"));
    let subs = Substituters::new(
        std::slice::from_ref(&url),
        &Default::default(),
        quick_opts(&[&other_pk]),
    )
    .unwrap();
    assert!(!subs.has(&sp(&top)));
    let err = subs.substitute(&store, &sp(&top)).unwrap_err().to_string();
    assert!(err.contains(&top), "{err}");
    assert!(
        err.contains("signed only by keys not in trusted-public-keys (nix-subst-signer)"),
        "{err}"
    );
    assert!(valid_paths(&store).is_empty(), "nothing registered");

    // Unsigned: strip the signatures.
    for e in std::fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "narinfo") {
            let t = std::fs::read_to_string(&p).unwrap();
            let t: String = t
                .lines()
                .filter(|l| !l.starts_with("Sig: "))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&p, t).unwrap();
        }
    }
    let subs = Substituters::new(
        std::slice::from_ref(&url),
        &Default::default(),
        quick_opts(&[&other_pk]),
    )
    .unwrap();
    let err = subs.substitute(&store, &sp(&top)).unwrap_err().to_string();
    assert!(
        err.contains("it is not signed, and require-sigs is on"),
        "{err}"
    );
    assert!(valid_paths(&store).is_empty(), "nothing registered");
    // Busybox is content-addressed: accepted without a signature, as Nix does.
    assert_eq!(subs.substitute(&store, &sp(BB)).unwrap(), Substituted::Done);
    assert_eq!(valid_paths(&store), vec![BB.to_owned()]);

    // require-sigs off: the unsigned closure is accepted.
    let mut opts = quick_opts(&[]);
    opts.require_sigs = false;
    let subs = Substituters::new(&[url], &Default::default(), opts).unwrap();
    assert_eq!(
        subs.substitute(&store, &sp(&top)).unwrap(),
        Substituted::Done
    );
    assert_eq!(valid_paths(&store).len(), 3);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn caches_are_tried_by_priority_then_configuration_order() {
    let work = tmpdir("subst-prio");
    let (sk_a, pk_a) = nix_keypair(&work, "cache-a-1");
    let (sk_b, pk_b) = nix_keypair(&work, "cache-b-1");
    let (top, _) = nix_closure(&work);
    let (a, b, c) = (work.join("a"), work.join("b"), work.join("c"));
    nix_cache(&a, &sk_a, "none", &top);
    nix_cache(&b, &sk_b, "xz", &top);
    std::fs::create_dir_all(&c).unwrap();
    // a: 60, b: 10 (from nix-cache-info), c: no priority (50), overridden to 5
    // in its URL below.
    std::fs::write(
        a.join("nix-cache-info"),
        "StoreDir: /nix/store\nPriority: 60\n",
    )
    .unwrap();
    std::fs::write(
        b.join("nix-cache-info"),
        "StoreDir: /nix/store\nPriority: 10\n",
    )
    .unwrap();
    let (ua, ub) = (
        format!("file://{}", a.display()),
        format!("file://{}", b.display()),
    );
    let uc = format!("file://{}?priority=5", c.display());

    let subs = Substituters::new(
        &[ua.clone(), ub.clone(), uc.clone()],
        &Default::default(),
        quick_opts(&[&pk_a, &pk_b]),
    )
    .unwrap();
    assert_eq!(
        subs.ordered_urls(),
        vec![uc.clone(), ub.clone(), ua.clone()]
    );

    // c has nothing; b (priority 10) wins over a (60), though a is listed
    // first: the registered signatures say where the paths came from.
    let store = empty_store(&work.join("b3"));
    assert_eq!(
        subs.substitute(&store, &sp(&top)).unwrap(),
        Substituted::Done
    );
    let info = store.query_path_info_sync(&sp(&top)).unwrap().unwrap();
    assert!(
        info.signatures.iter().all(|s| s.starts_with("cache-b-1:")),
        "{:?}",
        info.signatures
    );

    // Equal priorities keep configuration order.
    std::fs::write(
        b.join("nix-cache-info"),
        "StoreDir: /nix/store\nPriority: 60\n",
    )
    .unwrap();
    let subs = Substituters::new(
        &[ua.clone(), ub.clone()],
        &Default::default(),
        quick_opts(&[&pk_a, &pk_b]),
    )
    .unwrap();
    assert_eq!(subs.ordered_urls(), vec![ua, ub]);
    let store = empty_store(&work.join("b3-second"));
    assert_eq!(
        subs.substitute(&store, &sp(&top)).unwrap(),
        Substituted::Done
    );
    let info = store.query_path_info_sync(&sp(&top)).unwrap().unwrap();
    assert!(
        info.signatures.iter().all(|s| s.starts_with("cache-a-1:")),
        "{:?}",
        info.signatures
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_path_no_cache_has_is_not_available() {
    let work = tmpdir("subst-none");
    let empty = work.join("empty-cache");
    std::fs::create_dir_all(&empty).unwrap();
    let subs = Substituters::new(
        &[format!("file://{}", empty.display())],
        &Default::default(),
        quick_opts(&[]),
    )
    .unwrap();
    let store = empty_store(&work.join("b3"));
    let missing = sp("/nix/store/00000000000000000000000000000000-missing");
    assert!(!subs.has(&missing));
    assert_eq!(
        subs.substitute(&store, &missing).unwrap(),
        Substituted::NotAvailable
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn from_settings_follows_nix_settings() {
    use b3_store::settings::Settings;
    let work = tmpdir("subst-settings");
    let cache = work.join("c");
    std::fs::create_dir_all(&cache).unwrap();
    let dir = b3_store::path::StoreDir::default();

    let s = Settings {
        substitute: false,
        ..Settings::default()
    };
    assert!(Substituters::from_settings(&s, &dir).unwrap().is_none());
    let mut s = Settings::default();
    s.substituters.0.clear();
    assert!(Substituters::from_settings(&s, &dir).unwrap().is_none());

    let mut s = Settings::default();
    s.substituters.0 = vec![format!("file://{}", cache.display())];
    let subs = Substituters::from_settings(&s, &dir).unwrap().unwrap();
    assert_eq!(subs.ordered_urls().len(), 1);

    s.trusted_public_keys.0 = vec!["not-a-key".into()];
    let err = Substituters::from_settings(&s, &dir)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("trusted-public-keys:"), "{err}");
    let _ = std::fs::remove_dir_all(&work);
}
