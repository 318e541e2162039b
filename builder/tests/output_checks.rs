//! After-build checks on real sandboxed builds, against Nix 2.8:
//! `allowedReferences`/`disallowedReferences`/`allowedRequisites`/
//! `disallowedRequisites`, `__structuredAttrs` `outputChecks` (with
//! `maxSize`/`maxClosureSize`), and `--check` (rebuild and compare). Each
//! error message must appear word for word in what `nix-build` says for
//! the same derivation, and a failed check registers nothing.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;

use b3_builder::realise::{read_derivation, RealiseError, RealiseSettings};
use b3_builder::sandbox::SandboxPath;
use b3_builder::schedule::{realise_goals, Goal};
use b3_store::activity::{Logger, PlainSink, Verbosity};
use b3_store::local::LocalStore;
use b3_store::path::StorePath;
use common::{copy_drv, nix_instantiate, open_store, tempdir};

const EXPR: &str = r#"
let
  bb = builtins.storePath /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb;
  d = attrs: derivation ({ system = "x86_64-linux"; builder = "${bb}/bin/sh"; } // attrs);
  good = d { name = "good-oc"; args = [ "-c" "echo ok > $out" ]; };
  # Structured attrs: the output path is read from .attrs.json.
  sa = name: checks: d ({ inherit name; __structuredAttrs = true;
    args = [ "-c" "o=$(${bb}/bin/busybox sed -e 's/.*\"out\":\"\\([^\"]*\\)\".*/\\1/' .attrs.json); echo ${good} > $o" ];
    outputChecks.out = checks; });
in {
  refsA = d { name = "refsA-oc"; args = [ "-c" "echo ${good} > $out" ]; allowedReferences = []; };
  refsOk = d { name = "refsOk-oc"; args = [ "-c" "echo ${good} $out > $out" ]; allowedReferences = [ good "out" ]; };
  refsD = d { name = "refsD-oc"; args = [ "-c" "echo ${good} $out > $out" ]; disallowedReferences = [ good ]; };
  reqA = d { name = "reqA-oc"; args = [ "-c" "echo ${good} > $out" ]; allowedRequisites = [ "out" ]; };
  selfA = d { name = "selfA-oc"; args = [ "-c" "echo $out > $out" ]; allowedReferences = []; };
  selfR = d { name = "selfR-oc"; args = [ "-c" "echo $out > $out" ]; allowedRequisites = []; };
  badSpec = d { name = "spec-oc"; args = [ "-c" "echo > $out" ]; allowedReferences = [ "foo" ]; };
  saReq = sa "saReq-oc" { disallowedRequisites = [ good ]; };
  saSize = sa "saSize-oc" { maxSize = 10; };
  saClosure = sa "saClosure-oc" { maxClosureSize = 200; };
  saOk = sa "saOk-oc" { allowedReferences = [ good ]; maxSize = 1000; };
  nondet = d { name = "nondet-oc"; args = [ "-c" "${bb}/bin/busybox cat /proc/sys/kernel/random/uuid > $out" ]; };
  det = d { name = "det-oc"; args = [ "-c" "echo same > $out" ]; };
}
"#;

struct Built {
    _dir: tempfile::TempDir,
    store: LocalStore,
    drv: StorePath,
    drv_s: String,
}

fn load(attr: &str) -> Built {
    let dir = tempdir();
    let store = open_store(&dir.path().join("b3"));
    let drv_s = nix_instantiate(dir.path(), "oc.nix", EXPR, Some(attr));
    let drv = copy_drv(&store, &drv_s);
    Built {
        _dir: dir,
        store,
        drv,
        drv_s,
    }
}

fn settings() -> RealiseSettings {
    RealiseSettings {
        extra_paths: vec![SandboxPath::parse("/bin/sh=/bin/busybox").unwrap()],
        logger: Some(Logger::new(
            Arc::new(PlainSink::new(std::io::sink(), Verbosity::Info, false)),
            Verbosity::Info,
        )),
        ..RealiseSettings::default()
    }
}

fn realise(b: &Built, s: &RealiseSettings, check: bool) -> Result<StorePath, RealiseError> {
    let g = Goal {
        drv: b.drv.clone(),
        outputs: BTreeSet::new(),
        check,
    };
    realise_goals(&b.store, s, &[g], None)
        .into_single()
        .map(|o| o["out"].clone())
}

fn out_path(b: &Built) -> StorePath {
    read_derivation(&b.store, &b.drv).unwrap().outputs["out"]
        .path()
        .unwrap()
        .clone()
}

fn nix_build_stderr(drv: &str, extra: &[&str]) -> String {
    let out = Command::new("nix-build")
        .args(["--no-out-link", drv])
        .args(extra)
        .output()
        .expect("nix-build runs (run scripts/setup-test-deps.sh)");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// b3 refuses the output with the message Nix 2.8 gives, and registers
/// nothing.
fn refused_like_nix(attr: &str) {
    let b = load(attr);
    let err = realise(&b, &settings(), false).unwrap_err();
    assert!(matches!(err, RealiseError::OutputCheck(_)), "{attr}: {err}");
    let nix = nix_build_stderr(&b.drv_s, &[]);
    assert!(
        nix.contains(&format!("error: {err}")),
        "{attr}: Nix said:\n{nix}\nb3 said:\n{err}"
    );
    assert!(!b.store.is_valid_sync(&out_path(&b)).unwrap(), "{attr}");
}

#[test]
fn allowed_references_violation_reads_like_nix() {
    refused_like_nix("refsA");
}

#[test]
fn disallowed_references_violation_reads_like_nix() {
    refused_like_nix("refsD");
}

#[test]
fn allowed_requisites_violation_reads_like_nix() {
    refused_like_nix("reqA");
}

#[test]
fn self_reference_counts_for_references_not_requisites() {
    refused_like_nix("selfA");
    let b = load("selfR");
    let out = realise(&b, &settings(), false).unwrap();
    assert!(b.store.is_valid_sync(&out).unwrap());
}

#[test]
fn illegal_reference_specifier_reads_like_nix() {
    refused_like_nix("badSpec");
}

#[test]
fn structured_output_checks_read_like_nix() {
    for attr in ["saReq", "saSize", "saClosure"] {
        refused_like_nix(attr);
    }
}

#[test]
fn allowed_outputs_are_registered_with_their_references() {
    for attr in ["refsOk", "saOk"] {
        let b = load(attr);
        let out = realise(&b, &settings(), false).unwrap_or_else(|e| panic!("{attr}: {e}"));
        let info = b.store.query_path_info_sync(&out).unwrap().unwrap();
        let refs: Vec<String> = info
            .references
            .iter()
            .map(|r| b.store.print_path(r))
            .collect();
        assert!(
            refs.iter().any(|r| r.ends_with("-good-oc")),
            "{attr}: {refs:?}"
        );
    }
}

#[test]
fn check_of_a_deterministic_build_passes_and_registers_nothing_new() {
    let b = load("det");
    let out = realise(&b, &settings(), false).unwrap();
    let before = b.store.query_path_info_sync(&out).unwrap().unwrap();
    let again = realise(&b, &settings(), true).unwrap();
    assert_eq!(again, out);
    let after = b.store.query_path_info_sync(&out).unwrap().unwrap();
    assert_eq!(before.registration_time, after.registration_time);
    assert_eq!(before.nar_hash, after.nar_hash);
}

#[test]
fn check_of_a_nondeterministic_build_reads_like_nix() {
    let b = load("nondet");
    let out = realise(&b, &settings(), false).unwrap();
    let before = b.store.query_path_info_sync(&out).unwrap().unwrap();
    let g = Goal {
        drv: b.drv.clone(),
        outputs: BTreeSet::new(),
        check: true,
    };
    let report = realise_goals(&b.store, &settings(), &[g], None);
    assert_eq!(report.exit_code(), 104);
    let err = report.into_single().unwrap_err();
    let out_s = b.store.print_path(&out);
    assert_eq!(
        err.to_string(),
        format!(
            "derivation '{}' may not be deterministic: output '{out_s}' differs",
            b.drv_s
        )
    );
    // The registered output is untouched.
    let after = b.store.query_path_info_sync(&out).unwrap().unwrap();
    assert_eq!(before.nar_hash, after.nar_hash);
    assert_eq!(before.registration_time, after.registration_time);

    // Nix's wording for the same situation.
    nix_build_stderr(&b.drv_s, &[]);
    let nix = nix_build_stderr(&b.drv_s, &["--check"]);
    let nix_out = format!("output '/nix/store/{}' differs", out.base_name());
    assert!(
        nix.contains(&format!(
            "error: derivation '{}' may not be deterministic: {nix_out}",
            b.drv_s
        )),
        "{nix}"
    );

    // With --keep-failed the differing output is kept as `.check`.
    let s = RealiseSettings {
        keep_failed: true,
        ..settings()
    };
    let err = realise(&b, &s, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "derivation '{}' may not be deterministic: output '{out_s}' differs from '{out_s}.check'",
            b.drv_s
        )
    );
    let mut kept = b.store.real_path(&out).into_os_string();
    kept.push(".check");
    assert!(std::path::Path::new(&kept).exists());
}

#[test]
fn check_needs_valid_outputs() {
    let b = load("det");
    let err = realise(&b, &settings(), true).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "some outputs of '{}' are not valid, so checking is not possible",
            b.drv_s
        )
    );
}
