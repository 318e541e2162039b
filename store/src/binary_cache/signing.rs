//! Nix's signing keys and narinfo signatures (ed25519).
//!
//! Text forms, as `nix-store --generate-binary-cache-key` writes them:
//! a secret key is `name:base64(seed ‖ public key)` (64 bytes), a public key
//! `name:base64(32 bytes)`, and a `Sig:` is `name:base64(64-byte signature)`.
//! What is signed is the path's fingerprint:
//! `1;<store path>;<sha256:nix32 NAR hash>;<NAR size>;<comma-joined full
//! reference paths>`. Like Nix, a signature is checked only against the
//! trusted key with the same name.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use data_encoding::BASE64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use thiserror::Error;

use crate::hash::Hash;
use crate::path::{StoreDir, StorePath};

/// Why a key or signature could not be parsed or made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SigningError {
    #[error("{what} is not of the form 'name:base64'")]
    NoName { what: &'static str },
    #[error("{what} '{name}' is not valid base64")]
    BadBase64 { what: &'static str, name: String },
    #[error("{what} '{name}' has {got} bytes, expected {expected}")]
    WrongLength {
        what: &'static str,
        name: String,
        got: usize,
        expected: usize,
    },
    #[error("secret key '{0}': the public half does not match the seed")]
    KeyMismatch(String),
    #[error("public key '{0}' is not a valid ed25519 point")]
    BadPublicKey(String),
    #[error("cannot get random bytes for a new key: {0}")]
    Random(String),
}

/// Splits `name:base64` and decodes the payload, which must be `N` bytes.
fn split_decode<const N: usize>(
    s: &str,
    what: &'static str,
) -> Result<(String, [u8; N]), SigningError> {
    let s = s.trim();
    let (name, b64) = s.split_once(':').ok_or(SigningError::NoName { what })?;
    if name.is_empty() {
        return Err(SigningError::NoName { what });
    }
    let bytes = BASE64
        .decode(b64.as_bytes())
        .map_err(|_| SigningError::BadBase64 {
            what,
            name: name.to_owned(),
        })?;
    let arr: [u8; N] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| SigningError::WrongLength {
            what,
            name: name.to_owned(),
            got: bytes.len(),
            expected: N,
        })?;
    Ok((name.to_owned(), arr))
}

/// A named ed25519 signing key.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, SigningError> {
        if name.is_empty() || name.contains(':') {
            return Err(SigningError::NoName { what: "key name" });
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
        Ok(SecretKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `message` (a fingerprint).
    pub fn sign(&self, message: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(message).to_bytes(),
        }
    }

    /// Nix's secret-key file text, `name:base64(seed ‖ public)` (no newline).
    pub fn to_text(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            BASE64.encode(&self.key.to_keypair_bytes())
        )
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}:…)", self.name)
    }
}

impl FromStr for SecretKey {
    type Err = SigningError;

    /// Parses Nix's secret-key text; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, SigningError> {
        let (name, bytes) = split_decode::<64>(s, "secret key")?;
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| SigningError::KeyMismatch(name.clone()))?;
        Ok(SecretKey { name, key })
    }
}

/// A named ed25519 public key, as in `trusted-public-keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `sig` was made by this key over `message`. A signature by a
    /// differently named key is never valid (Nix looks keys up by name).
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        if sig.key_name != self.name {
            return false;
        }
        let s = ed25519_dalek::Signature::from_bytes(&sig.bytes);
        self.key.verify_strict(message, &s).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl FromStr for PublicKey {
    type Err = SigningError;

    fn from_str(s: &str) -> Result<Self, SigningError> {
        let (name, bytes) = split_decode::<32>(s, "public key")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| SigningError::BadPublicKey(name.clone()))?;
        Ok(PublicKey { name, key })
    }
}

/// Parses a whitespace-separated list of public keys (the
/// `trusted-public-keys` setting).
pub fn parse_public_keys(s: &str) -> Result<Vec<PublicKey>, SigningError> {
    s.split_whitespace().map(str::parse).collect()
}

/// One `Sig:` value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    pub key_name: String,
    pub bytes: [u8; 64],
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(&self.bytes))
    }
}

impl FromStr for Signature {
    type Err = SigningError;

    fn from_str(s: &str) -> Result<Self, SigningError> {
        let (key_name, bytes) = split_decode::<64>(s, "signature")?;
        Ok(Signature { key_name, bytes })
    }
}

/// Nix's `ValidPathInfo::fingerprint`.
pub fn fingerprint(
    store_dir: &StoreDir,
    path: &StorePath,
    nar_hash: &Hash,
    nar_size: u64,
    references: &BTreeSet<StorePath>,
) -> String {
    let refs: Vec<String> = references.iter().map(|r| store_dir.display(r)).collect();
    format!(
        "1;{};{};{};{}",
        store_dir.display(path),
        nar_hash,
        nar_size,
        refs.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `nix-store --generate-binary-cache-key b3-test-1 sk pk` (Nix 2.8).
    const NIX_SK: &str = "b3-test-1:Y4OY6TaPDTwa9VRjHhvr9FJ27QkMGCfAJh7LqO4jNUTV0vh/vBUrONdwWaf05A0KMqF+PgvSDIyBXeNG5p44mg==";
    const NIX_PK: &str = "b3-test-1:1dL4f7wVKzjXcFmn9OQNCjKhfj4L0gyMgV3jRuaeOJo=";

    #[test]
    fn nix_generated_key_pair_parses_and_matches() {
        let sk: SecretKey = NIX_SK.parse().unwrap();
        assert_eq!(sk.name(), "b3-test-1");
        assert_eq!(sk.public().to_string(), NIX_PK);
        assert_eq!(sk.to_text(), NIX_SK);
        // Key files may end in a newline.
        let sk2: SecretKey = format!("{NIX_SK}\n").parse().unwrap();
        assert_eq!(sk2.to_text(), NIX_SK);
    }

    #[test]
    fn generated_keys_have_nix_layout() {
        let sk = SecretKey::generate("cache.example.org-1").unwrap();
        let text = sk.to_text();
        assert_eq!(text.len(), "cache.example.org-1:".len() + 88);
        let back: SecretKey = text.parse().unwrap();
        assert_eq!(back.public(), sk.public());
        assert_eq!(
            sk.public().to_string().len(),
            "cache.example.org-1:".len() + 44
        );
        assert!(SecretKey::generate("a:b").is_err());
        assert!(SecretKey::generate("").is_err());
    }

    #[test]
    fn signatures_check_message_key_and_name() {
        let sk = SecretKey::generate("k1").unwrap();
        let sig = sk.sign(b"hello");
        assert!(sk.public().verify(b"hello", &sig));
        assert!(!sk.public().verify(b"hellp", &sig));
        let mut renamed = sig.clone();
        renamed.key_name = "k2".into();
        assert!(!sk.public().verify(b"hello", &renamed));
        let mut flipped = sig.clone();
        flipped.bytes[10] ^= 1;
        assert!(!sk.public().verify(b"hello", &flipped));
        let parsed: Signature = sig.to_string().parse().unwrap();
        assert_eq!(parsed, sig);
    }

    #[test]
    fn malformed_keys_are_rejected_with_reasons() {
        assert!(matches!(
            "nocolon".parse::<PublicKey>(),
            Err(SigningError::NoName { .. })
        ));
        assert!(matches!(
            ":AAAA".parse::<PublicKey>(),
            Err(SigningError::NoName { .. })
        ));
        assert!(matches!(
            "k:!!!".parse::<PublicKey>(),
            Err(SigningError::BadBase64 { .. })
        ));
        assert!(matches!(
            "k:AAAA".parse::<PublicKey>(),
            Err(SigningError::WrongLength {
                got: 3,
                expected: 32,
                ..
            })
        ));
        // A public key given where a secret key is expected.
        assert!(matches!(
            NIX_PK.parse::<SecretKey>(),
            Err(SigningError::WrongLength { expected: 64, .. })
        ));
        // Seed and public half that do not belong together.
        let sk: SecretKey = NIX_SK.parse().unwrap();
        let other = SecretKey::generate("b3-test-1").unwrap();
        let mut bytes = sk.key.to_keypair_bytes();
        bytes[32..].copy_from_slice(other.public().key.as_bytes());
        let text = format!("b3-test-1:{}", BASE64.encode(&bytes));
        assert!(matches!(
            text.parse::<SecretKey>(),
            Err(SigningError::KeyMismatch(_))
        ));
        assert_eq!(
            parse_public_keys(&format!(" {NIX_PK}  {NIX_PK}\n"))
                .unwrap()
                .len(),
            2
        );
    }
}
