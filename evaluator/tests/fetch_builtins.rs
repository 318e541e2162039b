//! `builtins.fetchurl` and `builtins.fetchTarball` against Nix 2.8: the
//! same store paths for file:// and http:// (a server on 127.0.0.1 started
//! here) URLs, every tarball compression, Nix's hash-mismatch and
//! pure-mode errors; results land in the b3 store in write mode and stay
//! readable in read-only mode; one fetch per URL per evaluation.

mod fetch_common;

use std::process::Command;

use fetch_common::http::{serve, Route};
use fetch_common::*;

#[test]
fn fetchurl_of_a_file_url_gives_nixs_path_and_lands_in_the_store() {
    let t = TmpDir::new("furl");
    let f = t.path().join("data.txt");
    std::fs::write(&f, "some data\n").unwrap();
    let url = format!("file://{}", f.display());
    let store = TmpDir::new("furl-store");
    for expr in [
        format!("builtins.fetchurl {}", lit(&url)),
        format!(
            "builtins.fetchurl {{ url = {}; name = \"renamed\"; }}",
            lit(&url)
        ),
    ] {
        let nix = nix_eval(&expr).unwrap();
        let b3 = b3_eval(&expr, Some(store.path())).unwrap();
        assert_eq!(b3, nix, "{expr}");
        let p = physical(store.path(), &unquote(&b3));
        assert_eq!(std::fs::read_to_string(p).unwrap(), "some data\n");
    }
}

#[test]
fn fetchurl_over_http_matches_nix_and_checks_sha256() {
    let body = b"served over http\n".repeat(1000);
    let s = serve(vec![("/f.txt", Route::Body(body.clone()))]);
    let url = s.url("/f.txt");
    let expr = format!("builtins.fetchurl {}", lit(&url));
    let nix = nix_eval(&expr).unwrap();
    assert_eq!(b3_eval(&expr, None).unwrap(), nix);

    let body_file = std::env::temp_dir().join(format!("b3-fetch-body-{}", std::process::id()));
    std::fs::write(&body_file, &body).unwrap();
    let good = Command::new("nix-hash")
        .args(["--type", "sha256", "--flat", "--base32"])
        .arg(&body_file)
        .output();
    let _ = std::fs::remove_file(&body_file);
    let good = good.expect("nix-hash is needed: run scripts/setup-test-deps.sh");
    let good = String::from_utf8(good.stdout).unwrap().trim().to_string();
    let pinned = format!(
        "builtins.fetchurl {{ url = {}; sha256 = \"{good}\"; }}",
        lit(&url)
    );
    assert_eq!(b3_eval(&pinned, None).unwrap(), nix);

    let zero = "0".repeat(52);
    let bad = format!(
        "builtins.fetchurl {{ url = {}; sha256 = \"{zero}\"; }}",
        lit(&url)
    );
    let e = b3_eval(&bad, None).unwrap_err();
    let nix_e = nix_eval(&bad).unwrap_err();
    assert!(
        e.starts_with(&format!("hash mismatch in file downloaded from '{url}':")),
        "{e}"
    );
    for line in [
        format!("specified: sha256:{zero}"),
        format!("got:       sha256:{good}"),
    ] {
        assert!(e.contains(&line), "{e}");
        assert!(nix_e.contains(&line), "{nix_e}");
    }
}

#[test]
fn the_same_url_is_fetched_once_per_evaluation() {
    let s = serve(vec![("/once", Route::Body(b"x".to_vec()))]);
    let u = lit(&s.url("/once"));
    let expr = format!("[ (builtins.fetchurl {u}) (builtins.fetchurl {u}) (builtins.readFile (builtins.fetchurl {u})) ]");
    let r = b3_eval(&expr, None).unwrap();
    assert!(r.ends_with(",\"x\"]"), "{r}");
    assert_eq!(s.hits("/once"), 1);
}

#[test]
fn pure_mode_requires_a_hash_as_in_nix() {
    let mut o = opts(None);
    o.pure = true;
    let e = b3_eval_with("builtins.fetchurl \"file:///etc/hostname\"", o).unwrap_err();
    assert_eq!(
        e,
        "in pure evaluation mode, 'fetchurl' requires a 'sha256' argument"
    );
    let mut o = opts(None);
    o.pure = true;
    let e = b3_eval_with("builtins.fetchTarball { url = \"file:///x\"; }", o).unwrap_err();
    assert_eq!(
        e,
        "in pure evaluation mode, 'fetchTarball' requires a 'sha256' argument"
    );
}

#[test]
fn unsupported_arguments_are_named() {
    let e = b3_eval(
        "builtins.fetchurl { url = \"file:///x\"; md5 = \"\"; }",
        None,
    )
    .unwrap_err();
    assert_eq!(e, "unsupported argument 'md5' to 'fetchurl'");
}

/// A source tree with one top-level directory, packed with GNU tar and
/// compressed by each compressor's CLI.
fn tarballs(t: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    let src = t.join("src/proj-1.2");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(src.join("default.nix"), "{ answer = 42; }\n").unwrap();
    std::fs::write(src.join("lib/x.sh"), "#!/bin/sh\necho x\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(src.join("lib/x.sh"))
        .status()
        .unwrap();
    std::os::unix::fs::symlink("default.nix", src.join("link")).unwrap();
    let tar = t.join("proj.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(t.join("src"))
        .arg("proj-1.2")
        .status()
        .expect("GNU tar is needed: run scripts/setup-test-deps.sh");
    assert!(st.success());
    let mut out = vec![("tar".to_string(), tar.clone())];
    for (ext, cmd) in [
        ("gz", "gzip"),
        ("xz", "xz"),
        ("bz2", "bzip2"),
        ("zst", "zstd"),
    ] {
        let dst = t.join(format!("proj.tar.{ext}"));
        let data = Command::new(cmd)
            .arg("-c")
            .arg(&tar)
            .output()
            .unwrap_or_else(|e| panic!("{cmd} is needed ({e}): run scripts/setup-test-deps.sh"));
        std::fs::write(&dst, data.stdout).unwrap();
        out.push((ext.to_string(), dst));
    }
    out
}

#[test]
fn fetch_tarball_matches_nix_for_every_compression() {
    let t = TmpDir::new("ftar");
    let balls = tarballs(t.path());
    let routes: Vec<(String, Vec<u8>)> = balls
        .iter()
        .map(|(ext, p)| (format!("/proj.{ext}"), std::fs::read(p).unwrap()))
        .collect();
    let s = serve(
        routes
            .iter()
            .map(|(p, b)| (p.as_str(), Route::Body(b.clone())))
            .collect(),
    );
    let store = TmpDir::new("ftar-store");
    let mut first = None;
    for (ext, path) in &balls {
        for url in [
            s.url(&format!("/proj.{ext}")),
            format!("file://{}", path.display()),
        ] {
            let expr = format!("builtins.fetchTarball {}", lit(&url));
            let b3 = b3_eval(&expr, Some(store.path())).unwrap();
            // Nix 2.8's libarchive may lack a format; b3 must agree where it has it.
            match nix_eval(&expr) {
                Ok(nix) => assert_eq!(b3, nix, "{url}"),
                Err(e) => assert!(ext == "zst", "Nix failed on {url}: {e}"),
            }
            let p = unquote(&b3);
            assert!(p.ends_with("-source"));
            assert_eq!(first.get_or_insert_with(|| p.clone()), &p);
            let d = physical(store.path(), &p);
            assert_eq!(
                std::fs::read_to_string(d.join("default.nix")).unwrap(),
                "{ answer = 42; }\n"
            );
        }
    }
    // Pinned by its NAR hash, and importable (here in read-only mode).
    let p = first.unwrap();
    let url = s.url("/proj.gz");
    let nar = Command::new("nix-hash")
        .args(["--type", "sha256", "--base32"])
        .arg(t.path().join("src/proj-1.2"))
        .output()
        .unwrap();
    let nar = String::from_utf8(nar.stdout).unwrap().trim().to_string();
    let expr = format!(
        "let d = builtins.fetchTarball {{ url = {}; sha256 = \"{nar}\"; name = \"proj\"; }}; in [ d (import (d + \"/default.nix\")).answer ]",
        lit(&url)
    );
    let nix = nix_eval(&expr).unwrap();
    assert_eq!(b3_eval(&expr, None).unwrap(), nix);
    assert_ne!(p, unquote(&nix));
}

#[test]
fn fetch_tarball_hash_mismatch_reads_like_nix() {
    let t = TmpDir::new("ftarbad");
    let balls = tarballs(t.path());
    let url = format!("file://{}", balls[1].1.display());
    let zero = "0".repeat(52);
    let expr = format!(
        "builtins.fetchTarball {{ url = {}; sha256 = \"{zero}\"; }}",
        lit(&url)
    );
    let e = b3_eval(&expr, None).unwrap_err();
    let nix_e = nix_eval(&expr).unwrap_err();
    let got = nix_e
        .lines()
        .find_map(|l| l.trim().strip_prefix("got:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("{nix_e}"));
    assert!(e.contains(&format!("got:       {got}")), "{e}\n{nix_e}");
    assert!(e.starts_with(&format!("hash mismatch in file downloaded from '{url}'")));
}

#[test]
fn the_command_line_is_impure_and_writes_unless_told_otherwise() {
    use b3_evaluator::nix_cli::{options_for, parse_cmdline};
    let args = |a: &[&str]| -> Vec<String> { a.iter().map(|s| s.to_string()).collect() };
    // Only read when NIX_REMOTE is not dummy://, which the test runner does not set.
    let o = options_for(&parse_cmdline(&args(&["--eval", "-E", "1"])).unwrap());
    assert!(!o.pure, "Nix 2.8's nix-instantiate is impure by default");
    assert_eq!(
        o.store.write,
        std::env::var("NIX_REMOTE").as_deref() != Ok("dummy://")
    );
    let o = options_for(&parse_cmdline(&args(&["--pure-eval", "--readonly-mode"])).unwrap());
    assert!(o.pure);
    assert!(!o.store.write);
}

#[test]
fn a_pinned_fetch_already_in_the_store_is_not_downloaded_again() {
    let s = serve(vec![("/pinned", Route::Body(b"pinned\n".to_vec()))]);
    let t = TmpDir::new("pin");
    let f = t.path().join("b");
    std::fs::write(&f, b"pinned\n").unwrap();
    let sha = Command::new("nix-hash")
        .args(["--type", "sha256", "--flat", "--base32"])
        .arg(&f)
        .output()
        .expect("nix-hash is needed: run scripts/setup-test-deps.sh");
    let sha = String::from_utf8(sha.stdout).unwrap().trim().to_string();
    let store = TmpDir::new("pin-store");
    let expr = format!(
        "builtins.fetchurl {{ url = {}; sha256 = \"{sha}\"; }}",
        lit(&s.url("/pinned"))
    );
    let first = b3_eval(&expr, Some(store.path())).unwrap();
    let second = b3_eval(&expr, Some(store.path())).unwrap();
    assert_eq!(first, second);
    assert_eq!(s.hits("/pinned"), 1);
}
