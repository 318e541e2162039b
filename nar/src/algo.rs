//! Hash algorithms Nix accepts for `--type` (md5, sha1, sha256, sha512) and
//! the textual forms it prints them in. Used by `b3 hash`; the NAR hash of
//! a store path is always SHA-256 (see [`crate::NarHash`]).

use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;

use sha2::digest::Digest;

use crate::error::Error;
use crate::nixbase32;

/// A hash algorithm by its Nix name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// A fresh streaming hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// An unknown algorithm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash algorithm '{0}' (expected md5, sha1, sha256 or sha512)")]
pub struct UnknownAlgo(pub String);

impl FromStr for HashAlgo {
    type Err = UnknownAlgo;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "md5" => HashAlgo::Md5,
            "sha1" => HashAlgo::Sha1,
            "sha256" => HashAlgo::Sha256,
            "sha512" => HashAlgo::Sha512,
            _ => return Err(UnknownAlgo(s.to_string())),
        })
    }
}

/// A streaming hasher of any [`HashAlgo`]; also an `io::Write` sink.
#[derive(Debug, Clone)]
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> AnyHash {
        let (algo, bytes) = match self {
            Hasher::Md5(h) => (HashAlgo::Md5, h.finalize().to_vec()),
            Hasher::Sha1(h) => (HashAlgo::Sha1, h.finalize().to_vec()),
            Hasher::Sha256(h) => (HashAlgo::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (HashAlgo::Sha512, h.finalize().to_vec()),
        };
        AnyHash { algo, bytes }
    }
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A digest with its algorithm, printable the ways Nix prints hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnyHash {
    pub algo: HashAlgo,
    pub bytes: Vec<u8>,
}

impl AnyHash {
    pub fn to_base16(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.bytes)
    }
    pub fn to_nix_base32(&self) -> String {
        nixbase32::encode(&self.bytes)
    }
    pub fn to_base64(&self) -> String {
        data_encoding::BASE64.encode(&self.bytes)
    }
    /// `algo-base64`, the SRI form `nix hash` prints by default.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo.name(), self.to_base64())
    }
}

/// Hash of the NAR serialisation of `path` with any algorithm, plus the
/// NAR size (`nix-hash --type ALGO PATH`).
pub fn hash_path_with(path: &Path, algo: HashAlgo) -> Result<(AnyHash, u64), Error> {
    let tw = crate::pipeline::ThreadedWriter::new(algo.hasher()).map_err(Error::Write)?;
    let (tw, size) =
        crate::dump::dump_path_with(path, tw, crate::pipeline::ThreadedWriter::copy_file)?;
    let h = tw.finish().map_err(Error::Write)?;
    Ok((h.finish(), size))
}

/// Flat hash of a byte stream (`nix-hash --flat`, `nix hash file`).
pub fn hash_reader<R: Read>(mut r: R, algo: HashAlgo) -> io::Result<(AnyHash, u64)> {
    let mut h = algo.hasher();
    let mut buf = vec![0u8; crate::encoder::COPY_BUF];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finish(), n))
}
