//! Downloads through `b3_store::fetch`: file:// and http:// from a server
//! on 127.0.0.1 started here; hashing, redirects, HTTP errors, retries of
//! transient failures, stall timeouts and unsupported schemes.

mod fetch_common;

use std::time::Duration;

use b3_store::fetch::{download, download_to_file, FetchError, FetchOptions};
use b3_store::hash::{Hash, HashAlgo};
use fetch_common::{serve, Route};

fn quick() -> FetchOptions {
    FetchOptions {
        retry_delay: Duration::from_millis(20),
        ..FetchOptions::default()
    }
}

#[test]
fn http_download_streams_and_hashes_the_body() {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let s = serve(vec![("/f", Route::Body(body.clone()))]);
    let mut out = Vec::new();
    let d = download(&s.url("/f"), &mut out, &quick()).unwrap();
    assert_eq!(out, body);
    assert_eq!(d.size, body.len() as u64);
    assert_eq!(d.sha256, Hash::digest(HashAlgo::Sha256, &body));
}

#[test]
fn redirects_are_followed_and_reported() {
    let s = serve(vec![
        ("/a", Route::Redirect("/b".into())),
        ("/b", Route::Body(b"moved".to_vec())),
    ]);
    let mut out = Vec::new();
    let d = download(&s.url("/a"), &mut out, &quick()).unwrap();
    assert_eq!(out, b"moved");
    assert_eq!(d.final_url, s.url("/b"));
}

#[test]
fn http_404_is_an_error_naming_the_url_and_not_retried() {
    let s = serve(vec![]);
    let mut out = Vec::new();
    let e = download(&s.url("/missing"), &mut out, &quick()).unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 404, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("unable to download '{}': HTTP error 404", s.url("/missing"))
    );
    assert_eq!(s.hits("/missing"), 1);
}

#[test]
fn transient_server_errors_are_retried() {
    let s = serve(vec![("/flaky", Route::FailThen(2, b"finally".to_vec()))]);
    let mut out = Vec::new();
    download(&s.url("/flaky"), &mut out, &quick()).unwrap();
    assert_eq!(out, b"finally");
    assert_eq!(s.hits("/flaky"), 3);

    let s = serve(vec![("/down", Route::FailThen(100, b"never".to_vec()))]);
    let opts = FetchOptions {
        retries: 1,
        ..quick()
    };
    let e = download(&s.url("/down"), &mut Vec::new(), &opts).unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 503, .. }), "{e:?}");
    assert_eq!(s.hits("/down"), 2);
}

#[test]
fn a_stalled_transfer_times_out() {
    let s = serve(vec![("/stall", Route::Stall(vec![7u8; 1000]))]);
    let opts = FetchOptions {
        stall_timeout: Duration::from_millis(500),
        ..quick()
    };
    let t = std::time::Instant::now();
    let e = download(&s.url("/stall"), &mut Vec::new(), &opts).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(e.to_string().contains("/stall"), "{e}");
}

#[test]
fn refused_connections_fail_cleanly_after_retries() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/x");
    let e = download(&url, &mut Vec::new(), &quick()).unwrap_err();
    assert!(matches!(e, FetchError::Transport { .. }), "{e:?}");
    assert!(e
        .to_string()
        .starts_with(&format!("unable to download '{url}'")));
}

#[test]
fn file_urls_are_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a file");
    std::fs::write(&p, b"local bytes").unwrap();
    let url = url::Url::from_file_path(&p).unwrap().to_string();
    assert!(url.contains("%20"));
    let dest = dir.path().join("copy");
    let d = download_to_file(&url, &dest, &quick()).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"local bytes");
    assert_eq!(d.sha256, Hash::digest(HashAlgo::Sha256, b"local bytes"));

    let e = download(
        &format!("file://{}/nope", dir.path().display()),
        &mut Vec::new(),
        &quick(),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::File { .. }), "{e:?}");
}

#[test]
fn other_schemes_are_refused() {
    let e = download("ftp://example.org/x", &mut Vec::new(), &quick()).unwrap_err();
    assert!(matches!(e, FetchError::UnsupportedScheme(_)));
    let e = download("not a url", &mut Vec::new(), &quick()).unwrap_err();
    assert!(matches!(e, FetchError::InvalidUrl { .. }));
}
