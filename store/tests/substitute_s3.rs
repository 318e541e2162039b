//! An S3 bucket (s3s-fs on 127.0.0.1, with credentials from the
//! environment) as a substituter: the bucket holds a cache written by Nix
//! 2.8, and b3 substitutes the closure from it into an empty store.

mod substitute_common;

use b3_store::binary_cache::Substituters;
use b3_store::substitute::{Substitute, Substituted};
use substitute_common::*;

#[test]
fn an_s3_bucket_is_a_substituter() {
    let work = tmpdir("subst-s3");
    let (sk, pk) = nix_keypair(&work, "nix-s3-1");
    let (top, closure) = nix_closure(&work);
    let root = work.join("s3root");
    nix_cache(&root.join("subst-bucket"), &sk, "xz", &top);
    let server = start_s3(root, Some(("SUBSTKEY", "substsecret")));
    // The only test in this binary: the variables reach nobody else.
    std::env::set_var("AWS_ACCESS_KEY_ID", "SUBSTKEY");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "substsecret");

    let url = format!(
        "s3://subst-bucket?region=us-east-1&endpoint=http://127.0.0.1:{}",
        server.port
    );
    let subs = Substituters::new(&[url], &Default::default(), quick_opts(&[&pk])).unwrap();
    let store = empty_store(&work.join("b3"));
    assert!(subs.has(&sp(&top)));
    assert_eq!(
        subs.substitute(&store, &sp(&top)).unwrap(),
        Substituted::Done
    );
    assert_holds_exactly(&store, closure);
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}
