//! Store paths: parsing, validation, printing, and computing them exactly as
//! Nix does.
//!
//! Owns: `StorePath` (20-byte digest + name, independent of where the store
//! lives), `StoreDir` (the logical store directory, default `/nix/store`,
//! which is hashed into every path), the name rules, and the path
//! constructors: `make_store_path` and its uses for text (`toFile`, `.drv`),
//! source (`nix-store --add`, `builtins.path`), fixed-output and
//! input-addressed derivation output paths. Pure: no file system access.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

use crate::hash::{compress_hash, Hash, HashAlgo};
use crate::nixbase32;

/// Length of the nix32 digest part of a store path base name.
pub const HASH_PART_LEN: usize = 32;
/// Longest allowed name (Nix's `StorePath::MaxPathLen`).
pub const MAX_NAME_LEN: usize = 211;
/// Nix's default logical store directory.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Why a string is not a valid store path or name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorePathError {
    #[error("'{0}' is too short to be a valid store path")]
    TooShort(String),
    #[error("store path '{0}': the hash part is not followed by a '-'")]
    MissingDash(String),
    #[error("store path '{path}' contains illegal base-32 character '{c}'")]
    BadHashChar { path: String, c: char },
    #[error("store path '{0}' has an empty name")]
    EmptyName(String),
    #[error("store path '{0}' has a name longer than 211 characters")]
    NameTooLong(String),
    #[error("store path '{path}' contains illegal character '{c}'")]
    BadNameChar { path: String, c: char },
    #[error("store path name '{0}' is not valid: it is '.' or '..', or begins with '.-' or '..-'")]
    DotName(String),
    #[error("path '{0}' is not in the Nix store")]
    NotInStore(String),
    #[error("store directory '{0}' must be an absolute path without a trailing '/'")]
    BadStoreDir(String),
    #[error("text paths can only be computed from sha256 hashes, got {0}")]
    TextNeedsSha256(HashAlgo),
    #[error("fixed-output path with references needs a recursive sha256 hash")]
    ReferencesNeedRecursiveSha256,
}

/// Checks a store path name as Nix does: not empty, at most 211 bytes, only
/// `A-Za-z0-9+-._?=`, and (as current Nix; 2.8 let them through) not `.`,
/// `..`, nor beginning with `.-` or `..-`.
pub fn check_name(name: &str) -> Result<(), StorePathError> {
    check_name_in(name, name)
}

fn check_name_in(path: &str, name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName(path.to_owned()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong(path.to_owned()));
    }
    if name == "." || name == ".." || name.starts_with(".-") || name.starts_with("..-") {
        return Err(StorePathError::DotName(name.to_owned()));
    }
    if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(StorePathError::BadNameChar {
            path: path.to_owned(),
            c,
        });
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')
}

/// A store object's identity: `<nix32 digest>-<name>`, without the store
/// directory. Ordered like Nix orders them: by the printed base name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StorePath {
    digest: [u8; 20],
    name: String,
}

impl StorePath {
    /// Builds a store path from its parts, validating the name.
    pub fn from_parts(digest: [u8; 20], name: &str) -> Result<Self, StorePathError> {
        check_name(name)?;
        Ok(StorePath {
            digest,
            name: name.to_owned(),
        })
    }

    /// Parses a base name `<32 chars>-<name>`.
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        let bytes = base.as_bytes();
        if bytes.len() < HASH_PART_LEN + 1 {
            return Err(StorePathError::TooShort(base.to_owned()));
        }
        let mut digest = [0u8; 20];
        if let Err(e) = nixbase32::decode_into(&bytes[..HASH_PART_LEN], &mut digest) {
            let c = match e {
                nixbase32::DecodeError::InvalidChar(c, _) => c,
                // 32 digits hold exactly 160 bits: length and padding can't fail.
                _ => '?',
            };
            return Err(StorePathError::BadHashChar {
                path: base.to_owned(),
                c,
            });
        }
        if bytes[HASH_PART_LEN] != b'-' {
            return Err(StorePathError::MissingDash(base.to_owned()));
        }
        let name = &base[HASH_PART_LEN + 1..];
        check_name_in(base, name)?;
        Ok(StorePath {
            digest,
            name: name.to_owned(),
        })
    }

    pub fn digest(&self) -> &[u8; 20] {
        &self.digest
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32-character nix32 digest (the narinfo file name).
    pub fn hash_part(&self) -> String {
        let enc = nixbase32::encode_digest(&self.digest);
        enc.iter().map(|&b| char::from(b)).collect()
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> String {
        self.to_string()
    }

    /// Whether the name ends in `.drv`.
    pub fn is_derivation(&self) -> bool {
        self.name.ends_with(".drv")
    }

    /// The derivation name of a `.drv` path (its name without `.drv`).
    pub fn derivation_name(&self) -> Option<&str> {
        self.name.strip_suffix(".drv")
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enc = nixbase32::encode_digest(&self.digest);
        // nix32 output is ASCII.
        f.write_str(std::str::from_utf8(&enc).map_err(|_| fmt::Error)?)?;
        f.write_str("-")?;
        f.write_str(&self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl Ord for StorePath {
    fn cmp(&self, other: &Self) -> Ordering {
        // Nix compares base names: the hash part first, then '-' + name. The
        // 32 digits spell the digest as a little-endian 160-bit number, most
        // significant digit first, in an ASCII-ordered alphabet: so text order
        // is the order of the bytes read from the last one down.
        self.digest
            .iter()
            .rev()
            .cmp(other.digest.iter().rev())
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for StorePath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::str::FromStr for StorePath {
    type Err = StorePathError;
    /// Parses a base name (not a full path: that needs a `StoreDir`).
    fn from_str(s: &str) -> Result<Self, StorePathError> {
        StorePath::from_base_name(s)
    }
}

/// How a fixed-output or content-addressed object was hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileIngestionMethod {
    /// The hash is of the file's bytes.
    Flat,
    /// The hash is of the NAR serialisation.
    Recursive,
}

impl FileIngestionMethod {
    /// `""` or `"r:"`, as in `fixed:out:r:sha256:…` and `.drv` hash algos.
    pub fn prefix(self) -> &'static str {
        match self {
            FileIngestionMethod::Flat => "",
            FileIngestionMethod::Recursive => "r:",
        }
    }
}

/// A content-addressing method, including `text` (used by `toFile` and `.drv`
/// files, and by `outputHashMode = "text"` in newer Nix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentAddressMethod {
    Text,
    Fixed(FileIngestionMethod),
}

impl ContentAddressMethod {
    /// The method prefix of a `.drv` output's hash algo: `text:`, `r:` or ``.
    pub fn prefix(self) -> &'static str {
        match self {
            ContentAddressMethod::Text => "text:",
            ContentAddressMethod::Fixed(m) => m.prefix(),
        }
    }

    /// Splits a `.drv` hash-algo string (`r:sha256`, `text:sha256`, `sha1`)
    /// into method and algorithm name.
    pub fn split_prefix(s: &str) -> (Self, &str) {
        if let Some(rest) = s.strip_prefix("r:") {
            (
                ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
                rest,
            )
        } else if let Some(rest) = s.strip_prefix("text:") {
            (ContentAddressMethod::Text, rest)
        } else {
            (ContentAddressMethod::Fixed(FileIngestionMethod::Flat), s)
        }
    }
}

/// A content address: method and hash, as stored in the `ca` field of path
/// info (`fixed:r:sha256:<nix32>`, `fixed:sha1:…`, `text:sha256:…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentAddress {
    pub method: ContentAddressMethod,
    pub hash: Hash,
}

impl ContentAddress {
    /// `r:sha256`, `sha1`, `text:sha256`: the method and algorithm as printed
    /// in `.drv` outputs and `fixed:out:` strings (Nix's `printMethodAlgo`).
    pub fn method_algo(&self) -> String {
        format!("{}{}", self.method.prefix(), self.hash.algo())
    }

    /// Parses the `ca` form (`fixed:r:sha256:…`, `text:sha256:…`).
    pub fn parse(s: &str) -> Result<Self, ContentAddressError> {
        let bad = || ContentAddressError(s.to_owned());
        if let Some(rest) = s.strip_prefix("text:") {
            let hash = Hash::parse_prefixed(rest).map_err(|_| bad())?;
            if hash.algo() != HashAlgo::Sha256 {
                return Err(bad());
            }
            return Ok(ContentAddress {
                method: ContentAddressMethod::Text,
                hash,
            });
        }
        let rest = s.strip_prefix("fixed:").ok_or_else(bad)?;
        let (method, rest) = match rest.strip_prefix("r:") {
            Some(r) => (FileIngestionMethod::Recursive, r),
            None => (FileIngestionMethod::Flat, rest),
        };
        let hash = Hash::parse_prefixed(rest).map_err(|_| bad())?;
        Ok(ContentAddress {
            method: ContentAddressMethod::Fixed(method),
            hash,
        })
    }
}

/// `fixed:r:sha256:<nix32>` or `text:sha256:<nix32>`.
impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.method {
            ContentAddressMethod::Text => write!(f, "text:{}", self.hash),
            ContentAddressMethod::Fixed(m) => write!(f, "fixed:{}{}", m.prefix(), self.hash),
        }
    }
}

/// A content address string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid content address '{0}'")]
pub struct ContentAddressError(pub String);

/// The logical store directory. It is part of every path computation, so two
/// stores with different directories give different hashes for the same input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl Default for StoreDir {
    fn default() -> Self {
        StoreDir(DEFAULT_STORE_DIR.to_owned())
    }
}

/// Nix's `outputPathName`: `name` for `out`, otherwise `name-<output>`.
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" {
        drv_name.to_owned()
    } else {
        format!("{drv_name}-{output}")
    }
}

impl StoreDir {
    /// A store directory: absolute, no trailing `/`, no `.`/`..`/empty parts.
    pub fn new(dir: &str) -> Result<Self, StorePathError> {
        let bad = || StorePathError::BadStoreDir(dir.to_owned());
        let rest = dir.strip_prefix('/').ok_or_else(bad)?;
        if rest.is_empty()
            || rest
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad());
        }
        Ok(StoreDir(dir.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full path `<dir>/<hash>-<name>`.
    pub fn display(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path)
    }

    /// Parses a full store path `<dir>/<hash>-<name>`. Like Nix's
    /// `parseStorePath`, the path is first made canonical (repeated and
    /// trailing `/`, `.` and `..` components are resolved textually, without
    /// following symlinks); then its parent must be the store directory.
    pub fn parse(&self, path: &str) -> Result<StorePath, StorePathError> {
        let not_in_store = || StorePathError::NotInStore(path.to_owned());
        if !path.starts_with('/') {
            return Err(not_in_store());
        }
        let mut parts: Vec<&str> = Vec::new();
        for c in path.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        let (base, dir) = parts.split_last().ok_or_else(not_in_store)?;
        let dir_parts = self.0.split('/').filter(|c| !c.is_empty());
        if !dir_parts.eq(dir.iter().copied()) {
            return Err(not_in_store());
        }
        StorePath::from_base_name(base)
    }

    /// Whether `path` is a valid store path in this directory.
    pub fn is_store_path(&self, path: &str) -> bool {
        self.parse(path).is_ok()
    }

    /// Splits a path inside the store (`<dir>/<hash>-<name>/bin/sh`) into
    /// the store path and the rest (`/bin/sh`, or empty).
    pub fn parse_path_within<'a>(
        &self,
        path: &'a str,
    ) -> Result<(StorePath, &'a str), StorePathError> {
        let not_in_store = || StorePathError::NotInStore(path.to_owned());
        let rest = path
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(not_in_store)?;
        let (base, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        Ok((StorePath::from_base_name(base)?, tail))
    }

    /// Nix's `makeStorePath(type, hash, name)`: the path whose digest is the
    /// compressed sha256 of `<type>:<algo>:<base16 hash>:<store dir>:<name>`.
    pub fn make_store_path(
        &self,
        path_type: &str,
        hash: &Hash,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        check_name(name)?;
        let fingerprint = format!(
            "{}:{}:{}:{}:{}",
            path_type,
            hash.algo(),
            hash.to_base16(),
            self.0,
            name
        );
        let inner = Hash::digest(HashAlgo::Sha256, fingerprint.as_bytes());
        Ok(StorePath {
            digest: compress_hash::<20>(inner.as_bytes()),
            name: name.to_owned(),
        })
    }

    /// Nix's `makeType`: `<kind>:<ref>:<ref>…[:self]` with full ref paths in order.
    fn make_type<'a>(
        &self,
        kind: &str,
        references: impl IntoIterator<Item = &'a StorePath>,
        self_ref: bool,
    ) -> String {
        let mut s = kind.to_owned();
        for r in references {
            s.push(':');
            s.push_str(&self.display(r));
        }
        if self_ref {
            s.push_str(":self");
        }
        s
    }

    /// A text object (`builtins.toFile`, `.drv` files): `hash` is the sha256
    /// of the contents, `references` the store paths the text mentions.
    pub fn make_text_path(
        &self,
        name: &str,
        hash: &Hash,
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StorePathError> {
        if hash.algo() != HashAlgo::Sha256 {
            return Err(StorePathError::TextNeedsSha256(hash.algo()));
        }
        self.make_store_path(&self.make_type("text", references, false), hash, name)
    }

    /// Nix's `computeStorePathForText`: hashes `contents` and makes the text path.
    pub fn compute_text_path(
        &self,
        name: &str,
        contents: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StorePathError> {
        let hash = Hash::digest(HashAlgo::Sha256, contents);
        self.make_text_path(name, &hash, references)
    }

    /// A fixed-output path (`nix-store --add(-fixed)`, `builtins.path`,
    /// fixed-output derivations). Recursive sha256 gives a `source` path (the
    /// only kind that may have references); any other combination hashes
    /// `fixed:out:<r:?><algo>:<hex>:` into an `output:out` path.
    pub fn make_fixed_output_path(
        &self,
        method: FileIngestionMethod,
        hash: &Hash,
        name: &str,
        references: &BTreeSet<StorePath>,
        self_ref: bool,
    ) -> Result<StorePath, StorePathError> {
        if method == FileIngestionMethod::Recursive && hash.algo() == HashAlgo::Sha256 {
            let kind = self.make_type("source", references, self_ref);
            self.make_store_path(&kind, hash, name)
        } else {
            if !references.is_empty() || self_ref {
                return Err(StorePathError::ReferencesNeedRecursiveSha256);
            }
            let inner = format!(
                "fixed:out:{}{}:{}:",
                method.prefix(),
                hash.algo(),
                hash.to_base16()
            );
            let inner = Hash::digest(HashAlgo::Sha256, inner.as_bytes());
            self.make_store_path("output:out", &inner, name)
        }
    }

    /// The path of a content-addressed object: text or fixed, by its method.
    pub fn make_path_from_ca(
        &self,
        name: &str,
        ca: &ContentAddress,
        references: &BTreeSet<StorePath>,
        self_ref: bool,
    ) -> Result<StorePath, StorePathError> {
        match ca.method {
            ContentAddressMethod::Text => {
                if self_ref {
                    return Err(StorePathError::ReferencesNeedRecursiveSha256);
                }
                self.make_text_path(name, &ca.hash, references)
            }
            ContentAddressMethod::Fixed(m) => {
                self.make_fixed_output_path(m, &ca.hash, name, references, self_ref)
            }
        }
    }

    /// An input-addressed derivation output: `output:<id>` over the
    /// derivation's modulo hash, named `drv_name` or `drv_name-<id>`.
    pub fn make_output_path(
        &self,
        output: &str,
        drv_hash: &Hash,
        drv_name: &str,
    ) -> Result<StorePath, StorePathError> {
        self.make_store_path(
            &format!("output:{output}"),
            drv_hash,
            &output_path_name(drv_name, output),
        )
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StoreDir {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, StorePathError> {
        StoreDir::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd() -> StoreDir {
        StoreDir::default()
    }

    fn hello_sha256() -> Hash {
        Hash::digest(HashAlgo::Sha256, b"hello\n")
    }

    #[test]
    fn parses_and_prints_round_trip() {
        let s = "/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv";
        let p = sd().parse(s).unwrap();
        assert_eq!(p.name(), "hello.drv");
        assert_eq!(p.hash_part(), "76w21n1f03fs5kw8fnffphx7qrqffw6r");
        assert_eq!(p.derivation_name(), Some("hello"));
        assert!(p.is_derivation());
        assert_eq!(sd().display(&p), s);
        assert_eq!(sd().parse(&format!("{s}/")).unwrap(), p);
        assert_eq!(
            sd().parse("/nix/store//76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv")
                .unwrap(),
            p
        );
        let (q, rest) = sd()
            .parse_path_within("/nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb/bin/sh")
            .unwrap();
        assert_eq!(q.name(), "bb");
        assert_eq!(rest, "/bin/sh");
    }

    #[test]
    fn rejects_invalid_paths_with_reason() {
        let d = sd();
        assert!(matches!(
            d.parse("/nix/store/abc"),
            Err(StorePathError::TooShort(_))
        ));
        assert!(matches!(
            d.parse("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6e-x"),
            Err(StorePathError::BadHashChar { c: 'e', .. })
        ));
        assert!(matches!(
            d.parse("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r_x"),
            Err(StorePathError::MissingDash(_))
        ));
        assert!(matches!(
            d.parse("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-"),
            Err(StorePathError::EmptyName(_))
        ));
        assert!(matches!(
            d.parse("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-a b"),
            Err(StorePathError::BadNameChar { c: ' ', .. })
        ));
        assert!(matches!(
            d.parse("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-a/b"),
            Err(StorePathError::NotInStore(_))
        ));
        assert!(matches!(
            d.parse("/tmp/76w21n1f03fs5kw8fnffphx7qrqffw6r-a"),
            Err(StorePathError::NotInStore(_))
        ));
        assert!(matches!(
            d.parse("/nix/storefoo/76w21n1f03fs5kw8fnffphx7qrqffw6r-a"),
            Err(StorePathError::NotInStore(_))
        ));
        for ok in [
            "/nix/./store/76w21n1f03fs5kw8fnffphx7qrqffw6r-a",
            "/nix/store/x/../76w21n1f03fs5kw8fnffphx7qrqffw6r-a",
            "//nix//store//76w21n1f03fs5kw8fnffphx7qrqffw6r-a//",
        ] {
            assert_eq!(d.parse(ok).unwrap().name(), "a", "{ok}");
        }
        for bad in [
            "nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-a",
            "/nix/store",
            "/nix/store/..",
            "/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-a/..",
            "/76w21n1f03fs5kw8fnffphx7qrqffw6r-a",
            "/",
        ] {
            assert!(d.parse(bad).is_err(), "{bad}");
        }
        let long = format!(
            "/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-{}",
            "a".repeat(212)
        );
        assert!(matches!(
            d.parse(&long),
            Err(StorePathError::NameTooLong(_))
        ));
        let max = format!(
            "/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-{}",
            "a".repeat(211)
        );
        assert!(d.parse(&max).is_ok());
        for bad in [".", "..", ".-x", "..-x"] {
            assert!(
                matches!(check_name(bad), Err(StorePathError::DotName(_))),
                "{bad}"
            );
        }
        for ok in [".foo", "..foo", "a+b-c.d_e?f=g", "A9"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn orders_like_nix_base_names() {
        let d = sd();
        let mut v: Vec<StorePath> = [
            "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-a",
            "/nix/store/00000000000000000000000000000001-a",
            "/nix/store/10000000000000000000000000000000-a",
            "/nix/store/10000000000000000000000000000000-B",
        ]
        .iter()
        .map(|s| d.parse(s).unwrap())
        .collect();
        v.sort();
        let printed: Vec<String> = v.iter().map(|p| p.to_string()).collect();
        let mut expected = printed.clone();
        expected.sort();
        assert_eq!(printed, expected);
    }

    #[test]
    fn ordering_matches_printed_order_for_many_digests() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut paths = Vec::new();
        for i in 0..500 {
            let mut d = [0u8; 20];
            for b in d.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Few distinct values, so long common prefixes occur.
                *b = (x % 3) as u8 * 0x55;
            }
            paths.push(StorePath::from_parts(d, if i % 2 == 0 { "a" } else { "a-b" }).unwrap());
        }
        let mut by_ord = paths.clone();
        by_ord.sort();
        let mut by_text = paths;
        by_text.sort_by_key(|p| p.to_string());
        assert_eq!(by_ord, by_text);
    }

    #[test]
    fn source_path_with_references_and_self() {
        // makeType: "source" + ":<ref>" per reference in order + ":self".
        let d = sd();
        let a = d
            .parse("/nix/store/00000000000000000000000000000001-a")
            .unwrap();
        let b = d
            .parse("/nix/store/10000000000000000000000000000000-b")
            .unwrap();
        let h = hello_sha256();
        let p = d
            .make_fixed_output_path(
                FileIngestionMethod::Recursive,
                &h,
                "src",
                &BTreeSet::from([b.clone(), a.clone()]),
                true,
            )
            .unwrap();
        let fp = format!(
            "source:{}:{}:self:sha256:{}:/nix/store:src",
            d.display(&a),
            d.display(&b),
            h.to_base16()
        );
        let expected =
            compress_hash::<20>(Hash::digest(HashAlgo::Sha256, fp.as_bytes()).as_bytes());
        assert_eq!(p.digest(), &expected);
        // Text paths list their references the same way, never with self.
        let t = d
            .make_text_path("t", &h, &BTreeSet::from([a.clone()]))
            .unwrap();
        let fp = format!(
            "text:{}:sha256:{}:/nix/store:t",
            d.display(&a),
            h.to_base16()
        );
        let expected =
            compress_hash::<20>(Hash::digest(HashAlgo::Sha256, fp.as_bytes()).as_bytes());
        assert_eq!(t.digest(), &expected);
        assert!(matches!(
            d.make_text_path("t", &Hash::digest(HashAlgo::Sha1, b""), &BTreeSet::new()),
            Err(StorePathError::TextNeedsSha256(HashAlgo::Sha1))
        ));
    }

    #[test]
    fn text_path_of_to_file_matches_nix() {
        // `builtins.toFile "foo" "bar"` in Nix 2.8.
        let p = sd()
            .compute_text_path("foo", b"bar", &BTreeSet::new())
            .unwrap();
        assert_eq!(
            sd().display(&p),
            "/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo"
        );
    }

    #[test]
    fn fixed_output_paths_match_nix() {
        let h = hello_sha256();
        let none = BTreeSet::new();
        let d = sd();
        // `nix-store --add hello.txt`: recursive sha256 of its NAR is a `source` path.
        let nar256 = Hash::parse_any(
            "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
            None,
        )
        .unwrap();
        let src = d
            .make_fixed_output_path(
                FileIngestionMethod::Recursive,
                &nar256,
                "hello.txt",
                &none,
                false,
            )
            .unwrap();
        assert_eq!(
            d.display(&src),
            "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"
        );
        let h_path = d
            .make_fixed_output_path(FileIngestionMethod::Recursive, &nar256, "h", &none, false)
            .unwrap();
        assert_eq!(
            d.display(&h_path),
            "/nix/store/pi8axnzkz80qa3x5smwjwxcc9n9hjik0-h"
        );
        // `nix-store --add-fixed --recursive sha1`: not sha256, so `fixed:out:r:sha1:`.
        let nar1 = Hash::parse_any("sha1:0deb52c2735eb38d360f976b7b3823c4ad05cce7", None).unwrap();
        let r1 = d
            .make_fixed_output_path(
                FileIngestionMethod::Recursive,
                &nar1,
                "hello.txt",
                &none,
                false,
            )
            .unwrap();
        assert_eq!(
            d.display(&r1),
            "/nix/store/hzq8n5jpi3g2d0xhlvqd8q1gx5c9s6i3-hello.txt"
        );
        // `nix-store --add-fixed sha512` (flat) and `--recursive sha512`.
        let flat512 = Hash::digest(HashAlgo::Sha512, b"hello\n");
        let f512 = d
            .make_fixed_output_path(
                FileIngestionMethod::Flat,
                &flat512,
                "hello.txt",
                &none,
                false,
            )
            .unwrap();
        assert_eq!(
            d.display(&f512),
            "/nix/store/9a8mxachqmcv8x2cfijdps9dyxgyyrzm-hello.txt"
        );
        let nar512 = Hash::parse_any("sha512:2q80akf4fi29vbxj82s21m9y6xrdjnwi9q1c3kfab0032zdnl18nzninbjw6n0rz4p76g8s1c5yv9hznv09l085azzqvk4hn9irv389", None).unwrap();
        let r512 = d
            .make_fixed_output_path(
                FileIngestionMethod::Recursive,
                &nar512,
                "hello.txt",
                &none,
                false,
            )
            .unwrap();
        assert_eq!(
            d.display(&r512),
            "/nix/store/8xkszhbayigjg9vbrrxfa1hp9qflbh6b-hello.txt"
        );
        let flat = d
            .make_fixed_output_path(FileIngestionMethod::Flat, &h, "hello.txt", &none, false)
            .unwrap();
        assert_eq!(
            d.display(&flat),
            "/nix/store/gy454w1cxaq731grqwylhzf4pp9r5izh-hello.txt"
        );
        let fo = d
            .make_fixed_output_path(FileIngestionMethod::Flat, &h, "fo", &none, false)
            .unwrap();
        assert_eq!(
            d.display(&fo),
            "/nix/store/09xxzzxfl30gihclrc0q5vfmj0iwipml-fo"
        );
        // A recursive FOD whose declared hash is sha256("hello\n").
        let fo_r = d
            .make_fixed_output_path(FileIngestionMethod::Recursive, &h, "fo", &none, false)
            .unwrap();
        assert_eq!(
            d.display(&fo_r),
            "/nix/store/8iqi0hyc743qh1sz7dqcdcmfg6cn88na-fo"
        );
        assert!(matches!(
            d.make_fixed_output_path(
                FileIngestionMethod::Flat,
                &h,
                "x",
                &BTreeSet::from([flat.clone()]),
                false
            ),
            Err(StorePathError::ReferencesNeedRecursiveSha256)
        ));
    }

    #[test]
    fn store_dir_is_part_of_the_hash() {
        let other = StoreDir::new("/b3/store").unwrap();
        let a = sd()
            .compute_text_path("foo", b"bar", &BTreeSet::new())
            .unwrap();
        let b = other
            .compute_text_path("foo", b"bar", &BTreeSet::new())
            .unwrap();
        assert_ne!(a.digest(), b.digest());
        // By hand from Nix's formula: sha256("text:sha256:<hex of sha256("bar")>:/b3/store:foo"), folded to 20 bytes.
        let fp = format!(
            "text:sha256:{}:/b3/store:foo",
            Hash::digest(HashAlgo::Sha256, b"bar").to_base16()
        );
        let expected =
            compress_hash::<20>(Hash::digest(HashAlgo::Sha256, fp.as_bytes()).as_bytes());
        assert_eq!(b.digest(), &expected);
        assert!(StoreDir::new("nix/store").is_err());
        assert!(StoreDir::new("/nix/store/").is_err());
        assert!(StoreDir::new("/").is_err());
        assert!(StoreDir::new("/a/../b").is_err());
    }

    #[test]
    fn content_address_round_trips() {
        let h = hello_sha256();
        for (ca, text) in [
            (
                ContentAddress {
                    method: ContentAddressMethod::Fixed(FileIngestionMethod::Flat),
                    hash: h,
                },
                "fixed:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
            ),
            (
                ContentAddress {
                    method: ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
                    hash: h,
                },
                "fixed:r:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
            ),
            (
                ContentAddress {
                    method: ContentAddressMethod::Text,
                    hash: h,
                },
                "text:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
            ),
        ] {
            assert_eq!(ca.to_string(), text);
            assert_eq!(ContentAddress::parse(text).unwrap(), ca);
        }
        assert!(ContentAddress::parse("fixed:blah").is_err());
        assert_eq!(
            ContentAddressMethod::split_prefix("r:sha1"),
            (
                ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
                "sha1"
            )
        );
    }

    #[test]
    fn output_path_names() {
        assert_eq!(output_path_name("multi", "out"), "multi");
        assert_eq!(output_path_name("multi", "dev"), "multi-dev");
    }
}
