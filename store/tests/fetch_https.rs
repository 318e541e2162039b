//! https:// through rustls against `openssl s_server` on 127.0.0.1 with a
//! self-signed certificate made here: accepted when verification is off
//! (as `builtin:fetchurl` does), refused with a clear error when on.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use b3_store::fetch::{download, FetchError, FetchOptions};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed for this test: run scripts/setup-test-deps.sh");
    assert!(st.success(), "openssl {args:?}");
}

fn start(dir: &std::path::Path) -> (Server, u16) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args(["s_server", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "cert.pem", "-key", "key.pem", "-HTTP", "-quiet"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is needed for this test: run scripts/setup-test-deps.sh");
    let server = Server(child);
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[test]
fn https_downloads_with_and_without_certificate_verification() {
    let dir = tempfile::tempdir().unwrap();
    // `s_server -HTTP` serves files as complete HTTP responses.
    std::fs::write(
        dir.path().join("hello.txt"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nover tls\n",
    )
    .unwrap();
    let (_server, port) = start(dir.path());
    let url = format!("https://127.0.0.1:{port}/hello.txt");

    let insecure = FetchOptions {
        verify_tls: false,
        ..FetchOptions::default()
    };
    let mut out = Vec::new();
    download(&url, &mut out, &insecure).unwrap();
    assert_eq!(out, b"over tls\n");

    let strict = FetchOptions {
        retries: 0,
        ..FetchOptions::default()
    };
    let e = download(&url, &mut Vec::new(), &strict).unwrap_err();
    assert!(matches!(e, FetchError::Transport { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("unable to download '{url}'")),
        "{e}"
    );
}
