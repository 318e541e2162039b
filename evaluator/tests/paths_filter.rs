//! Paths into the store against Nix 2.8: `builtins.path` (name, filter,
//! recursive, sha256 checked) and `filterSource` give Nix's store paths;
//! in write mode the filtered tree lands in the b3 store.

mod fetch_common;

use fetch_common::*;

fn tree(t: &std::path::Path) -> std::path::PathBuf {
    let d = t.join("src");
    std::fs::create_dir_all(d.join("keep/deeper")).unwrap();
    std::fs::create_dir_all(d.join("drop")).unwrap();
    std::fs::write(d.join("a.nix"), "1").unwrap();
    std::fs::write(d.join("b.txt"), "b").unwrap();
    std::fs::write(d.join("keep/deeper/c.nix"), "3").unwrap();
    std::fs::write(d.join("drop/d.nix"), "4").unwrap();
    std::os::unix::fs::symlink("a.nix", d.join("l")).unwrap();
    d
}

const FILTER: &str =
    "(p: t: t == \"directory\" && baseNameOf p != \"drop\" || builtins.match \".*\\\\.nix\" p != null || t == \"symlink\")";

#[test]
fn builtins_path_and_filter_source_match_nix() {
    let t = TmpDir::new("pf");
    let d = tree(t.path());
    let p = lit(&d.display().to_string());
    for expr in [
        format!("builtins.path {{ path = {p}; }}"),
        format!("builtins.path {{ path = {p}; name = \"named\"; filter = {FILTER}; }}"),
        format!("builtins.filterSource {FILTER} {p}"),
        format!("builtins.path {{ path = {p} + \"/a.nix\"; recursive = false; }}"),
        format!("\"${{builtins.filterSource (p: t: false) {p}}}\""),
    ] {
        let nix = nix_eval(&expr).unwrap();
        assert_eq!(b3_eval(&expr, None).unwrap(), nix, "{expr}");
    }
}

#[test]
fn builtins_path_checks_sha256() {
    let t = TmpDir::new("psha");
    let d = tree(t.path());
    let p = lit(&d.display().to_string());
    let nar = std::process::Command::new("nix-hash")
        .args(["--type", "sha256", "--base32"])
        .arg(&d)
        .output()
        .expect("nix-hash is needed: run scripts/setup-test-deps.sh");
    let nar = String::from_utf8(nar.stdout).unwrap().trim().to_string();
    let ok = format!("builtins.path {{ path = {p}; sha256 = \"{nar}\"; }}");
    assert_eq!(b3_eval(&ok, None).unwrap(), nix_eval(&ok).unwrap());
    let bad = format!(
        "builtins.path {{ path = {p}; sha256 = \"{}\"; }}",
        "1".repeat(52)
    );
    let e = b3_eval(&bad, None).unwrap_err();
    assert_eq!(
        e,
        format!(
            "store path mismatch in (possibly filtered) path added from '{}'",
            d.display()
        )
    );
    assert!(nix_eval(&bad).unwrap_err().contains("store path mismatch"));
}

#[test]
fn filtered_paths_are_added_to_the_store_in_write_mode() {
    let t = TmpDir::new("pw");
    let d = tree(t.path());
    let store = TmpDir::new("pw-store");
    let expr = format!(
        "builtins.filterSource {FILTER} {}",
        lit(&d.display().to_string())
    );
    let out = unquote(&b3_eval(&expr, Some(store.path())).unwrap());
    let at = physical(store.path(), &out);
    assert!(at.join("a.nix").is_file());
    assert!(at.join("keep/deeper/c.nix").is_file());
    assert!(!at.join("b.txt").exists());
    assert!(!at.join("drop").exists());
    assert_eq!(
        std::fs::read_link(at.join("l")).unwrap(),
        std::path::Path::new("a.nix")
    );
    // Reading it back through the store path works.
    let expr = format!(
        "builtins.readFile ((builtins.filterSource {FILTER} {}) + \"/a.nix\")",
        lit(&d.display().to_string())
    );
    assert_eq!(b3_eval(&expr, Some(store.path())).unwrap(), "\"1\"");
}

#[test]
fn unknown_path_arguments_are_refused_like_nix() {
    let e = b3_eval("builtins.path { path = /tmp; bogus = 1; }", None).unwrap_err();
    assert_eq!(e, "unsupported argument 'bogus' to 'addPath'");
}

#[test]
fn store_paths_made_by_fetchers_can_be_filtered_like_nix() {
    let t = TmpDir::new("pfetch");
    let d = tree(t.path());
    let tarball = t.path().join("t.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(d.parent().unwrap())
        .arg("src")
        .status()
        .expect("GNU tar is needed: run scripts/setup-test-deps.sh");
    assert!(st.success());
    let src = format!(
        "builtins.fetchTarball {}",
        lit(&format!("file://{}", tarball.display()))
    );
    let store = TmpDir::new("pfetch-store");
    for expr in [
        format!("builtins.path {{ path = {src}; name = \"f\"; filter = {FILTER}; }}"),
        format!(
            "builtins.path {{ path = {src} + \"/a.nix\"; name = \"flat\"; recursive = false; }}"
        ),
    ] {
        let nix = nix_eval(&expr).unwrap();
        assert_eq!(b3_eval(&expr, None).unwrap(), nix, "{expr}");
        assert_eq!(b3_eval(&expr, Some(store.path())).unwrap(), nix, "{expr}");
    }
    // Nix 2.8 cannot read such a path back in --eval mode ("is not valid");
    // b3 can, in both modes.
    let read = format!(
        "builtins.readFile ((builtins.filterSource {FILTER} ({src})) + \"/keep/deeper/c.nix\")"
    );
    assert_eq!(b3_eval(&read, None).unwrap(), "\"3\"");
    assert_eq!(b3_eval(&read, Some(store.path())).unwrap(), "\"3\"");
}
