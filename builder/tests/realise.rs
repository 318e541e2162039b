//! Realising derivations into a b3 local store, compared with real Nix 2.8:
//! the `.drv` files Nix instantiates are copied into a fresh b3 store, b3
//! builds them (inputs first) in its sandbox, and the registered outputs
//! (paths, NAR hashes, references, deriver, content address) must equal what
//! `nix-build` produces. Fixed-output hash mismatches and failing builders
//! give Nix's error messages.

// Realisation runs in the Linux sandbox.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use b3_builder::realise::{realise_sync, RealiseSettings};
use b3_builder::sandbox::SandboxPath;
use b3_store::derivation::aterm;
use b3_store::hash::HashAlgo;
use b3_store::local::{LocalStore, LocalStoreConfig};
use b3_store::path::{FileIngestionMethod, StoreDir, StorePath};
use common::{require_busybox, tempdir, BB};

const T2: &str = r##"
let
  bb = builtins.storePath /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb;
  dep = derivation { name = "dep"; system = "x86_64-linux"; builder = "${bb}/bin/sh"; args = [ "-c" "echo dep-content > $out" ]; };
in derivation {
  name = "t2"; system = "x86_64-linux"; builder = "${bb}/bin/sh"; PATH = "${bb}/bin";
  args = [ "-c" "busybox mkdir -p $out/bin; busybox echo \"#!${bb}/bin/sh\" > $out/bin/hi; busybox echo 'echo hi from t2' >> $out/bin/hi; busybox chmod +x $out/bin/hi; busybox ln -s ${dep} $out/dep; busybox echo built" ];
}
"##;

fn fod(name: &str, hash: &str) -> String {
    format!(
        r#"let bb = builtins.storePath {BB}; in
derivation {{
  name = "{name}"; system = "x86_64-linux"; builder = "${{bb}}/bin/sh";
  outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "{hash}";
  args = [ "-c" "${{bb}}/bin/busybox echo hello > $out" ];
}}"#
    )
}

const FAILING: &str = r#"let bb = builtins.storePath /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb; in
derivation { name = "fails"; system = "x86_64-linux"; builder = "${bb}/bin/sh"; args = [ "-c" "echo about to fail; exit 3" ]; }"#;

const HELLO_SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

fn sh(c: &mut Command) -> String {
    let out = c.output().expect("runs");
    assert!(
        out.status.success(),
        "{c:?} failed ({}); the Nix oracle is needed: run scripts/setup-test-deps.sh",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn instantiate(dir: &Path, file: &str, expr: &str) -> String {
    let f = dir.join(file);
    std::fs::write(&f, expr).unwrap();
    sh(Command::new("nix-instantiate").arg(&f))
        .trim()
        .to_string()
}

/// Copies a `.drv` (and, first, the `.drv`s it depends on) from the Nix
/// store into the b3 store, as text paths like Nix made them.
fn copy_drv(store: &LocalStore, drv: &str) -> StorePath {
    let sd = StoreDir::default();
    let path = sd.parse(drv).unwrap();
    let text = std::fs::read(drv).unwrap();
    let parsed = aterm::parse(&sd, &text).unwrap();
    for input in parsed.input_drvs.keys() {
        copy_drv(store, &sd.display(input));
    }
    let refs = parsed.references();
    let got = store.add_text_sync(path.name(), &text, &refs).unwrap();
    assert_eq!(got, path, "the .drv lands at Nix's path");
    got
}

fn open_store(root: &Path) -> LocalStore {
    let mut cfg = LocalStoreConfig::new(root);
    cfg.fsync = false;
    let store = LocalStore::open(cfg).unwrap();
    let bb = store
        .add_path_sync(
            "bb",
            Path::new(BB),
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
        )
        .unwrap();
    assert_eq!(store.print_path(&bb), BB);
    store
}

fn settings() -> RealiseSettings {
    RealiseSettings {
        extra_paths: vec![SandboxPath::parse("/bin/sh=/bin/busybox").unwrap()],
        ..RealiseSettings::default()
    }
}

#[test]
fn realised_outputs_match_nix_build() {
    require_busybox();
    let dir = tempdir();
    let drv = instantiate(dir.path(), "t2.nix", T2);
    let nix_out = sh(Command::new("nix-build").args(["--no-out-link", &drv]))
        .trim()
        .to_string();
    let info: serde_json::Value = serde_json::from_str(&sh(Command::new("nix").args([
        "path-info",
        "--json",
        "--recursive",
        &nix_out,
    ])))
    .unwrap();

    let store = open_store(&dir.path().join("b3"));
    let drv_path = copy_drv(&store, &drv);
    let mut log = Vec::new();
    let outs = realise_sync(&store, &settings(), &drv_path, &BTreeSet::new(), &mut log)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&log)));
    assert_eq!(String::from_utf8_lossy(&log), "built\n");
    let out = &outs["out"];
    assert_eq!(store.print_path(out), nix_out);

    // Every path of the output's closure has Nix's NAR hash and references.
    for entry in info.as_array().unwrap() {
        let p = store
            .store_dir()
            .parse(entry["path"].as_str().unwrap())
            .unwrap();
        let ours = store
            .query_path_info_sync(&p)
            .unwrap()
            .unwrap_or_else(|| panic!("{} not valid in b3", entry["path"]));
        assert_eq!(ours.nar_hash.to_sri(), entry["narHash"].as_str().unwrap());
        assert_eq!(ours.nar_size, entry["narSize"].as_u64().unwrap());
        let refs: BTreeSet<String> = ours
            .references
            .iter()
            .map(|r| store.print_path(r))
            .collect();
        let want: BTreeSet<String> = entry["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        assert_eq!(refs, want, "references of {}", entry["path"]);
        if let Some(deriver) = entry.get("deriver").and_then(|d| d.as_str()) {
            assert_eq!(
                ours.deriver.map(|d| store.print_path(&d)).as_deref(),
                Some(deriver)
            );
        }
    }
    assert_eq!(
        store.query_derivation_outputs(&drv_path).unwrap(),
        vec![("out".to_string(), out.clone())]
    );
    // Nothing of the build is left in the store directory.
    let leftovers: Vec<_> = std::fs::read_dir(store.real_store_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".b3-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Realising again builds nothing.
    let mut log2 = Vec::new();
    let again = realise_sync(&store, &settings(), &drv_path, &BTreeSet::new(), &mut log2).unwrap();
    assert_eq!(again, outs);
    assert!(log2.is_empty());
}

#[test]
fn fixed_output_is_registered_content_addressed() {
    require_busybox();
    let dir = tempdir();
    let drv = instantiate(dir.path(), "fod.nix", &fod("fod-hello.txt", HELLO_SHA256));
    let store = open_store(&dir.path().join("b3"));
    let drv_path = copy_drv(&store, &drv);
    let outs = realise_sync(
        &store,
        &settings(),
        &drv_path,
        &BTreeSet::new(),
        &mut Vec::new(),
    )
    .unwrap();
    // The path Nix gives this FOD (nix-oracle-facts.md).
    assert_eq!(
        store.print_path(&outs["out"]),
        "/nix/store/1xib5gygzbpdrxdg252dbh2805flrq5q-fod-hello.txt"
    );
    let info = store.query_path_info_sync(&outs["out"]).unwrap().unwrap();
    assert_eq!(
        info.ca.map(|c| c.to_string()).as_deref(),
        Some("fixed:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq")
    );
    assert!(info.references.is_empty());
}

#[test]
fn fixed_output_hash_mismatch_reads_like_nix() {
    require_busybox();
    let dir = tempdir();
    let drv = instantiate(
        dir.path(),
        "fodbad.nix",
        &fod("fod-hello.txt", &"0".repeat(64)),
    );
    let store = open_store(&dir.path().join("b3"));
    let drv_path = copy_drv(&store, &drv);
    let err = realise_sync(
        &store,
        &settings(),
        &drv_path,
        &BTreeSet::new(),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "hash mismatch in fixed-output derivation '{drv}':\n         specified: sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n            got:    sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM="
        )
    );
    // Nix 2.8 says the same (its message is checked against the oracle).
    let nix = Command::new("nix-build")
        .args(["--no-out-link", &drv])
        .output()
        .unwrap();
    let nix_err = String::from_utf8_lossy(&nix.stderr);
    assert!(
        nix_err.contains(&err.to_string()),
        "Nix said:\n{nix_err}\nb3 said:\n{err}"
    );
    // The declared output was not registered.
    let parsed = b3_builder::realise::read_derivation(&store, &drv_path).unwrap();
    let out = parsed.outputs["out"].path().unwrap().clone();
    assert!(!store.is_valid_sync(&out).unwrap());
}

#[test]
fn failing_builder_is_reported_like_nix() {
    require_busybox();
    let dir = tempdir();
    let drv = instantiate(dir.path(), "fail.nix", FAILING);
    let store = open_store(&dir.path().join("b3"));
    let drv_path = copy_drv(&store, &drv);
    let mut log = Vec::new();
    let err = realise_sync(&store, &settings(), &drv_path, &BTreeSet::new(), &mut log).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("builder for '{drv}' failed with exit code 3")
    );
    assert_eq!(String::from_utf8_lossy(&log), "about to fail\n");
    let nix = Command::new("nix-build")
        .args(["--no-out-link", &drv])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&nix.stderr).contains(&err.to_string()));
}

extern "C" {
    fn geteuid() -> u32;
}

const DEP: &str = r#"
let bb = builtins.storePath /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb; in
derivation { name = "dep"; system = "x86_64-linux"; builder = "${bb}/bin/sh"; args = [ "-c" "echo dep-content > $out" ]; }
"#;

/// Runs `inner_unprivileged_realise` (below) as user `nobody`, on a store
/// prepared by root (busybox added, then the whole store handed to
/// `nobody`). The output is a single file: the local store cannot yet add
/// *directories* as a non-root user (renaming a 0555 directory into the
/// store needs write access to it), which is the store's to fix.
#[test]
fn unprivileged_user_can_realise() {
    require_busybox();
    // SAFETY: plain getter.
    if unsafe { geteuid() } != 0 {
        return;
    }
    let dir = tempdir();
    let drv = instantiate(dir.path(), "dep.nix", DEP);
    let root = dir.path().join("b3");
    {
        let store = open_store(&root);
        copy_drv(&store, &drv);
    }
    // Let `nobody` traverse the (0700) temporary directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    sh(Command::new("chown").args(["-R", "65534:65534"]).arg(&root));
    common::run_as_nobody(
        &["inner_unprivileged_realise"],
        &[
            ("B3_INNER_DRV", drv.as_ref()),
            ("B3_INNER_STORE", root.as_os_str()),
        ],
    );
}

#[test]
#[ignore = "run by unprivileged_user_can_realise as nobody"]
fn inner_unprivileged_realise() {
    let (Some(drv), Some(root)) = (
        std::env::var_os("B3_INNER_DRV"),
        std::env::var_os("B3_INNER_STORE"),
    ) else {
        return;
    };
    let mut cfg = LocalStoreConfig::new(root);
    cfg.fsync = false;
    let store = LocalStore::open(cfg).unwrap();
    let drv_path = store.store_dir().parse(&drv.to_string_lossy()).unwrap();
    let mut log = Vec::new();
    let outs = realise_sync(&store, &settings(), &drv_path, &BTreeSet::new(), &mut log)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&log)));
    let info = store.query_path_info_sync(&outs["out"]).unwrap().unwrap();
    assert_eq!(
        store.print_path(&outs["out"]),
        "/nix/store/z6nl0rwcz4lzvjlyhm1hx9m7697mhnnw-dep"
    );
    // dep's NAR hash as Nix computes it (nix-oracle-facts.md).
    assert_eq!(
        info.nar_hash.to_base16(),
        "9719d86ed7845764b8833f2a9d0b1c6dd7f018608608490137dd5093c9634fed"
    );
}

/// Environment values that are not UTF-8 (a `builtins.readFile` of a
/// binary file) reach the builder byte for byte, directly and through
/// `passAsFile`, and the output is Nix's.
#[test]
fn non_utf8_env_values_reach_the_builder_byte_for_byte() {
    require_busybox();
    let dir = tempdir();
    let blob: &[u8] = b"a\xff\xfeb\xc3(\n";
    std::fs::write(dir.path().join("blob"), blob).unwrap();
    let expr = format!(
        r#"let bb = builtins.storePath {BB}; in
derivation {{
  name = "bytes"; system = "x86_64-linux"; builder = "${{bb}}/bin/sh";
  blob = builtins.readFile ./blob; other = builtins.readFile ./blob;
  passAsFile = [ "other" ];
  args = [ "-c" "${{bb}}/bin/busybox mkdir $out; ${{bb}}/bin/busybox printf %s \"$blob\" > $out/env; ${{bb}}/bin/busybox cat $otherPath > $out/file" ];
}}"#
    );
    let drv = instantiate(dir.path(), "bytes.nix", &expr);
    let nix_out = sh(Command::new("nix-build").args(["--no-out-link", &drv]))
        .trim()
        .to_string();
    let store = open_store(&dir.path().join("b3"));
    let drv_path = copy_drv(&store, &drv);
    let parsed = b3_builder::realise::read_derivation(&store, &drv_path).unwrap();
    assert!(
        !parsed.env_bytes.is_empty(),
        "the .drv has non-UTF-8 values"
    );
    let mut log = Vec::new();
    let outs = realise_sync(&store, &settings(), &drv_path, &BTreeSet::new(), &mut log)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&log)));
    let out = &outs["out"];
    assert_eq!(store.print_path(out), nix_out);
    let real = store.real_path(out);
    assert_eq!(std::fs::read(real.join("env")).unwrap(), blob);
    assert_eq!(std::fs::read(real.join("file")).unwrap(), blob);
    let ours = store.query_path_info_sync(out).unwrap().unwrap();
    let nix_hash = sh(Command::new("nix-store").args(["-q", "--hash", &nix_out]));
    assert_eq!(ours.nar_hash.to_string(), nix_hash.trim());
}
