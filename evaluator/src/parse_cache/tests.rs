//! Tests of the parse cache: the codec gives back the tree the lowering made
//! (for every file of the Nix language tests and of nixpkgs), hits evaluate
//! as parses do, and damaged, changed or unwritable entries fall back to
//! parsing.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::driver::{with_big_stack, OutputMode};
use crate::{pos, Ev, Options};

/// A fresh, empty directory of this test's own.
fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let d = std::env::temp_dir().join(format!(
        "b3-parse-cache-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&d).unwrap();
    d
}

struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = fs::remove_dir_all(d);
        }
    }
}

const MAIN: &str = r#"let
  lib = import ./lib.nix;
  name = "dyn";
in rec {
  a = lib.add 1 2;
  s = "x${toString (lib.add 3 4)}y\n\t\${literal}";
  ind = ''
    line one
      ${name} two
  '';
  l = [ 1.5 null true false (-7) ./lib.nix "" ];
  f = ({ x ? 2, y, ... }@args: x * y + builtins.length (builtins.attrNames args)) { y = 5; z = 0; };
  w = with lib; add 10 20;
  p = __curPos.line;
  t = assert a == 3; a;
  ${name + "amic"} = 1;
  n = { x.y.z = 1; x.y.w = 2; };
  inherit (lib) add;
  inherit name;
  o = n.x.q or "default";
  h = n ? x && !(n ? q) || false -> true;
  c = [ 1 ] ++ [ 2 ] ++ (if a > 2 then [ 3 ] else [ ]);
  u = { a = 1; } // { b = 2; };
  cmp = [ (1 < 2) (2 <= 2) (3 > 4) (4 >= 4) (1 != 2) (5 - 3) (6 / 3) ];
  up = /. + "tmp";
  path = ./sub/${name}.nix;
  str = ./lib.nix + "";
}
"#;

const LIB: &str = "{ add = a: b: a + b; }\n";

/// Writes the two-file program and returns (dir, main.nix).
fn program(tag: &str) -> (PathBuf, PathBuf) {
    let d = fresh_dir(tag);
    fs::write(d.join("main.nix"), MAIN).unwrap();
    fs::write(d.join("lib.nix"), LIB).unwrap();
    let main = d.join("main.nix");
    (d, main)
}

/// Evaluates `file` strictly in a new evaluator, with `cache` in place of
/// the environment's; returns the printed value (or error) and what the
/// cache did.
fn eval_with(cache: Option<Cache>, file: &Path, opts: Options) -> (Result<String, String>, Stats) {
    let file = file.to_owned();
    with_big_stack(move || {
        with_cache(cache, || {
            let before = stats();
            let ev = Ev::new(opts);
            let out = ev
                .eval_expr_str(&format!("import {}", file.display()), "«string»")
                .and_then(|v| ev.render(&v, OutputMode::Nix, true))
                .map_err(|e| e.msg().to_string());
            let after = stats();
            let diff = Stats {
                hits: after.hits - before.hits,
                misses: after.misses - before.misses,
                stored: after.stored - before.stored,
            };
            (out, diff)
        })
    })
}

fn eval_file(cache: Option<Cache>, file: &Path) -> (Result<String, String>, Stats) {
    eval_with(cache, file, Options::default())
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() == 64)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn a_hit_evaluates_to_the_same_value_as_a_parse() {
    let (d, main) = program("hit");
    let cache_dir = fresh_dir("hit-cache");
    let _c = Cleanup(vec![d, cache_dir.clone()]);
    let (plain, s0) = eval_file(None, &main);
    let plain = plain.expect("the program evaluates");
    assert_eq!(s0, Stats::default(), "no cache, no counts");
    assert!(plain.contains("dynamic = 1;"), "{plain}");

    let (first, s1) = eval_file(Some(Cache::at(&cache_dir)), &main);
    assert_eq!(first.as_deref(), Ok(plain.as_str()));
    assert_eq!(
        s1,
        Stats {
            hits: 0,
            misses: 2,
            stored: 2
        }
    );
    assert_eq!(entries(&cache_dir).len(), 2);

    let (second, s2) = eval_file(Some(Cache::at(&cache_dir)), &main);
    assert_eq!(second.as_deref(), Ok(plain.as_str()));
    assert_eq!(
        s2,
        Stats {
            hits: 2,
            misses: 0,
            stored: 0
        }
    );
}

#[test]
fn changed_bytes_of_the_same_size_and_mtime_miss() {
    let d = fresh_dir("changed");
    let cache_dir = fresh_dir("changed-cache");
    let _c = Cleanup(vec![d.clone(), cache_dir.clone()]);
    let f = d.join("v.nix");
    fs::write(&f, "{ v = 12; }\n").unwrap();
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    let (a, _) = eval_file(Some(Cache::at(&cache_dir)), &f);
    assert_eq!(a.as_deref(), Ok("{ v = 12; }"));

    fs::write(&f, "{ v = 34; }\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::metadata(&f).unwrap().modified().unwrap(), mtime);
    let (b, s) = eval_file(Some(Cache::at(&cache_dir)), &f);
    assert_eq!(b.as_deref(), Ok("{ v = 34; }"));
    assert_eq!((s.hits, s.misses), (0, 1));
    assert_eq!(entries(&cache_dir).len(), 2, "one entry per content");
}

/// Damages every entry with `damage`, then checks the program still
/// evaluates to `want` by parsing, and that the entries were rewritten.
fn damaged_entries_fall_back(tag: &str, damage: impl Fn(&Path, &[u8]) -> Vec<u8>) {
    let (d, main) = program(tag);
    let cache_dir = fresh_dir(&format!("{tag}-cache"));
    let _c = Cleanup(vec![d, cache_dir.clone()]);
    let (want, _) = eval_file(Some(Cache::at(&cache_dir)), &main);
    let want = want.expect("the program evaluates");
    let es = entries(&cache_dir);
    assert_eq!(es.len(), 2);
    for e in &es {
        let good = fs::read(e).unwrap();
        fs::write(e, damage(e, &good)).unwrap();
    }
    let (got, s) = eval_file(Some(Cache::at(&cache_dir)), &main);
    assert_eq!(got.as_deref(), Ok(want.as_str()), "{tag}");
    assert_eq!(
        s,
        Stats {
            hits: 0,
            misses: 2,
            stored: 2
        },
        "{tag}"
    );
    let (again, s) = eval_file(Some(Cache::at(&cache_dir)), &main);
    assert_eq!(again.as_deref(), Ok(want.as_str()), "{tag}");
    assert_eq!(s.hits, 2, "{tag}: rewritten entries are used");
}

#[test]
fn a_corrupted_entry_is_parsed_again() {
    damaged_entries_fall_back("flip", |_, b| {
        let mut b = b.to_vec();
        let i = HEADER + (b.len() - HEADER) / 2;
        b[i] ^= 0x20;
        b
    });
}

#[test]
fn a_truncated_or_empty_entry_is_parsed_again() {
    damaged_entries_fall_back("trunc", |_, b| b[..b.len() - 3].to_vec());
    damaged_entries_fall_back("half-header", |_, b| b[..HEADER / 2].to_vec());
    damaged_entries_fall_back("empty", |_, _| Vec::new());
}

#[test]
fn an_entry_of_another_key_or_format_is_parsed_again() {
    // Each entry replaced by a sound entry written for some other file.
    let other = {
        let k = [7u8; 32];
        let e = Expr::Lit(crate::Value::Int(1));
        let payload = codec::encode(&e, 1, 1).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        v.extend_from_slice(&k);
        v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        v.extend_from_slice(&checksum(&payload).to_le_bytes());
        v.extend_from_slice(&payload);
        v
    };
    damaged_entries_fall_back("other-key", |_, _| other.clone());
    damaged_entries_fall_back("other-version", |_, b| {
        let mut b = b.to_vec();
        b[4] = b[4].wrapping_add(1);
        b
    });
}

#[test]
fn an_unwritable_cache_dir_still_evaluates() {
    let (d, main) = program("unwritable");
    let _c = Cleanup(vec![d.clone()]);
    // A directory below a regular file cannot be made, even by root.
    let blocker = d.join("not-a-dir");
    fs::write(&blocker, "").unwrap();
    let (plain, _) = eval_file(None, &main);
    let (got, s) = eval_file(Some(Cache::at(blocker.join("b3/parse"))), &main);
    assert_eq!(got, plain);
    assert!(got.is_ok());
    assert_eq!((s.hits, s.stored), (0, 0));
}

#[test]
fn files_lowered_with_lints_on_are_not_cached() {
    let (d, main) = program("lints");
    let cache_dir = fresh_dir("lints-cache");
    let _c = Cleanup(vec![d, cache_dir.clone()]);
    let opts = Options {
        lint_url: Lint::Warn,
        ..Options::default()
    };
    let (got, s) = eval_with(Some(Cache::at(&cache_dir)), &main, opts);
    assert!(got.is_ok(), "{got:?}");
    assert_eq!(s, Stats::default());
    assert!(entries(&cache_dir).is_empty());
}

#[test]
fn cache_dir_follows_xdg_then_home_and_can_be_turned_off() {
    use std::ffi::OsStr;
    let o = |s: &'static str| Some(OsStr::new(s));
    assert_eq!(
        cache_dir(None, o("/x/cache"), o("/home/u")),
        Some(PathBuf::from("/x/cache/b3/parse"))
    );
    assert_eq!(
        cache_dir(o("1"), None, o("/home/u")),
        Some(PathBuf::from("/home/u/.cache/b3/parse"))
    );
    assert_eq!(
        cache_dir(None, o("relative"), o("/home/u")),
        Some(PathBuf::from("/home/u/.cache/b3/parse"))
    );
    assert_eq!(cache_dir(o("0"), o("/x/cache"), o("/home/u")), None);
    assert_eq!(cache_dir(None, None, None), None);
}

/// Lowers `text` as file `name`; `None` when it does not lower.
fn lower(text: &str, name: &str, globals: &[Sym], raw: bool) -> Option<(Expr, u32)> {
    let fid = pos::add_file(name, true, Rc::from(text));
    let dir = Path::new(name)
        .parent()
        .and_then(|p| p.to_str())
        .unwrap_or("/");
    ast::parse(text, fid, dir, globals, None, true, [Lint::Off; 3], raw)
        .ok()
        .map(|e| (e, fid))
}

/// Checks that `path` encodes and decodes to the tree lowering gives, both
/// at the file id it was encoded at and re-based onto a new one. Returns
/// whether the file lowers at all.
fn round_trips(path: &Path, globals: &[Sym]) -> bool {
    let bytes = fs::read(path).unwrap();
    let (text, raw) = ast::decode_source(&bytes);
    let name = path.to_str().unwrap();
    let Some((tree, fid)) = lower(&text, name, globals, raw) else {
        return false;
    };
    let enc = codec::encode(&tree, fid, text.len() as u32)
        .unwrap_or_else(|e| panic!("{name}: encode: {e}"));
    let back = codec::decode(&enc, fid).unwrap_or_else(|e| panic!("{name}: decode: {e}"));
    assert_eq!(format!("{tree:?}"), format!("{back:?}"), "{name}");
    let (tree2, fid2) = lower(&text, name, globals, raw).unwrap();
    assert_ne!(fid, fid2);
    let back2 = codec::decode(&enc, fid2).unwrap();
    assert_eq!(
        format!("{tree2:?}"),
        format!("{back2:?}"),
        "{name} re-based"
    );
    true
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    v.sort();
    for p in v {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            nix_files(&p, out);
        } else if m.is_file() && p.extension().is_some_and(|x| x == "nix") {
            out.push(p);
        }
    }
}

fn lang_tests_dir() -> PathBuf {
    match std::env::var_os("B3_LANG_TESTS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/nix-lang-tests"),
    }
}

#[test]
fn every_lang_test_file_round_trips_to_the_tree_lowering_gives() {
    let dir = lang_tests_dir();
    assert!(
        dir.is_dir(),
        "the Nix language tests are not at {} (set B3_LANG_TESTS, as scripts/test.sh does)",
        dir.display()
    );
    let (lowered, total) = with_big_stack(move || {
        let ev = Ev::new(Options::default());
        let mut files = Vec::new();
        nix_files(&dir, &mut files);
        let lowered = files
            .iter()
            .filter(|f| round_trips(f, &ev.global_names))
            .count();
        (lowered, files.len())
    });
    assert!(total >= 400, "only {total} .nix files found");
    // The parse-failure tests do not lower; nearly all others do.
    assert!(lowered * 10 >= total * 8, "{lowered} of {total} lowered");
}

const NIXPKGS: &str = "/tmp/b3-oracle/nixpkgs";

/// The nixpkgs directories `-A hello` reads files from.
const HELLO_DIRS: &[&str] = &[
    "lib",
    "pkgs/top-level",
    "pkgs/stdenv",
    "pkgs/build-support/fetchurl",
    "pkgs/build-support/setup-hooks",
    "pkgs/applications/misc/hello",
    "pkgs/os-specific/linux/kernel-headers",
    "pkgs/development/libraries/glibc",
];

#[test]
#[ignore = "needs a nixpkgs 18.03 checkout at /tmp/b3-oracle/nixpkgs (bench/nixpkgs)"]
fn nixpkgs_files_hello_reads_round_trip_to_the_tree_lowering_gives() {
    let (lowered, total) = with_big_stack(|| {
        let ev = Ev::new(Options::default());
        let mut files = Vec::new();
        for d in HELLO_DIRS {
            nix_files(&Path::new(NIXPKGS).join(d), &mut files);
        }
        let lowered = files
            .iter()
            .filter(|f| round_trips(f, &ev.global_names))
            .count();
        (lowered, files.len())
    });
    assert!(total >= 100, "only {total} files under {NIXPKGS}");
    assert_eq!(lowered, total, "every nixpkgs file lowers");
}

#[test]
fn every_damaged_payload_is_rejected_or_decoded_without_panicking() {
    let d = fresh_dir("codec");
    let _c = Cleanup(vec![d.clone()]);
    let name = d.join("main.nix");
    let name = name.to_str().unwrap().to_owned();
    with_big_stack(move || {
        let ev = Ev::new(Options::default());
        let (tree, fid) = lower(MAIN, &name, &ev.global_names, false).unwrap();
        let enc = codec::encode(&tree, fid, MAIN.len() as u32).unwrap();
        for n in 0..enc.len() {
            assert!(codec::decode(&enc[..n], fid).is_err(), "prefix of {n}");
        }
        let mut longer = enc.clone();
        longer.push(0);
        assert_eq!(
            codec::decode(&longer, fid).err(),
            Some(codec::DecodeError::Trailing(1))
        );
        for i in 0..enc.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = enc.clone();
                b[i] ^= bit;
                let _ = codec::decode(&b, fid);
            }
        }
    });
}

/// Not a test of speed (that belongs in benchmarks) but the measurement
/// the cache's design rests on: how much cheaper decoding a big file is than
/// parsing and lowering it. Run with
/// `cargo test --release -p b3-evaluator decode_vs_parse -- --ignored --nocapture`.
#[test]
#[ignore = "prints timings of nixpkgs files; needs /tmp/b3-oracle/nixpkgs"]
fn decode_vs_parse_timings() {
    with_big_stack(|| {
        let ev = Ev::new(Options::default());
        for f in [
            "pkgs/top-level/all-packages.nix",
            "lib/lists.nix",
            "pkgs/stdenv/generic/make-derivation.nix",
        ] {
            let p = Path::new(NIXPKGS).join(f);
            let text = fs::read_to_string(&p).unwrap();
            let name = p.to_str().unwrap();
            let rounds = 20;
            let fid = pos::add_file(name, true, Rc::from(text.as_str()));
            let dir = p.parent().and_then(|d| d.to_str()).unwrap();
            let t = std::time::Instant::now();
            let mut last = None;
            for _ in 0..rounds {
                let g = &ev.global_names;
                last = Some(ast::parse(
                    &text,
                    fid,
                    dir,
                    g,
                    None,
                    false,
                    [Lint::Off; 3],
                    false,
                ));
            }
            let parse = t.elapsed() / rounds;
            let tree = last.unwrap().unwrap();
            let enc = codec::encode(&tree, fid, text.len() as u32).unwrap();
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                let inputs = Inputs {
                    base_dir: "/",
                    globals: &ev.global_names,
                    extra: None,
                    pipe_ops: false,
                    lints: [Lint::Off; 3],
                    raw_bytes: false,
                };
                std::hint::black_box(key(&text, &inputs));
            }
            let keyt = t.elapsed() / rounds;
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(checksum(&enc));
                std::hint::black_box(codec::decode(&enc, fid).unwrap());
            }
            let dec = t.elapsed() / rounds;
            println!(
                "{f}: {} bytes source, {} bytes entry; parse+lower {:?}, key {:?}, checksum+decode {:?}: decode {:.1}x faster, key+decode {:.1}x",
                text.len(),
                enc.len(),
                parse,
                keyt,
                dec,
                parse.as_secs_f64() / dec.as_secs_f64(),
                parse.as_secs_f64() / (dec + keyt).as_secs_f64(),
            );
        }
    });
}
