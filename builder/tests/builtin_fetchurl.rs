//! `builtin:fetchurl` against Nix 2.8: `<nix/fetchurl.nix>` instantiated by nix-instantiate
//! (URLs on a 127.0.0.1 server started here), built by `builtin_fetchurl::run`, and
//! checked by the builder's fixed-output check; the bytes equal what
//! Nix's own `builtin:fetchurl` produces for the same drv.

#[path = "../../store/tests/fetch_common/mod.rs"]
mod http;

use b3_builder::builtin_fetchurl::run;
use b3_builder::drv::{check_fixed_output, fixed_output_ca};
use b3_store::derivation::Derivation;
use b3_store::path::StoreDir;
use std::process::Command;

fn nix(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("Nix 2.8 is needed: run scripts/setup-test-deps.sh");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn instantiate(expr: &str) -> (String, Derivation) {
    let drv_path = nix(&["nix-instantiate", "-E", expr]);
    let text = std::fs::read(&drv_path).unwrap();
    let drv = b3_store::derivation::aterm::parse(&StoreDir::default(), &text).unwrap();
    (drv_path, drv)
}

fn build_and_check(drv_path: &str, drv: &Derivation) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(drv, &out).unwrap();
    let ca = fixed_output_ca(drv).expect("a fixed-output derivation");
    check_fixed_output(ca, drv_path, &out).unwrap();
    dir
}

#[test]
fn flat_and_executable_downloads_pass_the_fixed_output_check_like_nix() {
    let body = b"#!/bin/sh\necho fetched\n".to_vec();
    let s = http::serve(vec![("/tool.sh", http::Route::Body(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, &body).unwrap();
    let sha = nix(&[
        "nix-hash",
        "--type",
        "sha256",
        "--flat",
        "--base32",
        f.to_str().unwrap(),
    ]);
    let url = s.url("/tool.sh");
    let (p, drv) = instantiate(&format!(
        "import <nix/fetchurl.nix> {{ url = \"{url}\"; sha256 = \"{sha}\"; }}"
    ));
    let built = build_and_check(&p, &drv);
    assert_eq!(std::fs::read(built.path().join("out")).unwrap(), body);
    // Nix's own builtin fetcher yields the same bytes at the drv's output.
    let nix_out = nix(&["nix-store", "-r", &p]);
    assert_eq!(std::fs::read(&nix_out).unwrap(), body);

    let sha_x = nix(&["nix-hash", "--type", "sha256", "--base32", {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        f.to_str().unwrap()
    }]);
    let (p, drv) = instantiate(&format!(
        "import <nix/fetchurl.nix> {{ url = \"{url}\"; sha256 = \"{sha_x}\"; executable = true; }}"
    ));
    build_and_check(&p, &drv);
}

#[test]
fn unpack_restores_an_xz_nar() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("bin/hello"), "hi\n").unwrap();
    let nar = Command::new("nix-store")
        .arg("--dump")
        .arg(&tree)
        .output()
        .unwrap()
        .stdout;
    let mut xz = Command::new("xz")
        .args(["-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("xz is needed: run scripts/setup-test-deps.sh");
    use std::io::Write;
    xz.stdin.take().unwrap().write_all(&nar).unwrap();
    let packed = xz.wait_with_output().unwrap().stdout;
    let s = http::serve(vec![("/t.nar.xz", http::Route::Body(packed))]);
    let sha = nix(&[
        "nix-hash",
        "--type",
        "sha256",
        "--base32",
        tree.to_str().unwrap(),
    ]);
    let (p, drv) = instantiate(&format!(
        "import <nix/fetchurl.nix> {{ url = \"{}\"; sha256 = \"{sha}\"; unpack = true; }}",
        s.url("/t.nar.xz")
    ));
    let built = build_and_check(&p, &drv);
    assert_eq!(
        std::fs::read_to_string(built.path().join("out/bin/hello")).unwrap(),
        "hi\n"
    );
}

#[test]
fn a_failed_download_is_a_clear_error() {
    let s = http::serve(vec![]);
    let mut drv = instantiate(&format!(
        "import <nix/fetchurl.nix> {{ url = \"{}\"; sha256 = \"{}\"; }}",
        s.url("/gone"),
        "0".repeat(52)
    ))
    .1;
    let dir = tempfile::tempdir().unwrap();
    let e = run(&drv, &dir.path().join("out")).unwrap_err();
    assert!(e.to_string().contains("HTTP error 404"), "{e}");
    drv.env.remove("url");
    let e = run(&drv, &dir.path().join("out2")).unwrap_err();
    assert_eq!(e.to_string(), "builtin:fetchurl: attribute 'url' missing");
}
