//! `b3 serve` as a Nix binary cache, and `b3 copy` between stores and
//! caches, against Nix 2.8: a closure built by Nix is copied into a b3
//! store (`b3 copy --from`), served over HTTP on 127.0.0.1, fetched with a
//! plain HTTP client (narinfo signature and NAR hash checked, NAR
//! listings equal to the ones Nix writes, NARs compressed on the fly), and
//! substituted by real Nix into an empty chroot store.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use b3_store::binary_cache::{NarInfo, PublicKey};
use b3_store::hash::{Hash, HashAlgo};
use b3_store::path::StoreDir;

const BB: &str = "/nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";

fn b3() -> Command {
    Command::new(env!("CARGO_BIN_EXE_b3"))
}

fn check(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?} ({e}); for Nix, run scripts/setup-test-deps.sh")
    });
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

fn tmpdir(tag: &str) -> PathBuf {
    let mut rnd = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut rnd)
        .unwrap();
    let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let d = std::env::temp_dir().join(format!("b3-serve-{tag}-{hex}"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A three-path closure built by Nix (top → dep, busybox); returns top.
fn nix_closure(work: &Path) -> String {
    let token = work.file_name().unwrap().to_string_lossy().into_owned();
    let expr = format!(
        r#"let
  bb = builtins.storePath {BB};
  dep = derivation {{ name = "b3serve-dep"; system = "x86_64-linux"; builder = "${{bb}}/bin/sh";
    args = [ "-c" "${{bb}}/bin/busybox seq 1 30000 > $out; echo {token} >> $out" ]; }};
in derivation {{
  name = "b3serve-top"; system = "x86_64-linux"; builder = "${{bb}}/bin/sh"; PATH = "${{bb}}/bin";
  args = [ "-c" "busybox mkdir -p $out/bin; busybox ln -s ${{bb}}/bin/busybox $out/bin/bb; busybox ln -s ${{dep}} $out/dep; busybox echo {token} > $out/token; busybox chmod +x $out/token" ];
}}"#
    );
    let f = work.join("closure.nix");
    std::fs::write(&f, expr).unwrap();
    stdout(Command::new("nix-build").args(["--no-out-link", f.to_str().unwrap()]))
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(store: &Path, args: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = b3()
        .arg("--store")
        .arg(store)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "b3 serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, port }
}

/// GET over HTTP/1.0; returns (status, body).
fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, dechunk(&body));
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let (sk, pk) = (dir.join("key.sec"), dir.join("key.pub"));
    check(Command::new("nix-store").args([
        "--generate-binary-cache-key",
        name,
        sk.to_str().unwrap(),
        pk.to_str().unwrap(),
    ]));
    let public = std::fs::read_to_string(&pk).unwrap().trim().to_owned();
    (sk, public)
}

#[test]
fn b3_serve_is_a_cache_nix_substitutes_from() {
    let work = tmpdir("nix");
    let top = nix_closure(&work);
    let closure: Vec<String> = stdout(Command::new("nix-store").args(["-qR", &top]))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(closure.len(), 3);

    // Nix's own cache of the closure, with NAR listings, as the reference.
    let nix_cache = work.join("nix-cache");
    check(Command::new("nix").args([
        "copy",
        "--to",
        &format!(
            "file://{}?write-nar-listing=1&compression=none",
            nix_cache.display()
        ),
        &top,
    ]));

    // Into a b3 store with `b3 copy --from`.
    let store = work.join("b3");
    check(
        b3().arg("--store")
            .arg(&store)
            .args(["copy", "--no-check-sigs", "--from"])
            .arg(format!("file://{}", nix_cache.display()))
            .arg(&top),
    );

    let (sk, pk) = keypair(&work, "b3-serve-1");
    let server = serve(
        &store,
        &[
            "--secret-key-file",
            sk.to_str().unwrap(),
            "--compression",
            "zstd",
        ],
    );
    let (st, info) = get(server.port, "/nix-cache-info");
    assert_eq!(st, 200);
    let info = String::from_utf8(info).unwrap();
    assert!(info.contains("StoreDir: /nix/store\n"), "{info}");
    assert!(info.contains("Priority: 30"), "{info}");

    let dir = StoreDir::default();
    let key: PublicKey = pk.parse().unwrap();
    for p in &closure {
        let sp = dir.parse(p).unwrap();
        let hash = sp.hash_part();
        let (st, text) = get(server.port, &format!("/{hash}.narinfo"));
        assert_eq!(st, 200, "{p}");
        let ni = NarInfo::parse_bytes(&text, &dir).unwrap();
        assert_eq!(ni.store_path, sp);
        assert_eq!(ni.url, format!("nar/{hash}.nar.zst"));
        assert_eq!(
            ni.count_valid_sigs(&dir, std::slice::from_ref(&key)),
            1,
            "{p}"
        );

        // The plain NAR: Nix's bytes, hashing to NarHash.
        let (st, nar) = get(server.port, &format!("/nar/{hash}.nar"));
        assert_eq!(st, 200);
        assert_eq!(nar.len() as u64, ni.nar_size);
        assert_eq!(Hash::digest(HashAlgo::Sha256, &nar), ni.nar_hash, "{p}");
        let want = check(Command::new("nix-store").args(["--dump", p])).stdout;
        assert!(nar == want, "NAR of {p}");

        // The compressed one the narinfo points at decompresses to it.
        let (st, zst) = get(server.port, &format!("/{}", ni.url));
        assert_eq!(st, 200);
        assert!(zst.len() < nar.len() || nar.len() < 4096);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let unz = rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let mut r =
                b3_store::binary_cache::compression::decompress_reader(ni.compression, &zst[..]);
            let mut v = Vec::new();
            r.read_to_end(&mut v).await.unwrap();
            v
        });
        assert!(unz == nar, "zstd NAR of {p}");

        // The listing is Nix's, byte for byte.
        let (st, ls) = get(server.port, &format!("/{hash}.ls"));
        assert_eq!(st, 200);
        let nix_ls = std::fs::read(nix_cache.join(format!("{hash}.ls"))).unwrap();
        assert_eq!(
            String::from_utf8(ls).unwrap(),
            String::from_utf8(nix_ls).unwrap()
        );
    }
    let (st, _) = get(server.port, "/00000000000000000000000000000000.narinfo");
    assert_eq!(st, 404);

    // Real Nix substitutes the closure from b3 serve into an empty store,
    // checking b3's signatures.
    let chroot = work.join("nix-chroot");
    check(
        Command::new("nix-store")
            .arg("--store")
            .arg(&chroot)
            .args(["-r", &top, "--option", "substituters"])
            .arg(format!("http://127.0.0.1:{}", server.port))
            .args(["--option", "trusted-public-keys", &pk]),
    );
    for p in &closure {
        let rel = p.trim_start_matches('/');
        assert!(chroot.join(rel).exists(), "{p} not substituted");
        let got = stdout(
            Command::new("nix-store")
                .arg("--store")
                .arg(&chroot)
                .args(["-q", "--hash", p]),
        );
        let want = stdout(Command::new("nix-store").args(["-q", "--hash", p]));
        assert_eq!(got, want, "{p}");
    }

    // With an untrusted key, Nix refuses.
    let (_, other) = keypair(&work.join("other").tap_mkdir(), "someone-else-1");
    let chroot2 = work.join("nix-chroot-2");
    let out = Command::new("nix-store")
        .arg("--store")
        .arg(&chroot2)
        .args(["-r", &top, "--option", "substituters"])
        .arg(format!("http://127.0.0.1:{}", server.port))
        .args(["--option", "trusted-public-keys", &other])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not signed by any of the keys in 'trusted-public-keys'"),
        "{err}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn b3_copy_all_writes_nar_listings_nix_agrees_with() {
    let work = tmpdir("copy");
    let top = nix_closure(&work);
    let nix_cache = work.join("nix-cache");
    check(Command::new("nix").args([
        "copy",
        "--to",
        &format!("file://{}?write-nar-listing=1", nix_cache.display()),
        &top,
    ]));
    let store = work.join("b3");
    check(
        b3().arg("--store")
            .arg(&store)
            .args(["copy", "--no-check-sigs", "--from"])
            .arg(format!("file://{}", nix_cache.display()))
            .arg(&top),
    );
    // Everything the store has, to a new cache with listings.
    let out = work.join("b3-cache");
    check(
        b3().arg("--store")
            .arg(&store)
            .args(["copy", "--all", "--to"])
            .arg(format!(
                "file://{}?write-nar-listing=1&compression=zstd",
                out.display()
            )),
    );
    let dir = StoreDir::default();
    let closure = stdout(Command::new("nix-store").args(["-qR", &top]));
    let mut n = 0;
    for p in closure.lines() {
        let hash = dir.parse(p).unwrap().hash_part();
        assert!(out.join(format!("{hash}.narinfo")).exists(), "{p}");
        let ours = std::fs::read_to_string(out.join(format!("{hash}.ls"))).unwrap();
        let nixs = std::fs::read_to_string(nix_cache.join(format!("{hash}.ls"))).unwrap();
        assert_eq!(ours, nixs, "listing of {p}");
        n += 1;
    }
    let narinfos = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".narinfo")
        })
        .count();
    assert_eq!(narinfos, n, "--all copies exactly the valid paths");

    // --all from a cache: every narinfo of the b3 cache into a fresh store.
    let store2 = work.join("b3-second");
    check(
        b3().arg("--store")
            .arg(&store2)
            .args(["copy", "--all", "--no-check-sigs", "--from"])
            .arg(format!("file://{}", out.display())),
    );
    for p in closure.lines() {
        check(b3().arg("--store").arg(&store2).args(["path-info", p]));
    }
    let _ = std::fs::remove_dir_all(&work);
}
