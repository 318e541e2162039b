//! Helpers shared by the binary-cache integration tests: running the Nix
//! oracle, unique store content, temporary directories.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a Nix command; panics with its stderr on failure. Fails loudly (not
/// silently passing) when Nix is missing.
pub fn nix(args: &[&str]) -> Vec<u8> {
    let (prog, rest) = args.split_first().expect("empty command");
    let out = Command::new(prog).args(rest).output().unwrap_or_else(|e| {
        panic!(
            "cannot run '{prog}' ({e}): the Nix oracle is missing; run scripts/setup-test-deps.sh"
        )
    });
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn nix_str(args: &[&str]) -> String {
    String::from_utf8(nix(args))
        .expect("non-UTF-8 output")
        .trim()
        .to_owned()
}

/// A fresh directory under /tmp (kept on failure for inspection).
pub fn tmpdir(tag: &str) -> PathBuf {
    let mut rnd = [0u8; 8];
    getrandom_fill(&mut rnd);
    let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let d = std::env::temp_dir().join(format!("b3-bincache-{tag}-{hex}"));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

pub fn unique_token() -> String {
    let mut rnd = [0u8; 12];
    getrandom_fill(&mut rnd);
    rnd.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom_fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("getrandom");
}

/// A small tree with a regular file, an executable, a symlink, an empty
/// file and a subdirectory; `token` makes its store path unique.
/// (On Windows: no executable bit and no symlink, which need privileges.)
pub fn make_tree(dir: &Path, token: &str) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), format!("hello {token}\n")).unwrap();
    std::fs::write(dir.join("sub/run.sh"), "#!/bin/sh\necho x\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("sub/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("a.txt", dir.join("link")).unwrap();
    }
    std::fs::write(dir.join("empty"), "").unwrap();
    // Something that compresses, so compressed and plain NARs differ.
    std::fs::write(dir.join("big"), "b3 binary cache test line\n".repeat(4000)).unwrap();
}

/// Generates a Nix key pair with Nix itself; returns (secret file, public key text).
pub fn nix_keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let sk = dir.join(format!("{name}.sec"));
    let pk = dir.join(format!("{name}.pub"));
    nix(&[
        "nix-store",
        "--generate-binary-cache-key",
        name,
        sk.to_str().unwrap(),
        pk.to_str().unwrap(),
    ]);
    let public = std::fs::read_to_string(&pk).unwrap().trim().to_owned();
    (sk, public)
}

/// A running s3s-fs, killed on drop.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs_binary() -> PathBuf {
    let in_cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin/s3s-fs"));
    if let Some(p) = in_cargo_home.filter(|p| p.exists()) {
        return p;
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v s3s-fs"])
        .output()
    {
        if out.status.success() {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "s3s-fs is not installed: run scripts/setup-test-deps.sh \
         (cargo install s3s-fs --version 0.14.1 --features binary --locked)"
    );
}

/// Starts s3s-fs on a free 127.0.0.1 port serving `root` (buckets are its
/// subdirectories), with the given access/secret key or anonymous.
pub fn start_s3(root: PathBuf, keys: Option<(&str, &str)>) -> S3Server {
    let bin = s3s_fs_binary();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut cmd = Command::new(&bin);
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
    if let Some((ak, sk)) = keys {
        cmd.args(["--access-key", ak, "--secret-key", sk]);
    }
    let child = cmd
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let server = S3Server { child, port, root };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}
