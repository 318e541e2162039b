//! Hashing while streaming: `HashingWriter`/`HashingReader` tee bytes into
//! a digest and count them, and `NarHash` renders a SHA-256 NAR hash in the
//! forms Nix prints (nix-base32, SRI, base16). Reusable by the store.

use std::io::{self, BufRead, Read, Write};

use sha2::digest::Digest;
use sha2::Sha256;

use crate::nixbase32;

/// A `Write` adaptor that hashes and counts everything written through it.
#[derive(Debug, Clone)]
pub struct HashingWriter<W, D = Sha256> {
    inner: W,
    digest: D,
    count: u64,
}

impl<W: Write> HashingWriter<W, Sha256> {
    pub fn new(inner: W) -> Self {
        Self::with_digest(inner, Sha256::new())
    }
}

impl<W: Write, D: Digest> HashingWriter<W, D> {
    pub fn with_digest(inner: W, digest: D) -> Self {
        HashingWriter {
            inner,
            digest,
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Finishes: the inner writer, the digest bytes, and the byte count.
    pub fn finish(self) -> (W, Vec<u8>, u64) {
        (self.inner, self.digest.finalize().to_vec(), self.count)
    }
}

impl<W: Write> HashingWriter<W, Sha256> {
    /// Finishes a SHA-256 writer into a [`NarHash`].
    pub fn finish_nar(self) -> (W, NarHash) {
        let count = self.count;
        let digest: [u8; 32] = self.digest.finalize().into();
        (
            self.inner,
            NarHash {
                sha256: digest,
                size: count,
            },
        )
    }
}

impl<W: Write, D: Digest> Write for HashingWriter<W, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.digest.update(buf);
        self.count += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A `Read` (and `BufRead`) adaptor that hashes and counts the bytes the
/// consumer actually takes.
#[derive(Debug, Clone)]
pub struct HashingReader<R, D = Sha256> {
    inner: R,
    digest: D,
    count: u64,
}

impl<R: Read> HashingReader<R, Sha256> {
    pub fn new(inner: R) -> Self {
        Self::with_digest(inner, Sha256::new())
    }

    /// Finishes a SHA-256 reader into a [`NarHash`].
    pub fn finish_nar(self) -> (R, NarHash) {
        let count = self.count;
        let digest: [u8; 32] = self.digest.finalize().into();
        (
            self.inner,
            NarHash {
                sha256: digest,
                size: count,
            },
        )
    }
}

impl<R: Read, D: Digest> HashingReader<R, D> {
    pub fn with_digest(inner: R, digest: D) -> Self {
        HashingReader {
            inner,
            digest,
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Finishes: the inner reader, the digest bytes, and the byte count.
    pub fn finish(self) -> (R, Vec<u8>, u64) {
        (self.inner, self.digest.finalize().to_vec(), self.count)
    }
}

impl<R: Read, D: Digest> Read for HashingReader<R, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<R: BufRead, D: Digest> BufRead for HashingReader<R, D> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let n = amt.min(buf.len());
            self.digest.update(&buf[..n]);
            self.count += n as u64;
        }
        self.inner.consume(amt);
    }
}

/// The SHA-256 of a NAR and its size: what `narHash`/`narSize` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NarHash {
    pub sha256: [u8; 32],
    pub size: u64,
}

impl NarHash {
    /// `1jv3czbi…` (52 characters), as `nix-hash --type sha256 --base32`.
    pub fn to_nix_base32(&self) -> String {
        nixbase32::encode(&self.sha256)
    }

    /// `sha256:1jv3czbi…`, as in narinfo `NarHash:` lines.
    pub fn to_typed_base32(&self) -> String {
        format!("sha256:{}", self.to_nix_base32())
    }

    /// `sha256-MPms…=`, as `nix hash path` prints.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", data_encoding::BASE64.encode(&self.sha256))
    }

    /// Lower-case hex, as `nix-hash --type sha256` prints.
    pub fn to_base16(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.sha256)
    }
}
