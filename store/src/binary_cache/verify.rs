//! A reader that checks a NAR's size and sha256 while it streams.
//!
//! The check happens on the read that completes `NarSize` bytes: on a
//! mismatch that read fails and the last bytes are never handed out. This
//! matters because NAR consumers (restore, `add_nar`) stop reading exactly
//! at the end of the archive and would otherwise never see an EOF check.
//! More bytes than `NarSize` fail at once; an EOF before it is "truncated".

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::hash::{Hash, HashAlgo, Hasher};

/// What went wrong with a downloaded NAR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarVerifyError {
    #[error("NAR for '{path}' is truncated: got {got} of {expected} bytes")]
    Truncated {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("NAR for '{path}' is longer than its NarSize {expected}")]
    TooLong { path: String, expected: u64 },
    #[error("NAR hash mismatch for '{path}':\n  specified: {expected}\n  got:       {got}")]
    HashMismatch {
        path: String,
        expected: String,
        got: String,
    },
}

impl From<NarVerifyError> for io::Error {
    fn from(e: NarVerifyError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Wraps a decompressed NAR stream; see the module docs.
pub struct VerifyingReader<R> {
    inner: R,
    path: String,
    expected_hash: Hash,
    expected_size: u64,
    hasher: Option<Hasher>,
    count: u64,
    failed: Option<NarVerifyError>,
}

impl<R> VerifyingReader<R> {
    /// `path` is only used in error messages.
    pub fn new(inner: R, path: String, expected_hash: Hash, expected_size: u64) -> Self {
        VerifyingReader {
            inner,
            path,
            expected_hash,
            expected_size,
            hasher: Some(Hasher::new(HashAlgo::Sha256)),
            count: 0,
            failed: None,
        }
    }

    fn fail(&mut self, e: NarVerifyError) -> Poll<io::Result<()>> {
        self.failed = Some(e.clone());
        Poll::Ready(Err(e.into()))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(e.clone().into()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let new = &buf.filled()[before..];
        let n = new.len() as u64;
        if n == 0 {
            if this.count < this.expected_size {
                let e = NarVerifyError::Truncated {
                    path: this.path.clone(),
                    expected: this.expected_size,
                    got: this.count,
                };
                return this.fail(e);
            }
            return Poll::Ready(Ok(()));
        }
        let Some(hasher) = this.hasher.as_mut() else {
            // Already complete and verified: any further byte is too many.
            buf.set_filled(before);
            let e = NarVerifyError::TooLong {
                path: this.path.clone(),
                expected: this.expected_size,
            };
            return this.fail(e);
        };
        if this.count + n > this.expected_size {
            buf.set_filled(before);
            let e = NarVerifyError::TooLong {
                path: this.path.clone(),
                expected: this.expected_size,
            };
            return this.fail(e);
        }
        hasher.update(new);
        this.count += n;
        if this.count == this.expected_size {
            let got = this.hasher.take().map(Hasher::finish);
            if got != Some(this.expected_hash) {
                buf.set_filled(before);
                let e = NarVerifyError::HashMismatch {
                    path: this.path.clone(),
                    expected: this.expected_hash.to_string(),
                    got: got.map(|h| h.to_string()).unwrap_or_default(),
                };
                return this.fail(e);
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn reader(data: &[u8], expected: &[u8]) -> VerifyingReader<&'static [u8]> {
        let leaked: &'static [u8] = Box::leak(data.to_vec().into_boxed_slice());
        VerifyingReader::new(
            leaked,
            "/nix/store/x".into(),
            Hash::digest(HashAlgo::Sha256, expected),
            expected.len() as u64,
        )
    }

    #[tokio::test]
    async fn correct_stream_passes() {
        let mut out = Vec::new();
        reader(b"hello world", b"hello world")
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, b"hello world");
    }

    #[tokio::test]
    async fn tampered_stream_fails_before_the_last_bytes_are_handed_out() {
        let mut r = reader(b"hello worle", b"hello world");
        let mut buf = [0u8; 64];
        let err = r.read(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("NAR hash mismatch"), "{err}");
        // Stays failed.
        assert!(r.read(&mut buf).await.is_err());
    }

    #[tokio::test]
    async fn truncated_and_overlong_streams_fail() {
        let mut out = Vec::new();
        let err = reader(b"hello", b"hello world")
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("truncated: got 5 of 11"), "{err}");
        let err = reader(b"hello world!", b"hello world")
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("longer than its NarSize"), "{err}");
    }
}
