//! `b3 copy` and nix.conf: signatures required by default and checked
//! against `trusted-public-keys` from nix.conf (or `--option`), relaxed by
//! `require-sigs = false`; `-s` substituting on the destination from
//! nix.conf's `substituters`; `--with-logs` uploading build logs as
//! `log/<drv base name>`, as `nix store copy-log` does.
//!
//! Every b3 run gets its own NIX_CONF_DIR and no user config files, so the
//! machine's nix.conf does not leak in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmpdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("b3-copy-{tag}-"))
        .tempdir()
        .unwrap()
}

/// A scratch area: a source store with one input-addressed path (not
/// content-addressed, so only a signature can vouch for it) that has a
/// deriver, and a nix.conf directory.
struct Fixture {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    path: String,
    drv: String,
}

const DRV: &str = "/nix/store/3n3qk4lmzhcn9gxj4s6l2f0h4dkcw1ss-copy-cli-thing.drv";
const PATH: &str = "/nix/store/9q3ik1bnxk1vbyv0d9jqz0fys1zlnxzw-copy-cli-thing";

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let tmp = tmpdir(tag);
        let work = tmp.path().to_path_buf();
        std::fs::create_dir_all(work.join("conf")).unwrap();
        let f = Fixture {
            _tmp: tmp,
            work,
            path: PATH.to_owned(),
            drv: DRV.to_owned(),
        };
        f.conf("");
        let file = f.work.join("thing");
        std::fs::write(&file, "built by nobody in particular\n".repeat(500)).unwrap();
        let hash = stdout(f.b3().args(["hash", "path", "--base32"]).arg(&file));
        let nar = check(f.b3().args(["nar", "dump"]).arg(&file)).stdout;
        let nar_file = f.work.join("thing.nar");
        std::fs::write(&nar_file, nar).unwrap();
        check(
            f.b3()
                .arg("--store")
                .arg(f.store("src"))
                .args(["store", "import", "--path", PATH, "--deriver", DRV])
                .arg("--nar-hash")
                .arg(format!("sha256:{hash}"))
                .arg("--file")
                .arg(&nar_file),
        );
        f
    }

    /// `b3` with only this fixture's nix.conf.
    fn b3(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_b3"));
        c.env("NIX_CONF_DIR", self.work.join("conf"))
            .env("NIX_USER_CONF_FILES", self.work.join("conf/no-user.conf"))
            .env_remove("NIX_CONFIG")
            .env_remove("B3_TRUSTED_PUBLIC_KEYS")
            .env("B3_FSYNC", "0");
        c
    }

    fn conf(&self, text: &str) {
        std::fs::write(self.work.join("conf/nix.conf"), text).unwrap();
    }

    fn store(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    fn cache_url(&self, name: &str) -> String {
        format!("file://{}", self.work.join(name).display())
    }

    /// Uploads the fixture's path from the source store to cache `name`.
    fn upload(&self, name: &str, extra: &str) {
        check(
            self.b3()
                .arg("--store")
                .arg(self.store("src"))
                .args(["copy", "--to", &format!("{}{extra}", self.cache_url(name))])
                .arg(&self.path),
        );
    }

    /// `b3 --store <dst> copy --from <cache> PATH <args>`.
    fn copy_from(&self, dst: &str, cache: &str, args: &[&str]) -> Output {
        self.b3()
            .arg("--store")
            .arg(self.store(dst))
            .args(["copy", "--from", &self.cache_url(cache)])
            .args(args)
            .arg(&self.path)
            .output()
            .unwrap()
    }

    fn has_path(&self, store: &str) -> bool {
        self.b3()
            .arg("--store")
            .arg(self.store(store))
            .args(["store", "dump", &self.path])
            .output()
            .unwrap()
            .status
            .success()
    }

    fn keypair(&self, name: &str) -> (PathBuf, String) {
        let sk = self.work.join(format!("{name}.sec"));
        let pk = self.work.join(format!("{name}.pub"));
        check(
            self.b3()
                .args(["key", "generate", "--name", name, "--secret-file"])
                .arg(&sk)
                .arg("--public-file")
                .arg(&pk),
        );
        let pk = std::fs::read_to_string(pk).unwrap().trim().to_owned();
        (sk, pk)
    }
}

fn check(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(check(cmd).stdout)
        .unwrap()
        .trim()
        .to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unsigned_paths_are_refused_by_default_and_accepted_without_require_sigs() {
    let f = Fixture::new("unsigned");
    f.upload("cache", "");

    // Nix's default trusted key (cache.nixos.org) did not sign it.
    let o = f.copy_from("dst", "cache", &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("is not signed by any of the keys in 'trusted-public-keys'"),
        "{err}"
    );
    assert!(err.contains(PATH), "names the path: {err}");
    assert!(!f.has_path("dst"));

    // No trusted keys at all: refused up front, saying what to do.
    f.conf("trusted-public-keys =\n");
    let o = f.copy_from("dst", "cache", &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no trusted public keys"),
        "{}",
        stderr(&o)
    );
    assert!(!f.has_path("dst"));

    f.conf("require-sigs = false\n");
    let o = f.copy_from("dst", "cache", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(f.has_path("dst"));

    f.conf("");
    let o = f.copy_from("dst2", "cache", &["--no-check-sigs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(f.has_path("dst2"));
}

#[test]
fn nix_conf_trusted_public_keys_decide_which_signatures_count() {
    let f = Fixture::new("keys");
    let (sk, pk) = f.keypair("copy-cli-1");
    let (_, other) = f.keypair("copy-cli-2");
    f.upload("cache", &format!("?secret-key={}", sk.display()));

    f.conf(&format!("trusted-public-keys = {other}\n"));
    let o = f.copy_from("dst", "cache", &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not signed by any of the keys"));
    assert!(!f.has_path("dst"));

    // --option replaces nix.conf's list, as Nix's does.
    let o = f.copy_from("dst", "cache", &["--option", "trusted-public-keys", &pk]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(f.has_path("dst"));

    f.conf(&format!("trusted-public-keys = {other} {pk}\n"));
    let o = f.copy_from("dst2", "cache", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(f.has_path("dst2"));
}

#[test]
fn substitute_on_destination_takes_paths_from_the_destinations_substituters() {
    let f = Fixture::new("subst");
    f.upload("subst-cache", "");
    f.upload("src-cache", "");
    // The copy source's NAR is broken: only a substitution can succeed.
    let nar_dir = f.work.join("src-cache/nar");
    for e in std::fs::read_dir(&nar_dir).unwrap() {
        let p = e.unwrap().path();
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n / 2] ^= 0xff;
        std::fs::write(&p, b).unwrap();
    }
    f.conf(&format!(
        "require-sigs = false\nsubstituters = {}\n",
        f.cache_url("subst-cache")
    ));
    let o = f.copy_from("dst", "src-cache", &[]);
    assert!(!o.status.success(), "the broken source was accepted");
    assert!(!f.has_path("dst"));

    let o = f.copy_from("dst", "src-cache", &["-s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("substituted 1 path from the destination's substituters"),
        "{}",
        stderr(&o)
    );
    assert!(f.has_path("dst"));
}

fn log_file(store_root: &Path, drv_base: &str) -> PathBuf {
    store_root
        .join("nix/var/log/nix/drvs")
        .join(&drv_base[..2])
        .join(format!("{}.bz2", &drv_base[2..]))
}

#[test]
fn with_logs_uploads_the_derivers_build_logs_as_nix_copy_log_does() {
    let f = Fixture::new("logs");
    let drv_base = f.drv.trim_start_matches("/nix/store/").to_owned();
    let log = "building thing\nall done\n";
    let lf = log_file(&f.store("src"), &drv_base);
    std::fs::create_dir_all(lf.parent().unwrap()).unwrap();
    let mut bz = Command::new("bzip2")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bzip2 (scripts/setup-test-deps.sh)");
    std::io::Write::write_all(bz.stdin.as_mut().unwrap(), log.as_bytes()).unwrap();
    let out = bz.wait_with_output().unwrap();
    std::fs::write(&lf, out.stdout).unwrap();

    let o = check(
        f.b3()
            .arg("--store")
            .arg(f.store("src"))
            .args(["copy", "--with-logs", "--to", &f.cache_url("cache")])
            .arg(&f.path),
    );
    assert!(
        stderr(&o).contains("uploaded 1 build log"),
        "{}",
        stderr(&o)
    );
    let uploaded = std::fs::read_to_string(f.work.join("cache/log").join(&drv_base)).unwrap();
    assert_eq!(uploaded, log);

    // Already there: not uploaded again.
    let o = check(
        f.b3()
            .arg("--store")
            .arg(f.store("src"))
            .args(["copy", "--with-logs", "--to", &f.cache_url("cache")])
            .arg(&f.path),
    );
    assert!(
        stderr(&o).contains("uploaded 0 build logs"),
        "{}",
        stderr(&o)
    );

    // Real Nix 2.8 reads it from the cache where it looks for logs.
    let o = Command::new("nix-store")
        .args(["--store", &f.cache_url("cache"), "--read-log", &f.drv])
        .output()
        .expect("nix-store (the Nix oracle): run scripts/setup-test-deps.sh");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), log);
}

#[test]
fn cache_to_cache_copies_keep_signatures_and_pass_same_compression_nars_through() {
    let f = Fixture::new("c2c");
    let (sk, pk) = f.keypair("c2c-1");
    f.upload(
        "a",
        &format!("?compression=zstd&secret-key={}", sk.display()),
    );
    for (cache, params) in [("b", "?compression=xz"), ("c", "?compression=zstd")] {
        check(
            f.b3()
                .args(["copy", "--trusted-public-keys", &pk])
                .args(["--from", &f.cache_url("a")])
                .args(["--to", &format!("{}{params}", f.cache_url(cache))])
                .arg(&f.path),
        );
        // The copy carries a's signature: it substitutes with a's key.
        let dst = format!("dst-{cache}");
        let o = f.copy_from(&dst, cache, &["--trusted-public-keys", &pk]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(f.has_path(&dst));
    }
    let hash_part = &PATH["/nix/store/".len()..][..32];
    let nar_url = |cache: &str| {
        let text = std::fs::read_to_string(f.work.join(cache).join(format!("{hash_part}.narinfo")))
            .unwrap();
        let url = text.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
        url.to_owned()
    };
    assert!(nar_url("b").ends_with(".nar.xz"), "{}", nar_url("b"));
    // Same compression: the very same file, under the same name.
    assert_eq!(nar_url("c"), nar_url("a"));
    assert_eq!(
        std::fs::read(f.work.join("c").join(nar_url("c"))).unwrap(),
        std::fs::read(f.work.join("a").join(nar_url("a"))).unwrap()
    );
}

#[test]
fn a_copy_killed_between_moving_paths_into_place_and_registering_them_leaves_no_valid_path() {
    let f = Fixture::new("crash");
    f.conf("require-sigs = false\n");
    f.upload("cache", "");
    // The batch has moved the path into place and flushed the store
    // directory; the process dies before the registration transaction.
    let o = f
        .b3()
        .env("B3_FSYNC", "1")
        .env("B3_TEST_CRASH_AT", "batch-before-register")
        .arg("--store")
        .arg(f.store("dst"))
        .args(["copy", "--from", &f.cache_url("cache")])
        .arg(&f.path)
        .output()
        .unwrap();
    assert!(!o.status.success(), "the crash point was not reached");
    let base = f.path.trim_start_matches("/nix/store/");
    let physical = f.store("dst").join("nix/store").join(base);
    assert!(physical.exists(), "moved into place before the crash");
    // The next process to open the store finds the path unregistered and
    // sweeps it.
    assert!(!f.has_path("dst"));
    assert!(!physical.exists(), "swept by the next open");
    // And copying again works.
    let o = f.copy_from("dst", "cache", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(f.has_path("dst"));
}
