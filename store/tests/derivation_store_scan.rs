//! Every `.drv` real Nix wrote must survive b3: parse, byte-identical
//! re-print, drv path, output paths (modulo hashes over the whole input
//! closure) and `instantiate()` from scratch.
//!
//! `every_drv_in_the_nix_store` scans the oracle's `/nix/store` as it is.
//! `nixpkgs_drvs` (ignored by default: nixpkgs is not part of the test set-up)
//! instantiates real nixpkgs packages first; run it with
//! `B3_NIXPKGS=/path/to/nixpkgs cargo test -p b3-store --test derivation_store_scan -- --ignored`
//! (default path `/tmp/b3-oracle/nixpkgs`, laid out by `shared/tools/nix-oracle.sh --nixpkgs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use b3_store::derivation::instantiate::{instantiate, OutputHashing};
use b3_store::derivation::{Derivation, DerivationError, DerivationOutput, DrvHashCache};
use b3_store::path::{StoreDir, StorePath};

fn read(sd: &StoreDir, p: &StorePath) -> Result<Vec<u8>, DerivationError> {
    std::fs::read(sd.display(p)).map_err(|e| DerivationError::ReadInput {
        path: sd.display(p),
        source: Box::new(e),
    })
}

/// Checks one drv; `Ok(false)` when it (or an input) vanished meanwhile.
fn check(sd: &StoreDir, cache: &mut DrvHashCache, path: &StorePath) -> Result<bool, String> {
    let shown = sd.display(path);
    let bytes = match std::fs::read(&shown) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let drv = Derivation::from_aterm(sd, &bytes).map_err(|e| format!("{shown}: {e}"))?;
    if drv.to_aterm_bytes(sd) != bytes {
        return Err(format!("{shown}: re-print differs"));
    }
    let name = path.derivation_name().ok_or("not a .drv")?;
    let again = drv.path(sd, name).map_err(|e| e.to_string())?;
    if &again != path {
        return Err(format!(
            "{shown}: drv path computed as {}",
            sd.display(&again)
        ));
    }
    let mut reader = |p: &StorePath| Derivation::from_aterm(sd, &read(sd, p)?).map_err(Into::into);
    let computed = match drv.compute_output_paths(sd, name, |p| cache.path_hash(p, &mut reader)) {
        Ok(c) => c,
        Err(DerivationError::ReadInput { .. }) => return Ok(false),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    for (out, o) in &drv.outputs {
        if computed[out].as_ref() != o.path() {
            return Err(format!(
                "{shown}: output {out} computed as {:?}",
                computed[out]
            ));
        }
    }
    let hashing = match drv.outputs.values().next() {
        Some(DerivationOutput::CaFixed { ca, .. }) => OutputHashing::Fixed(*ca),
        Some(DerivationOutput::CaFloating { method, algo }) => OutputHashing::Floating {
            method: *method,
            algo: *algo,
        },
        Some(DerivationOutput::Impure { method, algo }) => OutputHashing::Impure {
            method: *method,
            algo: *algo,
        },
        _ => OutputHashing::InputAddressed,
    };
    let mut blank = drv.clone();
    blank.outputs.clear();
    for o in drv.outputs.keys() {
        blank.env.remove(o);
    }
    let outs: BTreeSet<String> = drv.outputs.keys().cloned().collect();
    let inst = instantiate(blank, name, &outs, hashing, sd, |p| {
        cache.path_hash(p, &mut reader)
    })
    .map_err(|e| format!("{shown}: instantiate: {e}"))?;
    if inst.drv.to_aterm_bytes(sd) != bytes || &inst.drv_path != path {
        return Err(format!(
            "{shown}: instantiate() gives a different derivation"
        ));
    }
    cache.insert(path.clone(), inst.hash);
    Ok(true)
}

fn drvs_in(dir: &Path, sd: &StoreDir) -> Vec<StorePath> {
    let mut v: Vec<StorePath> = std::fs::read_dir(dir)
        .expect("the Nix store is readable")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with(".drv"))
        .filter_map(|n| sd.parse(&format!("{}/{n}", sd.as_str())).ok())
        .collect();
    v.sort();
    v
}

fn check_all(paths: &[StorePath]) -> (usize, Vec<String>) {
    let sd = StoreDir::default();
    let mut cache = DrvHashCache::new(sd.clone());
    let mut checked = 0;
    let mut failures = Vec::new();
    for p in paths {
        // Other processes may be writing drvs right now (Nix writes the file
        // in place before registering it): a failure counts only if it
        // persists once the file has settled.
        let mut result = check(&sd, &mut cache, p);
        for _ in 0..3 {
            if result.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            result = check(&sd, &mut cache, p);
        }
        match result {
            Ok(true) => checked += 1,
            Ok(false) => {}
            Err(e) => failures.push(e),
        }
    }
    (checked, failures)
}

#[test]
fn every_drv_in_the_nix_store() {
    let dir = Path::new("/nix/store");
    assert!(
        dir.is_dir(),
        "/nix/store (the Nix oracle's store) is missing: run scripts/setup-test-deps.sh"
    );
    let sd = StoreDir::default();
    let paths = drvs_in(dir, &sd);
    let (checked, failures) = check_all(&paths);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "checked {checked} of {} .drv files in /nix/store",
        paths.len()
    );
}

#[test]
#[ignore = "needs a nixpkgs checkout (B3_NIXPKGS, default /tmp/b3-oracle/nixpkgs)"]
fn nixpkgs_drvs() {
    let nixpkgs = std::env::var("B3_NIXPKGS").unwrap_or_else(|_| "/tmp/b3-oracle/nixpkgs".into());
    assert!(
        Path::new(&nixpkgs).join("default.nix").is_file(),
        "no nixpkgs at {nixpkgs}"
    );
    let attrs = [
        "hello",
        "git",
        "python3",
        "vim",
        "emacs",
        "firefox",
        "libreoffice",
    ];
    let mut cmd = Command::new("nix-instantiate");
    cmd.arg(&nixpkgs);
    for a in attrs {
        cmd.args(["-A", a]);
    }
    let out = cmd
        .output()
        .expect("nix-instantiate runs (scripts/setup-test-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sd = StoreDir::default();
    let mut todo: Vec<StorePath> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| sd.parse(l.trim()).unwrap())
        .collect();
    let mut all = BTreeMap::new();
    while let Some(p) = todo.pop() {
        if all.contains_key(&p) {
            continue;
        }
        let d = Derivation::from_aterm(&sd, &read(&sd, &p).unwrap()).unwrap();
        todo.extend(d.input_drvs.keys().cloned());
        all.insert(p, ());
    }
    let paths: Vec<StorePath> = all.into_keys().collect();
    let start = std::time::Instant::now();
    let (checked, failures) = check_all(&paths);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, paths.len());
    eprintln!(
        "checked {checked} nixpkgs .drv files in {:?}",
        start.elapsed()
    );
}
