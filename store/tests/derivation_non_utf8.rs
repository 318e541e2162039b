//! `.drv` files are bytes: an environment entry made from
//! `builtins.readFile` of a binary file is not UTF-8, and Nix 2.8 writes it
//! as is. b3 must parse such a file, re-print it byte for byte and compute
//! the same drv and output paths (also for a derivation depending on it,
//! whose modulo hash covers the raw bytes).
//!
//! Needs `nix-instantiate` on PATH (run `scripts/setup-test-deps.sh`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use b3_store::derivation::{Derivation, DerivationError, DrvHashCache};
use b3_store::path::{StoreDir, StorePath};

const EXPR: &str = r#"
let
  blob = builtins.readFile ./blob;
  key = builtins.readFile ./key;
  bin = derivation ({
    name = "non-utf8"; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "-c" "echo > $out" ];
    inherit blob;
    plain = "ascii";
  } // builtins.listToAttrs [ { name = key; value = "raw key"; } ]);
in {
  inherit bin;
  dep = derivation {
    name = "after-non-utf8"; system = "x86_64-linux"; builder = "/bin/sh";
    x = bin; also = "prefix ${blob} suffix";
  };
}
"#;

fn nix_instantiate(dir: &Path, attr: &str) -> String {
    let out = Command::new("nix-instantiate")
        .arg(dir.join("e.nix"))
        .args(["-A", attr])
        .output()
        .expect(
            "nix-instantiate not found: run scripts/setup-test-deps.sh to install the Nix oracle",
        );
    assert!(
        out.status.success(),
        "nix-instantiate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn read_drv(sd: &StoreDir, p: &StorePath) -> Result<Derivation, DerivationError> {
    let bytes = std::fs::read(sd.display(p)).map_err(|e| DerivationError::ReadInput {
        path: sd.display(p),
        source: Box::new(e),
    })?;
    Ok(Derivation::from_aterm(sd, &bytes)?)
}

#[test]
fn non_utf8_environment_round_trips_byte_exact_like_nix() {
    let d = tempfile::tempdir().unwrap();
    // Every non-NUL byte (Nix strings cannot hold NUL), including the ones
    // the ATerm printer escapes, then a lone continuation byte and a
    // truncated sequence.
    let mut blob: Vec<u8> = (1u8..=255).collect();
    blob.extend_from_slice(b"\x80 \xe2\x82");
    std::fs::write(d.path().join("blob"), &blob).unwrap();
    std::fs::write(d.path().join("key"), b"k\xffey").unwrap();
    std::fs::write(d.path().join("e.nix"), EXPR).unwrap();

    let sd = StoreDir::default();
    let mut cache = DrvHashCache::new(sd.clone());
    let mut read = |p: &StorePath| read_drv(&sd, p);
    let mut seen = BTreeMap::new();
    for attr in ["bin", "dep"] {
        let path = sd.parse(&nix_instantiate(d.path(), attr)).unwrap();
        let bytes = std::fs::read(sd.display(&path)).unwrap();
        assert!(
            std::str::from_utf8(&bytes).is_err(),
            "{attr}: expected a non-UTF-8 .drv"
        );
        let drv =
            Derivation::from_aterm(&sd, &bytes).unwrap_or_else(|e| panic!("parsing {attr}: {e}"));
        assert_eq!(
            drv.to_aterm_bytes(&sd),
            bytes,
            "re-printing {attr} differs from Nix's file"
        );
        let name = path.derivation_name().unwrap();
        assert_eq!(drv.path(&sd, name).unwrap(), path, "drv path of {attr}");
        let outs = drv
            .compute_output_paths(&sd, name, |p| cache.path_hash(p, &mut read))
            .unwrap();
        for (o, out) in &drv.outputs {
            assert_eq!(outs[o].as_ref(), out.path(), "output {o} of {attr}");
        }
        seen.insert(attr, drv);
    }

    let bin = &seen["bin"];
    assert_eq!(bin.env_bytes.get(&b"blob"[..]), Some(&blob));
    assert_eq!(
        bin.env_bytes.get(&b"k\xffey"[..]).map(Vec::as_slice),
        Some(&b"raw key"[..])
    );
    assert_eq!(bin.env["plain"], "ascii");
    // The merged view is in byte order, as the file is.
    let keys: Vec<&[u8]> = bin.env_entries().map(|(k, _)| k).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(keys.contains(&&b"blob"[..]) && keys.contains(&&b"name"[..]));
    let mut also = b"prefix ".to_vec();
    also.extend_from_slice(&blob);
    also.extend_from_slice(b" suffix");
    assert_eq!(seen["dep"].env_bytes.get(&b"also"[..]), Some(&also));
}

const EXPR_ARGS: &str = r#"
let
  blob = builtins.readFile ./blob;
  tool = builtins.readFile ./tool;
  raw = derivation {
    name = "non-utf8-args"; system = "x86_64-linux"; builder = tool;
    args = [ "-c" blob "plain" "x${blob}y" ];
  };
in {
  inherit raw;
  dep = derivation {
    name = "after-non-utf8-args"; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "${raw}" ];
  };
}
"#;

#[test]
fn non_utf8_builder_and_args_round_trip_byte_exact_like_nix() {
    let d = tempfile::tempdir().unwrap();
    let mut blob: Vec<u8> = (1u8..=255).rev().collect();
    blob.extend_from_slice(b"\xc3(\"\\\n");
    let tool = b"/bin/\xfftool".to_vec();
    std::fs::write(d.path().join("blob"), &blob).unwrap();
    std::fs::write(d.path().join("tool"), &tool).unwrap();
    std::fs::write(d.path().join("e.nix"), EXPR_ARGS).unwrap();

    let sd = StoreDir::default();
    let mut cache = DrvHashCache::new(sd.clone());
    let mut read = |p: &StorePath| read_drv(&sd, p);
    let mut seen = BTreeMap::new();
    for attr in ["raw", "dep"] {
        let path = sd.parse(&nix_instantiate(d.path(), attr)).unwrap();
        let bytes = std::fs::read(sd.display(&path)).unwrap();
        let drv =
            Derivation::from_aterm(&sd, &bytes).unwrap_or_else(|e| panic!("parsing {attr}: {e}"));
        assert_eq!(
            drv.to_aterm_bytes(&sd),
            bytes,
            "re-printing {attr} differs from Nix's file"
        );
        let name = path.derivation_name().unwrap();
        assert_eq!(drv.path(&sd, name).unwrap(), path, "drv path of {attr}");
        // The output path goes through the modulo hash of the raw bytes
        // (and, for `dep`, of its non-UTF-8 input derivation).
        let outs = drv
            .compute_output_paths(&sd, name, |p| cache.path_hash(p, &mut read))
            .unwrap();
        for (o, out) in &drv.outputs {
            assert_eq!(outs[o].as_ref(), out.path(), "output {o} of {attr}");
        }
        seen.insert(attr, drv);
    }
    let raw = &seen["raw"];
    assert_eq!(raw.builder_raw(), &tool[..]);
    let mut xy = b"x".to_vec();
    xy.extend_from_slice(&blob);
    xy.push(b'y');
    let args: Vec<&[u8]> = raw.args_raw().collect();
    assert_eq!(args, vec![&b"-c"[..], &blob[..], b"plain", &xy[..]]);
    // Only the non-UTF-8 ones are kept on the side.
    assert_eq!(
        raw.args_bytes.keys().copied().collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(raw.args[2], "plain");

    // Built from bytes through the public setters, the same derivation
    // prints the same file.
    let mut again = raw.clone();
    again.args.clear();
    again.args_bytes.clear();
    for a in &args {
        again.push_arg_bytes(a.to_vec());
    }
    again.set_builder_bytes(tool.clone());
    assert_eq!(again, *raw);
}

/// `nix show-derivation` writes non-UTF-8 builders, arguments and
/// environment entries through unchanged (escaping only `"`, `\` and
/// control bytes); b3's JSON must be the same bytes.
#[test]
fn show_derivation_json_passes_non_utf8_bytes_through_like_nix() {
    let d = tempfile::tempdir().unwrap();
    let mut blob: Vec<u8> = (1u8..=255).collect();
    blob.extend_from_slice(b"\x80 \xe2\x82");
    std::fs::write(d.path().join("blob"), &blob).unwrap();
    std::fs::write(d.path().join("key"), b"k\xffey").unwrap();
    std::fs::write(d.path().join("tool"), b"/bin/\xfftool").unwrap();
    std::fs::write(d.path().join("e.nix"), EXPR).unwrap();
    std::fs::write(d.path().join("args.nix"), EXPR_ARGS).unwrap();
    std::fs::copy(d.path().join("args.nix"), d.path().join("e2.nix")).unwrap();

    let sd = StoreDir::default();
    let mut paths = Vec::new();
    for attr in ["bin", "dep"] {
        paths.push(sd.parse(&nix_instantiate(d.path(), attr)).unwrap());
    }
    std::fs::rename(d.path().join("e2.nix"), d.path().join("e.nix")).unwrap();
    for attr in ["raw", "dep"] {
        paths.push(sd.parse(&nix_instantiate(d.path(), attr)).unwrap());
    }
    for p in &paths {
        let drv = read_drv(&sd, p).unwrap();
        let ours = b3_store::derivation::json::show_derivations(&sd, [(p, &drv)]);
        let out = Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "show-derivation",
            ])
            .arg(sd.display(p))
            .output()
            .expect("nix not found: run scripts/setup-test-deps.sh to install the Nix oracle");
        assert!(
            out.status.success(),
            "nix show-derivation failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&out.stdout),
            "JSON of {p:?}"
        );
        assert_eq!(ours, out.stdout, "JSON bytes of {p:?}");
    }
}
