//! Helpers for the substitution tests: a small real closure built by Nix
//! 2.8, Nix-written caches of it, empty b3 stores, and a deliberately
//! faulty HTTP server in front of a cache directory.

#![allow(dead_code)]

#[path = "../binary_cache_common/mod.rs"]
mod binary_cache_common;

pub use binary_cache_common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use b3_store::binary_cache::net::NetOptions;
use b3_store::binary_cache::{PublicKey, SubstituterOptions};
use b3_store::local::{LocalStore, LocalStoreConfig};
use b3_store::path::{StoreDir, StorePath};

pub const BB: &str = "/nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";

/// A closure built by Nix: `top` (input-addressed, so only a signature
/// vouches for it) refers to `dep` (input-addressed) and to busybox
/// (content-addressed). Returns (top, closure), full paths.
pub fn nix_closure(work: &Path) -> (String, Vec<String>) {
    let token = unique_token();
    let expr = format!(
        r#"let
  bb = builtins.storePath {BB};
  dep = derivation {{ name = "b3sub-dep"; system = "x86_64-linux"; builder = "${{bb}}/bin/sh";
    args = [ "-c" "${{bb}}/bin/busybox seq 1 20000 > $out; echo {token} >> $out" ]; }};
in derivation {{
  name = "b3sub-top"; system = "x86_64-linux"; builder = "${{bb}}/bin/sh"; PATH = "${{bb}}/bin";
  args = [ "-c" "busybox mkdir -p $out/bin; busybox ln -s ${{bb}}/bin/busybox $out/bin/bb; busybox ln -s ${{dep}} $out/dep; busybox echo {token} > $out/token" ];
}}"#
    );
    let file = work.join("closure.nix");
    std::fs::write(&file, expr).unwrap();
    let top = nix_str(&["nix-build", "--no-out-link", file.to_str().unwrap()]);
    let closure = nix_str(&["nix-store", "-qR", &top]);
    let closure: Vec<String> = closure.lines().map(str::to_owned).collect();
    assert_eq!(closure.len(), 3, "{closure:?}");
    (top, closure)
}

/// `nix copy --to file://DIR?…` of `top`, signed with `secret`.
pub fn nix_cache(dir: &Path, secret: &Path, compression: &str, top: &str) {
    nix(&[
        "nix",
        "copy",
        "--to",
        &format!(
            "file://{}?secret-key={}&compression={compression}",
            dir.display(),
            secret.display()
        ),
        top,
    ]);
}

pub fn empty_store(dir: &Path) -> LocalStore {
    let mut cfg = LocalStoreConfig::new(dir);
    cfg.fsync = false;
    LocalStore::open(cfg).expect("open b3 store")
}

pub fn sp(full: &str) -> StorePath {
    StoreDir::default().parse(full).expect("store path")
}

/// Options with short timeouts and few retries, trusting `keys`.
pub fn quick_opts(keys: &[&str]) -> SubstituterOptions {
    SubstituterOptions {
        trusted_keys: keys
            .iter()
            .map(|k| k.parse::<PublicKey>().expect("key"))
            .collect(),
        attempts: 2,
        net: NetOptions {
            connect_timeout: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(2),
        },
        retry_backoff: Duration::from_millis(50),
        ..SubstituterOptions::default()
    }
}

/// Every valid path of `store`, as full paths.
pub fn valid_paths(store: &LocalStore) -> Vec<String> {
    store
        .all_valid_paths()
        .unwrap()
        .iter()
        .map(|p| store.print_path(p))
        .collect()
}

/// What a [`FaultyServer`] does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// None: every object served as it is.
    Nothing,
    /// Every request: 500.
    Error500,
    /// NARs: headers and half the body, then silence.
    StallNar,
    /// NARs: the announced length, half the body, then the connection closes.
    TruncateNar,
    /// NARs: one byte flipped in the middle.
    TamperNar,
    /// narinfos: the signature replaced by a well-formed one that does not
    /// verify.
    BadSignature,
}

/// An HTTP/1.1 server on 127.0.0.1 serving `root` (a cache directory) with
/// a fault; counts NAR requests. Threads end with the test process.
pub struct FaultyServer {
    pub port: u16,
    pub nar_requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl FaultyServer {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(root: PathBuf, fault: Fault) -> FaultyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let nar_requests = Arc::new(AtomicUsize::new(0));
        let (stop2, count) = (stop.clone(), nar_requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, count, stop) = (root.clone(), count.clone(), stop2.clone());
                std::thread::spawn(move || serve_conn(conn, &root, fault, &count, &stop));
            }
        });
        FaultyServer {
            port,
            nar_requests,
            stop,
        }
    }
}

fn serve_conn(conn: TcpStream, root: &Path, fault: Fault, count: &AtomicUsize, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("/").to_owned();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        let rel = target.trim_start_matches('/');
        let is_nar = rel.starts_with("nar/");
        if is_nar {
            count.fetch_add(1, Ordering::SeqCst);
        }
        if fault == Fault::Error500 {
            let body = b"internal error\n";
            let _ = write!(
                out,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(body);
            continue;
        }
        let file = root.join(rel);
        let Ok(mut body) = std::fs::read(&file).map_err(|_| ()).and_then(|b| {
            if rel.contains("..") {
                Err(())
            } else {
                Ok(b)
            }
        }) else {
            let _ = write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        if fault == Fault::BadSignature && rel.ends_with(".narinfo") {
            let text = String::from_utf8(body).unwrap();
            let fixed: Vec<String> = text
                .lines()
                .map(|l| match l.strip_prefix("Sig: ") {
                    Some(sig) => {
                        let (name, _) = sig.split_once(':').unwrap();
                        format!("Sig: {name}:{}", "A".repeat(86) + "==")
                    }
                    None => l.to_owned(),
                })
                .collect();
            body = (fixed.join("\n") + "\n").into_bytes();
        }
        if fault == Fault::TamperNar && is_nar {
            let mid = body.len() / 2;
            body[mid] ^= 0x55;
        }
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if method == "HEAD" {
            continue;
        }
        match fault {
            Fault::StallNar if is_nar => {
                let _ = out.write_all(&body[..body.len() / 2]);
                let _ = out.flush();
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return;
            }
            Fault::TruncateNar if is_nar => {
                let _ = out.write_all(&body[..body.len() / 2]);
                let _ = out.flush();
                return;
            }
            _ => {
                let _ = out.write_all(&body);
            }
        }
    }
}

/// Reads a whole file (for comparing with what the store has).
pub fn read_all(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Asserts that `store` holds exactly the paths of `closure`, each with the
/// NAR bytes `nix-store --dump` gives for Nix's copy.
pub fn assert_holds_exactly(store: &LocalStore, mut closure: Vec<String>) {
    let mut got = valid_paths(store);
    got.sort();
    closure.sort();
    assert_eq!(got, closure, "the store holds exactly the closure");
    for p in &closure {
        let mut nar = Vec::new();
        store.nar_from_path_sync(&sp(p), &mut nar).unwrap();
        assert!(nar == nix(&["nix-store", "--dump", p]), "{p} differs");
    }
}
