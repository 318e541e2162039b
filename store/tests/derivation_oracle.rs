//! Derivations checked against real Nix (Debian's Nix 2.8): a corpus of Nix
//! expressions is instantiated with `nix-instantiate`, and for every `.drv`
//! in the closure b3 must re-print the file byte for byte, recompute its drv
//! path and output paths, rebuild it from scratch with the evaluator helper
//! (`instantiate`), and print `nix show-derivation`'s JSON identically.
//!
//! Needs `nix-instantiate` and `nix` on PATH (run `scripts/setup-test-deps.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use b3_store::derivation::instantiate::{instantiate, OutputHashAttrs, OutputHashing};
use b3_store::derivation::json::{parse_show_derivations, show_derivations};
use b3_store::derivation::{Derivation, DerivationError, DerivationOutput, DrvHash, DrvHashCache};
use b3_store::hash::{Hash, HashAlgo};
use b3_store::path::{
    ContentAddress, ContentAddressMethod, FileIngestionMethod, StoreDir, StorePath,
};

fn need(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "`{tool}` (real Nix, the test oracle) is not on PATH: run scripts/setup-test-deps.sh"
        ),
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("cannot run the Nix oracle");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("oracle output is UTF-8")
}

/// The corpus: attribute name → expression. `bb` and `./hello.txt` are in scope.
const CORPUS: &str = r##"
let
  sys = "x86_64-linux";
  hello = derivation { name = "hello"; system = sys; builder = "/bin/sh"; args = [ "-c" "echo hi > $out" ]; };
  multi = derivation { name = "multi"; system = sys; builder = "x"; outputs = [ "out" "dev" "lib" ]; };
  fod = mode: algo: hash: derivation {
    name = "fod-${mode}-${algo}"; system = sys; builder = "/bin/sh"; args = [ "-c" "echo hello > $out" ];
    outputHashMode = mode; outputHashAlgo = algo; outputHash = hash;
  };
  helloFile = builtins.toFile "hello.txt" "hello\n";
  src = ./hello.txt;
  weird = derivation {
    name = "weird"; system = sys; builder = "/bin/sh";
    args = [ "-c" "printf '%s' \"$weird\" > $out" "back\\slash" "tab\there" ];
    weird = "quote\" backslash\\ newline\n cr\r tab\t dollar\$ unicode é ☃ end";
    ctrl = builtins.fromJSON "\"a\\u0001b\\u007fc\"";
    multiline = ''
      line one
        "indented" \ two
      three
    '';
    empty = "";
    number = 42; float = 1.5; bool = true; null = null; list = [ "a" 1 true ];
  };
in rec {
  inherit hello multi;
  fodFlatSha256 = fod "flat" "sha256" "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
  fodRecSha256 = fod "recursive" "sha256" "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw";
  fodFlatSha1 = fod "flat" "sha1" "f572d396fae9206628714fb2ce00f72e94f2258f";
  fodRecSha1 = fod "recursive" "sha1" "0deb52c2735eb38d360f976b7b3823c4ad05cce7";
  fodFlatSha512 = fod "flat" "sha512" "sha512-58IrmUxZ2c8rSOVJseJGZmNgRZMNPafBrLKZ0cO3+TH5Sq5B7dosKyB6NuEPi8uNRSI+VIePWzFufOO2vAGWKQ==";
  fodRecSha512 = fod "recursive" "sha512" "2q80akf4fi29vbxj82s21m9y6xrdjnwi9q1c3kfab0032zdnl18nzninbjw6n0rz4p76g8s1c5yv9hznv09l085azzqvk4hn9irv389";
  fodSri = derivation { name = "fod-sri"; system = sys; builder = "/bin/sh"; outputHash = "sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM="; };
  fodMd5 = fod "flat" "md5" "b1946ac92492d2347c6235b4d2611184";
  inherit weird;
  structured = derivation {
    name = "structured"; system = sys; builder = "/bin/sh"; __structuredAttrs = true;
    outputs = [ "out" "bin" ];
    nested = { a = 1; b = [ "x" "y\n\"z\"" ]; c = { d = null; e = 2.5; f = true; }; };
    dep = hello;
    text = "with \"quotes\" and \\ and\nnewline";
  };
  passAsFile = derivation {
    name = "pass-as-file"; system = sys; builder = "/bin/sh";
    passAsFile = [ "big" "other" ]; big = "a big\nvalue with ${hello}"; other = "x";
  };
  withSources = derivation {
    name = "with-sources"; system = sys; builder = "/bin/sh";
    args = [ "-c" "cat ${helloFile} ${src} > $out" ];
    also = builtins.toFile "script.sh" "#!/bin/sh\ncat ${helloFile}\n";
  };
  deps = derivation {
    name = "deps"; system = sys; builder = "/bin/sh";
    args = [ "-c" "ls ${hello} ${multi.dev} ${multi.lib} ${fodFlatSha256} ${fodRecSha1} ${structured.bin}" ];
  };
  chain = let
    a = derivation { name = "chain-a"; system = sys; builder = "/bin/sh"; x = fodRecSha256; };
    b = derivation { name = "chain-b"; system = sys; builder = "/bin/sh"; x = a; y = multi.out; };
  in derivation { name = "chain-c"; system = sys; builder = "/bin/sh"; x = b; z = deps; };
  drvPathCtx = derivation {
    name = "drv-path-ctx"; system = sys; builder = "/bin/sh"; d = deps.drvPath;
  };
  placeholderUse = derivation {
    name = "placeholder-use"; system = sys; builder = "/bin/sh"; outputs = [ "out" "doc" ];
    docDir = builtins.placeholder "doc";
  };
  sameFodDifferentName = derivation {
    name = "fod-flat-sha256-again"; system = sys; builder = "/bin/other";
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
  };
  floating = derivation {
    name = "floating"; system = sys; builder = "/bin/sh"; __contentAddressed = true;
    outputHashMode = "recursive"; outputHashAlgo = "sha256"; outputs = [ "out" "dev" ];
  };
  afterFloating = derivation { name = "after-floating"; system = sys; builder = "/bin/sh"; x = floating.dev; };
  impure = derivation { name = "impure"; system = sys; builder = "/bin/sh"; __impure = true; };
  afterImpure = derivation { name = "after-impure"; system = sys; builder = "/bin/sh"; x = impure; };
  dependsOnFods = derivation {
    name = "depends-on-fods"; system = sys; builder = "/bin/sh";
    a = fodFlatSha256; b = sameFodDifferentName; c = fodSri; d = fodFlatSha512;
  };
}
"##;

const ATTRS: &[&str] = &[
    "hello",
    "multi",
    "fodFlatSha256",
    "fodRecSha256",
    "fodFlatSha1",
    "fodRecSha1",
    "fodFlatSha512",
    "fodRecSha512",
    "fodSri",
    "fodMd5",
    "weird",
    "structured",
    "passAsFile",
    "withSources",
    "deps",
    "chain",
    "drvPathCtx",
    "placeholderUse",
    "sameFodDifferentName",
    "dependsOnFods",
    "floating",
    "afterFloating",
    "impure",
    "afterImpure",
];

/// Experimental features the corpus needs (floating CA and impure derivations).
const FEATURES: &str = "nix-command ca-derivations impure-derivations";

fn read_drv(sd: &StoreDir, p: &StorePath) -> Result<Derivation, DerivationError> {
    let bytes = std::fs::read(sd.display(p)).map_err(|e| DerivationError::ReadInput {
        path: sd.display(p),
        source: Box::new(e),
    })?;
    Ok(Derivation::from_aterm(sd, &bytes)?)
}

/// Instantiates the corpus with Nix; returns the top-level drv paths.
fn instantiate_corpus(dir: &Path) -> BTreeMap<String, StorePath> {
    need("nix-instantiate");
    std::fs::write(dir.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("corpus.nix"), CORPUS).unwrap();
    let sd = StoreDir::default();
    let mut tops = BTreeMap::new();
    for attr in ATTRS {
        let out = run(Command::new("nix-instantiate")
            .args(["--extra-experimental-features", FEATURES])
            .arg(dir.join("corpus.nix"))
            .args(["-A", attr]));
        let line = out
            .lines()
            .next()
            .expect("nix-instantiate printed a drv path");
        tops.insert(attr.to_string(), sd.parse(line.trim()).unwrap());
    }
    tops
}

/// All drvs reachable through inputDrvs, in path order.
fn closure(sd: &StoreDir, tops: &BTreeMap<String, StorePath>) -> BTreeMap<StorePath, Vec<u8>> {
    let mut seen = BTreeMap::new();
    let mut todo: Vec<StorePath> = tops.values().cloned().collect();
    while let Some(p) = todo.pop() {
        if seen.contains_key(&p) {
            continue;
        }
        let bytes = std::fs::read(sd.display(&p)).unwrap();
        let drv = Derivation::from_aterm(sd, &bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", sd.display(&p)));
        todo.extend(drv.input_drvs.keys().cloned());
        seen.insert(p, bytes);
    }
    seen
}

fn output_names(drv: &Derivation) -> BTreeSet<String> {
    drv.outputs.keys().cloned().collect()
}

#[test]
fn corpus_round_trips_and_recomputes_paths_like_nix() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = StoreDir::default();
    let tops = instantiate_corpus(tmp.path());
    let all = closure(&sd, &tops);
    assert!(
        all.len() >= ATTRS.len() + 2,
        "closure has {} drvs",
        all.len()
    );

    let mut cache = DrvHashCache::new(sd.clone());
    let mut read = |p: &StorePath| read_drv(&sd, p);
    let mut kinds = BTreeSet::new();
    for (path, bytes) in &all {
        let shown = sd.display(path);
        let drv = Derivation::from_aterm(&sd, bytes).unwrap();
        // 1. Byte-identical re-print.
        assert_eq!(
            drv.to_aterm(&sd).as_bytes(),
            &bytes[..],
            "re-printing {shown} differs"
        );
        // 2. The drv path from the text and references.
        let name = path.derivation_name().unwrap();
        assert_eq!(&drv.path(&sd, name).unwrap(), path, "drv path of {shown}");
        // 3. Every output path, from the modulo hashes of the inputs.
        let computed = drv
            .compute_output_paths(&sd, name, |p| cache.path_hash(p, &mut read))
            .unwrap();
        for (out, o) in &drv.outputs {
            assert_eq!(computed[out].as_ref(), o.path(), "output {out} of {shown}");
        }
        drv.check_fixed_output_paths(&sd, name).unwrap();
        // 4. Rebuilt from scratch as the evaluator would.
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
        // The evaluator's view: decided from the attributes as written
        // (`__contentAddressed`/`__impure` are not kept in env by Nix).
        let from_attrs = OutputHashing::from_nix_attrs(OutputHashAttrs {
            output_hash: drv.env.get("outputHash").map(String::as_str),
            output_hash_algo: drv.env.get("outputHashAlgo").map(String::as_str),
            output_hash_mode: drv.env.get("outputHashMode").map(String::as_str),
            content_addressed: matches!(hashing, OutputHashing::Floating { .. }),
            impure: matches!(hashing, OutputHashing::Impure { .. }),
        })
        .unwrap();
        assert_eq!(from_attrs, hashing, "output hashing of {shown}");
        kinds.insert(
            format!("{hashing:?}")
                .split(['(', ' '])
                .next()
                .unwrap()
                .to_owned(),
        );
        let mut blank = drv.clone();
        blank.outputs.clear();
        for o in drv.outputs.keys() {
            blank.env.remove(o);
        }
        let inst = instantiate(blank, name, &output_names(&drv), hashing, &sd, |p| {
            cache.path_hash(p, &mut read)
        })
        .unwrap();
        assert_eq!(
            inst.aterm.as_bytes(),
            &bytes[..],
            "instantiate() of {shown}"
        );
        assert_eq!(&inst.drv_path, path);
        assert_eq!(&inst.hash, &cache.path_hash(path, &mut read).unwrap());
    }
    for k in ["Fixed", "InputAddressed", "Floating", "Impure"] {
        assert!(
            kinds.contains(k),
            "no {k} derivation in the corpus: {kinds:?}"
        );
    }
}

#[test]
fn show_derivation_json_matches_nix() {
    need("nix");
    let tmp = tempfile::tempdir().unwrap();
    let sd = StoreDir::default();
    let tops = instantiate_corpus(tmp.path());
    let all = closure(&sd, &tops);
    let drvs: BTreeMap<StorePath, Derivation> = all
        .iter()
        .map(|(p, b)| (p.clone(), Derivation::from_aterm(&sd, b).unwrap()))
        .collect();
    let ours = String::from_utf8(show_derivations(&sd, drvs.iter())).unwrap();
    let mut cmd = Command::new("nix");
    cmd.args(["--extra-experimental-features", FEATURES, "show-derivation"]);
    for p in all.keys() {
        cmd.arg(sd.display(p));
    }
    let theirs = run(&mut cmd);
    let a: serde_json::Value = serde_json::from_str(&ours).unwrap();
    let b: serde_json::Value = serde_json::from_str(&theirs).unwrap();
    assert_eq!(a, b, "JSON values differ");
    assert_eq!(ours, theirs, "JSON text differs");
    // And Nix's JSON reads back into the same derivations.
    assert_eq!(parse_show_derivations(&sd, &theirs).unwrap(), drvs);
}

/// Nix 2.8 computes paths for another store directory without writing
/// anything with `--readonly-mode --store 'dummy://?store=DIR'`.
#[test]
fn other_store_dir_matches_nix() {
    need("nix-instantiate");
    let expr = r#"let
      hello = derivation { name = "hello"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo hi > $out" ]; };
      fod = derivation { name = "fo"; system = "x86_64-linux"; builder = "/bin/sh"; outputHashMode = "recursive"; outputHash = "sha1-9XLTlvrpIGYocU+yzgD3LpTyJY8="; };
      top = derivation { name = "top"; system = "x86_64-linux"; builder = "/bin/sh"; a = hello; b = fod; };
    in { file = builtins.toFile "foo" "bar"; helloDrv = hello.drvPath; helloOut = hello.outPath;
         fodDrv = fod.drvPath; fodOut = fod.outPath; topDrv = top.drvPath; topOut = top.outPath; }"#;
    let out = run(Command::new("nix-instantiate").args([
        "--readonly-mode",
        "--store",
        "dummy://?store=/b3/store",
        "--eval",
        "--strict",
        "--json",
        "-E",
        expr,
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sd = StoreDir::new("/b3/store").unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_owned();

    let file = sd
        .compute_text_path("foo", b"bar", &BTreeSet::new())
        .unwrap();
    assert_eq!(sd.display(&file), s("file"));

    let base = |name: &str| {
        let mut d = Derivation {
            system: "x86_64-linux".into(),
            builder: "/bin/sh".into(),
            ..Default::default()
        };
        for (k, val) in [
            ("builder", "/bin/sh"),
            ("name", name),
            ("system", "x86_64-linux"),
        ] {
            d.env.insert(k.into(), val.into());
        }
        d
    };
    let outs = BTreeSet::from(["out".to_owned()]);
    let mut hashes: BTreeMap<StorePath, DrvHash> = BTreeMap::new();

    let mut hello = base("hello");
    hello.args = vec!["-c".into(), "echo hi > $out".into()];
    let hello = instantiate(
        hello,
        "hello",
        &outs,
        OutputHashing::InputAddressed,
        &sd,
        |_| unreachable!(),
    )
    .unwrap();
    assert_eq!(sd.display(&hello.drv_path), s("helloDrv"));
    assert_eq!(hello.drv.env["out"], s("helloOut"));
    hashes.insert(hello.drv_path.clone(), hello.hash.clone());

    let mut fod = base("fo");
    for (k, val) in [
        ("outputHash", "sha1-9XLTlvrpIGYocU+yzgD3LpTyJY8="),
        ("outputHashMode", "recursive"),
    ] {
        fod.env.insert(k.into(), val.into());
    }
    let ca = ContentAddress {
        method: ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
        hash: Hash::parse_sri("sha1-9XLTlvrpIGYocU+yzgD3LpTyJY8=").unwrap(),
    };
    let fod = instantiate(
        fod,
        "fo",
        &outs,
        OutputHashing::Fixed(ca),
        &sd,
        |_| unreachable!(),
    )
    .unwrap();
    assert_eq!(sd.display(&fod.drv_path), s("fodDrv"));
    assert_eq!(fod.drv.env["out"], s("fodOut"));
    hashes.insert(fod.drv_path.clone(), fod.hash.clone());

    let mut top = base("top");
    top.env.insert("a".into(), hello.drv.env["out"].clone());
    top.env.insert("b".into(), fod.drv.env["out"].clone());
    top.input_drvs.insert(hello.drv_path.clone(), outs.clone());
    top.input_drvs.insert(fod.drv_path.clone(), outs.clone());
    let top = instantiate(top, "top", &outs, OutputHashing::InputAddressed, &sd, |p| {
        Ok(hashes[p].clone())
    })
    .unwrap();
    assert_eq!(sd.display(&top.drv_path), s("topDrv"));
    assert_eq!(top.drv.env["out"], s("topOut"));
    assert!(!s("topOut").starts_with("/nix/store"));
    let _ = HashAlgo::Sha256;
}
