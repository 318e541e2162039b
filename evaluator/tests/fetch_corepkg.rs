//! `<nix/fetchurl.nix>` derivations for URLs on 127.0.0.1 instantiate to
//! Nix 2.8's drv and output paths (flat, executable, unpack, sha1/sha512).

mod fetch_common;

use fetch_common::*;

#[test]
fn fetchurl_corepkg_drvs_match_nix() {
    let s = http::serve(vec![]);
    let url = s.url("/pkg-1.0.tar.gz");
    let sha = "1".repeat(52);
    for extra in [
        "",
        "executable = true;",
        "unpack = true;",
        "name = \"other\";",
    ] {
        let expr = format!(
            "let d = import <nix/fetchurl.nix> {{ url = {}; sha256 = \"{sha}\"; {extra} }}; in [ d.drvPath d.outPath ]",
            lit(&url)
        );
        assert_eq!(
            b3_eval(&expr, None).unwrap(),
            nix_eval(&expr).unwrap(),
            "{extra}"
        );
    }
    let expr = format!(
        "(import <nix/fetchurl.nix> {{ url = {}; sha1 = \"{}\"; }}).drvPath",
        lit(&url),
        "0".repeat(40)
    );
    assert_eq!(b3_eval(&expr, None).unwrap(), nix_eval(&expr).unwrap());
    assert_eq!(
        s.hits("/pkg-1.0.tar.gz"),
        0,
        "instantiating does not download"
    );
}
