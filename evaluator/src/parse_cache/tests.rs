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
        let before = stats();
        // The cache writes its queue when `with_cache` ends: `after` counts it.
        let out = with_cache(cache, || {
            let ev = Ev::new(opts);
            ev.eval_expr_str(&format!("import {}", file.display()), "«string»")
                .and_then(|v| ev.render(&v, OutputMode::Nix, true))
                .map_err(|e| e.msg().to_string())
        });
        let after = stats();
        let diff = Stats {
            hits: after.hits - before.hits,
            misses: after.misses - before.misses,
            stored: after.stored - before.stored,
        };
        (out, diff)
    })
}

fn eval_file(cache: Option<Cache>, file: &Path) -> (Result<String, String>, Stats) {
    eval_with(cache, file, Options::default())
}

/// The rows of the cache database in `dir`: (key, entry, last used).
fn rows(dir: &Path) -> Vec<(Key, Vec<u8>, i64)> {
    Cache::at(dir).db().rows()
}

fn entries(dir: &Path) -> usize {
    rows(dir).len()
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
    assert_eq!(entries(&cache_dir), 2);

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
    assert_eq!(entries(&cache_dir), 2, "one entry per content");
}

/// Damages every entry with `damage`, then checks the program still
/// evaluates to `want` by parsing, and that the entries were rewritten.
fn damaged_entries_fall_back(tag: &str, damage: impl Fn(&[u8]) -> Vec<u8>) {
    let (d, main) = program(tag);
    let cache_dir = fresh_dir(&format!("{tag}-cache"));
    let _c = Cleanup(vec![d, cache_dir.clone()]);
    let (want, _) = eval_file(Some(Cache::at(&cache_dir)), &main);
    let want = want.expect("the program evaluates");
    let es = rows(&cache_dir);
    assert_eq!(es.len(), 2);
    let db = Cache::at(&cache_dir);
    for (k, good, used) in &es {
        db.db().put_row(k, &damage(good), *used).unwrap();
    }
    drop(db);
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
    damaged_entries_fall_back("flip", |b| {
        let mut b = b.to_vec();
        let i = HEADER + (b.len() - HEADER) / 2;
        b[i] ^= 0x20;
        b
    });
}

#[test]
fn a_truncated_or_empty_entry_is_parsed_again() {
    damaged_entries_fall_back("trunc", |b| b[..b.len() - 3].to_vec());
    damaged_entries_fall_back("half-header", |b| b[..HEADER / 2].to_vec());
    damaged_entries_fall_back("empty", |_| Vec::new());
}

#[test]
fn an_entry_of_another_key_or_format_is_parsed_again() {
    // Each entry replaced by a sound entry written for some other file.
    let other = {
        let k = [7u8; 32];
        let e = Expr::Lit(crate::Value::Int(1));
        let payload = codec::encode(&e, 1, 1).unwrap();
        entry_bytes(&k, &payload)
    };
    damaged_entries_fall_back("other-key", |_| other.clone());
    damaged_entries_fall_back("other-version", |b| {
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
    let (got, s) = eval_file(Some(Cache::at(blocker.join("b3"))), &main);
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
    assert_eq!(entries(&cache_dir), 0);
}

#[test]
fn cache_dir_follows_xdg_then_home_and_can_be_turned_off() {
    use std::ffi::OsStr;
    let o = |s: &'static str| Some(OsStr::new(s));
    assert_eq!(
        cache_dir(None, o("/x/cache"), o("/home/u")),
        Some(PathBuf::from("/x/cache/b3"))
    );
    assert_eq!(
        cache_dir(o("1"), None, o("/home/u")),
        Some(PathBuf::from("/home/u/.cache/b3"))
    );
    assert_eq!(
        cache_dir(None, o("relative"), o("/home/u")),
        Some(PathBuf::from("/home/u/.cache/b3"))
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

#[test]
fn a_database_that_is_not_sqlite_is_made_again() {
    let (d, main) = program("notadb");
    let cache_dir = fresh_dir("notadb-cache");
    let _c = Cleanup(vec![d, cache_dir.clone()]);
    let (plain, _) = eval_file(None, &main);
    let junk: Vec<u8> = b"this is not an SQLite database\n".repeat(4000);
    fs::write(cache_dir.join(DB_NAME), &junk).unwrap();
    let (got, s) = eval_file(Some(Cache::at(&cache_dir)), &main);
    assert_eq!(got, plain);
    assert_eq!((s.hits, s.misses), (0, 2));
    let (again, s) = eval_file(Some(Cache::at(&cache_dir)), &main);
    assert_eq!(again, plain);
    assert_eq!(s.hits, 2, "the junk was replaced by a database");
}

#[test]
fn a_truncated_database_falls_back_to_parsing() {
    let (d, _main) = program("truncdb");
    let cache_dir = fresh_dir("truncdb-cache");
    let _c = Cleanup(vec![d.clone(), cache_dir.clone()]);
    // A third file with a big entry, so the database spans many pages.
    let big: String = (0..4000).map(|i| format!("  a{i} = {i};\n")).collect();
    fs::write(d.join("big.nix"), format!("{{\n{big}}}\n")).unwrap();
    let top = d.join("top.nix");
    fs::write(&top, "[ (import ./main.nix).a (import ./big.nix).a3999 ]\n").unwrap();
    let (plain, _) = eval_file(None, &top);
    assert_eq!(plain.as_deref(), Ok("[ 3 3999 ]"));
    let (first, s) = eval_file(Some(Cache::at(&cache_dir)), &top);
    assert_eq!(first, plain);
    assert_eq!(s.stored, 4);
    let db = cache_dir.join(DB_NAME);
    let len = fs::metadata(&db).unwrap().len();
    for keep in [len / 2, len / 3, 100, 0] {
        fs::File::options()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(keep)
            .unwrap();
        let (got, s) = eval_file(Some(Cache::at(&cache_dir)), &top);
        assert_eq!(got, plain, "database cut to {keep} bytes");
        assert_eq!(s.hits + s.misses, 4, "database cut to {keep} bytes");
    }
}

#[test]
fn a_read_only_cache_still_evaluates() {
    use std::os::unix::fs::PermissionsExt;
    let (d, main) = program("ro");
    let cache_dir = fresh_dir("ro-cache");
    let _c = Cleanup(vec![d, cache_dir.clone()]);
    let (plain, _) = eval_file(None, &main);
    let (first, _) = eval_file(Some(Cache::at(&cache_dir)), &main);
    assert_eq!(first, plain);
    let db = cache_dir.join(DB_NAME);
    fs::set_permissions(&db, fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(&cache_dir, fs::Permissions::from_mode(0o555)).unwrap();
    // Root writes whatever the modes say; then this checks evaluation only.
    let enforced = fs::write(cache_dir.join("probe"), "").is_err();
    // A file the cache has no entry for: the miss cannot be written.
    let extra = main.with_file_name("extra.nix");
    fs::write(&extra, "(import ./main.nix).a + 1\n").unwrap();
    let (got, s) = eval_file(Some(Cache::at(&cache_dir)), &extra);
    let _ = fs::set_permissions(&cache_dir, fs::Permissions::from_mode(0o755));
    assert_eq!(got.as_deref(), Ok("4"));
    if enforced {
        assert_eq!(s.hits + s.misses, 3);
        assert_eq!(s.stored, 0);
    }
}

/// fork/waitpid/_exit from the C library std links (the evaluator has no
/// libc dependency of its own).
mod sys {
    extern "C" {
        pub fn fork() -> i32;
        pub fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
        pub fn _exit(code: i32) -> !;
    }
}

/// Forks a child that runs `f` and exits 0 if it returned true; returns
/// the child's pid. Only called in a process running one test (see
/// [`run_alone`]): a fork while another thread holds one of SQLite's
/// global locks would leave the child waiting for it forever.
fn fork_child(f: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the child only runs `f` and `_exit`s.
    let pid = unsafe { sys::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { sys::_exit(if ok { 0 } else { 1 }) }
    }
    pid
}

fn exit_status(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waits for a child of this process.
    let r = unsafe { sys::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    status
}

fn test_key(n: u16) -> Key {
    let mut k = [0x5a; 32];
    k[..2].copy_from_slice(&n.to_le_bytes());
    k
}

/// The variable that hands a forking helper test its directory.
const ALONE_DIR: &str = "B3_PARSE_CACHE_TEST_DIR";

/// Runs the `#[ignore]`d helper test `name` of this test binary in a new
/// process where it is the only test, in a fresh directory; asserts that
/// it ran and passed.
fn run_alone(name: &str) {
    let dir = fresh_dir("alone");
    let _c = Cleanup(vec![dir.clone()]);
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(ALONE_DIR, &dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Not a time limit on the test (it takes well under a second), a
    // guard against a hung child: a failure beats a CI job that never ends.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > give_up {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
}

/// The directory [`run_alone`] made, or `None` when a helper test is run
/// some other way (`--ignored` with other tests): it then does nothing.
fn alone_dir() -> Option<PathBuf> {
    std::env::var_os(ALONE_DIR).map(PathBuf::from)
}

#[test]
fn a_forked_child_writes_its_own_batch_and_leaves_the_parents_connection_alone() {
    run_alone("parse_cache::tests::fork_helper_child_batch");
}

#[test]
fn two_processes_writing_the_same_key_both_finish_with_the_right_value() {
    run_alone("parse_cache::tests::fork_helper_two_writers");
}

#[test]
#[ignore = "run in a process of its own by a_forked_child_writes_its_own_batch_..."]
fn fork_helper_child_batch() {
    let Some(dir) = alone_dir() else { return };
    let cache = Cache::at(&dir);
    let db = cache.db();
    // The parent has a connection open and entries queued when it forks.
    db.put_row(
        &test_key(0),
        b"before",
        db::day(std::time::SystemTime::now()),
    )
    .unwrap();
    db.put(&test_key(1), b"parent".to_vec());
    let child = fork_child(|| {
        db.put(&test_key(2), b"child".to_vec());
        db.flush().written == 1 && db.get(&test_key(0), &mut |b| Some(b == b"before")) == Some(true)
    });
    assert_eq!(exit_status(child), 0, "the child wrote its one entry");
    // The parent's connection still reads (the child's entry included) and
    // writes its own queue.
    assert_eq!(
        db.get(&test_key(2), &mut |b| Some(b.to_vec())),
        Some(b"child".to_vec())
    );
    assert_eq!(db.flush().written, 1);
    let rows: Vec<(Key, Vec<u8>)> = db.rows().into_iter().map(|(k, e, _)| (k, e)).collect();
    assert_eq!(
        rows,
        vec![
            (test_key(0), b"before".to_vec()),
            (test_key(1), b"parent".to_vec()),
            (test_key(2), b"child".to_vec()),
        ]
    );
    let fresh = Cache::at(&dir);
    assert_eq!(fresh.db().count(), Some(3));
}

#[test]
#[ignore = "run in a process of its own by two_processes_writing_the_same_key_..."]
fn fork_helper_two_writers() {
    let Some(dir) = alone_dir() else { return };
    // The same file lowered by two processes gives the same entry.
    let entry = entry_bytes(&test_key(7), &vec![0xab; 200_000]);
    // Both create the database and write at about the same time, many
    // times over, so their transactions overlap.
    let writer = |me: u16| {
        let dir = dir.clone();
        let entry = entry.clone();
        move || {
            for round in 0..30u16 {
                let c = Cache::at(&dir);
                c.db().put(&test_key(7), entry.clone());
                c.db()
                    .put(&test_key(1000 * me + round), vec![me as u8; 1000]);
                c.db().flush();
            }
            true
        }
    };
    let a = fork_child(writer(1));
    let b = fork_child(writer(2));
    assert_eq!(exit_status(a), 0);
    assert_eq!(exit_status(b), 0);
    let c = Cache::at(&dir);
    assert_eq!(
        c.db()
            .get(&test_key(7), &mut |b| Some(b == entry.as_slice())),
        Some(true)
    );
    let n = c.db().count().unwrap();
    assert!(n > 1 && n <= 61, "{n} rows");
}
