//! Cryptographic hashes as Nix names, prints and parses them.
//!
//! Owns: the algorithms Nix supports (md5, sha1, sha256, sha512), a fixed-size
//! `Hash` value, its four text forms (base16, nix32, base64, SRI), parsing of
//! every form Nix accepts (`algo:digest`, `algo-base64` SRI, or a bare digest
//! whose algorithm is known from context, its encoding told apart by length),
//! an incremental `Hasher` usable as an `io::Write` sink (so hashing streams),
//! and `compress_hash`, the XOR fold Nix uses to shorten a sha256 to the 20
//! bytes of a store path digest.

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE64, BASE64_NOPAD, HEXLOWER_PERMISSIVE};
use sha2::Digest;
use thiserror::Error;

use crate::nixbase32;

/// A hash algorithm Nix knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub const ALL: [HashAlgo; 4] = [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
    ];

    /// The name Nix prints and parses (`sha256`).
    pub const fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Digest size in bytes.
    pub const fn size(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    /// The algorithm of that name, as Nix's `parseHashTypeOpt` (exact, lower case).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "md5" => Some(HashAlgo::Md5),
            "sha1" => Some(HashAlgo::Sha1),
            "sha256" => Some(HashAlgo::Sha256),
            "sha512" => Some(HashAlgo::Sha512),
            _ => None,
        }
    }

    pub const fn base16_len(self) -> usize {
        self.size() * 2
    }

    pub const fn nix32_len(self) -> usize {
        nixbase32::encoded_len(self.size())
    }

    /// Padded base64 length.
    pub const fn base64_len(self) -> usize {
        (4 * self.size() / 3 + 3) & !3
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, HashError> {
        HashAlgo::from_name(s).ok_or_else(|| HashError::UnknownAlgo(s.to_owned()))
    }
}

/// A text encoding of a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashFormat {
    /// Lower-case hex.
    Base16,
    /// Nix's base-32.
    Nix32,
    /// Padded standard base64.
    Base64,
    /// `algo-base64` (Subresource Integrity); always carries the algorithm.
    Sri,
}

/// Why a hash could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HashError {
    #[error("unknown hash algorithm '{0}'")]
    UnknownAlgo(String),
    #[error("hash '{0}' does not include a type, nor is the type otherwise known from context")]
    MissingAlgo(String),
    #[error("hash '{hash}' should have type '{expected}'")]
    AlgoMismatch { hash: String, expected: HashAlgo },
    #[error("hash '{0}' is not SRI")]
    NotSri(String),
    #[error("hash '{hash}' has wrong length for hash type '{algo}'")]
    WrongLength { hash: String, algo: HashAlgo },
    #[error("invalid base-16 hash '{0}'")]
    InvalidBase16(String),
    #[error("invalid base-32 hash '{0}'")]
    InvalidNix32(String),
    #[error("invalid {kind} hash '{hash}'")]
    InvalidBase64 { kind: &'static str, hash: String },
    #[error("{algo} digest must be {expected} bytes, got {got}")]
    WrongDigestSize {
        algo: HashAlgo,
        expected: usize,
        got: usize,
    },
}

/// A digest together with its algorithm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash {
    algo: HashAlgo,
    // Large enough for sha512; bytes past `algo.size()` stay zero, so the
    // derived comparisons are those of the digest.
    bytes: [u8; 64],
}

impl Hash {
    /// Wraps a digest; its length must match the algorithm.
    pub fn from_bytes(algo: HashAlgo, digest: &[u8]) -> Result<Self, HashError> {
        if digest.len() != algo.size() {
            return Err(HashError::WrongDigestSize {
                algo,
                expected: algo.size(),
                got: digest.len(),
            });
        }
        let mut bytes = [0u8; 64];
        bytes[..digest.len()].copy_from_slice(digest);
        Ok(Hash { algo, bytes })
    }

    /// The all-zero hash of an algorithm (what Nix uses for an empty `outputHash`).
    pub fn zero(algo: HashAlgo) -> Self {
        Hash {
            algo,
            bytes: [0u8; 64],
        }
    }

    /// Hashes `data` in one go.
    pub fn digest(algo: HashAlgo, data: impl AsRef<[u8]>) -> Self {
        let mut h = Hasher::new(algo);
        h.update(data.as_ref());
        h.finish()
    }

    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algo.size()]
    }

    pub fn to_base16(&self) -> String {
        data_encoding::HEXLOWER.encode(self.as_bytes())
    }

    pub fn to_nix32(&self) -> String {
        nixbase32::encode(self.as_bytes())
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.as_bytes())
    }

    /// `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo, self.to_base64())
    }

    /// Nix's `Hash::to_string(base, includeType)`: `algo:` is prepended when
    /// asked; SRI always carries `algo-`.
    pub fn encode(&self, format: HashFormat, with_algo: bool) -> String {
        let body = match format {
            HashFormat::Base16 => self.to_base16(),
            HashFormat::Nix32 => self.to_nix32(),
            HashFormat::Base64 => self.to_base64(),
            HashFormat::Sri => return self.to_sri(),
        };
        if with_algo {
            format!("{}:{}", self.algo, body)
        } else {
            body
        }
    }

    /// Nix's `Hash::parseAny`: `algo:digest`, `algo-base64` (SRI) or a bare
    /// digest when `algo` is given; if both name an algorithm they must agree.
    pub fn parse_any(s: &str, algo: Option<HashAlgo>) -> Result<Self, HashError> {
        let (parsed, rest, sri) = split_algo(s)?;
        let algo = match (parsed, algo) {
            (None, None) => return Err(HashError::MissingAlgo(rest.to_owned())),
            (Some(p), Some(a)) if p != a => {
                return Err(HashError::AlgoMismatch {
                    hash: s.to_owned(),
                    expected: a,
                })
            }
            (Some(p), _) => p,
            (None, Some(a)) => a,
        };
        Self::parse_body(rest, algo, sri)
    }

    /// Nix's `Hash::parseAnyPrefixed`: the string must name its algorithm.
    pub fn parse_prefixed(s: &str) -> Result<Self, HashError> {
        let (parsed, rest, sri) = split_algo(s)?;
        let algo = parsed.ok_or_else(|| HashError::MissingAlgo(rest.to_owned()))?;
        Self::parse_body(rest, algo, sri)
    }

    /// Nix's `Hash::parseSRI`: exactly `algo-base64`.
    pub fn parse_sri(s: &str) -> Result<Self, HashError> {
        let (name, rest) = s
            .split_once('-')
            .ok_or_else(|| HashError::NotSri(s.to_owned()))?;
        Self::parse_body(rest, name.parse()?, true)
    }

    /// Nix's `Hash::parseNonSRIUnprefixed`: a bare base16, nix32 or base64
    /// digest of a known algorithm (the form used inside `.drv` files).
    pub fn parse_unprefixed(s: &str, algo: HashAlgo) -> Result<Self, HashError> {
        Self::parse_body(s, algo, false)
    }

    /// Decodes a bare digest; without SRI the encoding follows from the length.
    fn parse_body(rest: &str, algo: HashAlgo, sri: bool) -> Result<Self, HashError> {
        let mut bytes = [0u8; 64];
        let out = &mut bytes[..algo.size()];
        if !sri && rest.len() == algo.base16_len() {
            // Nix accepts upper-case hex digits too.
            HEXLOWER_PERMISSIVE
                .decode_mut(rest.as_bytes(), out)
                .map_err(|_| HashError::InvalidBase16(rest.to_owned()))?;
        } else if !sri && rest.len() == algo.nix32_len() {
            nixbase32::decode_into(rest.as_bytes(), out)
                .map_err(|_| HashError::InvalidNix32(rest.to_owned()))?;
        } else if sri || rest.len() == algo.base64_len() {
            let kind = if sri { "SRI" } else { "base-64" };
            let bad = || HashError::InvalidBase64 {
                kind,
                hash: rest.to_owned(),
            };
            // Nix stops at the first '=', so padding is optional.
            let decoded = if rest.ends_with('=') {
                BASE64.decode(rest.as_bytes())
            } else {
                BASE64_NOPAD.decode(rest.as_bytes())
            }
            .map_err(|_| bad())?;
            if decoded.len() != algo.size() {
                return Err(bad());
            }
            out.copy_from_slice(&decoded);
        } else {
            return Err(HashError::WrongLength {
                hash: rest.to_owned(),
                algo,
            });
        }
        Ok(Hash { algo, bytes })
    }
}

/// Splits an `algo:` or `algo-` prefix off, as Nix's `getParsedTypeAndSRI`:
/// returns the algorithm (if any), the rest, and whether it was SRI.
fn split_algo(s: &str) -> Result<(Option<HashAlgo>, &str, bool), HashError> {
    if let Some((name, rest)) = s.split_once(':') {
        return Ok((Some(name.parse()?), rest, false));
    }
    if let Some((name, rest)) = s.split_once('-') {
        return Ok((Some(name.parse()?), rest, true));
    }
    Ok((None, s, false))
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_sri())
    }
}

/// `algo:nix32`, the form of narinfo `NarHash` and of `nix-store -q --hash`.
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.to_nix32())
    }
}

/// Parses any prefixed form (`algo:digest` or SRI).
impl FromStr for Hash {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, HashError> {
        Hash::parse_prefixed(s)
    }
}

/// An incremental hash computation; write data in, then `finish`.
#[derive(Clone)]
pub struct Hasher {
    state: HasherState,
    len: u64,
}

#[derive(Clone)]
enum HasherState {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Self {
        let state = match algo {
            HashAlgo::Md5 => HasherState::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => HasherState::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => HasherState::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => HasherState::Sha512(sha2::Sha512::new()),
        };
        Hasher { state, len: 0 }
    }

    pub fn algo(&self) -> HashAlgo {
        match self.state {
            HasherState::Md5(_) => HashAlgo::Md5,
            HasherState::Sha1(_) => HashAlgo::Sha1,
            HasherState::Sha256(_) => HashAlgo::Sha256,
            HasherState::Sha512(_) => HashAlgo::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        match &mut self.state {
            HasherState::Md5(h) => h.update(data),
            HasherState::Sha1(h) => h.update(data),
            HasherState::Sha256(h) => h.update(data),
            HasherState::Sha512(h) => h.update(data),
        }
    }

    /// Bytes fed so far (a NAR's size when hashing a NAR stream).
    pub fn bytes_hashed(&self) -> u64 {
        self.len
    }

    pub fn finish(self) -> Hash {
        let algo = self.algo();
        let mut bytes = [0u8; 64];
        match self.state {
            HasherState::Md5(h) => bytes[..16].copy_from_slice(&h.finalize()),
            HasherState::Sha1(h) => bytes[..20].copy_from_slice(&h.finalize()),
            HasherState::Sha256(h) => bytes[..32].copy_from_slice(&h.finalize()),
            HasherState::Sha512(h) => bytes[..64].copy_from_slice(&h.finalize()),
        }
        Hash { algo, bytes }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Nix's `compressHash`: XOR-folds `digest` into `N` bytes (byte `i` goes
/// to `i % N`). Store path digests are `compress_hash::<20>` of a sha256.
pub fn compress_hash<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    if N == 0 {
        return out;
    }
    for (i, b) in digest.iter().enumerate() {
        out[i % N] ^= b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_SHA256_HEX: &str =
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    const HELLO_SHA256_NIX32: &str = "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq";
    const HELLO_SHA256_SRI: &str = "sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=";

    #[test]
    fn hashes_hello_in_every_algorithm_and_form() {
        // Expected values from `nix hash file --type …` and coreutils on "hello\n".
        let h = Hash::digest(HashAlgo::Sha256, b"hello\n");
        assert_eq!(h.to_base16(), HELLO_SHA256_HEX);
        assert_eq!(h.to_nix32(), HELLO_SHA256_NIX32);
        assert_eq!(h.to_sri(), HELLO_SHA256_SRI);
        assert_eq!(h.to_string(), format!("sha256:{HELLO_SHA256_NIX32}"));
        assert_eq!(
            Hash::digest(HashAlgo::Sha1, b"hello\n").to_sri(),
            "sha1-9XLTlvrpIGYocU+yzgD3LpTyJY8="
        );
        assert_eq!(
            Hash::digest(HashAlgo::Sha1, b"hello\n").to_nix32(),
            "iwjz551fyw0cxcjgf4l6c879zabd6wpm"
        );
        assert_eq!(
            Hash::digest(HashAlgo::Md5, b"hello\n").to_base16(),
            "b1946ac92492d2347c6235b4d2611184"
        );
        assert_eq!(
            Hash::digest(HashAlgo::Md5, b"hello\n").to_nix32(),
            "4425hx5d1mc9y39llj4k4nm55i"
        );
        let h512 = Hash::digest(HashAlgo::Sha512, b"hello\n");
        assert_eq!(h512.to_sri(), "sha512-58IrmUxZ2c8rSOVJseJGZmNgRZMNPafBrLKZ0cO3+TH5Sq5B7dosKyB6NuEPi8uNRSI+VIePWzFufOO2vAGWKQ==");
        assert_eq!(h512.to_nix32(), "0lrc0dwnvipqviibf7qfm1y492qvjwb1zhkcyi05cndmva1mr5gjcgrnz1x36djmk0sfg8djd2n0qv68vib2jg590mwznar9jcjphp7");
    }

    #[test]
    fn parses_every_form_nix_accepts() {
        let h = Hash::digest(HashAlgo::Sha256, b"hello\n");
        for s in [
            format!("sha256:{HELLO_SHA256_HEX}"),
            format!("sha256:{}", HELLO_SHA256_HEX.to_uppercase()),
            format!("sha256:{HELLO_SHA256_NIX32}"),
            format!("sha256:{}", h.to_base64()),
            HELLO_SHA256_SRI.to_owned(),
            HELLO_SHA256_SRI.trim_end_matches('=').to_owned(),
        ] {
            assert_eq!(Hash::parse_any(&s, None).unwrap(), h, "{s}");
            assert_eq!(Hash::parse_prefixed(&s).unwrap(), h, "{s}");
            assert_eq!(
                Hash::parse_any(&s, Some(HashAlgo::Sha256)).unwrap(),
                h,
                "{s}"
            );
        }
        for s in [HELLO_SHA256_HEX, HELLO_SHA256_NIX32, &h.to_base64()] {
            assert_eq!(Hash::parse_any(s, Some(HashAlgo::Sha256)).unwrap(), h);
            assert_eq!(Hash::parse_unprefixed(s, HashAlgo::Sha256).unwrap(), h);
        }
        assert_eq!(Hash::parse_sri(HELLO_SHA256_SRI).unwrap(), h);
        assert_eq!(HELLO_SHA256_SRI.parse::<Hash>().unwrap(), h);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert!(matches!(
            Hash::parse_any(HELLO_SHA256_HEX, None),
            Err(HashError::MissingAlgo(_))
        ));
        assert!(matches!(
            Hash::parse_any(&format!("sha1:{HELLO_SHA256_HEX}"), Some(HashAlgo::Sha256)),
            Err(HashError::AlgoMismatch { .. })
        ));
        assert!(matches!(
            Hash::parse_any("blake3:abc", None),
            Err(HashError::UnknownAlgo(_))
        ));
        assert!(matches!(
            Hash::parse_any("sha256:abc", None),
            Err(HashError::WrongLength { .. })
        ));
        let bad_hex = format!("sha256:{}", "g".repeat(64));
        assert!(matches!(
            Hash::parse_any(&bad_hex, None),
            Err(HashError::InvalidBase16(_))
        ));
        let bad32 = format!("sha256:{}", "e".repeat(52));
        assert!(matches!(
            Hash::parse_any(&bad32, None),
            Err(HashError::InvalidNix32(_))
        ));
        // SRI must be base64 even when the length looks like hex.
        let sri_hex = format!("sha256-{HELLO_SHA256_HEX}");
        assert!(matches!(
            Hash::parse_any(&sri_hex, None),
            Err(HashError::InvalidBase64 { kind: "SRI", .. })
        ));
        assert!(matches!(
            Hash::parse_sri("nodash"),
            Err(HashError::NotSri(_))
        ));
    }

    #[test]
    fn encode_matches_nix_to_string() {
        let h = Hash::digest(HashAlgo::Sha1, b"");
        assert_eq!(
            h.encode(HashFormat::Base16, true),
            "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            h.encode(HashFormat::Base16, false),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(h.encode(HashFormat::Sri, false), h.to_sri());
        assert_eq!(
            h.encode(HashFormat::Base64, true),
            format!("sha1:{}", h.to_base64())
        );
    }

    #[test]
    fn hasher_streams_like_one_shot() {
        for algo in HashAlgo::ALL {
            let mut hasher = Hasher::new(algo);
            std::io::Write::write_all(&mut hasher, b"hel").unwrap();
            hasher.update(b"lo\n");
            assert_eq!(hasher.bytes_hashed(), 6);
            assert_eq!(hasher.finish(), Hash::digest(algo, b"hello\n"));
        }
    }

    #[test]
    fn compress_hash_xor_folds() {
        let digest: Vec<u8> = (0u8..32).collect();
        let c = compress_hash::<20>(&digest);
        for (i, b) in c.iter().enumerate() {
            let expected = if i < 12 {
                i as u8 ^ (i as u8 + 20)
            } else {
                i as u8
            };
            assert_eq!(*b, expected);
        }
    }

    #[test]
    fn from_bytes_checks_length() {
        assert!(Hash::from_bytes(HashAlgo::Sha256, &[0; 31]).is_err());
        assert_eq!(
            Hash::from_bytes(HashAlgo::Md5, &[0; 16]).unwrap(),
            Hash::zero(HashAlgo::Md5)
        );
    }
}
