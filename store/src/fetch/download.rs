//! Downloads: a URL streamed into a `Write` sink, hashed (sha256) on the way.
//!
//! HTTP runs on a dedicated thread with its own single-threaded tokio
//! runtime, handing chunks over a bounded channel; callers stay synchronous
//! (the evaluator is) and may already be inside a runtime (the builder is)
//! without nesting one runtime in another. Only failures before the first
//! byte reaches the sink are retried: a sink cannot be rewound.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::hash::{Hash, HashAlgo, Hasher};

use super::FetchError;

/// Knobs of a download; the defaults suit interactive use.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub connect_timeout: Duration,
    /// Give up when no data arrives for this long.
    pub stall_timeout: Duration,
    /// Extra attempts after a transient failure (connection refused or
    /// reset, timeout, HTTP 5xx/429) that happened before any data.
    pub retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub retry_delay: Duration,
    /// Verify TLS certificates. `builtin:fetchurl` turns this off, as Nix
    /// does, because the output hash is checked anyway.
    pub verify_tls: bool,
    pub max_redirects: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(300),
            retries: 3,
            retry_delay: Duration::from_millis(250),
            verify_tls: true,
            max_redirects: 10,
        }
    }
}

/// What a finished download delivered.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub size: u64,
    pub sha256: Hash,
    /// The URL after redirects.
    pub final_url: String,
}

/// Streams `url` into `sink`.
pub fn download(
    url: &str,
    sink: &mut dyn Write,
    opts: &FetchOptions,
) -> Result<Downloaded, FetchError> {
    let parsed = url::Url::parse(url).map_err(|e| FetchError::InvalidUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "file" => download_file(url, &parsed, sink),
        "http" | "https" => download_http(url, sink, opts),
        _ => Err(FetchError::UnsupportedScheme(url.to_string())),
    }
}

/// Downloads `url` into a new file at `dest` (created or truncated).
pub fn download_to_file(
    url: &str,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<Downloaded, FetchError> {
    let mut f = File::create(dest).map_err(|e| FetchError::Sink {
        url: url.to_string(),
        source: e,
    })?;
    let d = download(url, &mut f, opts)?;
    f.sync_all().map_err(|e| FetchError::Sink {
        url: url.to_string(),
        source: e,
    })?;
    Ok(d)
}

fn download_file(
    url: &str,
    parsed: &url::Url,
    sink: &mut dyn Write,
) -> Result<Downloaded, FetchError> {
    let path = parsed.to_file_path().map_err(|()| FetchError::InvalidUrl {
        url: url.to_string(),
        reason: "not a local file path".into(),
    })?;
    let ferr = |e| FetchError::File {
        url: url.to_string(),
        path: path.display().to_string(),
        source: e,
    };
    let mut f = File::open(&path).map_err(ferr)?;
    if f.metadata().map_err(ferr)?.is_dir() {
        return Err(ferr(std::io::Error::other("is a directory")));
    }
    let mut h = Hasher::new(HashAlgo::Sha256);
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(ferr)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        sink.write_all(&buf[..n]).map_err(|e| FetchError::Sink {
            url: url.to_string(),
            source: e,
        })?;
        size += n as u64;
    }
    Ok(Downloaded {
        size,
        sha256: h.finish(),
        final_url: url.to_string(),
    })
}

enum Msg {
    Chunk(bytes::Bytes),
    Done(String),
    Fail(FetchError),
}

fn download_http(
    url: &str,
    sink: &mut dyn Write,
    opts: &FetchOptions,
) -> Result<Downloaded, FetchError> {
    let (tx, rx) = mpsc::sync_channel::<Msg>(16);
    let url_owned = url.to_string();
    let opts_owned = opts.clone();
    let worker = std::thread::Builder::new()
        .name("b3-fetch".into())
        .spawn(move || http_worker(&url_owned, &opts_owned, &tx))
        .map_err(|e| FetchError::Transport {
            url: url.to_string(),
            reason: format!("starting the download thread: {e}"),
        })?;
    let mut h = Hasher::new(HashAlgo::Sha256);
    let mut size = 0u64;
    let result = loop {
        match rx.recv() {
            Ok(Msg::Chunk(b)) => {
                h.update(&b);
                size += b.len() as u64;
                if let Err(e) = sink.write_all(&b) {
                    break Err(FetchError::Sink {
                        url: url.to_string(),
                        source: e,
                    });
                }
            }
            Ok(Msg::Done(final_url)) => {
                break Ok(Downloaded {
                    size,
                    sha256: h.finish(),
                    final_url,
                })
            }
            Ok(Msg::Fail(e)) => break Err(e),
            Err(_) => {
                break Err(FetchError::Transport {
                    url: url.to_string(),
                    reason: "the download thread stopped unexpectedly".into(),
                })
            }
        }
    };
    // Dropping the receiver makes a still-running worker stop at its next send.
    drop(rx);
    let _ = worker.join();
    result
}

fn transport(url: &str, e: &reqwest::Error) -> FetchError {
    // reqwest's Display is terse; its source chain says what happened.
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    FetchError::Transport {
        url: url.to_string(),
        reason,
    }
}

fn http_worker(url: &str, opts: &FetchOptions, tx: &mpsc::SyncSender<Msg>) {
    let fail = |e| {
        let _ = tx.send(Msg::Fail(e));
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(FetchError::Transport {
                url: url.to_string(),
                reason: format!("starting the I/O runtime: {e}"),
            })
        }
    };
    let client = match reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .read_timeout(opts.stall_timeout)
        .redirect(reqwest::redirect::Policy::limited(opts.max_redirects))
        .tls_danger_accept_invalid_certs(!opts.verify_tls)
        .user_agent(concat!("b3/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(transport(url, &e)),
    };
    rt.block_on(async {
        let mut attempt = 0u32;
        let mut delay = opts.retry_delay;
        let mut resp = loop {
            let r = client.get(url).send().await;
            let retryable = match &r {
                Ok(resp) => {
                    let s = resp.status();
                    if s.is_success() {
                        break r.ok();
                    }
                    s.is_server_error() || s.as_u16() == 429
                }
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            };
            if !retryable || attempt >= opts.retries {
                match r {
                    Ok(resp) => fail(FetchError::Status {
                        url: url.to_string(),
                        status: resp.status().as_u16(),
                    }),
                    Err(e) if e.is_timeout() => fail(FetchError::Stalled {
                        url: url.to_string(),
                        secs: opts.stall_timeout.as_secs(),
                    }),
                    Err(e) => fail(transport(url, &e)),
                }
                return;
            }
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        };
        let Some(resp) = resp.as_mut() else { return };
        let final_url = resp.url().to_string();
        loop {
            match resp.chunk().await {
                Ok(Some(b)) => {
                    if tx.send(Msg::Chunk(b)).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = tx.send(Msg::Done(final_url));
                    return;
                }
                Err(e) if e.is_timeout() => {
                    return fail(FetchError::Stalled {
                        url: url.to_string(),
                        secs: opts.stall_timeout.as_secs(),
                    })
                }
                Err(e) => return fail(transport(url, &e)),
            }
        }
    });
}
